//! PagerDuty Events API v2: trigger and resolve alerts for escalation targets.
//!
//! <https://developer.pagerduty.com/docs/events-api-v2/trigger-events/>: POST JSON with
//! `routing_key`, `event_action` (trigger/acknowledge/resolve), `dedup_key` (<= 255 chars)
//! and for triggers `payload{summary (<= 1024), source, severity}`. 202 means accepted;
//! 400 is never worth retrying; 429 and 5xx are. Retrying is safe: PagerDuty dedupes on
//! `dedup_key`, which Klaxon makes unique per incident and escalation step.

pub mod rest;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::domain::incident::PageAction;

/// What an escalation target means: who to page and where to post.
#[derive(Clone, Default)]
pub struct Target {
    /// PagerDuty Events v2 routing (integration) key; a secret.
    pub routing_key: Option<SecretString>,
    /// Slack channel ids to post escalations in.
    pub slack_channels: Vec<String>,
    /// Slack user group ids (`S...`) to mention in those posts.
    pub slack_usergroups: Vec<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field(
                "routing_key",
                &self.routing_key.as_ref().map(|_| "[redacted]"),
            )
            .field("slack_channels", &self.slack_channels)
            .field("slack_usergroups", &self.slack_usergroups)
            .finish()
    }
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// 400 or another 4xx: the event is malformed or the key is wrong; retrying won't help.
    #[error("PagerDuty rejected the event ({status}): {body}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Response body (PagerDuty's explanation).
        body: String,
    },
    /// 429 or 5xx: try again, after `retry_after` when PagerDuty said.
    #[error("PagerDuty busy or failing ({status})")]
    Retry {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// No answer.
    #[error("PagerDuty unreachable: {0}")]
    Transport(String),
}

impl PageError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, PageError::Rejected { .. })
    }
}

/// One event to send.
#[derive(Debug)]
pub struct PageEvent<'a> {
    /// Trigger or resolve.
    pub action: PageAction,
    /// Dedup key.
    pub dedup_key: &'a str,
    /// Summary (triggers only).
    pub summary: &'a str,
    /// `critical|error|warning|info` (triggers only).
    pub severity: &'a str,
}

/// An Events API v2 client.
#[derive(Clone, Debug)]
pub struct PagerDuty {
    http: reqwest::Client,
    events_url: String,
}

fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl PagerDuty {
    /// A client posting to `events_url` (`https://events.pagerduty.com/v2/enqueue`).
    pub fn new(events_url: &str) -> Self {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client builds with static settings");
        Self {
            http,
            events_url: events_url.to_string(),
        }
    }

    /// Sends one event with `routing_key`.
    pub async fn send(
        &self,
        routing_key: &SecretString,
        event: &PageEvent<'_>,
    ) -> Result<(), PageError> {
        let mut body = json!({
            "routing_key": routing_key.expose_secret(),
            "event_action": match event.action { PageAction::Trigger => "trigger", PageAction::Resolve => "resolve" },
            "dedup_key": clip(event.dedup_key, 255),
        });
        if event.action == PageAction::Trigger {
            body["payload"] = json!({
                "summary": clip(event.summary, 1024),
                "source": "klaxon",
                "severity": event.severity,
            });
        }
        let response = self
            .http
            .post(&self.events_url)
            .json(&body)
            .send()
            .await
            // reqwest errors carry the URL, never the body: the routing key stays out.
            .map_err(|e| PageError::Transport(e.without_url().to_string()))?;
        check(response).await?;
        let action = match event.action {
            PageAction::Trigger => "trigger",
            PageAction::Resolve => "resolve",
        };
        crate::metrics::process()
            .pages_sent
            .with_label_values(&[action])
            .inc();
        Ok(())
    }
}

/// Sorts a PagerDuty answer (Events API or REST): success passes; 429 and 5xx are worth
/// retrying (with the `Retry-After` it gave); anything else is a refusal, never retried.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, PageError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs);
    if status.as_u16() == 429 || status.is_server_error() {
        return Err(PageError::Retry {
            status: status.as_u16(),
            retry_after,
        });
    }
    let body = response.text().await.unwrap_or_default();
    Err(PageError::Rejected {
        status: status.as_u16(),
        body: clip(&body, 300),
    })
}
