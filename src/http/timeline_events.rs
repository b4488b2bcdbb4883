//! Events API `pin_added` and `reaction_added` in an incident channel: the message goes on
//! the incident's timeline. Pinning always counts; a reaction counts when its emoji is one
//! of `[timeline] note_reactions`. Events elsewhere (another helper handles reactions in
//! `#incident-response`) are only marked as seen.
//!
//! A pin carries the message's text; a reaction does not, so its message is fetched by
//! the outbox worker (`Outbound::CaptureNote`) and recorded from there. Both are
//! deduplicated on the event id in the transaction that records them, and a message
//! already on the timeline (pinned, then reacted to) is recorded once.

use serde_json::Value;

use super::AppState;
use crate::domain::incident::Actor;
use crate::domain::outbound::Outbound;
use crate::domain::outbound::incident_key;
use crate::domain::record::NoteSource;
use crate::engine::{Addition, EngineError, RequestMeta};

/// The parts of a `pin_added` / `reaction_added` event this module reads.
pub struct MessageEvent<'a> {
    /// `pin_added` or `reaction_added`.
    pub kind: &'a str,
    /// Who pinned or reacted.
    pub user: Option<String>,
    /// `pin_added`'s top-level `channel_id`.
    pub channel_id: Option<&'a str>,
    /// The `item` object.
    pub item: Option<&'a Value>,
    /// `reaction_added`'s emoji name.
    pub reaction: Option<&'a str>,
    /// `reaction_added`'s author of the message.
    pub item_user: Option<&'a str>,
}

/// Handles one event; `Duplicate` when the event id was seen before.
pub async fn handle(
    state: &AppState,
    event: MessageEvent<'_>,
    source: &str,
    event_id: &str,
    request_id: &str,
) -> Result<(), EngineError> {
    let item = event.item.cloned().unwrap_or(Value::Null);
    let channel = item["channel"]
        .as_str()
        .or(event.channel_id)
        .map(str::to_string);
    let (Some(user), Some(channel)) = (event.user, channel) else {
        return seen(state, source, event_id).await;
    };
    if item["type"].as_str().is_some_and(|t| t != "message") {
        return seen(state, source, event_id).await;
    }
    let Some(incident) = state.engine.store().incident_by_channel(&channel).await? else {
        return seen(state, source, event_id).await;
    };
    let meta = RequestMeta {
        actor: Actor::User(user.clone()),
        request_id: request_id.to_string(),
        dedupe: Some((source.to_string(), event_id.to_string())),
    };
    match event.kind {
        "pin_added" => {
            let message = &item["message"];
            let (Some(text), Some(ts)) = (message["text"].as_str(), message["ts"].as_str()) else {
                return seen(state, source, event_id).await;
            };
            let note = Addition::Note {
                text: text.to_string(),
                source: NoteSource::Pin {
                    author: message["user"].as_str().map(str::to_string),
                    ts: ts.to_string(),
                },
            };
            match state.engine.add_to_record(&meta, incident.id, note).await {
                Ok(_) => Ok(()),
                // Already on the timeline, or text Klaxon refuses: nothing to add.
                Err(EngineError::Refused(refusal)) => {
                    tracing::info!(incident = %incident.id, %refusal, "pinned message not added");
                    seen(state, source, event_id).await
                }
                Err(e) => Err(e),
            }
        }
        _ => {
            let emoji = event.reaction.unwrap_or_default();
            let wanted = state.note_reactions.iter().any(|r| r == emoji);
            let Some(ts) = item["ts"].as_str().filter(|_| wanted) else {
                return seen(state, source, event_id).await;
            };
            let capture = Outbound::CaptureNote {
                incident_id: incident.id,
                channel,
                ts: ts.to_string(),
                by: user,
                emoji: emoji.to_string(),
                author: event.item_user.map(str::to_string),
            };
            state
                .engine
                .send(&meta, &incident_key(incident.id), capture)
                .await
        }
    }
}

async fn seen(state: &AppState, source: &str, event_id: &str) -> Result<(), EngineError> {
    if state.engine.mark_seen(source, event_id).await? {
        Ok(())
    } else {
        Err(EngineError::Duplicate)
    }
}
