//! The incident state machine: what an incident is, what people can change, and what each
//! change records (timeline events) and causes (outbound effects).
//!
//! Pure: callers pass `now` and the policy in; nothing here reads a clock or does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::calendar::BusinessCalendar;
use super::channel_name;
use super::escalation::EscalationPolicy;
use super::message::Message;
use super::regulatory;
use super::render;
use super::severity::{Severity, SeverityPolicies};
use super::stakeholders::{self, StakeholderPolicy};
use super::timers::{self, TimerKind};

/// Incident number, shown as `INC-12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub i64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INC-{}", self.0)
    }
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Looking for the cause.
    Investigating,
    /// Cause known, fix in progress.
    Identified,
    /// Fix applied, watching.
    Monitoring,
    /// Over.
    Resolved,
}

impl Status {
    /// Statuses a person can set with `/incident status` (resolving has its own command).
    pub const SETTABLE: [Status; 3] = [
        Status::Investigating,
        Status::Identified,
        Status::Monitoring,
    ];

    /// Lowercase name as typed in commands.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Investigating => "investigating",
            Status::Identified => "identified",
            Status::Monitoring => "monitoring",
            Status::Resolved => "resolved",
        }
    }

    /// Parses a settable status.
    pub fn parse_settable(text: &str) -> Option<Status> {
        let lower = text.trim().to_ascii_lowercase();
        Status::SETTABLE.into_iter().find(|s| s.as_str() == lower)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_str();
        write!(f, "{}{}", s[..1].to_ascii_uppercase(), &s[1..])
    }
}

/// A role someone holds in an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Incident commander: owns the incident until handing over.
    Commander,
    /// Communications lead: stakeholders and status page.
    Comms,
    /// Operations lead: hands on the systems.
    Ops,
    /// Keeps notes for the post-mortem.
    Scribe,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 4] = [Role::Commander, Role::Comms, Role::Ops, Role::Scribe];

    /// Lowercase name as typed in commands.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Commander => "commander",
            Role::Comms => "comms",
            Role::Ops => "ops",
            Role::Scribe => "scribe",
        }
    }

    /// Parses a role name; `ic` is accepted for the commander.
    pub fn parse(text: &str) -> Option<Role> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "ic" {
            return Some(Role::Commander);
        }
        Role::ALL.into_iter().find(|r| r.as_str() == lower)
    }

    /// Human title, e.g. "incident commander".
    pub fn title(self) -> &'static str {
        match self {
            Role::Commander => "incident commander",
            Role::Comms => "comms lead",
            Role::Ops => "ops lead",
            Role::Scribe => "scribe",
        }
    }
}

/// The Slack channel opened for an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentChannel {
    /// Channel id.
    pub id: String,
    /// Channel name (may carry a `-2` suffix when the planned name was taken).
    pub name: String,
}

/// The last status update someone posted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// When it was posted.
    pub at: DateTime<Utc>,
    /// Who posted it.
    pub by: String,
    /// What it said.
    pub text: String,
}

/// The current state of one incident (the projection of its timeline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Number.
    pub id: IncidentId,
    /// One-line title.
    pub title: String,
    /// Current severity.
    pub severity: Severity,
    /// Current status.
    pub status: Status,
    /// When it was declared.
    pub declared_at: DateTime<Utc>,
    /// Who declared it.
    pub declared_by: String,
    /// The channel name Klaxon planned (`inc-YYYYMMDD-short-title`).
    pub planned_channel_name: String,
    /// The channel once Slack created it.
    pub channel: Option<IncidentChannel>,
    /// Who holds which role.
    pub roles: BTreeMap<Role, String>,
    /// Last status update.
    pub last_update: Option<StatusUpdate>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The one-line resolution summary.
    pub resolution: Option<String>,
    /// When the last status reminder went out.
    #[serde(default)]
    pub last_reminder_at: Option<DateTime<Utc>>,
    /// Keys of the once-only timers that fired (escalation steps, RTO checkpoints...), so
    /// rescheduling after a severity change never pages the same target twice.
    #[serde(default)]
    pub fired_timers: BTreeSet<String>,
    /// A security incident: compliance/legal must be notified (see
    /// [`super::stakeholders`]); reminded until someone acknowledges it.
    #[serde(default)]
    pub security: bool,
    /// Who acknowledged the regulatory notification, and when.
    #[serde(default)]
    pub regulatory_ack: Option<Acknowledgement>,
    /// When the last regulatory reminder went out.
    #[serde(default)]
    pub regulatory_reminded_at: Option<DateTime<Utc>>,
    /// When each stakeholder group was last told anything (its cadence restarts then).
    #[serde(default)]
    pub stakeholders_told: BTreeMap<String, DateTime<Utc>>,
}

/// Someone confirmed a duty was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl Incident {
    /// Whether the incident is still open.
    pub fn is_open(&self) -> bool {
        self.status != Status::Resolved
    }

    /// The incident commander, if anyone holds the role.
    pub fn commander(&self) -> Option<&str> {
        self.roles.get(&Role::Commander).map(String::as_str)
    }
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A Slack user id.
    User(String),
    /// Klaxon itself (the outbox reporting a channel, a timer...).
    Klaxon,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => f.write_str(id),
            Actor::Klaxon => f.write_str("klaxon"),
        }
    }
}

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
        state: super::approval::RunState,
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
        state: super::approval::RunState,
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
        state: super::approval::RunState,
        /// Why, in words.
        reason: String,
    },
    /// A result that arrived after the run had been declared `outcome_unknown`.
    RunLateResult {
        /// Run number.
        run_id: i64,
        /// What the API finally said: `succeeded` or `failed`.
        state: super::approval::RunState,
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
        notice: super::stakeholders::NoticeKind,
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

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Destination {
    /// The incident's own channel (looked up at delivery).
    IncidentChannel,
    /// The announcement channel (`#incident-response`), as configured at delivery.
    Announcements,
}

/// PagerDuty Events API v2 `event_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageAction {
    /// Open (or re-notify) the alert.
    Trigger,
    /// Close it.
    Resolve,
}

/// Something to do outside Klaxon, written to the outbox in the same transaction as the
/// change that caused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Create the incident channel (adopting one Klaxon itself created on an earlier try),
    /// set its purpose, invite people, then record `ChannelOpened`.
    OpenIncidentChannel {
        /// Planned name.
        name: String,
        /// Channel purpose; names the incident so a retry can recognise the channel.
        purpose: String,
        /// Users to invite.
        invite: Vec<String>,
    },
    /// Set the incident channel's topic.
    SetTopic {
        /// Topic text (plain, no spans: Slack topics do not render rich text reliably).
        topic: String,
    },
    /// Invite users into the incident channel.
    Invite {
        /// User ids.
        users: Vec<String>,
    },
    /// Post a message.
    Post {
        /// Where.
        destination: Destination,
        /// What.
        message: Message,
    },
    /// Page an escalation target through PagerDuty (its routing key comes from config at
    /// delivery; a target without one is skipped).
    Page {
        /// Trigger or resolve.
        action: PageAction,
        /// Escalation target name.
        target: String,
        /// Unique per incident and step; PagerDuty dedupes retries on it.
        dedup_key: String,
        /// Alert summary (<= 1024 chars).
        summary: String,
        /// `critical`, `error`, `warning` or `info`.
        severity: String,
    },
    /// Tell an escalation target's Slack channels and user groups (from config).
    NotifyTarget {
        /// Target name.
        target: String,
        /// What to post.
        message: Message,
    },
    /// Upload a stored post-mortem draft to the incident channel (Slack's external
    /// upload flow; see `outbox::upload`).
    UploadPostmortem {
        /// Stored draft id.
        postmortem_id: i64,
    },
    /// Send a stakeholder group's notice to one of its destinations (email, Statuspage,
    /// a Slack channel); lane `stakeholder:<group>:<via>:N`.
    Stakeholder {
        /// Group name.
        group: String,
        /// Destination.
        to: super::stakeholders::Recipient,
        /// What, rendered for this group.
        notice: super::stakeholders::Notice,
    },
}

/// A user-facing refusal: the change does not apply to this incident as it stands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The incident is resolved; nothing more can change.
    #[error("{0} is resolved; it can no longer be changed.")]
    Resolved(IncidentId),
    /// The change would not change anything.
    #[error("{0}")]
    Unchanged(String),
    /// The person may not make this change (the text says why and what to do).
    #[error("{0}")]
    NotAllowed(String),
    /// A text field broke a rule.
    #[error("{field}: {rule}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
}

/// A change someone asks for on an existing incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Give `role` to `user` (hand-over when someone holds it).
    AssignRole {
        /// Role.
        role: Role,
        /// New holder.
        user: String,
    },
    /// Change severity.
    ChangeSeverity(Severity),
    /// Change status (not to resolved).
    SetStatus(Status),
    /// Post a status update.
    PostUpdate(String),
    /// Resolve with a summary.
    Resolve(String),
    /// The outbox opened the channel.
    ChannelOpened(IncidentChannel),
    /// Flag the incident as a security incident (regulatory reminders start).
    MarkSecurity,
    /// Compliance/legal were notified: stop the regulatory reminders.
    AckRegulatory,
    /// A durable timer came due.
    TimerFired {
        /// Which timer.
        kind: TimerKind,
        /// When it was due.
        due_at: DateTime<Utc>,
    },
}

/// Everything the policy says that a decision needs.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// Severity table.
    pub severities: &'a SeverityPolicies,
    /// Team calendar.
    pub calendar: &'a BusinessCalendar,
    /// Escalation ladders.
    pub escalation: &'a EscalationPolicy,
    /// Stakeholder groups and the security rule.
    pub stakeholders: &'a StakeholderPolicy,
}

/// The outcome of a change: the new state, what to record and what to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// State after the change.
    pub incident: Incident,
    /// Timeline events, in order.
    pub events: Vec<EventKind>,
    /// Outbound effects, in order.
    pub effects: Vec<Effect>,
    /// What to tell the person who asked (ephemeral).
    pub reply: String,
}

/// Longest title accepted; Slack headers allow 150 characters.
pub const MAX_TITLE_CHARS: usize = 120;
/// Longest update or summary accepted (Slack section text allows 3000).
pub const MAX_TEXT_CHARS: usize = 2500;

/// Validates free text: trimmed, not empty, not longer than `max` characters, and free of
/// control, bidirectional and invisible characters (see [`super::text`]); a title must be
/// one line.
pub fn clean_text(field: &'static str, text: &str, max: usize) -> Result<String, DomainError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DomainError::Invalid {
            field,
            rule: "must not be empty".into(),
        });
    }
    let kind = if field == "title" {
        super::text::TextKind::Line
    } else {
        super::text::TextKind::Block
    };
    super::text::check(text, kind).map_err(|rule| DomainError::Invalid { field, rule })?;
    let chars = text.chars().count();
    if chars > max {
        return Err(DomainError::Invalid {
            field,
            rule: format!("must be at most {max} characters (got {chars})"),
        });
    }
    Ok(text.to_string())
}

/// The title as [`declare`] keeps it, or why it is refused. Lets the engine refuse a title
/// before it reserves an incident number. Titles are one line: a modal's multi-line input
/// is folded.
pub fn declared_title(title: &str) -> Result<String, DomainError> {
    clean_text(
        "title",
        &title.split_whitespace().collect::<Vec<_>>().join(" "),
        MAX_TITLE_CHARS,
    )
}

/// Declares a new incident numbered `id`. The declarer becomes incident commander.
pub fn declare(
    id: IncidentId,
    severity: Severity,
    title: &str,
    declared_by: &Actor,
    now: DateTime<Utc>,
    policy: Policy<'_>,
) -> Result<Decision, DomainError> {
    let title = declared_title(title)?;
    let respond_by = policy.severities.respond_by(severity, now, policy.calendar);
    let local_date = now.with_timezone(&policy.calendar.tz).date_naive();
    let incident = Incident {
        id,
        title: title.clone(),
        severity,
        status: Status::Investigating,
        declared_at: now,
        declared_by: declared_by.to_string(),
        planned_channel_name: channel_name::planned(local_date, &title),
        channel: None,
        roles: BTreeMap::new(),
        last_update: None,
        resolved_at: None,
        resolution: None,
        last_reminder_at: None,
        fired_timers: BTreeSet::new(),
        security: false,
        regulatory_ack: None,
        regulatory_reminded_at: None,
        stakeholders_told: BTreeMap::new(),
    };
    let mut incident = incident;
    let mut events = vec![EventKind::Declared {
        severity,
        title,
        respond_by,
    }];
    let mut invite = Vec::new();
    // A person who declares commands until they hand over; an incident Klaxon opens
    // itself (a PagerDuty trigger) has no commander until someone takes the role.
    if let Actor::User(user) = declared_by {
        incident.roles.insert(Role::Commander, user.clone());
        events.push(EventKind::RoleAssigned {
            role: Role::Commander,
            user: user.clone(),
            previous: None,
        });
        invite.push(user.clone());
    }
    let effects = vec![
        Effect::OpenIncidentChannel {
            name: incident.planned_channel_name.clone(),
            purpose: render::channel_purpose(&incident),
            invite,
        },
        Effect::SetTopic {
            topic: render::topic(&incident),
        },
        Effect::Post {
            destination: Destination::IncidentChannel,
            message: render::summary(&incident, policy),
        },
        Effect::Post {
            destination: Destination::Announcements,
            message: render::announcement(&incident),
        },
    ];
    let reply = format!(
        "{id} declared ({severity}): opening #{}. You are the incident commander until you hand over with `/incident role commander @someone`.",
        incident.planned_channel_name
    );
    Ok(Decision {
        incident,
        events,
        effects,
        reply,
    })
}

/// Applies `change` by `actor` to `incident` at `now`.
pub fn apply(
    incident: &Incident,
    change: Change,
    actor: &Actor,
    now: DateTime<Utc>,
    policy: Policy<'_>,
) -> Result<Decision, DomainError> {
    if !incident.is_open() && !matches!(change, Change::ChannelOpened(_)) {
        return Err(DomainError::Resolved(incident.id));
    }
    let mut next = incident.clone();
    let id = incident.id;
    let actor_mention = match actor {
        Actor::User(u) => format!("<@{u}>"),
        Actor::Klaxon => "Klaxon".to_string(),
    };
    let (events, effects, reply) =
        match change {
            Change::AssignRole { role, user } => {
                let previous = next.roles.insert(role, user.clone());
                if previous.as_deref() == Some(user.as_str()) {
                    return Err(DomainError::Unchanged(format!(
                        "<@{user}> is already the {} of {id}.",
                        role.title()
                    )));
                }
                let mut effects = vec![Effect::Invite {
                    users: vec![user.clone()],
                }];
                if role == Role::Commander {
                    effects.push(Effect::SetTopic {
                        topic: render::topic(&next),
                    });
                }
                effects.push(Effect::Post {
                    destination: Destination::IncidentChannel,
                    message: render::role_assigned(role, &user, previous.as_deref(), actor),
                });
                (
                    vec![EventKind::RoleAssigned {
                        role,
                        user: user.clone(),
                        previous,
                    }],
                    effects,
                    format!("<@{user}> is now the {} of {id}.", role.title()),
                )
            }
            Change::ChangeSeverity(to) => {
                let from = incident.severity;
                if from == to {
                    return Err(DomainError::Unchanged(format!("{id} is already {to}.")));
                }
                next.severity = to;
                let message = render::severity_changed(&next, from, actor, policy);
                (
                    vec![EventKind::SeverityChanged { from, to }],
                    vec![
                        Effect::SetTopic {
                            topic: render::topic(&next),
                        },
                        Effect::Post {
                            destination: Destination::IncidentChannel,
                            message: message.clone(),
                        },
                        Effect::Post {
                            destination: Destination::Announcements,
                            message,
                        },
                    ],
                    format!("{id} is now {to}."),
                )
            }
            Change::SetStatus(to) => {
                let from = incident.status;
                if to == Status::Resolved {
                    return Err(DomainError::Invalid {
                        field: "status",
                        rule: "use `/incident resolve` to resolve".into(),
                    });
                }
                if from == to {
                    return Err(DomainError::Unchanged(format!("{id} is already {to}.")));
                }
                next.status = to;
                (
                    vec![EventKind::StatusChanged { from, to }],
                    vec![
                        Effect::SetTopic {
                            topic: render::topic(&next),
                        },
                        Effect::Post {
                            destination: Destination::IncidentChannel,
                            message: render::status_changed(&next, from, actor),
                        },
                    ],
                    format!("{id} is now {to}."),
                )
            }
            Change::PostUpdate(text) => {
                let (mode, text) = stakeholders::update_mode(&text);
                let text = clean_text("update", text, MAX_TEXT_CHARS)?;
                let public = stakeholders::refuse_preview(&next, &text, mode, policy.stakeholders)?;
                let by = actor.to_string();
                next.last_update = Some(StatusUpdate {
                    at: now,
                    by,
                    text: text.clone(),
                });
                let mut effects = vec![Effect::Post {
                    destination: Destination::IncidentChannel,
                    message: render::status_update(&next, &text, actor, now),
                }];
                let mut events = vec![EventKind::UpdatePosted { text: text.clone() }];
                let mut reply = format!("Status update posted to {id}.");
                stakeholders::on_update(
                    &mut next,
                    &text,
                    public,
                    now,
                    policy.stakeholders,
                    (&mut events, &mut effects, &mut reply),
                );
                (events, effects, reply)
            }
            Change::MarkSecurity => regulatory::mark(&mut next, policy.stakeholders)?,
            Change::AckRegulatory => regulatory::acknowledge(&mut next, actor, now)?,
            Change::Resolve(summary) => {
                let summary = clean_text("summary", &summary, MAX_TEXT_CHARS)?;
                regulatory::may_resolve(incident)?;
                let from = incident.status;
                next.status = Status::Resolved;
                next.resolved_at = Some(now);
                next.resolution = Some(summary.clone());
                let message = render::resolved(&next, actor);
                let mut effects = vec![
                    Effect::SetTopic {
                        topic: render::topic(&next),
                    },
                    Effect::Post {
                        destination: Destination::IncidentChannel,
                        message: message.clone(),
                    },
                    Effect::Post {
                        destination: Destination::Announcements,
                        message,
                    },
                ];
                effects.extend(paged_targets(&next, policy).into_iter().map(|target| {
                    Effect::Page {
                        action: PageAction::Resolve,
                        dedup_key: dedup_key(id, &target),
                        summary: format!("{id} resolved: {}", next.title),
                        severity: page_severity(next.severity).into(),
                        target,
                    }
                }));
                let mut events = vec![
                    EventKind::StatusChanged {
                        from,
                        to: Status::Resolved,
                    },
                    EventKind::Resolved { summary },
                ];
                let mut reply = format!("{id} resolved. Thank you, {actor_mention}.");
                stakeholders::on_resolve(
                    &mut next,
                    now,
                    policy.stakeholders,
                    (&mut events, &mut effects, &mut reply),
                );
                (events, effects, reply)
            }
            Change::TimerFired { kind, due_at } => {
                // Stored due times have millisecond precision: compare at that precision,
                // or a state time with microseconds would make every timer look moved.
                let planned = timers::plan(incident, policy).into_iter().any(|t| {
                    t.kind == kind && t.due_at.timestamp_millis() == due_at.timestamp_millis()
                });
                if !planned {
                    return Err(DomainError::Unchanged(format!(
                        "{id}: timer {kind} is no longer wanted"
                    )));
                }
                let (events, effects) = fire_timer(&mut next, &kind, due_at, now, policy);
                (events, effects, String::new())
            }
            Change::ChannelOpened(channel) => {
                if incident.channel.as_ref() == Some(&channel) {
                    return Err(DomainError::Unchanged(format!(
                        "{id} already has channel {}.",
                        channel.name
                    )));
                }
                next.channel = Some(channel.clone());
                (
                    vec![EventKind::ChannelOpened {
                        channel_id: channel.id,
                        name: channel.name,
                    }],
                    vec![],
                    String::new(),
                )
            }
        };
    Ok(Decision {
        incident: next,
        events,
        effects,
        reply,
    })
}

/// PagerDuty dedup key of an escalation target's page for one incident.
pub fn dedup_key(id: IncidentId, target: &str) -> String {
    format!("klaxon-{}-{target}", id.0)
}

/// PagerDuty payload severity for an incident severity.
pub fn page_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Sev1 => "critical",
        Severity::Sev2 => "error",
        Severity::Sev3 => "warning",
        Severity::Sev4 => "info",
    }
}

/// Targets already paged for this incident (to resolve their alerts).
fn paged_targets(incident: &Incident, policy: Policy<'_>) -> Vec<String> {
    let mut targets: Vec<String> = incident
        .fired_timers
        .iter()
        .filter_map(|k| k.strip_prefix("escalation:").map(str::to_string))
        .collect();
    if incident
        .fired_timers
        .contains(&TimerKind::ResponseDeadline.key())
        && let Some(first) = policy.escalation.ladder(incident.severity).first()
        && !targets.contains(&first.target)
    {
        targets.push(first.target.clone());
    }
    targets
}

/// What a due timer does: records it and says what to send.
fn fire_timer(
    next: &mut Incident,
    kind: &TimerKind,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: Policy<'_>,
) -> (Vec<EventKind>, Vec<Effect>) {
    let late = timers::lateness(due_at, now);
    let late_by_secs = late.map(|d| d.num_seconds());
    if kind.once_per_incident() {
        next.fired_timers.insert(kind.key());
    }
    let post = |message| Effect::Post {
        destination: Destination::IncidentChannel,
        message,
    };
    let page = |target: &str, summary: String| Effect::Page {
        action: PageAction::Trigger,
        target: target.to_string(),
        dedup_key: dedup_key(next.id, target),
        summary,
        severity: page_severity(next.severity).into(),
    };
    match kind {
        TimerKind::StatusReminder => {
            next.last_reminder_at = Some(now);
            (
                vec![EventKind::ReminderSent { late_by_secs }],
                vec![post(render::status_reminder(next, now, late, policy))],
            )
        }
        TimerKind::ResponseDeadline => {
            let message = render::response_missed(next, late);
            let mut effects = vec![
                post(message.clone()),
                Effect::Post {
                    destination: Destination::Announcements,
                    message,
                },
            ];
            // The first step's own timer may have paged its target already (both are
            // due together when nobody took command): one page per target.
            if let Some(first) = policy.escalation.ladder(next.severity).first()
                && !next.fired_timers.contains(
                    &TimerKind::Escalation {
                        target: first.target.clone(),
                    }
                    .key(),
                )
            {
                let summary = format!(
                    "{} {}: nobody has taken command: {}",
                    next.id, next.severity, next.title
                );
                effects.push(page(&first.target, summary));
            }
            (vec![EventKind::ResponseMissed { late_by_secs }], effects)
        }
        TimerKind::Escalation { target } => {
            let age = render::duration(now - next.declared_at);
            let summary = format!(
                "{} {} unmitigated for {age}: {}",
                next.id, next.severity, next.title
            );
            let message = render::escalated(next, target, now, late);
            // Paged already by the response deadline (the ladder's first target, when
            // nobody took command): the notice and post still go out, the page does not.
            let paged_by_deadline = next
                .fired_timers
                .contains(&TimerKind::ResponseDeadline.key())
                && policy
                    .escalation
                    .ladder(next.severity)
                    .first()
                    .is_some_and(|first| first.target == *target);
            let mut effects = Vec::with_capacity(3);
            if !paged_by_deadline {
                effects.push(page(target, summary));
            }
            effects.push(Effect::NotifyTarget {
                target: target.clone(),
                message: message.clone(),
            });
            effects.push(post(message));
            (
                vec![EventKind::Escalated {
                    target: target.clone(),
                    late_by_secs,
                }],
                effects,
            )
        }
        TimerKind::RtoWatch { percent } => (
            vec![EventKind::RtoCheckpoint {
                percent: *percent,
                late_by_secs,
            }],
            vec![post(render::rto_checkpoint(
                next, *percent, now, late, policy,
            ))],
        ),
        TimerKind::StakeholderCadence { group } => {
            let effects = stakeholders::on_cadence(next, group, now, policy.stakeholders);
            (
                vec![EventKind::StakeholdersNotified {
                    notice: stakeholders::NoticeKind::StillInvestigating,
                    groups: vec![group.clone()],
                }],
                effects,
            )
        }
        TimerKind::RegulatoryReminder => {
            regulatory::fire(next, now, late_by_secs, policy.stakeholders)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn declared() -> Decision {
        let sev = SeverityPolicies::default();
        let cal = BusinessCalendar::default();
        let esc = EscalationPolicy::default();
        declare(
            IncidentId(7),
            Severity::Sev1,
            "  Database   is down ",
            &Actor::User("UALICE".into()),
            at("2026-11-23T10:00:00Z"),
            Policy {
                severities: &sev,
                calendar: &cal,
                escalation: &esc,
                stakeholders: &StakeholderPolicy::default(),
            },
        )
        .unwrap()
    }

    fn change(incident: &Incident, change: Change) -> Result<Decision, DomainError> {
        let sev = SeverityPolicies::default();
        let cal = BusinessCalendar::default();
        let esc = EscalationPolicy::default();
        apply(
            incident,
            change,
            &Actor::User("UBOB".into()),
            at("2026-11-23T10:20:00Z"),
            Policy {
                severities: &sev,
                calendar: &cal,
                escalation: &esc,
                stakeholders: &StakeholderPolicy::default(),
            },
        )
    }

    #[test]
    fn declaring_makes_the_declarer_commander_and_opens_a_channel() {
        let d = declared();
        assert_eq!(d.incident.title, "Database is down");
        assert_eq!(d.incident.commander(), Some("UALICE"));
        assert_eq!(
            d.incident.planned_channel_name,
            "inc-20261123-database-is-down"
        );
        assert_eq!(
            d.events[0],
            EventKind::Declared {
                severity: Severity::Sev1,
                title: "Database is down".into(),
                respond_by: at("2026-11-23T10:15:00Z")
            }
        );
        assert!(
            matches!(&d.effects[0], Effect::OpenIncidentChannel { invite, .. } if invite == &vec!["UALICE".to_string()])
        );
        assert!(matches!(
            &d.effects[3],
            Effect::Post {
                destination: Destination::Announcements,
                ..
            }
        ));
    }

    #[test]
    fn an_empty_title_is_refused_with_the_field() {
        let sev = SeverityPolicies::default();
        let cal = BusinessCalendar::default();
        let esc = EscalationPolicy::default();
        let err = declare(
            IncidentId(1),
            Severity::Sev2,
            "   ",
            &Actor::User("U".into()),
            at("2026-11-23T10:00:00Z"),
            Policy {
                severities: &sev,
                calendar: &cal,
                escalation: &esc,
                stakeholders: &StakeholderPolicy::default(),
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "title: must not be empty");
    }

    #[test]
    fn handing_over_command_records_the_previous_holder_and_updates_the_topic() {
        let d = change(
            &declared().incident,
            Change::AssignRole {
                role: Role::Commander,
                user: "UBOB".into(),
            },
        )
        .unwrap();
        assert_eq!(
            d.events,
            vec![EventKind::RoleAssigned {
                role: Role::Commander,
                user: "UBOB".into(),
                previous: Some("UALICE".into())
            }]
        );
        assert!(
            d.effects
                .iter()
                .any(|e| matches!(e, Effect::SetTopic { topic } if topic.contains("IC: <@UBOB>")))
        );
        let again = change(
            &d.incident,
            Change::AssignRole {
                role: Role::Commander,
                user: "UBOB".into(),
            },
        );
        assert!(matches!(again, Err(DomainError::Unchanged(_))));
    }

    #[test]
    fn severity_and_status_changes_are_recorded_and_refused_when_unchanged() {
        let inc = declared().incident;
        let d = change(&inc, Change::ChangeSeverity(Severity::Sev2)).unwrap();
        assert_eq!(
            d.events,
            vec![EventKind::SeverityChanged {
                from: Severity::Sev1,
                to: Severity::Sev2
            }]
        );
        assert!(change(&inc, Change::ChangeSeverity(Severity::Sev1)).is_err());
        let d = change(&inc, Change::SetStatus(Status::Identified)).unwrap();
        assert_eq!(d.incident.status, Status::Identified);
        assert!(change(&inc, Change::SetStatus(Status::Investigating)).is_err());
        assert!(change(&inc, Change::SetStatus(Status::Resolved)).is_err());
    }

    #[test]
    fn an_update_is_remembered_as_the_last_update() {
        let d = change(
            &declared().incident,
            Change::PostUpdate(" rolled back ".into()),
        )
        .unwrap();
        let last = d.incident.last_update.unwrap();
        assert_eq!(last.text, "rolled back");
        assert_eq!(last.at, at("2026-11-23T10:20:00Z"));
        assert!(change(&declared().incident, Change::PostUpdate(" ".into())).is_err());
    }

    #[test]
    fn a_resolved_incident_refuses_changes() {
        let d = change(
            &declared().incident,
            Change::Resolve("Failed over to the replica".into()),
        )
        .unwrap();
        assert_eq!(d.incident.status, Status::Resolved);
        assert_eq!(
            d.incident.resolution.as_deref(),
            Some("Failed over to the replica")
        );
        let err = change(&d.incident, Change::PostUpdate("late".into())).unwrap_err();
        assert_eq!(err, DomainError::Resolved(IncidentId(7)));
        // The channel may still be reported after resolution (the outbox is behind).
        assert!(
            change(
                &d.incident,
                Change::ChannelOpened(IncidentChannel {
                    id: "C1".into(),
                    name: "x".into()
                })
            )
            .is_ok()
        );
    }
}
