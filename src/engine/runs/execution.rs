//! A run's execution as the engine records it: the conditional move to `executing` under
//! a lease (after checking again that it may run), its result, and the cancelling of runs
//! not yet executing when their incident is resolved.

use chrono::{DateTime, Utc};

use super::*;
use crate::domain::approval::{self, RunState};
use crate::domain::incident::{Decision, Destination, Effect, EventKind, Incident};
use crate::domain::message::{Message, Span};
use crate::engine::{Engine, EngineError};
use crate::store::{RunRow, RunUpdate, StoreTx};

impl Engine {
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
    pub(in crate::engine) async fn close_runs_on_resolve(
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
