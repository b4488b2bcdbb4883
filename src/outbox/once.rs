//! Posting at most once per outbox row, across crashes.
//!
//! The outbox is at-least-once: a worker that dies between Slack's answer to
//! `chat.postMessage` and the commit of "delivered" leaves a row that the next worker
//! delivers again. To keep that from turning into a second message, every post carries
//! the row as Slack message metadata (`slack::MessageTag`), and a row that *may* have
//! gone out before looks for its own message in the channel's history first:
//!
//! - **Which rows may have gone out.** Claiming a row stamps `attempt_started_at_ms`
//!   (one statement per claim batch). An attempt that ends knowing nothing reached Slack
//!   (pacing deferred it, Slack answered 429 or 503, or refused it) clears the stamp again when it
//!   is settled; one that posted, timed out or died keeps it. A row claimed with the stamp
//!   set is the only kind that pays for a look at the history: fresh rows, the hot path,
//!   post without any extra call.
//! - **The look.** `conversations.history` (or `.replies` for a thread reply) from the
//!   stamp minus [`LOOKBACK_MARGIN`] (clock skew between us and Slack) with
//!   `include_all_metadata`, a few pages at most. Found: the row is delivered with that
//!   message's ts, nothing is posted. Not found: the row is posted.
//! - **When the look fails.** A transient error (5xx, timeout, 429) fails the attempt and
//!   the row is retried later, never posted blind. A permanent one (the app lacks the
//!   `channels:history` scope or is not in the channel) can never succeed: the row is
//!   posted with a warning in the log, as a possible duplicate is better than a lost
//!   incident message.
//!
//! PagerDuty needs none of this: Events API v2 deduplicates by `dedup_key`, which Klaxon
//! sets per incident and escalation target (`klaxon-N-target`): a repeated trigger joins
//! the open alert instead of paging again, and a repeated resolve does nothing. Channel creation adopts its own half-made
//! channel (see `deliver.rs`); topics, purposes, invitations and `chat.update` are
//! idempotent by nature. Ephemeral messages cannot be read back and may repeat.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

use super::{DeliveryError, OutboxWorker};
use crate::slack::{MessageTag, SlackError};
use crate::store::{OutboxRow, Posted};

/// How far before the first attempt the history is searched: Slack's clock and ours may
/// disagree by this much.
pub const LOOKBACK_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// What one delivery attempt did that settling needs to know: which message it posted,
/// and whether anything may have reached Slack.
#[derive(Debug, Default)]
pub(super) struct AttemptTrace {
    /// The row being delivered (0 outside a delivery).
    row: i64,
    /// When an earlier attempt that may have posted started, as claimed.
    started: Option<DateTime<Utc>>,
    /// Other rows the same post delivers (an announcement digest: all fresh rows).
    also: Vec<i64>,
    state: Mutex<TraceState>,
}

#[derive(Debug, Default)]
struct TraceState {
    /// The last message posted (or found already posted) for the row.
    posted: Option<Posted>,
    /// Posts started and not refused by Slack: in flight, answered, or lost in a timeout.
    maybe_sent: u32,
}

impl AttemptTrace {
    /// The trace of an attempt at `row`.
    pub(super) fn new(row: &OutboxRow) -> Self {
        Self {
            row: row.id,
            started: row.attempt_started_at_ms.map(crate::store::from_ms),
            also: Vec::new(),
            state: Mutex::default(),
        }
    }

    /// The trace of one post delivering several fresh rows (an announcement digest): it
    /// is tagged with all of them, so each is found by a later look-back.
    pub(super) fn for_digest(first: &OutboxRow, others: &[&OutboxRow]) -> Self {
        Self {
            also: others.iter().map(|r| r.id).collect(),
            ..Self::new(first)
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TraceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The message the attempt posted or found, to store with the row.
    pub(super) fn posted(&self) -> Option<Posted> {
        self.state().posted.clone()
    }

    /// A call that may change something outside (an SMTP send, a Statuspage create or
    /// update) started: whatever it answers, a later attempt must not assume nothing
    /// went out (it looks first, where the service lets it).
    pub(super) fn may_have_sent(&self) {
        self.state().maybe_sent += 1;
    }

    /// Whether nothing can have reached Slack for this row, in this attempt or before:
    /// the next attempt may post without looking.
    pub(super) fn nothing_sent(&self) -> bool {
        self.started.is_none() && self.state().maybe_sent == 0
    }
}

/// Whether Slack's answer to a post says it was not posted.
fn refused(result: &Result<String, DeliveryError>) -> bool {
    matches!(
        result,
        Err(DeliveryError::Deferred(_)
            | DeliveryError::Slack(
                SlackError::RateLimited { .. }
                    | SlackError::Api { .. }
                    | SlackError::Unavailable(_)
            ))
    )
}

impl OutboxWorker {
    /// This database's installation id, read once.
    pub(super) async fn install_id(&self) -> Result<&str, DeliveryError> {
        self.install
            .get_or_try_init(|| async {
                self.engine
                    .store()
                    .install_id()
                    .await
                    .map_err(|e| DeliveryError::Internal(e.to_string()))
            })
            .await
            .map(String::as_str)
    }

    /// `chat.postMessage` for the row being delivered, tagged with it, unless an earlier
    /// attempt already posted it (see the module doc). Returns the message ts.
    pub(super) async fn post_once(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
    ) -> Result<String, DeliveryError> {
        let tag = MessageTag {
            install: self.install_id().await?.to_string(),
            row: self.trace.row,
            also: self.trace.also.clone(),
        };
        if let Some(started) = self.trace.started
            && let Some(ts) = self
                .find_earlier_post(channel, thread_ts, started, &tag)
                .await?
        {
            tracing::info!(outbox_id = tag.row, channel, %ts, "found this row's post from an earlier attempt; not posting it again");
            self.trace.state().posted = Some(Posted {
                channel: channel.to_string(),
                ts: ts.clone(),
            });
            return Ok(ts);
        }
        // Counted before the call: if the delivery's own timeout drops this future while
        // the request is out, the post may have landed.
        self.trace.state().maybe_sent += 1;
        let result = self
            .slack(
                "chat.postMessage",
                Some(channel),
                self.outlets
                    .slack
                    .post_tagged(channel, text, blocks, thread_ts, &tag),
            )
            .await;
        let mut state = self.trace.state();
        if refused(&result) {
            state.maybe_sent -= 1;
        }
        if let Ok(ts) = &result {
            state.posted = Some(Posted {
                channel: channel.to_string(),
                ts: ts.clone(),
            });
        }
        result
    }

    /// Whether the row being delivered (its trace set, claimed with its stamp) already
    /// has its message in `channel`: then the trace holds that message. Used by a digest
    /// before it takes a row that may have been posted already.
    pub(super) async fn find_own_post(
        &self,
        channel: &str,
        row: i64,
    ) -> Result<bool, DeliveryError> {
        let Some(started) = self.trace.started else {
            return Ok(false);
        };
        let tag = MessageTag {
            install: self.install_id().await?.to_string(),
            row,
            also: Vec::new(),
        };
        let Some(ts) = self.find_earlier_post(channel, None, started, &tag).await? else {
            return Ok(false);
        };
        tracing::info!(outbox_id = row, channel, %ts, "found this announcement from an earlier attempt; not posting it again");
        self.trace.state().posted = Some(Posted {
            channel: channel.to_string(),
            ts,
        });
        Ok(true)
    }

    /// Looks for the row's message in the channel (or thread) since `started`.
    async fn find_earlier_post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        started: DateTime<Utc>,
        tag: &MessageTag,
    ) -> Result<Option<String>, DeliveryError> {
        let method = match thread_ts {
            Some(_) => "conversations.replies",
            None => "conversations.history",
        };
        let oldest = started - LOOKBACK_MARGIN;
        let found = self
            .slack(
                method,
                Some(channel),
                self.outlets
                    .slack
                    .find_tagged(channel, thread_ts, oldest, tag),
            )
            .await;
        match found {
            Err(DeliveryError::Slack(e)) if e.is_permanent() => {
                tracing::warn!(outbox_id = tag.row, channel, error = %e, "cannot look for an earlier post of this row (grant channels:history and invite the bot); posting it, possibly twice");
                Ok(None)
            }
            other => other,
        }
    }
}
