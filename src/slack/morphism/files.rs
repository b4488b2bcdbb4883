//! The Web API calls added for issue 10 (file uploads, one message of the history, a
//! user's time zone), as inherent methods of the slack-morphism backend; the
//! [`SlackApi`](super::super::SlackApi) impl in the parent delegates to them.

use serde::Deserialize;
use slack_morphism::prelude::*;

use super::super::SlackError;
use super::Backend;

impl<C> Backend<C>
where
    C: SlackClientHttpConnector + Send + Sync + 'static,
{
    /// `files.getUploadURLExternal` through `http_get` (Slack documents it as a form
    /// or query call, not JSON).
    pub(super) async fn upload_url_call(
        &self,
        filename: &str,
        length: usize,
    ) -> Result<super::super::FileUpload, SlackError> {
        let length = length.to_string();
        let params = vec![
            ("filename", Some(filename)),
            ("length", Some(length.as_str())),
        ];
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let answer: UploadUrlResponse = session
            .http_session_api
            .http_get(
                "files.getUploadURLExternal",
                &params,
                Some(&SLACK_TIER4_METHOD_CONFIG),
            )
            .await
            .map_err(|e| self.map_error("files.getUploadURLExternal", e))?;
        Ok(super::super::FileUpload {
            file_id: answer.file_id,
            upload_url: answer.upload_url,
        })
    }

    /// The bytes go to the pre-signed upload URL as a plain POST (reqwest; the URL is not
    /// a Web API method, Slack answers `OK - <length>` in text). The token is not sent.
    pub(super) async fn upload_bytes_call(
        &self,
        upload_url: &str,
        bytes: &[u8],
    ) -> Result<(), SlackError> {
        let response = self
            .http
            .post(upload_url)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|e| SlackError::Transport(self.scrub(format!("file upload: {e}"))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.as_u16() == 429 {
            return Err(SlackError::RateLimited { retry_after: None });
        }
        let body = response.text().await.unwrap_or_default();
        let refused = if status.is_client_error() {
            "upload refused"
        } else {
            "upload failed"
        };
        Err(SlackError::Transport(self.scrub(format!(
            "{refused}: HTTP {status}: {}",
            body.trim()
        ))))
    }

    /// `files.completeUploadExternal` through `http_post` (JSON; answer ignored beyond
    /// `ok`).
    pub(super) async fn complete_upload_call(
        &self,
        file_id: &str,
        title: &str,
        channel: &str,
        comment: &str,
    ) -> Result<(), SlackError> {
        let request = serde_json::json!({
            "files": [{ "id": file_id, "title": title }],
            "channel_id": channel,
            "initial_comment": comment,
        });
        self.post_for_ok(
            "files.completeUploadExternal",
            &request,
            &SLACK_TIER4_METHOD_CONFIG,
        )
        .await
    }

    /// `users.info`, reading only `tz`.
    pub(super) async fn user_time_zone_call(
        &self,
        user: &str,
    ) -> Result<Option<String>, SlackError> {
        let params = vec![("user", Some(user))];
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let answer: UsersInfoTz = session
            .http_session_api
            .http_get("users.info", &params, Some(&SLACK_TIER4_METHOD_CONFIG))
            .await
            .map_err(|e| self.map_error("users.info", e))?;
        Ok(answer.user.tz.filter(|tz| !tz.is_empty()))
    }

    /// `users.lookupByEmail` (Tier 3); `users_not_found` is an answer, not an error.
    pub(super) async fn user_by_email_call(
        &self,
        email: &str,
    ) -> Result<Option<String>, SlackError> {
        let params = vec![("email", Some(email))];
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let answer: Result<UserByEmail, _> = session
            .http_session_api
            .http_get(
                "users.lookupByEmail",
                &params,
                Some(&SLACK_TIER3_METHOD_CONFIG),
            )
            .await;
        match answer.map_err(|e| self.map_error("users.lookupByEmail", e)) {
            Ok(answer) => Ok(Some(answer.user.id)),
            Err(SlackError::Api { code }) if code == "users_not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The part of a `users.lookupByEmail` answer Klaxon reads.
#[derive(Deserialize)]
struct UserByEmail {
    user: UserByEmailUser,
}

#[derive(Deserialize)]
struct UserByEmailUser {
    id: String,
}

/// The `files.getUploadURLExternal` answer.
#[derive(Deserialize)]
struct UploadUrlResponse {
    upload_url: String,
    file_id: String,
}

/// The part of a `conversations.history` answer Klaxon reads.
/// The `tz` of a `users.info` answer.
#[derive(Deserialize)]
struct UsersInfoTz {
    user: UsersInfoTzUser,
}

#[derive(Deserialize)]
struct UsersInfoTzUser {
    #[serde(default)]
    tz: Option<String>,
}
