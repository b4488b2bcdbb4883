//! Klaxon listening (issue 11): beyond slash commands and @mentions.
//!
//! - [`offer`]: a configured reaction on a message in `#incident-response`, or a message
//!   from a configured alerting bot, gets a "Declare incident" button in its thread that
//!   opens the declare form prefilled from the message; the incident links back to it.
//! - [`home`]: the App Home tab (open incidents, runs awaiting the viewer's approval),
//!   published when opened and republished when incidents or runs change.
//!
//! Like every handler, these only write (the event id, an outbox row) in one transaction;
//! the outbox worker makes the Slack calls (`src/outbox/listen.rs`).
//!
//! Where it sits: `http` hands it Events API callbacks and offer clicks (whether they
//! arrived over HTTP or Socket Mode, `http::socket`), and the outbox asks it for the Home
//! view it publishes. So it imports neither: it takes the [`Engine`] and the settings it
//! needs as arguments, renders through `slack::render`, and depends only on `engine`,
//! `store`, `slack`, `config`, `clock` and `domain`.

pub mod home;
pub mod offer;

use serde::Deserialize;

use crate::config::IntakeConfig;
use crate::engine::{Engine, EngineError};

/// The Events API fields the listeners read (the rest of the event is ignored).
#[derive(Debug, Default, Deserialize)]
pub struct ListenedEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    reaction: Option<String>,
    #[serde(default)]
    item: Option<ReactionItem>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    bot_id: Option<String>,
    #[serde(default)]
    attachments: Vec<Attachment>,
    #[serde(default)]
    tab: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReactionItem {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Attachment {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    fallback: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct CallbackBody {
    event: ListenedEvent,
}

/// Handles `reaction_added`, `message` and `app_home_opened` from an `event_callback`
/// `body`, as configured by `intake` for the `#incident-response` channel `announce`.
/// Every path records `event_id` (a retry is [`EngineError::Duplicate`]); events that are
/// not for these listeners (another reaction, another channel, an ordinary message) are
/// only recorded.
pub async fn on_event(
    engine: &Engine,
    intake: &IntakeConfig,
    announce: &str,
    event_id: &str,
    body: &[u8],
) -> Result<(), EngineError> {
    let event = serde_json::from_slice::<CallbackBody>(body)
        .map(|b| b.event)
        .unwrap_or_default();
    match event.kind.as_str() {
        "reaction_added" => {
            if let Some(item) = &event.item
                && item.kind == "message"
                && item.channel.as_deref() == Some(announce)
                && event.reaction.as_deref() == Some(intake.declare_reaction.as_str())
                && let Some(ts) = &item.ts
            {
                let source = crate::domain::declare_offer::SourceMessage {
                    channel: announce.to_string(),
                    ts: ts.clone(),
                };
                return offer::record(engine, event_id, source, None).await;
            }
        }
        "message" => {
            let from_alert_bot = [event.bot_id.as_deref(), event.user.as_deref()]
                .into_iter()
                .flatten()
                .any(|id| intake.alert_bots.iter().any(|b| b == id));
            // Edits, deletions and thread broadcasts are not new alerts.
            let new_message = matches!(event.subtype.as_deref(), None | Some("bot_message"));
            if from_alert_bot
                && new_message
                && event.channel.as_deref() == Some(announce)
                && let Some(ts) = &event.ts
            {
                let text = alert_text(&event);
                if intake.alert_matches(&text) {
                    let source = crate::domain::declare_offer::SourceMessage {
                        channel: announce.to_string(),
                        ts: ts.clone(),
                    };
                    return offer::record(engine, event_id, source, Some(text)).await;
                }
            }
        }
        "app_home_opened" => {
            if event.tab.as_deref() == Some("home")
                && let Some(user) = &event.user
            {
                return home::opened(engine, event_id, user).await;
            }
        }
        _ => {}
    }
    match engine.mark_seen(SOURCE, event_id).await? {
        true => Ok(()),
        false => Err(EngineError::Duplicate),
    }
}

/// The dedupe source of the Events API (the same as `http::events`).
pub(crate) const SOURCE: &str = "slack-events";

/// An alert's text: its `text`, else its first attachment's title, fallback or text
/// (several alerting integrations post attachments only).
fn alert_text(event: &ListenedEvent) -> String {
    let text = event.text.clone().unwrap_or_default();
    if !text.trim().is_empty() {
        return text;
    }
    event
        .attachments
        .iter()
        .find_map(|a| a.title.clone().or(a.fallback.clone()).or(a.text.clone()))
        .unwrap_or_default()
}
