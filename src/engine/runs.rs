//! Recovery command runs through the engine: every step (request, preview, each click,
//! start, result, cancellation) is a conditional state change plus timeline events plus
//! outbox rows, in one transaction.
//!
//! Approvals are rows the store guards (migration 0005): the run row is locked, the
//! approval inserted and the approvals counted in the same transaction, so twenty racing
//! approvers release a run exactly once. After every decision a `PrepareRun` job on the
//! run's lane brings its approval message up to date (`chat.update`).
//!
//! This file: a run's request, preview and approval message, and the helpers every step
//! shares; `approvals` records Approve/Deny clicks; `execution` starts and finishes
//! runs and cancels those a resolve leaves behind.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, RequestMeta, incident_key};
use crate::domain::access::Eligible;
use crate::domain::approval::{Refusal, RunState};
use crate::domain::incident::{Actor, Destination, DomainError, Effect, EventKind, IncidentId};
use crate::domain::message::{Message, Span};
use crate::domain::outbound::Outbound;
use crate::store::{NewRun, RunRow, RunUpdate, StoreTx};

pub use crate::domain::outbound::run_key;

mod approvals;
mod execution;

/// The job that brings a run forward: prepares it while `preparing`, then posts or
/// updates its approval message to match its state (see `commands::execution`).
fn sync(run_id: i64) -> (String, Outbound) {
    (run_key(run_id), Outbound::PrepareRun { run_id })
}

/// How a prepared run moves on.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// `Pending` (ask for approval), `Approved` (no approval needed), `DryRun` or
    /// `Failed` (the preview itself failed).
    pub state: RunState,
    /// Preview JSON.
    pub preview: Option<String>,
    /// Error JSON when the preview failed.
    pub result: Option<String>,
    /// What to post in the incident channel (not for `Pending`: the approval message is
    /// posted by the job itself, which records where).
    pub message: Option<Message>,
}

/// How an executed run ended.
#[derive(Clone, Debug)]
pub struct Finished {
    /// `Succeeded`, `Failed` or `OutcomeUnknown`.
    pub state: RunState,
    /// Result JSON.
    pub result: String,
    /// One line for the timeline.
    pub summary: String,
    /// The API's request id.
    pub request_id: Option<String>,
    /// What to post in the incident channel.
    pub message: Message,
}

/// What a click is, besides who pressed what.
#[derive(Clone, Debug)]
pub struct ClickContext {
    /// Whether the clicker is a full member of the app's workspace (`users.info`).
    pub member: bool,
    /// The approver rule in words, for refusals.
    pub policy: String,
    /// A refusal decided before the run was looked at (wrong channel, message, team or
    /// app): recorded, nothing else happens.
    pub refused: Option<Refusal>,
}

/// Whether a worker may execute a run.
#[derive(Clone, Debug)]
pub enum Begin {
    /// Yes: it is now `executing` under a lease.
    Run(Box<RunRow>),
    /// No: not approved (any more), or another worker has it.
    Nothing,
}

fn klaxon(run_id: i64) -> RequestMeta {
    RequestMeta {
        actor: Actor::Klaxon,
        request_id: run_key(run_id),
        dedupe: None,
    }
}

fn closed_message(run: &RunRow, state: RunState, reason: &str) -> Message {
    Message::paragraph(vec![
        Span::bold(format!(
            ":no_entry: Run #{} {} {state}",
            run.id, run.command
        )),
        Span::text(format!(": {reason}. Nothing was changed.")),
    ])
}

impl Engine {
    /// Appends events to an incident's timeline and queues outbound rows, holding the
    /// incident's lock so the hash chain stays linear.
    async fn record(
        &self,
        tx: &mut StoreTx,
        meta: &RequestMeta,
        incident_id: IncidentId,
        events: &[EventKind],
        outbound: Vec<(String, Outbound)>,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        tx.lock_incident(incident_id)
            .await?
            .ok_or(EngineError::NotFound(incident_id))?;
        tx.append_events(incident_id, now, &meta.actor, &meta.request_id, events)
            .await?;
        for (key, out) in outbound {
            tx.enqueue(&key, Some(incident_id), &out.to_json(), now)
                .await?;
        }
        Ok(())
    }

    fn post(incident_id: IncidentId, message: Message) -> (String, Outbound) {
        let effect = Effect::Post {
            destination: Destination::IncidentChannel,
            message,
        };
        (
            incident_key(incident_id),
            Outbound::Incident {
                incident_id,
                effect,
            },
        )
    }

    /// Stores a validated run request with the approvers eligible right now (frozen: a
    /// role taken later grants nothing) and queues its preview. Refused when the incident
    /// is resolved.
    pub async fn request_run(
        &self,
        meta: &RequestMeta,
        run: &NewRun<'_>,
        params_display: &str,
        eligible: &[Eligible],
    ) -> Result<i64, EngineError> {
        let now = self.now();
        let mut tx = self.begin(meta, now).await?;
        let incident = tx
            .lock_incident(run.incident_id)
            .await?
            .ok_or(EngineError::NotFound(run.incident_id))?;
        if !incident.is_open() {
            return Err(DomainError::Resolved(incident.id).into());
        }
        let run_id = tx.insert_run(run, now).await?;
        tx.insert_eligible(run_id, eligible).await?;
        let events = [
            EventKind::RunRequested {
                run_id,
                command: run.command.to_string(),
                params: params_display.to_string(),
            },
            EventKind::RunEligibility {
                run_id,
                eligible: eligible
                    .iter()
                    .map(|e| format!("{}@{}", e.user, e.source))
                    .collect(),
            },
        ];
        self.record(
            &mut tx,
            meta,
            run.incident_id,
            &events,
            vec![sync(run_id)],
            now,
        )
        .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(run_id)
    }

    /// Records a run's preview and moves it on; `false` if it was no longer preparing.
    pub async fn run_prepared(
        &self,
        run: &RunRow,
        prepared: Prepared,
    ) -> Result<bool, EngineError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        // Incident first, then the run (the order every change takes).
        tx.lock_incident(run.incident_id)
            .await?
            .ok_or(EngineError::NotFound(run.incident_id))?;
        let set = RunUpdate {
            preview: prepared.preview.as_deref(),
            result: prepared.result.as_deref(),
            ..Default::default()
        };
        if !tx
            .transition_run(run.id, RunState::Preparing, prepared.state, set, now)
            .await?
        {
            return Ok(false);
        }
        let mut outbound: Vec<_> = prepared
            .message
            .map(|m| Self::post(run.incident_id, m))
            .into_iter()
            .collect();
        if prepared.state == RunState::Approved {
            outbound.push((run_key(run.id), Outbound::ExecuteRun { run_id: run.id }));
        }
        let event = EventKind::RunPrepared {
            run_id: run.id,
            state: prepared.state,
        };
        self.record(
            &mut tx,
            &klaxon(run.id),
            run.incident_id,
            &[event],
            outbound,
            now,
        )
        .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(true)
    }

    /// Remembers where a run's approval message was posted, so later decisions update it.
    pub async fn run_message_posted(
        &self,
        run_id: i64,
        channel: &str,
        ts: &str,
    ) -> Result<(), EngineError> {
        let mut tx = self.store.begin().await?;
        tx.set_approval_message(run_id, channel, ts).await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(())
    }

    /// The incident a run belongs to (it never changes), read before a transaction so the
    /// transaction can lock the incident first, then the run: the order every change
    /// takes on PostgreSQL.
    async fn run_incident(&self, run_id: i64) -> Result<Option<IncidentId>, EngineError> {
        Ok(self.store.run(run_id).await?.map(|r| r.incident_id))
    }
}
