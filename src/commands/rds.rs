//! The RDS executor: previews and runs every `rds-*` [`Action`] through the AWS SDK
//! (`aws-sdk-rds`), never a shell.
//!
//! This module owns: turning validated [`Params`] into one typed request per action, the
//! text of the exact SDK call shown in previews, the read-only checks previews make
//! (current writer, source status, latest restorable time, snapshot status...), the single
//! SDK call an execution makes, and the mapping of SDK errors to [`ExecError`] (API code,
//! message and request id; transport failures; secrets redacted).
//!
//! The files: `request` parses parameters into one typed request and renders its SDK
//! calls; `assess` makes a preview's read-only checks; `run` makes the one call of an
//! execution; `summary` words what RDS answered, one line per resource; `sdk`
//! converts times and maps SDK errors.
//!
//! Mutating calls are sent with SDK retries disabled so that an approved command runs at
//! most once; a timeout is reported as [`ExecError::Transport`] (outcome unknown).

use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_rds::Client;
use aws_sdk_rds::config::retry::RetryConfig;
use aws_sdk_rds::config::timeout::TimeoutConfig;
use aws_sdk_rds::config::{self, Region};

use super::{Action, ExecError, ExecOutput, Executor, Params, Preview};

mod assess;
mod request;
mod run;
mod sdk;
mod summary;

use request::Request;

/// How far back `rds-describe` reads events, in minutes.
const EVENT_WINDOW_MINUTES: i32 = 60;
/// How many events `rds-describe` reads at most.
const EVENT_LIMIT: i32 = 20;

/// Runs the `rds-*` actions against one AWS account and region.
#[derive(Clone, Debug)]
pub struct RdsExecutor {
    client: Client,
}

impl RdsExecutor {
    /// Builds a client from the standard AWS environment (credentials chain, profile) for
    /// `region`, optionally against `endpoint_url` (a stand-in such as moto in tests).
    pub async fn from_env(region: &str, endpoint_url: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .timeout_config(default_timeouts());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        Self::new(Client::new(&loader.load().await))
    }

    /// Wraps an already configured client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// Bounded waits so that a stuck call ends as a transport error instead of hanging.
fn default_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

/// Per-call override for mutating calls: no automatic retry, so one approval = one call.
fn no_retry() -> config::Builder {
    config::Builder::default().retry_config(RetryConfig::disabled())
}

#[async_trait]
impl Executor for RdsExecutor {
    fn handles(&self, action: Action) -> bool {
        action.is_rds()
    }

    async fn preview(&self, action: Action, params: &Params) -> Result<Preview, ExecError> {
        let request = Request::parse(action, params)?;
        let notes = self.assess(&request).await?;
        Ok(Preview {
            call: request.call_text(),
            changes: notes.changes,
            warnings: notes.warnings,
        })
    }

    async fn execute(&self, action: Action, params: &Params) -> Result<ExecOutput, ExecError> {
        let request = Request::parse(action, params)?;
        self.run(&request).await
    }
}
