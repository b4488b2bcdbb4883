//! Everything Klaxon says to Slack's Web API goes through [`SlackApi`].
//!
//! Only the outbox worker calls it (DESIGN.md: nothing is sent before it is stored), so the
//! trait is small and speaks in plain types: channel ids, user ids, rendered Block Kit JSON.
//! [`morphism::MorphismSlack`] implements it with slack-morphism; the base URL is
//! configurable so tests point the real client at the emulator in `tests/support`.

pub mod groups;
pub mod instrumented;
pub mod manifest;
pub mod methods;
pub mod morphism;
pub mod render;

use std::time::Duration;

use async_trait::async_trait;

pub use crate::domain::access::UserFlags;

/// The `event_type` of the message metadata Klaxon attaches to its posts.
pub const TAG_EVENT_TYPE: &str = "klaxon_outbox";

/// What Klaxon writes into a post's message metadata (`{event_type: "klaxon_outbox",
/// event_payload: {row, install}}`) so that a retry after a crash can find its own post in
/// the channel's history instead of posting it twice. `install` tells this database's rows
/// from those of another Klaxon (or an earlier database) posting in the same workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageTag {
    /// This installation's id (`klaxon_install`, random per database).
    pub install: String,
    /// The outbox row the post delivers.
    pub row: i64,
    /// Other rows the same message delivers (an announcement digest), each found by it.
    pub also: Vec<i64>,
}

impl MessageTag {
    /// The `metadata` argument of `chat.postMessage`.
    pub fn to_metadata(&self) -> serde_json::Value {
        let mut payload = serde_json::json!({ "row": self.row, "install": self.install });
        if !self.also.is_empty() {
            payload["rows"] = serde_json::json!(self.also);
        }
        serde_json::json!({ "event_type": TAG_EVENT_TYPE, "event_payload": payload })
    }

    /// Whether a message's `metadata` (as `conversations.history` returns it with
    /// `include_all_metadata`) is this tag. The row may come back as a number or a string.
    pub fn matches(&self, metadata: &serde_json::Value) -> bool {
        let payload = &metadata["event_payload"];
        let row = match &payload["row"] {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let among_also = payload["rows"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r.as_i64() == Some(self.row)));
        metadata["event_type"] == TAG_EVENT_TYPE
            && (row == Some(self.row) || among_also)
            && payload["install"].as_str() == Some(self.install.as_str())
    }
}

/// A Slack channel as far as adoption of a half-created incident channel needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Channel id, e.g. `C0123ABCD`.
    pub id: String,
    /// Channel name without `#`.
    pub name: String,
    /// User id of whoever created the channel.
    pub creator: Option<String>,
    /// The channel purpose text (empty when unset).
    pub purpose: String,
}

/// A file reserved with `files.getUploadURLExternal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileUpload {
    /// Slack's file id (`F...`).
    pub file_id: String,
    /// Where to POST the bytes.
    pub upload_url: String,
}

/// Why a Web API call did not succeed, sorted by what the outbox should do next.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// HTTP 429: try again after `retry_after` (Slack sends `Retry-After` in seconds).
    #[error("rate limited by Slack (retry after {retry_after:?})")]
    RateLimited {
        /// The `Retry-After` Slack asked for, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Slack answered `ok: false` with this error code (`name_taken`, `channel_not_found`...).
    #[error("Slack API error: {code}")]
    Api {
        /// Slack's error code.
        code: String,
    },
    /// The request did not get a usable answer (connection refused, 5xx other than 503,
    /// bad JSON...): it may or may not have been carried out.
    #[error("Slack transport error: {0}")]
    Transport(String),
    /// HTTP 503: Slack is down and did not take the request (RFC 9110: the server is
    /// "currently unable to handle the request"). Nothing was done, so a post retried
    /// after an outage needs no look for an earlier copy; after a long outage with many
    /// messages waiting, one `conversations.history` each (a Tier 3 method, far slower
    /// still for apps outside the Marketplace) would hold the recovery back for minutes.
    #[error("Slack unavailable: {0}")]
    Unavailable(String),
}

impl SlackError {
    /// Errors that will not go away by retrying the same call.
    ///
    /// Transport failures, 5xx and rate limits are transient; an `ok: false` answer is
    /// permanent except for the codes Slack documents as temporary.
    pub fn is_permanent(&self) -> bool {
        match self {
            SlackError::RateLimited { .. }
            | SlackError::Transport(_)
            | SlackError::Unavailable(_) => false,
            SlackError::Api { code } => !matches!(
                code.as_str(),
                "ratelimited"
                    | "internal_error"
                    | "fatal_error"
                    | "service_unavailable"
                    | "request_timeout"
            ),
        }
    }

    /// The Slack error code, when Slack answered `ok: false`.
    pub fn code(&self) -> Option<&str> {
        match self {
            SlackError::Api { code } => Some(code),
            _ => None,
        }
    }
}

/// The Slack Web API calls Klaxon makes.
#[async_trait]
pub trait SlackApi: Send + Sync {
    /// `auth.test`: the bot's own user id (used to recognise channels the bot created).
    async fn bot_user_id(&self) -> Result<String, SlackError>;

    /// `conversations.create` (public channel). `Err(Api{code:"name_taken"})` when taken.
    async fn create_channel(&self, name: &str) -> Result<ChannelInfo, SlackError>;

    /// `conversations.list` (public, not archived, all pages) filtered by exact name.
    async fn find_channel_by_name(&self, name: &str) -> Result<Option<ChannelInfo>, SlackError>;

    /// `conversations.setPurpose`.
    async fn set_purpose(&self, channel: &str, purpose: &str) -> Result<(), SlackError>;

    /// `conversations.setTopic`.
    async fn set_topic(&self, channel: &str, topic: &str) -> Result<(), SlackError>;

    /// `conversations.invite`. Users already in the channel are not an error.
    async fn invite(&self, channel: &str, users: &[String]) -> Result<(), SlackError>;

    /// `chat.postMessage` with fallback `text` and Block Kit `blocks` (a JSON array).
    /// Returns the message `ts`.
    async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
    ) -> Result<String, SlackError>;

    /// `chat.postMessage` like [`SlackApi::post_message`], carrying `tag` as message
    /// metadata. Returns the message `ts`.
    async fn post_tagged(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
        tag: &MessageTag,
    ) -> Result<String, SlackError>;

    /// The `ts` of a message in `channel` posted at `oldest` or later that carries `tag`,
    /// if there is one: `conversations.history` (or `conversations.replies` of `thread_ts`
    /// for a thread reply, which the history does not list) with `include_all_metadata`,
    /// newest first, a bounded number of pages.
    async fn find_tagged(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: chrono::DateTime<chrono::Utc>,
        tag: &MessageTag,
    ) -> Result<Option<String>, SlackError>;

    /// `usergroups.users.list`: the members of user group `group` (`S...`).
    async fn usergroup_members(&self, group: &str) -> Result<Vec<String>, SlackError>;

    /// `chat.postEphemeral`: `text` visible only to `user` in `channel`.
    async fn post_ephemeral(&self, channel: &str, user: &str, text: &str)
    -> Result<(), SlackError>;

    /// `views.open` with a modal `view` (Block Kit JSON).
    async fn open_view(&self, trigger_id: &str, view: &serde_json::Value)
    -> Result<(), SlackError>;

    /// `users.info`: the account flags that decide whether someone may take part in a
    /// recovery command (guest, Slack Connect stranger, bot, home team). The default
    /// answers an error, so an implementation without it fails closed (nobody approves).
    async fn user_info(&self, user: &str) -> Result<UserFlags, SlackError> {
        let _ = user;
        Err(SlackError::Api {
            code: "users_info_not_supported".into(),
        })
    }

    /// `users.lookupByEmail`: the Slack user id of whoever has `email` in this workspace;
    /// `None` when nobody does (`users_not_found`). The default answers an error.
    async fn user_by_email(&self, email: &str) -> Result<Option<String>, SlackError> {
        let _ = email;
        Err(SlackError::Api {
            code: "users_lookup_not_supported".into(),
        })
    }

    /// `files.getUploadURLExternal`: reserves a file of `length` bytes; returns Slack's
    /// file id and the URL to send the bytes to. The default answers an error.
    async fn upload_url(&self, filename: &str, length: usize) -> Result<FileUpload, SlackError> {
        let _ = (filename, length);
        Err(SlackError::Api {
            code: "files_upload_not_supported".into(),
        })
    }

    /// Sends a file's bytes to the URL [`SlackApi::upload_url`] returned (a plain HTTP
    /// POST of the raw bytes). A refused URL (expired) is a `Transport` error whose text
    /// starts with `upload refused`.
    async fn upload_bytes(&self, upload_url: &str, bytes: &[u8]) -> Result<(), SlackError> {
        let _ = (upload_url, bytes);
        Err(SlackError::Api {
            code: "files_upload_not_supported".into(),
        })
    }

    /// `files.completeUploadExternal`: finishes an upload and shares the file in
    /// `channel` with `comment`.
    async fn complete_upload(
        &self,
        file_id: &str,
        title: &str,
        channel: &str,
        comment: &str,
    ) -> Result<(), SlackError> {
        let _ = (file_id, title, channel, comment);
        Err(SlackError::Api {
            code: "files_upload_not_supported".into(),
        })
    }

    /// The text and author of message `ts` in `channel`: `conversations.history`
    /// narrowed to it, then `conversations.replies` for a reply in a thread; `None` when
    /// it no longer exists.
    async fn message(
        &self,
        channel: &str,
        ts: &str,
    ) -> Result<Option<(String, Option<String>)>, SlackError> {
        let _ = (channel, ts);
        Err(SlackError::Api {
            code: "conversations_history_not_supported".into(),
        })
    }

    /// `users.info`'s `tz` (an IANA zone name such as `Europe/Berlin`), to show times
    /// in the reader's zone; `None` when Slack has none for the user.
    async fn user_time_zone(&self, user: &str) -> Result<Option<String>, SlackError> {
        let _ = user;
        Err(SlackError::Api {
            code: "users_info_not_supported".into(),
        })
    }

    /// `chat.update`: replaces message `ts` in `channel` (fallback `text` and Block Kit
    /// `blocks`, an empty array removing every block, buttons included). The default
    /// answers an error (the outbox retries, then keeps the row as failed).
    async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), SlackError> {
        let _ = (channel, ts, text, blocks);
        Err(SlackError::Api {
            code: "chat_update_not_supported".into(),
        })
    }

    /// `views.publish`: replaces `user`'s App Home tab with `view`. The default answers
    /// an error.
    async fn publish_home(&self, user: &str, view: &serde_json::Value) -> Result<(), SlackError> {
        let _ = (user, view);
        Err(SlackError::Api {
            code: "views_publish_not_supported".into(),
        })
    }
}
