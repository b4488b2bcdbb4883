//! [`MorphismSlack`]: the production [`SlackApi`], built on slack-morphism's hyper client.
//!
//! This module owns the translation between Klaxon's plain types and slack-morphism's typed
//! requests and responses, the bearer token (kept in a [`SecretString`], exposed only to build
//! each request, never logged or put in an error message), the cached `auth.test` user id, and
//! the mapping of slack-morphism's errors onto [`SlackError`].
//!
//! `chat.postMessage`, `views.open` and `conversations.invite` go through slack-morphism's
//! generic `http_post` with lenient response types: once Slack has accepted a message, a reply
//! slack-morphism cannot fully model must not turn into a retry (and a duplicate post), and
//! `conversations.invite` sends `users` as the comma-separated string Slack documents.

use std::fmt;

use async_trait::async_trait;
use hyper_util::client::legacy::connect::HttpConnector;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use tokio::sync::OnceCell;

use super::{ChannelInfo, MessageTag, SlackApi, SlackError};

mod tagged;

mod channels;
mod files;
mod listen;

/// Longest error text kept in a [`SlackError::Transport`].
const MAX_ERROR_TEXT: usize = 300;

/// [`SlackApi`] implemented with slack-morphism against a configurable Web API base URL.
///
/// `https://` URLs use rustls with the platform's native root certificates; `http://` URLs
/// (the test emulator) use a plain TCP connector, so tests need no certificates.
pub struct MorphismSlack {
    api_url: String,
    inner: Box<dyn SlackApi>,
}

impl MorphismSlack {
    /// A client for the Web API at `api_url` (e.g. `https://slack.com/api`; slack-morphism
    /// appends `/{method}`) authenticating with the bot token `bot_token`.
    ///
    /// Fails when `api_url` is neither `http://` nor `https://`, or when an `https://` URL is
    /// given and no native root certificate can be loaded.
    pub fn new(api_url: &str, bot_token: SecretString) -> std::io::Result<Self> {
        let api_url = api_url.trim_end_matches('/').to_owned();
        crate::tls::install_crypto_provider();
        let inner: Box<dyn SlackApi> = if api_url.starts_with("https://") {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()?
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .build();
            Box::new(Backend::new(
                SlackClientHyperConnector::with_connector(https).with_slack_api_url(&api_url),
                bot_token,
            ))
        } else if api_url.starts_with("http://") {
            Box::new(Backend::new(
                SlackClientHyperConnector::with_connector(HttpConnector::new())
                    .with_slack_api_url(&api_url),
                bot_token,
            ))
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("Slack API URL must start with https:// or http://, got {api_url:?}"),
            ));
        };
        Ok(Self { api_url, inner })
    }
}

impl fmt::Debug for MorphismSlack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MorphismSlack")
            .field("api_url", &self.api_url)
            .field("bot_token", &"[redacted]")
            .finish()
    }
}

#[async_trait]
impl SlackApi for MorphismSlack {
    async fn bot_user_id(&self) -> Result<String, SlackError> {
        self.inner.bot_user_id().await
    }

    async fn create_channel(&self, name: &str) -> Result<ChannelInfo, SlackError> {
        self.inner.create_channel(name).await
    }

    async fn find_channel_by_name(&self, name: &str) -> Result<Option<ChannelInfo>, SlackError> {
        self.inner.find_channel_by_name(name).await
    }

    async fn set_purpose(&self, channel: &str, purpose: &str) -> Result<(), SlackError> {
        self.inner.set_purpose(channel, purpose).await
    }

    async fn set_topic(&self, channel: &str, topic: &str) -> Result<(), SlackError> {
        self.inner.set_topic(channel, topic).await
    }

    async fn invite(&self, channel: &str, users: &[String]) -> Result<(), SlackError> {
        self.inner.invite(channel, users).await
    }

    async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
    ) -> Result<String, SlackError> {
        self.inner
            .post_message(channel, text, blocks, thread_ts)
            .await
    }

    async fn post_tagged(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
        tag: &MessageTag,
    ) -> Result<String, SlackError> {
        self.inner
            .post_tagged(channel, text, blocks, thread_ts, tag)
            .await
    }

    async fn find_tagged(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: chrono::DateTime<chrono::Utc>,
        tag: &MessageTag,
    ) -> Result<Option<String>, SlackError> {
        self.inner
            .find_tagged(channel, thread_ts, oldest, tag)
            .await
    }

    async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        self.inner.post_ephemeral(channel, user, text).await
    }

    async fn usergroup_members(&self, group: &str) -> Result<Vec<String>, SlackError> {
        self.inner.usergroup_members(group).await
    }

    async fn open_view(
        &self,
        trigger_id: &str,
        view: &serde_json::Value,
    ) -> Result<(), SlackError> {
        self.inner.open_view(trigger_id, view).await
    }

    async fn user_info(&self, user: &str) -> Result<super::UserFlags, SlackError> {
        self.inner.user_info(user).await
    }

    async fn upload_url(
        &self,
        filename: &str,
        length: usize,
    ) -> Result<super::FileUpload, SlackError> {
        self.inner.upload_url(filename, length).await
    }

    async fn upload_bytes(&self, upload_url: &str, bytes: &[u8]) -> Result<(), SlackError> {
        self.inner.upload_bytes(upload_url, bytes).await
    }

    async fn complete_upload(
        &self,
        file_id: &str,
        title: &str,
        channel: &str,
        comment: &str,
    ) -> Result<(), SlackError> {
        self.inner
            .complete_upload(file_id, title, channel, comment)
            .await
    }

    async fn user_time_zone(&self, user: &str) -> Result<Option<String>, SlackError> {
        self.inner.user_time_zone(user).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<String>, SlackError> {
        self.inner.user_by_email(email).await
    }

    async fn message(
        &self,
        channel: &str,
        ts: &str,
    ) -> Result<Option<(String, Option<String>)>, SlackError> {
        self.inner.message(channel, ts).await
    }

    async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), SlackError> {
        self.inner.update_message(channel, ts, text, blocks).await
    }

    async fn publish_home(&self, user: &str, view: &serde_json::Value) -> Result<(), SlackError> {
        self.inner.publish_home(user, view).await
    }
}

/// The implementation, generic over the hyper connector (TLS or plain HTTP).
struct Backend<C: SlackClientHttpConnector + Send + Sync> {
    client: SlackClient<C>,
    /// For the one call that is not a Web API method: the bytes of a file upload.
    http: reqwest::Client,
    token: SecretString,
    bot_user_id: OnceCell<String>,
}

/// The only part of the `chat.postMessage` answer Klaxon needs.
#[derive(Deserialize)]
struct PostMessageResponse {
    ts: String,
}

impl<C: SlackClientHttpConnector + Send + Sync> Backend<C> {
    fn new(connector: C, token: SecretString) -> Self {
        Self {
            client: SlackClient::new(connector),
            http: reqwest::Client::new(),
            token,
            bot_user_id: OnceCell::new(),
        }
    }

    /// A slack-morphism token for one call; it is dropped with the call.
    fn api_token(&self) -> SlackApiToken {
        SlackApiToken::new(SlackApiTokenValue::new(
            self.token.expose_secret().to_owned(),
        ))
    }

    /// Sorts a slack-morphism error into a [`SlackError`] whose text never holds the token.
    fn map_error(&self, method: &str, err: SlackClientError) -> SlackError {
        let text = match err {
            SlackClientError::RateLimitError(e) => {
                return SlackError::RateLimited {
                    retry_after: e.retry_after,
                };
            }
            SlackClientError::ApiError(e) => return SlackError::Api { code: e.code },
            SlackClientError::HttpError(e) => {
                let body = e.http_response_body.unwrap_or_default();
                let text = format!("{method}: HTTP {}: {}", e.status_code, body.trim());
                if e.status_code.as_u16() == 503 {
                    return SlackError::Unavailable(self.scrub(text));
                }
                text
            }
            SlackClientError::ProtocolError(e) => {
                format!("{method}: unexpected response: {}", e.json_error)
            }
            other => format!("{method}: {other}"),
        };
        SlackError::Transport(self.scrub(text))
    }

    /// A Web API POST whose answer matters only for its `ok` (errors sorted as in
    /// [`Backend::map_error`]).
    async fn post_for_ok<R: serde::Serialize + Send + Sync>(
        &self,
        method: &str,
        request: &R,
        rate: &SlackApiMethodRateControlConfig,
    ) -> Result<(), SlackError> {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        session
            .http_session_api
            .http_post::<_, serde::de::IgnoredAny>(method, request, Some(rate))
            .await
            .map(drop)
            .map_err(|e| self.map_error(method, e))
    }

    /// Removes the token (should anything ever echo it) and bounds the length.
    fn scrub(&self, text: String) -> String {
        let token = self.token.expose_secret();
        let mut text = if token.is_empty() {
            text
        } else {
            text.replace(token, "[redacted]")
        };
        if text.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        text
    }
}

#[async_trait]
impl<C> SlackApi for Backend<C>
where
    C: SlackClientHttpConnector + Send + Sync + 'static,
{
    async fn bot_user_id(&self) -> Result<String, SlackError> {
        self.bot_user_id
            .get_or_try_init(|| async {
                let token = self.api_token();
                let session = self.client.open_session(&token);
                let answer = session
                    .auth_test()
                    .await
                    .map_err(|e| self.map_error("auth.test", e))?;
                Ok(answer.user_id.0)
            })
            .await
            .cloned()
    }

    async fn create_channel(&self, name: &str) -> Result<ChannelInfo, SlackError> {
        self.create_channel_call(name).await
    }

    async fn find_channel_by_name(&self, name: &str) -> Result<Option<ChannelInfo>, SlackError> {
        self.find_channel_by_name_call(name).await
    }

    async fn set_purpose(&self, channel: &str, purpose: &str) -> Result<(), SlackError> {
        self.set_purpose_call(channel, purpose).await
    }

    async fn set_topic(&self, channel: &str, topic: &str) -> Result<(), SlackError> {
        self.set_topic_call(channel, topic).await
    }

    async fn invite(&self, channel: &str, users: &[String]) -> Result<(), SlackError> {
        self.invite_call(channel, users).await
    }

    async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
    ) -> Result<String, SlackError> {
        self.post(channel, text, blocks, thread_ts, None).await
    }

    async fn post_tagged(
        &self,
        channel: &str,
        text: &str,
        blocks: &serde_json::Value,
        thread_ts: Option<&str>,
        tag: &MessageTag,
    ) -> Result<String, SlackError> {
        self.post(channel, text, blocks, thread_ts, Some(tag)).await
    }

    async fn find_tagged(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: chrono::DateTime<chrono::Utc>,
        tag: &MessageTag,
    ) -> Result<Option<String>, SlackError> {
        self.find_tagged_message(channel, thread_ts, oldest, tag)
            .await
    }

    async fn usergroup_members(&self, group: &str) -> Result<Vec<String>, SlackError> {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let request =
            SlackApiUserGroupsUsersListRequest::new(SlackUserGroupId::new(group.to_owned()));
        let answer = session
            .usergroups_users_list(&request)
            .await
            .map_err(|e| self.map_error("usergroups.users.list", e))?;
        Ok(answer.users.into_iter().map(|u| u.0).collect())
    }

    async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let request = serde_json::json!({ "channel": channel, "user": user, "text": text });
        self.post_for_ok(
            "chat.postEphemeral",
            &request,
            &CHAT_POST_MESSAGE_SPECIAL_LIMIT_RATE_CTL,
        )
        .await
    }

    async fn open_view(
        &self,
        trigger_id: &str,
        view: &serde_json::Value,
    ) -> Result<(), SlackError> {
        let view: SlackView = serde_json::from_value(view.clone()).map_err(|e| {
            tracing::warn!(error = %e, "refusing to open an invalid Block Kit view");
            SlackError::Api {
                code: "invalid_blocks".into(),
            }
        })?;
        let request = SlackApiViewsOpenRequest::new(trigger_id.into(), view);
        self.post_for_ok("views.open", &request, &SLACK_TIER4_METHOD_CONFIG)
            .await
    }

    /// `users.info` through the generic `http_get` with a lenient answer type: only the
    /// flags Klaxon reads are decoded (missing ones read as false), so a field Slack adds
    /// or slack-morphism does not model cannot break approvals.
    async fn user_info(&self, user: &str) -> Result<super::UserFlags, SlackError> {
        let params = vec![("user", Some(user))];
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let answer: UsersInfoResponse = session
            .http_session_api
            .http_get("users.info", &params, Some(&SLACK_TIER4_METHOD_CONFIG))
            .await
            .map_err(|e| self.map_error("users.info", e))?;
        let u = answer.user;
        Ok(super::UserFlags {
            team_id: u.team_id,
            is_restricted: u.is_restricted,
            is_ultra_restricted: u.is_ultra_restricted,
            is_stranger: u.is_stranger,
            is_bot: u.is_bot || u.is_app_user,
            deleted: u.deleted,
        })
    }

    async fn publish_home(&self, user: &str, view: &serde_json::Value) -> Result<(), SlackError> {
        self.publish(user, view).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<String>, SlackError> {
        self.user_by_email_call(email).await
    }

    async fn upload_url(
        &self,
        filename: &str,
        length: usize,
    ) -> Result<super::FileUpload, SlackError> {
        self.upload_url_call(filename, length).await
    }

    async fn upload_bytes(&self, upload_url: &str, bytes: &[u8]) -> Result<(), SlackError> {
        self.upload_bytes_call(upload_url, bytes).await
    }

    async fn complete_upload(
        &self,
        file_id: &str,
        title: &str,
        channel: &str,
        comment: &str,
    ) -> Result<(), SlackError> {
        self.complete_upload_call(file_id, title, channel, comment)
            .await
    }

    async fn message(
        &self,
        channel: &str,
        ts: &str,
    ) -> Result<Option<(String, Option<String>)>, SlackError> {
        self.fetch_message(channel, ts).await
    }

    async fn user_time_zone(&self, user: &str) -> Result<Option<String>, SlackError> {
        self.user_time_zone_call(user).await
    }

    /// `chat.update` through `http_post` (answer ignored beyond `ok`).
    async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), SlackError> {
        let request =
            serde_json::json!({ "channel": channel, "ts": ts, "text": text, "blocks": blocks });
        self.post_for_ok("chat.update", &request, &SLACK_TIER3_METHOD_CONFIG)
            .await
    }
}

/// The part of a `users.info` answer Klaxon reads.
#[derive(Deserialize)]
struct UsersInfoResponse {
    user: UsersInfoUser,
}

#[derive(Deserialize)]
struct UsersInfoUser {
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    is_restricted: bool,
    #[serde(default)]
    is_ultra_restricted: bool,
    #[serde(default)]
    is_stranger: bool,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    is_app_user: bool,
    #[serde(default)]
    deleted: bool,
}
