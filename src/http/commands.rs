//! `POST /slack/commands`: the `/incident` slash command.
//!
//! Slack wants an answer within 3 seconds. The handler parses, runs the command through
//! the engine (one transaction) and answers with an ephemeral message; everything that
//! talks back to Slack goes through the outbox.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use super::incident_commands::{self, Invocation};
use super::{AppState, RequestId, internal_error};
use crate::domain::command;

/// The form fields Klaxon uses from a slash-command request.
#[derive(Debug, Deserialize)]
pub struct SlashCommandForm {
    /// The command, e.g. `/incident`.
    pub command: String,
    /// Everything after the command.
    #[serde(default)]
    pub text: String,
    /// Who typed it.
    pub user_id: String,
    /// Where.
    pub channel_id: String,
    /// Lets the app open a form within 3 seconds.
    pub trigger_id: Option<String>,
}

/// An ephemeral answer (only the person who typed the command sees it).
pub fn ephemeral(text: &str) -> Response {
    if text.is_empty() {
        return StatusCode::OK.into_response();
    }
    Json(json!({ "response_type": "ephemeral", "text": text })).into_response()
}

/// Handles one slash command.
pub async fn handle(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Response {
    let form: SlashCommandForm = match serde_urlencoded::from_bytes(&body) {
        Ok(form) => form,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("malformed slash command body: {e}"),
            )
                .into_response();
        }
    };
    let parsed = match command::parse(&form.text) {
        Ok(cmd) => cmd,
        Err(e) => return ephemeral(&e.to_string()),
    };
    let span = tracing::info_span!("slash_command", %request_id, command = parsed.name(), channel = %form.channel_id);
    let inv = Invocation {
        user: form.user_id,
        channel: form.channel_id,
        trigger_id: form.trigger_id.filter(|t| !t.is_empty()),
        request_id: request_id.clone(),
        dedupe: None,
    };
    match incident_commands::run(&state, &inv, parsed)
        .instrument(span)
        .await
    {
        Ok(reply) => ephemeral(&reply.text),
        Err(e) => ephemeral(&internal_error(&request_id, &e)),
    }
}
