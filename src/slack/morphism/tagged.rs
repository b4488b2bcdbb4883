//! Posting with Klaxon's message metadata, and finding such a post again.
//!
//! `chat.postMessage` carries `metadata: {event_type: "klaxon_outbox", event_payload:
//! {row, install}}`; Slack returns it from `conversations.history` (and `.replies`) only
//! when asked with `include_all_metadata=true`. The outbox uses the pair to make a post
//! idempotent across a crash: see the outbox's `once` module.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use slack_morphism::prelude::*;

use super::{Backend, MessageTag, PostMessageResponse, SlackError};

/// Messages asked for per history page (Slack's recommended maximum).
const HISTORY_PAGE_SIZE: &str = "200";

/// Pages read before giving up on finding a tag: a channel that got more than this many
/// messages since the first attempt is answered "not found" (the row is posted, with a
/// warning: a possible duplicate is better than a lost message).
const HISTORY_MAX_PAGES: usize = 10;

/// The part of a `conversations.history` / `conversations.replies` answer read here.
#[derive(Deserialize)]
struct HistoryPage {
    #[serde(default)]
    messages: Vec<HistoryMessage>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    response_metadata: Option<Cursor>,
}

#[derive(Deserialize)]
struct HistoryMessage {
    ts: String,
    #[serde(default)]
    metadata: serde_json::Value,
}

#[derive(Deserialize)]
struct Cursor {
    #[serde(default)]
    next_cursor: String,
}

/// Slack's `ts` form (`seconds.micros`) of an instant.
fn slack_ts(at: DateTime<Utc>) -> String {
    format!("{}.{:06}", at.timestamp(), at.timestamp_subsec_micros())
}

impl<C: SlackClientHttpConnector + Send + Sync> Backend<C> {
    /// `chat.postMessage`, with `tag` as message metadata when given. Goes through the
    /// generic `http_post` with a lenient answer: once Slack has accepted a message, an
    /// answer slack-morphism cannot fully model must not turn into a retry.
    pub(super) async fn post(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
        tag: Option<&MessageTag>,
    ) -> Result<String, SlackError> {
        let blocks: Option<Vec<SlackBlock>> = match blocks {
            serde_json::Value::Null => None,
            other => {
                let parsed: Vec<SlackBlock> =
                    serde_json::from_value(other.clone()).map_err(|e| {
                        tracing::warn!(error = %e, channel, "refusing to post invalid Block Kit blocks");
                        SlackError::Api { code: "invalid_blocks".into() }
                    })?;
                Some(parsed).filter(|b| !b.is_empty())
            }
        };
        let content = SlackMessageContent::new()
            .with_text(text.to_owned())
            .opt_blocks(blocks);
        let request = SlackApiChatPostMessageRequest::new(channel.into(), content)
            .opt_thread_ts(thread_ts.map(|ts| SlackTs::new(ts.to_owned())));
        // slack-morphism models `event_payload` as string values only; the body is built
        // as JSON so the row id goes out as the number it is.
        let mut body = serde_json::to_value(&request)
            .map_err(|e| SlackError::Transport(format!("chat.postMessage: {e}")))?;
        if let Some(tag) = tag {
            body["metadata"] = tag.to_metadata();
        }
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let answer: PostMessageResponse = session
            .http_session_api
            .http_post(
                "chat.postMessage",
                &body,
                Some(&CHAT_POST_MESSAGE_SPECIAL_LIMIT_RATE_CTL),
            )
            .await
            .map_err(|e| self.map_error("chat.postMessage", e))?;
        Ok(answer.ts)
    }

    /// Pages through the channel's history (or the thread's replies) from `oldest`,
    /// newest first, looking for a message carrying `tag`.
    pub(super) async fn find_tagged_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: DateTime<Utc>,
        tag: &MessageTag,
    ) -> Result<Option<String>, SlackError> {
        let method = match thread_ts {
            Some(_) => "conversations.replies",
            None => "conversations.history",
        };
        let oldest = slack_ts(oldest);
        let mut cursor = String::new();
        for _ in 0..HISTORY_MAX_PAGES {
            let params = vec![
                ("channel", Some(channel)),
                ("ts", thread_ts),
                ("oldest", Some(oldest.as_str())),
                ("inclusive", Some("true")),
                ("include_all_metadata", Some("true")),
                ("limit", Some(HISTORY_PAGE_SIZE)),
                ("cursor", Some(cursor.as_str()).filter(|c| !c.is_empty())),
            ];
            let token = self.api_token();
            let session = self.client.open_session(&token);
            let page: HistoryPage = session
                .http_session_api
                .http_get(method, &params, Some(&SLACK_TIER3_METHOD_CONFIG))
                .await
                .map_err(|e| self.map_error(method, e))?;
            if let Some(found) = page.messages.iter().find(|m| tag.matches(&m.metadata)) {
                return Ok(Some(found.ts.clone()));
            }
            cursor = page
                .response_metadata
                .map(|m| m.next_cursor)
                .unwrap_or_default();
            if !page.has_more || cursor.is_empty() {
                return Ok(None);
            }
        }
        tracing::warn!(
            channel,
            row = tag.row,
            pages = HISTORY_MAX_PAGES,
            "too much history to look through for an earlier post; treating it as not posted"
        );
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_ts_has_microseconds() {
        let at = DateTime::from_timestamp(1_700_000_123, 4_560_000).unwrap();
        assert_eq!(slack_ts(at), "1700000123.004560");
    }

    #[test]
    fn a_tag_matches_its_own_metadata_only() {
        let tag = MessageTag {
            install: "abc".into(),
            row: 42,
            also: Vec::new(),
        };
        assert!(tag.matches(&tag.to_metadata()));
        let as_string = serde_json::json!({"event_type": "klaxon_outbox", "event_payload": {"row": "42", "install": "abc"}});
        assert!(tag.matches(&as_string));
        let other_row = MessageTag {
            row: 43,
            ..tag.clone()
        };
        assert!(!other_row.matches(&tag.to_metadata()));
        let other_install = MessageTag {
            install: "xyz".into(),
            ..tag.clone()
        };
        assert!(!other_install.matches(&tag.to_metadata()));
        // A digest's post is found by each row it delivers.
        let digest = MessageTag {
            also: vec![43, 44],
            ..tag.clone()
        };
        assert!(other_row.matches(&digest.to_metadata()));
        assert!(tag.matches(&digest.to_metadata()));
        let outsider = MessageTag {
            row: 45,
            ..tag.clone()
        };
        assert!(!outsider.matches(&digest.to_metadata()));
        assert!(!tag.matches(&serde_json::Value::Null));
    }
}
