//! The "Declare incident" offer in Block Kit: the in-thread message with its button, the
//! declare form it opens (prefilled), and reading the form's metadata back.
//!
//! Why here: these are views, like every other form in [`super::modal`], and both the
//! outbox (which posts the offer) and the click handler (which opens the form) need them.
//! Kept under `slack::render`, they import only `domain`; what the offer is prefilled with
//! is decided in `domain::declare_offer`, and when one is made in `listen::offer`.

use serde_json::{Value, json};

use super::{DECLARE_CALLBACK, escape};
use crate::domain::declare_offer::{Offer, SourceMessage};
use crate::domain::severity::Severity;

/// `action_id` of the offer's button.
pub const DECLARE_OFFER_ACTION: &str = "klaxon_declare_from_message";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_button_value_and_form_metadata_round_trip() {
        let offer = crate::domain::declare_offer::offer_for(
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
