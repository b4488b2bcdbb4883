//! What the timeline records: one [`EventKind`] per thing that happened to an incident.
//! Stored as JSON in the hash-chained timeline, so variants and fields are only ever
//! added, never renamed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::severity::Severity;

use super::*;

/// What happened, as recorded on the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The incident was declared.
    Declared {
        /// Initial severity.
        severity: Severity,
        /// Title.
        title: String,
        /// Response deadline.
        respond_by: DateTime<Utc>,
    },
    /// Slack created (or Klaxon adopted) the incident channel.
    ChannelOpened {
        /// Channel id.
        channel_id: String,
        /// Channel name.
        name: String,
    },
    /// Someone took or was given a role.
    RoleAssigned {
        /// The role.
        role: Role,
        /// New holder.
        user: String,
        /// Previous holder.
        previous: Option<String>,
    },
    /// Severity changed.
    SeverityChanged {
        /// Before.
        from: Severity,
        /// After.
        to: Severity,
    },
    /// Status changed.
    StatusChanged {
        /// Before.
        from: Status,
        /// After.
        to: Status,
    },
    /// A status update was posted.
    UpdatePosted {
        /// The update.
        text: String,
    },
    /// The incident was resolved.
    Resolved {
        /// Resolution summary.
        summary: String,
    },
    /// A status reminder was posted.
    ReminderSent {
        /// Seconds late, when it fired more than a minute after its due time.
        late_by_secs: Option<i64>,
    },
    /// Nobody took command by the response deadline.
    ResponseMissed {
        /// Seconds late.
        late_by_secs: Option<i64>,
    },
    /// An escalation step paged its target.
    Escalated {
        /// Target name.
        target: String,
        /// Seconds late.
        late_by_secs: Option<i64>,
    },
    /// Someone asked for a recovery command.
    RunRequested {
        /// Run number.
        run_id: i64,
        /// Catalog command.
        command: String,
        /// Parameters as given (validated), `key=value` separated by spaces.
        params: String,
    },
    /// A run's preview is ready and it moved on (pending approval, dry run, failed...).
    RunPrepared {
        /// Run number.
        run_id: i64,
        /// The state it moved to.
        state: crate::domain::approval::RunState,
    },
    /// Someone pressed Approve or Deny (refused clicks included).
    RunClicked {
        /// Run number.
        run_id: i64,
        /// `approve` or `deny`.
        click: String,
        /// What it did: `recorded`, `approved`, `denied` or `refused: <reason>`.
        outcome: String,
    },
    /// A worker started executing a run.
    RunStarted {
        /// Run number.
        run_id: i64,
    },
    /// A run finished (succeeded, failed or outcome unknown).
    RunFinished {
        /// Run number.
        run_id: i64,
        /// Final state.
        state: crate::domain::approval::RunState,
        /// One-line summary of the result or error.
        summary: String,
        /// The API's request id, when there was one.
        request_id: Option<String>,
    },
    /// Who may approve a run, frozen when it was requested (`user@source` each).
    RunEligibility {
        /// Run number.
        run_id: i64,
        /// Eligible approvers, `U123@role:commander`, `U456@group:S789`, `U1@user`.
        eligible: Vec<String>,
    },
    /// A pending or approved run was stopped without running: withdrawn, the incident
    /// resolved, or it expired or lost its approvals before execution.
    RunClosed {
        /// Run number.
        run_id: i64,
        /// `cancelled` or `expired`.
        state: crate::domain::approval::RunState,
        /// Why, in words.
        reason: String,
    },
    /// A result that arrived after the run had been declared `outcome_unknown`.
    RunLateResult {
        /// Run number.
        run_id: i64,
        /// What the API finally said: `succeeded` or `failed`.
        state: crate::domain::approval::RunState,
        /// One-line summary.
        summary: String,
        /// The API's request id.
        request_id: Option<String>,
    },
    /// Someone tried to change a role and was refused.
    RoleRefused {
        /// The role.
        role: Role,
        /// Who they tried to give it to.
        user: String,
        /// Why it was refused.
        reason: String,
    },
    /// A share of the RTO elapsed and the channel was told.
    RtoCheckpoint {
        /// Percent of the RTO.
        percent: u8,
        /// Seconds late.
        late_by_secs: Option<i64>,
    },
    /// A note for the record (see `domain::record`): typed with `/incident note`, or a
    /// message of the channel pinned or marked with a configured reaction.
    NoteAdded {
        /// The note, or the message's text.
        text: String,
        /// `command`, `pin` or `reaction:<emoji>`.
        source: String,
        /// Who wrote the message, when the note is a channel message.
        author: Option<String>,
        /// The message's `ts`, when the note is a channel message (one note per message).
        message_ts: Option<String>,
    },
    /// An action item for the post-mortem.
    ActionItemAdded {
        /// Its number in this incident, from 1.
        number: u32,
        /// What is to be done.
        text: String,
        /// Who owns it.
        owner: Option<String>,
        /// When it is due.
        due: Option<chrono::NaiveDate>,
    },
    /// How much data the incident lost, for the RPO verdict (`/incident rpo`).
    RpoRecorded {
        /// Minutes of data lost.
        minutes_lost: u32,
    },
    /// Something happened in PagerDuty to the incident this one is linked to (issue 9):
    /// the trigger that declared it or joined it, an acknowledgement, reassignment,
    /// escalation, priority change, note or resolve.
    PagerDuty {
        /// The v3 event type (`incident.acknowledged`...).
        event_type: String,
        /// The PagerDuty incident id.
        pd_incident: String,
        /// What happened, in words (with the PagerDuty link where there is one).
        text: String,
    },
    /// A post-mortem draft was written from the record and stored.
    PostmortemDrafted {
        /// Stored draft id.
        postmortem_id: i64,
        /// Draft number for this incident, from 1.
        version: i64,
    },
    /// Stakeholder groups were sent a notice (one outbox row per destination).
    StakeholdersNotified {
        /// What about.
        notice: crate::domain::stakeholders::NoticeKind,
        /// Group names.
        groups: Vec<String>,
    },
    /// The incident was flagged as a security incident.
    SecurityFlagged {
        /// By a title keyword in `[stakeholders] security_keywords` (else by a person).
        by_rule: bool,
    },
    /// The regulatory notification reminder was posted.
    RegulatoryReminded {
        /// Seconds after its due time, when late.
        late_by_secs: Option<i64>,
    },
    /// Someone confirmed that compliance/legal were notified.
    RegulatoryAcknowledged,
}
