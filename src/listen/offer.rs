//! The "Declare incident" offer under a message in `#incident-response`.
//!
//! 1. [`record`]: the reaction or alert event is recorded (its `event_id`, and the message
//!    itself, so a second reaction does not make a second offer) with one outbox row,
//!    `DeclareOffer`, in one transaction.
//! 2. The outbox fetches the message's text when the event did not carry it
//!    (`conversations.history`) and posts [`offer_message`] in its thread.
//! 3. The button opens [`declare_form`] (`views.open`, from the click handler, inside
//!    the trigger's 3 s), prefilled; the form's metadata names the message.
//! 4. On submission the incident is declared and [`link`] queues `SourceLink` on the
//!    incident's lane: the incident channel gets the message's link, the message's
//!    thread gets the channel's.

use serde_json::{Value, json};

use crate::domain::declare_offer::{Offer, SourceMessage, prefill};
use crate::domain::incident::IncidentId;
use crate::domain::outbound::{Modal, Outbound, incident_key, offer_key};
use crate::domain::severity::Severity;
use crate::engine::{EngineError, RequestMeta};
use crate::http::AppState;
use crate::slack::render::DECLARE_CALLBACK;

/// `action_id` of the offer's button.
pub const DECLARE_OFFER_ACTION: &str = "klaxon_declare_from_message";

/// Dedupe source for "this message already has an offer".
const OFFER_SOURCE: &str = "declare-offer";

/// Records event `event_id` and, unless message `source` already has one, queues its
/// offer, in one transaction.
pub async fn record(
    state: &AppState,
    event_id: &str,
    source: SourceMessage,
    text: Option<String>,
) -> Result<(), EngineError> {
    let engine = &state.engine;
    let now = engine.now();
    let mut tx = engine.store().begin().await?;
    if !tx.record_inbound(super::SOURCE, event_id, now).await? {
        return Err(EngineError::Duplicate);
    }
    if tx
        .record_inbound(OFFER_SOURCE, &source.offer_key(), now)
        .await?
    {
        let row = Outbound::DeclareOffer {
            source: source.clone(),
            text,
        };
        tx.enqueue(&offer_key(&source), None, &row.to_json(), now)
            .await?;
    } else {
        tracing::debug!(channel = %source.channel, ts = %source.ts, "message already has a declare offer");
    }
    let committed = tx.commit().await?;
    engine.woke(committed);
    Ok(())
}

/// The in-thread offer: what the message suggests, and the button.
pub fn offer_message(offer: &Offer) -> (String, Value) {
    let title = if offer.prefill.title.is_empty() {
        "(no title found: the form will ask)".to_string()
    } else {
        offer.prefill.title.clone()
    };
    let text = format!(
        "Is this an incident? Declare it as *{}* ({} guessed from the message; you can change both).",
        escape(&title),
        offer.prefill.severity
    );
    let value = serde_json::to_string(offer).expect("offers serialize");
    let blocks = json!([
        { "type": "section", "text": { "type": "mrkdwn", "text": text } },
        { "type": "actions", "elements": [{
            "type": "button", "style": "danger", "action_id": DECLARE_OFFER_ACTION,
            "text": { "type": "plain_text", "text": "Declare incident" }, "value": value
        }]}
    ]);
    (text, blocks)
}

/// Escapes what Slack reads as markup in mrkdwn.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The offer built from a message's text.
pub fn offer_for(source: SourceMessage, text: &str) -> Offer {
    Offer {
        source,
        prefill: prefill(text),
    }
}

/// The declare form, prefilled, its metadata naming the source message.
pub fn declare_form(offer: &Offer) -> Value {
    let option = |s: Severity| json!({ "text": { "type": "plain_text", "text": s.to_string() }, "value": s.to_string().to_lowercase() });
    let options: Vec<Value> = Severity::ALL.iter().map(|s| option(*s)).collect();
    let mut title = json!({ "type": "plain_text_input", "action_id": "value", "max_length": 120 });
    if !offer.prefill.title.is_empty() {
        title["initial_value"] = Value::String(offer.prefill.title.clone());
    }
    json!({
        "type": "modal",
        "callback_id": DECLARE_CALLBACK,
        "private_metadata": serde_json::to_string(&offer.source).expect("serializes"),
        "title": { "type": "plain_text", "text": "Declare an incident" },
        "submit": { "type": "plain_text", "text": "Declare" },
        "close": { "type": "plain_text", "text": "Cancel" },
        "blocks": [
            {
                "type": "context",
                "elements": [{ "type": "mrkdwn", "text": format!("From <{}|this message> in <#{}>", offer.source.permalink(), offer.source.channel) }]
            },
            {
                "type": "input", "block_id": "severity", "label": { "type": "plain_text", "text": "Severity" },
                "element": { "type": "static_select", "action_id": "value", "options": options, "initial_option": option(offer.prefill.severity) }
            },
            { "type": "input", "block_id": "title", "label": { "type": "plain_text", "text": "Title" }, "element": title }
        ]
    })
}

/// The message a declare form came from, when it came from one (its metadata is the
/// JSON of a [`SourceMessage`]; a form opened by `/incident declare` carries a channel id).
pub fn source_of_form(private_metadata: &str) -> Option<SourceMessage> {
    private_metadata
        .starts_with('{')
        .then(|| serde_json::from_str(private_metadata).ok())
        .flatten()
}

/// The button was pressed: open the prefilled form. Answers what to tell the clicker
/// when it cannot open (a stale trigger, a mangled button).
pub async fn open_form(state: &AppState, value: &str, trigger_id: Option<&str>) -> Option<String> {
    let Ok(offer) = serde_json::from_str::<Offer>(value) else {
        return Some("That button does not describe a message; react to the message again.".into());
    };
    let Some(trigger) = trigger_id.filter(|t| !t.is_empty()) else {
        return Some(
            "Slack sent no trigger id, so the form cannot open; use `/incident declare`.".into(),
        );
    };
    let view = crate::slack::render::modal(&Modal::DeclareFrom { offer });
    match state.slack.open_view(trigger, &view).await {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not open the declare form from an offer");
            Some(format!(
                "Slack would not open the form ({e}); try again, or use `/incident declare`."
            ))
        }
    }
}

/// Queues the links between incident `id` and the message it was declared from.
pub async fn link(
    state: &AppState,
    meta: &RequestMeta,
    id: IncidentId,
    source: SourceMessage,
) -> Result<(), EngineError> {
    let row = Outbound::SourceLink {
        incident_id: id,
        source,
    };
    state.engine.send(meta, &incident_key(id), row).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_button_value_and_form_metadata_round_trip() {
        let offer = offer_for(
            SourceMessage {
                channel: "C1".into(),
                ts: "1.2".into(),
            },
            "SEV1 <!here> payments down",
        );
        let (_, blocks) = offer_message(&offer);
        let value = blocks[1]["elements"][0]["value"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Offer>(value).unwrap(), offer);
        assert!(value.len() < 2000, "Slack's button value limit");
        let form = declare_form(&offer);
        assert_eq!(form["callback_id"], DECLARE_CALLBACK);
        assert_eq!(
            source_of_form(form["private_metadata"].as_str().unwrap()),
            Some(offer.source.clone())
        );
        assert_eq!(
            form["blocks"][1]["element"]["initial_option"]["value"],
            "sev1"
        );
        assert_eq!(
            form["blocks"][2]["element"]["initial_value"],
            "SEV1 payments down"
        );
        assert_eq!(source_of_form("C0123"), None);
    }
}
