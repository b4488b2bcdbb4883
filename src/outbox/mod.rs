//! The outbox worker: delivers what the engine stored, to Slack, at least once, in order.
//!
//! - Claims due rows with a lease (`Store::claim_outbox`); a worker that dies mid-delivery
//!   leaves its rows to be claimed again when the lease runs out. Nothing is lost.
//! - Rows of one ordering key (one incident) go one at a time, oldest first: the channel
//!   exists before its topic is set, and messages arrive in the order they were decided.
//! - 429 waits exactly `Retry-After`; other transient errors back off exponentially
//!   (1 s, 2 s, 4 s... capped at 5 min); permanent errors (`channel_not_found`...) and rows
//!   that kept failing are marked `failed`, logged and kept in the table: never dropped.

mod deliver;
mod runs;

pub use runs::{EXECUTION_LEASE, Recovery};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OnceCell, watch};

use crate::clock::Clock;
use crate::domain::incident::{Effect, IncidentId};
use crate::engine::Engine;
use crate::paging::{PageError, PagerDuty, Target};
use crate::slack::{SlackApi, SlackError};
use crate::store::OutboxRow;

/// A form Klaxon opens in Slack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "modal", rename_all = "snake_case")]
pub enum Modal {
    /// Declare an incident (severity + title). `channel` is where it was asked for.
    Declare {
        /// Channel the command came from.
        channel: String,
    },
    /// Ask for the resolution summary of an incident.
    Resolve {
        /// The incident.
        incident_id: IncidentId,
    },
}

/// One outbox row's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outbound {
    /// An effect of an incident change.
    Incident {
        /// The incident.
        incident_id: IncidentId,
        /// What to do.
        effect: Effect,
    },
    /// Open a form (`views.open`); the trigger id expires 3 s after the command.
    OpenModal {
        /// Slack's trigger id.
        trigger_id: String,
        /// Which form.
        modal: Modal,
    },
    /// Compute a recovery run's preview, then ask for approval (or run it at once when it
    /// needs none, or stop in dry-run mode).
    PrepareRun {
        /// Run number.
        run_id: i64,
    },
    /// Execute an approved run, once.
    ExecuteRun {
        /// Run number.
        run_id: i64,
    },
    /// A message only `user` sees (`chat.postEphemeral`), e.g. why a click was refused.
    Ephemeral {
        /// Channel id.
        channel: String,
        /// User id.
        user: String,
        /// Text (Slack mrkdwn).
        text: String,
    },
    /// A plain-text reply in a channel or thread (answers to @mentions).
    Reply {
        /// Channel id.
        channel: String,
        /// Thread to answer in.
        thread_ts: Option<String>,
        /// Text (Slack mrkdwn).
        text: String,
    },
}

impl Outbound {
    /// The stored JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("outbound payloads serialize")
    }
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Slack said no or could not be reached.
    #[error(transparent)]
    Slack(#[from] SlackError),
    /// PagerDuty said no or could not be reached.
    #[error(transparent)]
    Paging(#[from] PageError),
    /// Something on our side (database, a missing channel record): retried.
    #[error("{0}")]
    Internal(String),
    /// The payload cannot be delivered, ever (unknown incident, bad JSON).
    #[error("{0}")]
    Permanent(String),
}

/// Attempts after which a row is marked failed even if its error looked transient
/// (with the 5-minute cap this is about two hours of trying).
pub const MAX_ATTEMPTS: i64 = 30;
/// How long a claimed row is reserved for one delivery.
pub const LEASE: TimeDelta = TimeDelta::seconds(60);

/// What one pass of [`OutboxWorker::deliver_due`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Rows delivered.
    pub delivered: usize,
    /// Rows put back for a later retry.
    pub retried: usize,
    /// Rows given up on.
    pub failed: usize,
}

/// Where deliveries go.
#[derive(Clone)]
pub struct Outlets {
    /// Slack Web API.
    pub slack: Arc<dyn SlackApi>,
    /// PagerDuty Events API.
    pub pagerduty: PagerDuty,
    /// Channel id of `#incident-response`.
    pub announce_channel: String,
    /// Escalation targets by name.
    pub targets: Arc<BTreeMap<String, Target>>,
    /// Recovery command catalog and executors.
    pub recovery: Recovery,
}

/// Delivers outbox rows.
pub struct OutboxWorker {
    engine: Engine,
    outlets: Outlets,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    bot_user_id: OnceCell<String>,
}

/// The backoff before attempt `attempts + 1`.
pub fn backoff(attempts: i64) -> TimeDelta {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    TimeDelta::seconds(2i64.saturating_pow(exp).min(300))
}

impl OutboxWorker {
    /// A worker delivering to `outlets`, woken by `wake`.
    pub fn new(engine: Engine, outlets: Outlets, clock: Arc<dyn Clock>, wake: Arc<Notify>) -> Self {
        Self {
            engine,
            outlets,
            clock,
            wake,
            bot_user_id: OnceCell::new(),
        }
    }

    /// Delivers every row that is due now, in order, until none is left due. Returns
    /// what happened; errors only when the database itself fails.
    pub async fn deliver_due(&self) -> Result<PassReport, crate::store::StoreError> {
        let mut report = PassReport::default();
        self.recover_interrupted_runs().await?;
        loop {
            let now = self.clock.now();
            let rows = self
                .engine
                .store()
                .claim_outbox(now, now + LEASE, 50)
                .await?;
            if rows.is_empty() {
                return Ok(report);
            }
            for row in rows {
                self.settle(row, &mut report).await?;
            }
        }
    }

    async fn settle(
        &self,
        row: OutboxRow,
        report: &mut PassReport,
    ) -> Result<(), crate::store::StoreError> {
        let store = self.engine.store();
        let result = self.deliver(&row).await;
        let now = self.clock.now();
        match result {
            Ok(()) => {
                store.complete_outbox(row.id, now).await?;
                report.delivered += 1;
            }
            Err(e) => {
                let permanent = match &e {
                    DeliveryError::Slack(s) => s.is_permanent(),
                    DeliveryError::Paging(p) => p.is_permanent(),
                    DeliveryError::Internal(_) => false,
                    DeliveryError::Permanent(_) => true,
                };
                let message = e.to_string();
                if permanent || row.attempts >= MAX_ATTEMPTS {
                    tracing::error!(outbox_id = row.id, key = %row.ordering_key, attempts = row.attempts, error = %message, "outbox delivery failed for good");
                    store.fail_outbox(row.id, &message, now).await?;
                    report.failed += 1;
                } else {
                    let wait = match &e {
                        DeliveryError::Slack(SlackError::RateLimited {
                            retry_after: Some(after),
                        })
                        | DeliveryError::Paging(PageError::Retry {
                            retry_after: Some(after),
                            ..
                        }) => TimeDelta::from_std(*after).unwrap_or(TimeDelta::seconds(60)),
                        _ => backoff(row.attempts),
                    };
                    tracing::warn!(outbox_id = row.id, key = %row.ordering_key, attempts = row.attempts, retry_in_ms = wait.num_milliseconds(), error = %message, "outbox delivery will be retried");
                    store.retry_outbox(row.id, now + wait, &message).await?;
                    report.retried += 1;
                }
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` turns true: delivers what is due, then sleeps until the next
    /// row is due or the engine signals new work.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "outbox pass failed; retrying shortly");
            }
            let next = self
                .engine
                .store()
                .next_outbox_due()
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read the next due time; polling");
                    None
                });
            if crate::clock::wait_for_work(
                &*self.clock,
                next,
                Duration::from_secs(30),
                &self.wake,
                &mut shutdown,
            )
            .await
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(1), TimeDelta::seconds(1));
        assert_eq!(backoff(2), TimeDelta::seconds(2));
        assert_eq!(backoff(5), TimeDelta::seconds(16));
        assert_eq!(backoff(12), TimeDelta::seconds(300));
    }

    #[test]
    fn payloads_round_trip() {
        let o = Outbound::OpenModal {
            trigger_id: "t".into(),
            modal: Modal::Resolve {
                incident_id: IncidentId(3),
            },
        };
        assert_eq!(serde_json::from_str::<Outbound>(&o.to_json()).unwrap(), o);
    }
}
