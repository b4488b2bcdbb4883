//! The Web API calls issue 11 added (reading the message a reaction points at, publishing
//! the App Home), through slack-morphism's generic `http_get` / `http_post` with lenient
//! answer types: only the fields Klaxon reads are decoded.

use serde::Deserialize;
use slack_morphism::prelude::*;

use super::Backend;
use crate::slack::SlackError;

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    messages: Vec<FetchedMessage>,
}

#[derive(Deserialize)]
struct FetchedMessage {
    #[serde(default)]
    ts: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

#[derive(Deserialize)]
struct Attachment {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    fallback: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

impl FetchedMessage {
    /// The text (for an alert posted only as attachments, the first attachment's) and
    /// the author.
    fn readable(self) -> (String, Option<String>) {
        if !self.text.trim().is_empty() {
            return (self.text, self.user);
        }
        let text = self
            .attachments
            .into_iter()
            .find_map(|a| a.title.or(a.fallback).or(a.text))
            .unwrap_or_default();
        (text, self.user)
    }
}

impl<C: SlackClientHttpConnector + Send + Sync> Backend<C> {
    /// `conversations.history` for exactly `ts` (a top-level message), then
    /// `conversations.replies` (a reply in a thread): the message's text and author,
    /// `None` when neither finds it (deleted).
    pub(super) async fn fetch_message(
        &self,
        channel: &str,
        ts: &str,
    ) -> Result<Option<(String, Option<String>)>, SlackError> {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let params = vec![
            ("channel", Some(channel)),
            ("latest", Some(ts)),
            ("oldest", Some(ts)),
            ("inclusive", Some("true")),
            ("limit", Some("1")),
        ];
        let answer: MessagesResponse = session
            .http_session_api
            .http_get(
                "conversations.history",
                &params,
                Some(&SLACK_TIER3_METHOD_CONFIG),
            )
            .await
            .map_err(|e| self.map_error("conversations.history", e))?;
        if let Some(m) = answer.messages.into_iter().find(|m| m.ts == ts) {
            return Ok(Some(m.readable()));
        }
        let params = vec![
            ("channel", Some(channel)),
            ("ts", Some(ts)),
            ("latest", Some(ts)),
            ("oldest", Some(ts)),
            ("inclusive", Some("true")),
            ("limit", Some("1")),
        ];
        let answer: MessagesResponse = match session
            .http_session_api
            .http_get(
                "conversations.replies",
                &params,
                Some(&SLACK_TIER3_METHOD_CONFIG),
            )
            .await
            .map_err(|e| self.map_error("conversations.replies", e))
        {
            Ok(answer) => answer,
            // Slack's answer for a ts that is no message (deleted): nothing to offer.
            Err(SlackError::Api { code }) if code == "thread_not_found" => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(answer
            .messages
            .into_iter()
            .find(|m| m.ts == ts)
            .map(FetchedMessage::readable))
    }

    /// `views.publish` of a Home tab `view` for `user`.
    pub(super) async fn publish(
        &self,
        user: &str,
        view: &serde_json::Value,
    ) -> Result<(), SlackError> {
        let request = serde_json::json!({ "user_id": user, "view": view });
        self.post_for_ok("views.publish", &request, &SLACK_TIER4_METHOD_CONFIG)
            .await
    }
}
