//! [`Instrumented`]: any [`SlackApi`] with every call counted for `/metrics` (calls,
//! errors by code, 429s by method). It wraps the client once at wiring, so the worker,
//! the handlers and the group directory are all counted without touching their code.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ChannelInfo, FileUpload, SlackApi, SlackError, UserFlags};
use crate::metrics;

/// A [`SlackApi`] that counts.
pub struct Instrumented {
    inner: Arc<dyn SlackApi>,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn SlackApi>) -> Arc<dyn SlackApi> {
        Arc::new(Instrumented { inner })
    }
}

/// Counts one call's outcome and passes it on.
fn counted<T>(method: &str, result: Result<T, SlackError>) -> Result<T, SlackError> {
    let m = metrics::process();
    m.slack_calls.with_label_values(&[method]).inc();
    if let Err(e) = &result {
        let code = match e {
            SlackError::RateLimited { .. } => {
                m.slack_rate_limited.with_label_values(&[method]).inc();
                "ratelimited"
            }
            SlackError::Api { code } => code.as_str(),
            SlackError::Transport(_) => "transport",
            SlackError::Unavailable(_) => "unavailable",
        };
        m.slack_errors.with_label_values(&[method, code]).inc();
    }
    result
}

#[async_trait]
impl SlackApi for Instrumented {
    async fn bot_user_id(&self) -> Result<String, SlackError> {
        counted("auth.test", self.inner.bot_user_id().await)
    }

    async fn create_channel(&self, name: &str) -> Result<ChannelInfo, SlackError> {
        counted(
            "conversations.create",
            self.inner.create_channel(name).await,
        )
    }

    async fn find_channel_by_name(&self, name: &str) -> Result<Option<ChannelInfo>, SlackError> {
        counted(
            "conversations.list",
            self.inner.find_channel_by_name(name).await,
        )
    }

    async fn set_purpose(&self, channel: &str, purpose: &str) -> Result<(), SlackError> {
        counted(
            "conversations.setPurpose",
            self.inner.set_purpose(channel, purpose).await,
        )
    }

    async fn set_topic(&self, channel: &str, topic: &str) -> Result<(), SlackError> {
        counted(
            "conversations.setTopic",
            self.inner.set_topic(channel, topic).await,
        )
    }

    async fn invite(&self, channel: &str, users: &[String]) -> Result<(), SlackError> {
        counted(
            "conversations.invite",
            self.inner.invite(channel, users).await,
        )
    }

    async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
    ) -> Result<String, SlackError> {
        counted(
            "chat.postMessage",
            self.inner
                .post_message(channel, text, blocks, thread_ts)
                .await,
        )
    }

    async fn post_tagged(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
        tag: &super::MessageTag,
    ) -> Result<String, SlackError> {
        counted(
            "chat.postMessage",
            self.inner
                .post_tagged(channel, text, blocks, thread_ts, tag)
                .await,
        )
    }

    async fn find_tagged(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: chrono::DateTime<chrono::Utc>,
        tag: &super::MessageTag,
    ) -> Result<Option<String>, SlackError> {
        let method = match thread_ts {
            Some(_) => "conversations.replies",
            None => "conversations.history",
        };
        counted(
            method,
            self.inner
                .find_tagged(channel, thread_ts, oldest, tag)
                .await,
        )
    }

    async fn usergroup_members(&self, group: &str) -> Result<Vec<String>, SlackError> {
        counted(
            "usergroups.users.list",
            self.inner.usergroup_members(group).await,
        )
    }

    async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        counted(
            "chat.postEphemeral",
            self.inner.post_ephemeral(channel, user, text).await,
        )
    }

    async fn open_view(
        &self,
        trigger_id: &str,
        view: &serde_json::Value,
    ) -> Result<(), SlackError> {
        counted("views.open", self.inner.open_view(trigger_id, view).await)
    }

    async fn user_info(&self, user: &str) -> Result<UserFlags, SlackError> {
        counted("users.info", self.inner.user_info(user).await)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<String>, SlackError> {
        counted("users.lookupByEmail", self.inner.user_by_email(email).await)
    }

    async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), SlackError> {
        counted(
            "chat.update",
            self.inner.update_message(channel, ts, text, blocks).await,
        )
    }

    async fn upload_url(&self, filename: &str, length: usize) -> Result<FileUpload, SlackError> {
        counted(
            "files.getUploadURLExternal",
            self.inner.upload_url(filename, length).await,
        )
    }

    async fn upload_bytes(&self, upload_url: &str, bytes: &[u8]) -> Result<(), SlackError> {
        counted(
            "files.upload_url",
            self.inner.upload_bytes(upload_url, bytes).await,
        )
    }

    async fn complete_upload(
        &self,
        file_id: &str,
        title: &str,
        channel: &str,
        comment: &str,
    ) -> Result<(), SlackError> {
        counted(
            "files.completeUploadExternal",
            self.inner
                .complete_upload(file_id, title, channel, comment)
                .await,
        )
    }

    async fn message(
        &self,
        channel: &str,
        ts: &str,
    ) -> Result<Option<(String, Option<String>)>, SlackError> {
        counted(
            "conversations.history",
            self.inner.message(channel, ts).await,
        )
    }

    async fn user_time_zone(&self, user: &str) -> Result<Option<String>, SlackError> {
        counted("users.info", self.inner.user_time_zone(user).await)
    }

    async fn publish_home(&self, user: &str, view: &serde_json::Value) -> Result<(), SlackError> {
        counted("views.publish", self.inner.publish_home(user, view).await)
    }
}
