//! Recovery-run jobs, dispatched to the recovery code (`crate::commands::execution`),
//! which does the work; the outbox lends it Slack (paced, posted at most once) and sorts
//! its errors into retries and failures.

use async_trait::async_trait;

use super::{DeliveryError, OutboxWorker};
use crate::commands::execution::{ApprovalMessages, JobError, RunJobs};

impl From<JobError> for DeliveryError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Internal(e) => DeliveryError::Internal(e),
            JobError::Permanent(e) => DeliveryError::Permanent(e),
        }
    }
}

/// The approval message of a run, as this worker posts it.
struct Messages<'a>(&'a OutboxWorker);

#[async_trait]
impl ApprovalMessages for Messages<'_> {
    type Error = DeliveryError;

    async fn post(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<String, DeliveryError> {
        self.0.post_once(channel, text, blocks, None).await
    }

    async fn update(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), DeliveryError> {
        Ok(self
            .0
            .outlets
            .slack
            .update_message(channel, ts, text, blocks)
            .await?)
    }
}

impl OutboxWorker {
    fn run_jobs(&self) -> RunJobs<'_> {
        RunJobs {
            engine: &self.engine,
            recovery: &self.outlets.recovery,
            clock: &*self.clock,
        }
    }

    pub(super) async fn prepare_run(&self, run_id: i64) -> Result<(), DeliveryError> {
        self.run_jobs().prepare(run_id, &Messages(self)).await
    }

    pub(super) async fn execute_run(&self, run_id: i64) -> Result<(), DeliveryError> {
        Ok(self.run_jobs().execute(run_id).await?)
    }

    /// Turns runs whose executing lease ran out into `outcome_unknown` (see
    /// `RunJobs::recover_interrupted`). Called on every pass, so a restart finds them.
    pub async fn recover_interrupted_runs(&self) -> Result<usize, crate::store::StoreError> {
        self.run_jobs().recover_interrupted().await
    }
}
