//! Preparing and executing recovery command runs, as outbox jobs.
//!
//! Previews only read, so a transport error while previewing is retried. Execution runs
//! at most once: the engine moves the run `approved -> executing` with a conditional
//! UPDATE before the SDK call, so a repeated job finds nothing to do; a transport error
//! during a mutating call is reported as `outcome_unknown`, never retried; and a worker
//! that dies mid-call leaves an `executing` row whose lease runs out, which
//! [`OutboxWorker::recover_interrupted_runs`] turns into `outcome_unknown`.

use std::sync::Arc;

use chrono::TimeDelta;

use super::{DeliveryError, OutboxWorker};
use crate::commands::catalog::Catalog;
use crate::commands::render;
use crate::commands::{Action, ExecError, Executor, Params};
use crate::domain::approval::RunState;
use crate::engine::{Finished, Prepared};
use crate::store::RunRow;

/// How long one execution may take before its run is declared `outcome_unknown`.
pub const EXECUTION_LEASE: TimeDelta = TimeDelta::minutes(10);

/// What recovery commands run with.
#[derive(Clone, Default)]
pub struct Recovery {
    /// The approved catalog.
    pub catalog: Arc<Catalog>,
    /// Executors (RDS, Kubernetes); an action without one fails its preview.
    pub executors: Vec<Arc<dyn Executor>>,
    /// The kill switch: every run stops at its preview.
    pub dry_run: bool,
}

fn internal(e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Internal(e.to_string())
}

fn decode(run: &RunRow) -> Result<(Action, Params), DeliveryError> {
    let action: Action = serde_json::from_value(serde_json::Value::String(run.action.clone()))
        .map_err(|e| {
            DeliveryError::Permanent(format!(
                "run #{}: unknown action {}: {e}",
                run.id, run.action
            ))
        })?;
    let params: Params = serde_json::from_str(&run.params).map_err(|e| {
        DeliveryError::Permanent(format!("run #{}: undecodable parameters: {e}", run.id))
    })?;
    Ok((action, params))
}

impl OutboxWorker {
    fn executor(&self, action: Action) -> Option<&Arc<dyn Executor>> {
        self.outlets
            .recovery
            .executors
            .iter()
            .find(|e| e.handles(action))
    }

    async fn load_run(&self, run_id: i64) -> Result<RunRow, DeliveryError> {
        self.engine
            .store()
            .run(run_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| DeliveryError::Permanent(format!("run #{run_id} does not exist")))
    }

    pub(super) async fn prepare_run(&self, run_id: i64) -> Result<(), DeliveryError> {
        let run = self.load_run(run_id).await?;
        if run.state != RunState::Preparing {
            return Ok(());
        }
        let (action, params) = decode(&run)?;
        let spec = self.outlets.recovery.catalog.get(&run.command);
        let line = render::params_line(&params);
        let preview = match self.executor(action) {
            None => Err(ExecError::Invalid(format!(
                "no executor is configured for {action} (see [recovery] in the config)"
            ))),
            Some(executor) => executor.preview(action, &params).await,
        };
        let prepared = match preview {
            Err(ExecError::Transport(e)) => {
                return Err(DeliveryError::Internal(format!(
                    "preview of run #{run_id}: {e}"
                )));
            }
            Err(e) => Prepared {
                state: RunState::Failed,
                preview: None,
                result: Some(serde_json::to_string(&e).expect("errors serialize")),
                message: render::preview_failed(&run, &e.to_string()),
            },
            Ok(preview) => {
                let json = Some(serde_json::to_string(&preview).expect("previews serialize"));
                let (state, message) = if self.outlets.recovery.dry_run {
                    (
                        RunState::DryRun,
                        render::dry_run(&run, spec, &line, &preview),
                    )
                } else if run.required == 0 {
                    (
                        RunState::Approved,
                        render::running_now(&run, spec, &line, &preview),
                    )
                } else {
                    (
                        RunState::Pending,
                        render::approval_request(&run, spec, &line, &preview),
                    )
                };
                Prepared {
                    state,
                    preview: json,
                    result: None,
                    message,
                }
            }
        };
        self.engine
            .run_prepared(&run, prepared)
            .await
            .map_err(internal)?;
        Ok(())
    }

    pub(super) async fn execute_run(&self, run_id: i64) -> Result<(), DeliveryError> {
        let lease_until = self.clock.now() + EXECUTION_LEASE;
        let Some(run) = self
            .engine
            .begin_execution(run_id, lease_until)
            .await
            .map_err(internal)?
        else {
            return Ok(()); // Not approved, or another worker has it: nothing to do, ever.
        };
        let (action, params) = decode(&run)?;
        let outcome = if self.outlets.recovery.dry_run {
            Err(ExecError::Invalid(
                "execution was switched off (dry-run mode) after approval; not run".into(),
            ))
        } else {
            match self.executor(action) {
                None => Err(ExecError::Invalid(format!(
                    "no executor is configured for {action}"
                ))),
                Some(executor) => executor.execute(action, &params).await,
            }
        };
        let state = match &outcome {
            Ok(_) => RunState::Succeeded,
            Err(ExecError::Transport(_)) if !action.is_read_only() => RunState::OutcomeUnknown,
            Err(_) => RunState::Failed,
        };
        let (summary, request_id) = match &outcome {
            Ok(out) => (out.summary.clone(), out.request_id.clone()),
            Err(ExecError::Api { request_id, .. }) => (
                outcome.as_ref().unwrap_err().to_string(),
                request_id.clone(),
            ),
            Err(e) => (e.to_string(), None),
        };
        let finished = Finished {
            state,
            result: match &outcome {
                Ok(out) => serde_json::to_string(out),
                Err(e) => serde_json::to_string(e),
            }
            .expect("results serialize"),
            summary,
            request_id,
            message: render::result(&run, &outcome),
        };
        // If recording fails, the row stays `executing` and turns `outcome_unknown` when
        // its lease runs out; the job is not retried into a second execution.
        self.engine
            .finish_execution(&run, finished)
            .await
            .map_err(internal)?;
        Ok(())
    }

    /// Turns runs whose executing lease ran out into `outcome_unknown` and tells the
    /// channel. Called on every pass, so a restart finds them.
    pub async fn recover_interrupted_runs(&self) -> Result<usize, crate::store::StoreError> {
        let stuck = self
            .engine
            .store()
            .interrupted_runs(self.clock.now())
            .await?;
        let mut recovered = 0;
        for run in stuck {
            let finished = Finished {
                state: RunState::OutcomeUnknown,
                result: "{\"error\":\"klaxon stopped while executing\"}".into(),
                summary: "Klaxon stopped while executing; check by hand".into(),
                request_id: None,
                message: render::outcome_unknown(&run),
            };
            match self.engine.finish_execution(&run, finished).await {
                Ok(true) => recovered += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(run_id = run.id, error = %e, "could not record an interrupted run")
                }
            }
        }
        Ok(recovered)
    }
}
