//! Recovery command runs through the engine: every step (request, preview, each click,
//! start, result) is a conditional state change plus timeline events plus outbox rows, in
//! one transaction.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, RequestMeta, incident_key};
use crate::domain::approval::{self, Click, ClickOutcome, RunState, RunView};
use crate::domain::incident::{Actor, Destination, DomainError, Effect, EventKind, IncidentId};
use crate::domain::message::Message;
use crate::outbox::Outbound;
use crate::store::{NewRun, RunRow, RunUpdate, StoreTx};

/// The outbox ordering key of a run's jobs.
pub fn run_key(run_id: i64) -> String {
    format!("run:{run_id}")
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
    /// What to post in the incident channel.
    pub message: Message,
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

    /// Stores a validated run request and queues its preview. Refused when the incident is
    /// resolved.
    pub async fn request_run(
        &self,
        meta: &RequestMeta,
        run: &NewRun<'_>,
        params_display: &str,
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
        let event = EventKind::RunRequested {
            run_id,
            command: run.command.to_string(),
            params: params_display.to_string(),
        };
        self.record(
            &mut tx,
            meta,
            run.incident_id,
            &[event],
            vec![(run_key(run_id), Outbound::PrepareRun { run_id })],
            now,
        )
        .await?;
        tx.commit().await?;
        self.wakers.outbox.notify_one();
        Ok(run_id)
    }

    /// Records a run's preview and moves it on; `false` if it was no longer preparing.
    pub async fn run_prepared(
        &self,
        run: &RunRow,
        prepared: Prepared,
    ) -> Result<bool, EngineError> {
        let now = self.now();
        let meta = RequestMeta {
            actor: Actor::Klaxon,
            request_id: run_key(run.id),
            dedupe: None,
        };
        let mut tx = self.store.begin().await?;
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
        let mut outbound = vec![Self::post(run.incident_id, prepared.message)];
        if prepared.state == RunState::Approved {
            outbound.push((run_key(run.id), Outbound::ExecuteRun { run_id: run.id }));
        }
        let event = EventKind::RunPrepared {
            run_id: run.id,
            state: prepared.state,
        };
        self.record(&mut tx, &meta, run.incident_id, &[event], outbound, now)
            .await?;
        tx.commit().await?;
        self.wakers.outbox.notify_one();
        Ok(true)
    }

    /// One Approve/Deny click. `may_approve` is the command's approver policy evaluated for
    /// the clicker, `policy` its description. Every click lands on the timeline, refused
    /// ones included; an approval that completes the count queues the execution.
    pub async fn click_run(
        &self,
        meta: &RequestMeta,
        run_id: i64,
        click: Click,
        may_approve: bool,
        policy: &str,
        message: impl Fn(&ClickOutcome, &RunRow) -> Option<Message>,
    ) -> Result<ClickOutcome, EngineError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let run = tx.lock_run(run_id).await?.ok_or_else(|| {
            EngineError::Refused(DomainError::Invalid {
                field: "run",
                rule: format!("run #{run_id} does not exist"),
            })
        })?;
        let incident = tx
            .lock_incident(run.incident_id)
            .await?
            .ok_or(EngineError::NotFound(run.incident_id))?;
        let clicker = meta.actor.to_string();
        let view = RunView {
            requester: run.requester.clone(),
            approvers: run.approvers.clone(),
            required: run.required as u32,
            state: run.state,
            expires_at: run.expires_at,
        };
        let outcome = approval::click(
            &view,
            &clicker,
            click,
            may_approve,
            policy,
            incident.is_open(),
            now,
        );
        let mut outbound = Vec::new();
        let label = match &outcome {
            ClickOutcome::Recorded { approvers } => {
                let set = RunUpdate {
                    approvers: Some(approvers),
                    ..Default::default()
                };
                tx.transition_run(run_id, RunState::Pending, RunState::Pending, set, now)
                    .await?;
                "recorded".to_string()
            }
            ClickOutcome::Approved { approvers } => {
                let set = RunUpdate {
                    approvers: Some(approvers),
                    ..Default::default()
                };
                tx.transition_run(run_id, RunState::Pending, RunState::Approved, set, now)
                    .await?;
                outbound.push((run_key(run_id), Outbound::ExecuteRun { run_id }));
                "approved".to_string()
            }
            ClickOutcome::Denied => {
                tx.transition_run(
                    run_id,
                    RunState::Pending,
                    RunState::Denied,
                    RunUpdate::default(),
                    now,
                )
                .await?;
                "denied".to_string()
            }
            ClickOutcome::Refused(reason) => {
                if *reason == approval::Refusal::Expired {
                    tx.transition_run(
                        run_id,
                        RunState::Pending,
                        RunState::Expired,
                        RunUpdate::default(),
                        now,
                    )
                    .await?;
                }
                format!("refused: {reason}")
            }
        };
        if let Some(message) = message(&outcome, &run) {
            outbound.push(Self::post(run.incident_id, message));
        }
        let click_name = match click {
            Click::Approve => "approve",
            Click::Deny => "deny",
        };
        let event = EventKind::RunClicked {
            run_id,
            click: click_name.to_string(),
            outcome: label,
        };
        self.record(&mut tx, meta, run.incident_id, &[event], outbound, now)
            .await?;
        tx.commit().await?;
        self.wakers.outbox.notify_one();
        Ok(outcome)
    }

    /// Moves an approved run to `executing` with a lease; `None` if it was not approved
    /// (already started by another worker, or never approved).
    pub async fn begin_execution(
        &self,
        run_id: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<RunRow>, EngineError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let Some(run) = tx.lock_run(run_id).await? else {
            return Ok(None);
        };
        let set = RunUpdate {
            executing_until: Some(lease_until),
            ..Default::default()
        };
        if !tx
            .transition_run(run_id, RunState::Approved, RunState::Executing, set, now)
            .await?
        {
            return Ok(None);
        }
        let meta = RequestMeta {
            actor: Actor::Klaxon,
            request_id: run_key(run_id),
            dedupe: None,
        };
        self.record(
            &mut tx,
            &meta,
            run.incident_id,
            &[EventKind::RunStarted { run_id }],
            vec![],
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(run))
    }

    /// Records how an executing run ended; `false` if it was no longer executing (it was
    /// declared `outcome_unknown` meanwhile: the late result is still logged).
    pub async fn finish_execution(
        &self,
        run: &RunRow,
        finished: Finished,
    ) -> Result<bool, EngineError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let set = RunUpdate {
            result: Some(&finished.result),
            ..Default::default()
        };
        if !tx
            .transition_run(run.id, RunState::Executing, finished.state, set, now)
            .await?
        {
            tracing::error!(run_id = run.id, result = %finished.summary, "a run finished after it was declared outcome_unknown");
            return Ok(false);
        }
        let meta = RequestMeta {
            actor: Actor::Klaxon,
            request_id: run_key(run.id),
            dedupe: None,
        };
        let event = EventKind::RunFinished {
            run_id: run.id,
            state: finished.state,
            summary: finished.summary,
            request_id: finished.request_id,
        };
        self.record(
            &mut tx,
            &meta,
            run.incident_id,
            &[event],
            vec![Self::post(run.incident_id, finished.message)],
            now,
        )
        .await?;
        tx.commit().await?;
        self.wakers.outbox.notify_one();
        Ok(true)
    }
}
