//! `POST /slack/events`: the Events API.
//!
//! Answers `url_verification` with the challenge. For `event_callback`, each `event_id` is
//! processed once: Slack retries (with `X-Slack-Retry-Num`) when we are slow or fail, and
//! the id is recorded in the same transaction as whatever the event changed. An
//! `app_mention` is read as an `/incident` command and answered in a thread.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::incident_commands::{self, Invocation};
use super::{AppState, RequestId, internal_error};
use crate::domain::command;
use crate::domain::outbound::Outbound;
use crate::engine::{EngineError, RequestMeta};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Envelope {
    UrlVerification {
        challenge: String,
    },
    EventCallback {
        event_id: String,
        event: Box<Event>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
    text: Option<String>,
    channel: Option<String>,
    ts: Option<String>,
    thread_ts: Option<String>,
    /// `pin_added`: the channel; `reaction_added` has it in `item`.
    channel_id: Option<String>,
    /// `pin_added` / `reaction_added`: what was pinned or reacted to.
    item: Option<serde_json::Value>,
    /// `reaction_added`: the emoji name.
    reaction: Option<String>,
    /// `reaction_added`: who wrote the message.
    item_user: Option<String>,
}

/// The Events API source name in the dedupe table.
const SOURCE: &str = "slack-events";

/// Strips the leading `<@BOT>` mention from an app_mention's text.
fn command_text(text: &str) -> &str {
    let text = text.trim_start();
    match text
        .strip_prefix("<@")
        .and_then(|rest| rest.split_once('>'))
    {
        Some((_, rest)) => rest.trim(),
        None => text.trim(),
    }
}

/// Handles one Events API request.
pub async fn handle(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Response {
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("malformed event JSON: {e}"),
            )
                .into_response();
        }
    };
    let (event_id, event) = match envelope {
        Envelope::UrlVerification { challenge } => {
            return Json(json!({ "challenge": challenge })).into_response();
        }
        Envelope::EventCallback { event_id, event } => (event_id, *event),
        Envelope::Other => {
            tracing::info!("Events API envelope of an unhandled type acknowledged");
            return StatusCode::OK.into_response();
        }
    };
    let outcome = match (event.kind.as_str(), event.user, event.channel, event.ts) {
        ("app_mention", Some(user), Some(channel), Some(ts)) => {
            let thread = event.thread_ts.unwrap_or(ts);
            let inv = Invocation {
                user,
                channel: channel.clone(),
                trigger_id: None,
                request_id: request_id.clone(),
                dedupe: Some((SOURCE.to_string(), event_id.clone())),
            };
            mention(
                &state,
                &inv,
                event.text.as_deref().unwrap_or_default(),
                thread,
            )
            .await
        }
        // A reaction in #incident-response offers to declare (issue 11); in an incident
        // channel it may add the message to the timeline. One handler each: both record
        // the event id, and the second would see a repeat.
        ("reaction_added", ..)
            if event
                .item
                .as_ref()
                .and_then(|item| item["channel"].as_str())
                .is_some_and(|channel| channel == &*state.announce_channel) =>
        {
            crate::listen::on_event(
                &state.engine,
                &state.intake,
                &state.announce_channel,
                &event_id,
                &body,
            )
            .await
        }
        ("message" | "app_home_opened", ..) => {
            crate::listen::on_event(
                &state.engine,
                &state.intake,
                &state.announce_channel,
                &event_id,
                &body,
            )
            .await
        }
        (kind @ ("pin_added" | "reaction_added"), user, ..) => {
            let message = super::timeline_events::MessageEvent {
                kind,
                user,
                channel_id: event.channel_id.as_deref(),
                item: event.item.as_ref(),
                reaction: event.reaction.as_deref(),
                item_user: event.item_user.as_deref(),
            };
            super::timeline_events::handle(&state, message, SOURCE, &event_id, &request_id).await
        }
        (kind, ..) => {
            tracing::debug!(%kind, "event without a handler recorded");
            state.engine.mark_seen(SOURCE, &event_id).await.map(|_| ())
        }
    };
    match outcome {
        Ok(()) | Err(EngineError::Duplicate) => StatusCode::OK.into_response(),
        // A 500 makes Slack retry the event later; the dedupe row was rolled back with
        // the failed transaction, so the retry is processed.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            internal_error(&request_id, &e),
        )
            .into_response(),
    }
}

async fn mention(
    state: &AppState,
    inv: &Invocation,
    text: &str,
    thread: String,
) -> Result<(), EngineError> {
    let reply = match command::parse(command_text(text)) {
        Ok(cmd) => incident_commands::run(state, inv, cmd).await?,
        Err(e) => incident_commands::Reply {
            text: e.to_string(),
            dedupe_consumed: false,
        },
    };
    // The reply carries the dedupe key when nothing before it did, so a retried event
    // that only asked for help is answered once too.
    let meta = RequestMeta {
        dedupe: if reply.dedupe_consumed {
            None
        } else {
            inv.dedupe.clone()
        },
        ..RequestMeta::user(&inv.user, &inv.request_id)
    };
    if reply.text.is_empty() {
        return Ok(());
    }
    let outbound = Outbound::Reply {
        channel: inv.channel.clone(),
        thread_ts: Some(thread),
        text: reply.text,
    };
    state
        .engine
        .send(&meta, &format!("channel:{}", inv.channel), outbound)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bot_mention_is_stripped() {
        assert_eq!(
            command_text("<@UKLAXON> declare sev2 Slow API"),
            "declare sev2 Slow API"
        );
        assert_eq!(command_text("  <@UKLAXON|klaxon>   list"), "list");
        assert_eq!(command_text("help"), "help");
    }
}
