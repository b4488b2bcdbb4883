//! Recovery command runs through the engine: every step (request, preview, each click,
//! start, result, cancellation) is a conditional state change plus timeline events plus
//! outbox rows, in one transaction.
//!
//! Approvals are rows the store guards (migration 0005): the run row is locked, the
//! approval inserted and the approvals counted in the same transaction, so twenty racing
//! approvers release a run exactly once. After every decision a `PrepareRun` job on the
//! run's lane brings its approval message up to date (`chat.update`).

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, RequestMeta, incident_key};
use crate::domain::access::Eligible;
use crate::domain::approval::{self, Click, ClickOutcome, Refusal, RunState, RunView};
use crate::domain::incident::{
    Actor, Decision, Destination, DomainError, Effect, EventKind, Incident, IncidentId,
};
use crate::domain::message::{Message, Span};
use crate::domain::outbound::Outbound;
use crate::store::{ApprovalWrite, NewRun, RunRow, RunUpdate, StoreTx};

pub use crate::domain::outbound::run_key;

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

    /// One Approve/Deny click. Every click lands on the timeline, refused ones included;
    /// an approval that completes the count (counted by the store in this transaction)
    /// queues the execution, and every decision queues the approval message's update.
    pub async fn click_run(
        &self,
        meta: &RequestMeta,
        run_id: i64,
        click: Click,
        ctx: ClickContext,
        message: impl Fn(&ClickOutcome, &RunRow) -> Option<Message>,
    ) -> Result<ClickOutcome, EngineError> {
        let now = self.now();
        let missing = || {
            EngineError::Refused(DomainError::Invalid {
                field: "run",
                rule: format!("run #{run_id} does not exist"),
            })
        };
        let incident_id = self.run_incident(run_id).await?.ok_or_else(missing)?;
        let mut tx = self.store.begin().await?;
        let incident = tx
            .lock_incident(incident_id)
            .await?
            .ok_or(EngineError::NotFound(incident_id))?;
        let run = tx.lock_run(run_id).await?.ok_or_else(missing)?;
        let clicker = meta.actor.to_string();
        let outcome = match ctx.refused {
            Some(refusal) => ClickOutcome::Refused(refusal),
            None => {
                let view = RunView {
                    requester: run.requester.clone(),
                    approvers: run.approver_ids(),
                    eligible: tx.eligible_users(run_id).await?,
                    required: run.required as u32,
                    state: run.state,
                    expires_at: run.expires_at,
                };
                approval::click(
                    &view,
                    &clicker,
                    ctx.member,
                    click,
                    &ctx.policy,
                    incident.is_open(),
                    now,
                )
            }
        };
        let mut outbound = Vec::new();
        let (outcome, label) = match outcome {
            ClickOutcome::Recorded { .. } | ClickOutcome::Approved { .. } => {
                match tx.approve(run_id, &clicker, now).await? {
                    ApprovalWrite::Refused(rule) => {
                        // The transaction is spoiled (PostgreSQL aborts it): record the
                        // refusal in a fresh one.
                        drop(tx);
                        return self
                            .store_refused_click(meta, &run, click, rule, message)
                            .await;
                    }
                    ApprovalWrite::Counted(count) => {
                        let approvers = tx.lock_run(run_id).await?.map(|r| r.approver_ids());
                        let approvers = approvers.unwrap_or_default();
                        outbound.push(sync(run_id));
                        if count as i64 >= run.required {
                            tx.transition_run(
                                run_id,
                                RunState::Pending,
                                RunState::Approved,
                                RunUpdate::default(),
                                now,
                            )
                            .await?;
                            outbound.push((run_key(run_id), Outbound::ExecuteRun { run_id }));
                            (ClickOutcome::Approved { approvers }, "approved".to_string())
                        } else {
                            (ClickOutcome::Recorded { approvers }, "recorded".to_string())
                        }
                    }
                }
            }
            ClickOutcome::Denied | ClickOutcome::Cancelled => {
                let (to, reason) = if outcome == ClickOutcome::Denied {
                    (RunState::Denied, "denied")
                } else {
                    (RunState::Cancelled, "withdrawn by the requester")
                };
                let set = RunUpdate {
                    closed: Some((&clicker, reason)),
                    ..Default::default()
                };
                tx.transition_run(run_id, RunState::Pending, to, set, now)
                    .await?;
                outbound.push(sync(run_id));
                let label = if to == RunState::Denied {
                    "denied"
                } else {
                    "cancelled"
                };
                (outcome, label.to_string())
            }
            ClickOutcome::Refused(reason) => {
                if reason == Refusal::Expired {
                    let set = RunUpdate {
                        closed: Some(("klaxon", "nobody approved it in time")),
                        ..Default::default()
                    };
                    tx.transition_run(run_id, RunState::Pending, RunState::Expired, set, now)
                        .await?;
                    outbound.push(sync(run_id));
                }
                let label = format!("refused: {reason}");
                (ClickOutcome::Refused(reason), label)
            }
        };
        if let Some(message) = message(&outcome, &run) {
            outbound.push(Self::post(run.incident_id, message));
        }
        let event = EventKind::RunClicked {
            run_id,
            click: click.as_str().to_string(),
            outcome: label,
        };
        self.record(&mut tx, meta, run.incident_id, &[event], outbound, now)
            .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(outcome)
    }

    /// Records a click the store itself refused (a trigger of migration 0005).
    async fn store_refused_click(
        &self,
        meta: &RequestMeta,
        run: &RunRow,
        click: Click,
        rule: String,
        message: impl Fn(&ClickOutcome, &RunRow) -> Option<Message>,
    ) -> Result<ClickOutcome, EngineError> {
        let now = self.now();
        let outcome = ClickOutcome::Refused(Refusal::WrongPlace(rule));
        let mut tx = self.store.begin().await?;
        let event = EventKind::RunClicked {
            run_id: run.id,
            click: click.as_str().to_string(),
            outcome: match &outcome {
                ClickOutcome::Refused(r) => format!("refused: {r}"),
                _ => unreachable!(),
            },
        };
        let outbound = message(&outcome, run)
            .map(|m| Self::post(run.incident_id, m))
            .into_iter()
            .collect();
        self.record(&mut tx, meta, run.incident_id, &[event], outbound, now)
            .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(outcome)
    }

    /// The incident a run belongs to (it never changes), read before a transaction so the
    /// transaction can lock the incident first, then the run: the order every change
    /// takes on PostgreSQL.
    async fn run_incident(&self, run_id: i64) -> Result<Option<IncidentId>, EngineError> {
        Ok(self.store.run(run_id).await?.map(|r| r.incident_id))
    }

    /// Moves an approved run to `executing` with a lease, after checking again that it may
    /// run: not expired, incident open, approvals adding up. A run that may not ends
    /// `expired` or `cancelled`, and the channel is told.
    pub async fn begin_execution(
        &self,
        run_id: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<Begin, EngineError> {
        let now = self.now();
        let Some(incident_id) = self.run_incident(run_id).await? else {
            return Ok(Begin::Nothing);
        };
        // Durable: once this commits the SDK call goes out, and a power cut must not roll
        // it back to `approved` (a second execution after restart).
        let mut tx = self.store.begin_durable().await?;
        let incident = tx
            .lock_incident(incident_id)
            .await?
            .ok_or(EngineError::NotFound(incident_id))?;
        let Some(run) = tx.lock_run(run_id).await? else {
            return Ok(Begin::Nothing);
        };
        if run.state != RunState::Approved {
            return Ok(Begin::Nothing);
        }
        let checked = approval::may_execute(
            run.expires_at,
            incident.is_open(),
            run.approvers
                .iter()
                .filter(|a| a.approver != run.requester)
                .count() as u32,
            run.required as u32,
            now,
        );
        if let Err(late) = checked {
            let reason = late.to_string();
            let state = late.state();
            let set = RunUpdate {
                closed: Some(("klaxon", &reason)),
                ..Default::default()
            };
            if tx
                .transition_run(run_id, RunState::Approved, state, set, now)
                .await?
            {
                let event = EventKind::RunClosed {
                    run_id,
                    state,
                    reason: reason.clone(),
                };
                let outbound = vec![
                    Self::post(run.incident_id, closed_message(&run, state, &reason)),
                    sync(run_id),
                ];
                self.record(
                    &mut tx,
                    &klaxon(run_id),
                    run.incident_id,
                    &[event],
                    outbound,
                    now,
                )
                .await?;
                let committed = tx.commit().await?;
                self.woke(committed);
            }
            return Ok(Begin::Nothing);
        }
        let set = RunUpdate {
            executing_until: Some(lease_until),
            ..Default::default()
        };
        if !tx
            .transition_run(run_id, RunState::Approved, RunState::Executing, set, now)
            .await?
        {
            return Ok(Begin::Nothing);
        }
        self.record(
            &mut tx,
            &klaxon(run_id),
            run.incident_id,
            &[EventKind::RunStarted { run_id }],
            vec![sync(run_id)],
            now,
        )
        .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(Begin::Run(Box::new(run)))
    }

    /// Records how an executing run ended; `false` if it was no longer executing. A result
    /// that arrives after the run was declared `outcome_unknown` is still recorded on the
    /// timeline and posted: people checking by hand need it.
    pub async fn finish_execution(
        &self,
        run: &RunRow,
        finished: Finished,
    ) -> Result<bool, EngineError> {
        let now = self.now();
        // Durable, like the start: the recorded outcome is what people act on.
        let mut tx = self.store.begin_durable().await?;
        // Incident first, as everywhere (`record` below appends to its timeline).
        tx.lock_incident(run.incident_id)
            .await?
            .ok_or(EngineError::NotFound(run.incident_id))?;
        let set = RunUpdate {
            result: Some(&finished.result),
            ..Default::default()
        };
        if !tx
            .transition_run(run.id, RunState::Executing, finished.state, set, now)
            .await?
        {
            let current = tx.lock_run(run.id).await?.map(|r| r.state);
            if current == Some(RunState::OutcomeUnknown)
                && finished.state != RunState::OutcomeUnknown
            {
                tracing::warn!(run_id = run.id, result = %finished.summary, "a run finished after it was declared outcome_unknown; recording the late result");
                let event = EventKind::RunLateResult {
                    run_id: run.id,
                    state: finished.state,
                    summary: finished.summary.clone(),
                    request_id: finished.request_id.clone(),
                };
                let late = Message::paragraph(vec![
                    Span::bold(format!(
                        ":information_source: Late result for run #{} {} (declared outcome unknown earlier)",
                        run.id, run.command
                    )),
                    Span::text(
                        ": the API finally answered. The run stays `outcome_unknown`; verify by hand.",
                    ),
                ]);
                let outbound = vec![
                    Self::post(run.incident_id, late),
                    Self::post(run.incident_id, finished.message),
                ];
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
            }
            return Ok(false);
        }
        let event = EventKind::RunFinished {
            run_id: run.id,
            state: finished.state,
            summary: finished.summary,
            request_id: finished.request_id,
        };
        self.record(
            &mut tx,
            &klaxon(run.id),
            run.incident_id,
            &[event],
            vec![Self::post(run.incident_id, finished.message), sync(run.id)],
            now,
        )
        .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(true)
    }

    /// When `decision` resolves `before`, cancels the incident's runs that have not started
    /// (preparing, pending, approved) in the same transaction: their buttons go away and the
    /// channel is told. A run already executing cannot be stopped and is left to finish.
    pub(super) async fn close_runs_on_resolve(
        &self,
        tx: &mut StoreTx,
        before: &Incident,
        decision: &mut Decision,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if !before.is_open() || decision.incident.is_open() {
            return Ok(());
        }
        let reason = "the incident was resolved";
        let mut cancelled = Vec::new();
        for (run_id, state) in tx.open_runs_of(before.id).await? {
            let set = RunUpdate {
                closed: Some(("klaxon", reason)),
                ..Default::default()
            };
            if tx
                .transition_run(run_id, state, RunState::Cancelled, set, now)
                .await?
            {
                decision.events.push(EventKind::RunClosed {
                    run_id,
                    state: RunState::Cancelled,
                    reason: reason.to_string(),
                });
                let (key, job) = sync(run_id);
                tx.enqueue(&key, Some(before.id), &job.to_json(), now)
                    .await?;
                cancelled.push(format!("#{run_id}"));
            }
        }
        if !cancelled.is_empty() {
            decision.effects.push(Effect::Post {
                destination: Destination::IncidentChannel,
                message: Message::paragraph(vec![Span::text(format!(
                    ":no_entry: Recovery run{} {} cancelled: {reason}. Nothing was run.",
                    if cancelled.len() == 1 { "" } else { "s" },
                    cancelled.join(", ")
                ))]),
            });
        }
        Ok(())
    }
}
