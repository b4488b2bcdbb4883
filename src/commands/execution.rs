//! Preparing and executing recovery command runs, and keeping each run's approval message
//! true. The outbox delivers the jobs (`PrepareRun`, `ExecuteRun` rows on the run's lane)
//! and calls in here; this module does not know the outbox: what it says in Slack goes
//! through [`ApprovalMessages`], which the outbox implements with its paced, deduplicated
//! posts, and its errors are [`JobError`]s the outbox sorts into retries and failures.
//!
//! `PrepareRun` is the run's "bring it forward" job: while the run is `preparing` it
//! computes the preview (previews only read, so a transport error is retried); then, for a
//! run that asked for approval, it posts the approval message (recording its channel and
//! ts) or updates it in place with `chat.update` to show the run as it stands now: who
//! approved or denied and when, the outcome, and no buttons once it is no longer pending.
//! The engine queues one after every decision, on the run's lane, so they apply in order.
//!
//! Execution runs at most once: the engine checks the run again (expiry, incident open,
//! approvals) and moves it `approved -> executing` with a short lease before the SDK call;
//! a heartbeat renews the lease while the call is in flight, and the call itself is bounded
//! by `recovery.call_timeout`. A transport error or timeout during a mutating call is
//! `outcome_unknown`, never retried; a worker that dies mid-call leaves an `executing` row
//! whose lease runs out, which [`RunJobs::recover_interrupted`] turns into
//! `outcome_unknown`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;

use super::catalog::{Catalog, ENVIRONMENT};
use super::environments::ByEnvironment;
use super::render;
use super::{Action, ExecError, Executor, ParamValue, Params, Preview};
use crate::clock::Clock;
use crate::domain::approval::RunState;
use crate::engine::{Begin, Engine, Finished, Prepared};
use crate::store::{RunRow, StoreError};

/// How long an execution lease lasts; the heartbeat renews it while the call runs, so a
/// dead worker's run is declared `outcome_unknown` within this.
pub const EXECUTION_LEASE: TimeDelta = TimeDelta::seconds(30);
/// How often the heartbeat renews the lease by default.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// What recovery commands run with.
#[derive(Clone)]
pub struct Recovery {
    /// The approved catalog.
    pub catalog: Arc<Catalog>,
    /// Executors for commands without an `environment` parameter.
    pub executors: Vec<Arc<dyn Executor>>,
    /// Executors of each environment (`[recovery.environments.NAME]`); a run with an
    /// `environment` parameter uses only its own environment's.
    pub environments: ByEnvironment,
    /// The kill switch: every run stops at its preview.
    pub dry_run: bool,
    /// Bound on one SDK call.
    pub call_timeout: Duration,
    /// How often the execution lease is renewed.
    pub heartbeat: Duration,
}

impl Default for Recovery {
    fn default() -> Self {
        Self {
            catalog: Arc::default(),
            executors: Vec::new(),
            environments: ByEnvironment::new(),
            dry_run: false,
            call_timeout: crate::config::DEFAULT_CALL_TIMEOUT,
            heartbeat: HEARTBEAT,
        }
    }
}

impl Recovery {
    /// The executor for `action` in the run's environment (`None` when the run names an
    /// environment without one: never another environment's).
    pub fn executor_for(
        &self,
        action: Action,
        params: &Params,
    ) -> Result<&Arc<dyn Executor>, String> {
        let list = match params.0.get(ENVIRONMENT) {
            Some(ParamValue::Text(env)) => self.environments.get(env).ok_or_else(|| {
                format!("environment `{env}` has no executor configured (see [recovery.environments.{env}] in the config)")
            })?,
            Some(_) => return Err("the environment parameter is not text".into()),
            None => &self.executors,
        };
        list.iter().find(|e| e.handles(action)).ok_or_else(|| {
            format!("no executor is configured for {action} (see [recovery] in the config)")
        })
    }
}

/// Why a run job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Something that may go away (the database, a preview's transport): try again later.
    #[error("{0}")]
    Internal(String),
    /// The job can never be done (an unknown run, an undecodable action).
    #[error("{0}")]
    Permanent(String),
}

/// How a run job speaks in Slack: the approval message is posted once and then updated
/// in place. The outbox implements it (paced, under its timeouts, and posted at most once
/// per outbox row across crashes); `Error` is the outbox's own error, so a Slack failure
/// keeps its meaning (429, transient, permanent) on the way back.
#[async_trait]
pub trait ApprovalMessages: Send + Sync {
    /// The caller's error, able to carry a [`JobError`].
    type Error: From<JobError> + Send;

    /// Posts a new message in `channel`; returns its ts.
    async fn post(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<String, Self::Error>;

    /// Replaces message `ts` in `channel`.
    async fn update(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), Self::Error>;
}

fn internal(e: impl std::fmt::Display) -> JobError {
    JobError::Internal(e.to_string())
}

fn decode(run: &RunRow) -> Result<(Action, Params), JobError> {
    let action: Action = serde_json::from_value(serde_json::Value::String(run.action.clone()))
        .map_err(|e| {
            JobError::Permanent(format!(
                "run #{}: unknown action {}: {e}",
                run.id, run.action
            ))
        })?;
    let params: Params = serde_json::from_str(&run.params).map_err(|e| {
        JobError::Permanent(format!("run #{}: undecodable parameters: {e}", run.id))
    })?;
    Ok((action, params))
}

/// The run jobs, over the engine (which records every step in one transaction), the
/// recovery configuration and the clock.
pub struct RunJobs<'a> {
    /// Where runs are loaded and their steps recorded.
    pub engine: &'a Engine,
    /// Catalog, executors, dry-run switch and timeouts.
    pub recovery: &'a Recovery,
    /// For execution leases.
    pub clock: &'a dyn Clock,
}

impl RunJobs<'_> {
    async fn load_run(&self, run_id: i64) -> Result<RunRow, JobError> {
        self.engine
            .store()
            .run(run_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| JobError::Permanent(format!("run #{run_id} does not exist")))
    }

    fn target(&self, run: &RunRow) -> Option<String> {
        let (action, params) = decode(run).ok()?;
        self.recovery.executor_for(action, &params).ok()?.target()
    }

    /// The `PrepareRun` job: the preview while the run is `preparing`, then its approval
    /// message brought up to date.
    pub async fn prepare<M: ApprovalMessages>(
        &self,
        run_id: i64,
        messages: &M,
    ) -> Result<(), M::Error> {
        let mut run = self.load_run(run_id).await?;
        if run.state == RunState::Preparing {
            self.preview(&run).await?;
            run = self.load_run(run_id).await?;
        }
        self.sync_message(&run, messages).await
    }

    async fn preview(&self, run: &RunRow) -> Result<(), JobError> {
        let (action, params) = decode(run)?;
        let recovery = self.recovery;
        let spec = recovery.catalog.get(&run.command);
        let line = render::params_line(&params);
        let (preview, target) = match recovery.executor_for(action, &params) {
            Err(e) => (Err(ExecError::Invalid(e)), None),
            Ok(executor) => {
                let call = executor.preview(action, &params);
                let preview = match tokio::time::timeout(recovery.call_timeout, call).await {
                    Ok(p) => p,
                    Err(_) => Err(ExecError::Transport(format!(
                        "no answer within {}",
                        humantime::format_duration(recovery.call_timeout)
                    ))),
                };
                (preview, executor.target())
            }
        };
        let prepared = match preview {
            Err(ExecError::Transport(e)) => {
                return Err(JobError::Internal(format!(
                    "preview of run #{}: {e}",
                    run.id
                )));
            }
            Err(e) => Prepared {
                state: RunState::Failed,
                preview: None,
                result: Some(serde_json::to_string(&e).expect("errors serialize")),
                message: Some(render::preview_failed(run, &e.to_string())),
            },
            Ok(preview) => {
                let json = Some(serde_json::to_string(&preview).expect("previews serialize"));
                let target = target.as_deref();
                let (state, message) = if recovery.dry_run {
                    (
                        RunState::DryRun,
                        Some(render::dry_run(run, spec, &line, &preview, target)),
                    )
                } else if run.required == 0 {
                    (
                        RunState::Approved,
                        Some(render::running_now(run, spec, &line, &preview, target)),
                    )
                } else {
                    // The approval message is posted by `sync_message`, which records where.
                    (RunState::Pending, None)
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
            .run_prepared(run, prepared)
            .await
            .map_err(internal)?;
        Ok(())
    }

    /// Posts the approval message of a run that asked for approval, or updates it to the
    /// run's current state (buttons only while pending).
    async fn sync_message<M: ApprovalMessages>(
        &self,
        run: &RunRow,
        messages: &M,
    ) -> Result<(), M::Error> {
        if run.approval_requested_at.is_none() {
            return Ok(());
        }
        let store = self.engine.store();
        let incident = store
            .incident(run.incident_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| JobError::Permanent(format!("{} does not exist", run.incident_id)))?;
        let Some(channel) = incident.channel.as_ref().map(|c| c.id.clone()) else {
            return Err(internal(format!("{} has no channel yet", incident.id)).into());
        };
        let (_, params) = decode(run)?;
        let preview: Preview = run
            .preview
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        let eligible = store.eligible_approvers(run.id).await.map_err(internal)?;
        let message = render::approval_status(
            run,
            self.recovery.catalog.get(&run.command),
            &render::params_line(&params),
            &preview,
            self.target(run).as_deref(),
            &eligible,
        );
        let (text, blocks) = crate::slack::render::message(&message, Some(&channel));
        match &run.approval_message {
            Some((channel, ts)) => messages.update(channel, ts, &text, &blocks).await?,
            None => {
                let ts = messages.post(&channel, &text, &blocks).await?;
                self.engine
                    .run_message_posted(run.id, &channel, &ts)
                    .await
                    .map_err(internal)?;
            }
        }
        Ok(())
    }

    /// The `ExecuteRun` job: the approved run, executed at most once.
    pub async fn execute(&self, run_id: i64) -> Result<(), JobError> {
        let lease_until = self.clock.now() + EXECUTION_LEASE;
        let run = match self
            .engine
            .begin_execution(run_id, lease_until)
            .await
            .map_err(internal)?
        {
            Begin::Run(run) => *run,
            // Not approved (any more), refused at the last check, or another worker has
            // it: nothing to do, ever.
            Begin::Nothing => return Ok(()),
        };
        let (action, params) = decode(&run)?;
        let recovery = self.recovery;
        let outcome = if recovery.dry_run {
            Err(ExecError::Invalid(
                "execution was switched off (dry-run mode) after approval; not run".into(),
            ))
        } else {
            match recovery.executor_for(action, &params) {
                Err(e) => Err(ExecError::Invalid(e)),
                Ok(executor) => self.execute_leased(&run, executor, action, &params).await,
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

    /// The SDK call under `call_timeout`, with a heartbeat renewing the run's lease until
    /// it returns.
    async fn execute_leased(
        &self,
        run: &RunRow,
        executor: &Arc<dyn Executor>,
        action: Action,
        params: &Params,
    ) -> Result<super::ExecOutput, ExecError> {
        let recovery = self.recovery;
        let call = tokio::time::timeout(recovery.call_timeout, executor.execute(action, params));
        let heartbeat = async {
            loop {
                tokio::time::sleep(recovery.heartbeat).await;
                let until = self.clock.now() + EXECUTION_LEASE;
                match self.engine.store().renew_run_lease(run.id, until).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            run_id = run.id,
                            "lease lost while executing (declared outcome_unknown); the result will still be recorded"
                        );
                    }
                    Err(e) => {
                        tracing::error!(run_id = run.id, error = %e, "cannot renew the execution lease")
                    }
                }
            }
        };
        tokio::select! {
            result = call => result.unwrap_or_else(|_| Err(ExecError::Transport(format!(
                "no answer within {} (recovery.call_timeout)",
                humantime::format_duration(recovery.call_timeout)
            )))),
            () = heartbeat => unreachable!("the heartbeat never ends"),
        }
    }

    /// Turns runs whose executing lease ran out into `outcome_unknown` and tells the
    /// channel. The outbox calls it on every pass, so a restart finds them.
    pub async fn recover_interrupted(&self) -> Result<usize, StoreError> {
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
