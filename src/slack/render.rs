//! Renders Klaxon's neutral messages and forms as Slack mrkdwn and Block Kit JSON.
//!
//! Block Kit reference: <https://api.slack.com/reference/block-kit/blocks>. Limits that
//! matter here: header text 150 chars, section text 3000, at most 10 fields per section.

use serde_json::{Value, json};

use crate::domain::message::{Block, Message, Span};
use crate::domain::outbound::Modal;
use crate::domain::severity::Severity;

pub mod offer;

/// Escapes the three characters Slack's mrkdwn treats as control characters.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn span(span: &Span, incident_channel: Option<&str>) -> String {
    match span {
        Span::Text(t) => escape(t),
        Span::Bold(t) => format!("*{}*", escape(t)),
        Span::User(u) => format!("<@{u}>"),
        Span::Channel(c) => format!("<#{c}>"),
        Span::IncidentChannel => match incident_channel {
            Some(c) => format!("<#{c}>"),
            None => "the incident channel".to_string(),
        },
        // Slack shows <!date> in each reader's own time zone; the fallback is UTC.
        Span::Time(t) => format!(
            "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
            t.timestamp(),
            t.format("%Y-%m-%d %H:%M UTC")
        ),
    }
}

/// Renders spans as one mrkdwn string.
pub fn spans(items: &[Span], incident_channel: Option<&str>) -> String {
    items.iter().map(|s| span(s, incident_channel)).collect()
}

fn truncate(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        text
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Renders a message as `(fallback text, blocks)`.
pub fn message(message: &Message, incident_channel: Option<&str>) -> (String, Value) {
    let text = spans(&message.fallback, incident_channel);
    let blocks: Vec<Value> = message
        .blocks
        .iter()
        .flat_map(|block| match block {
            Block::Header { text } => vec![json!({
                "type": "header",
                "text": { "type": "plain_text", "text": truncate(text.clone(), 150), "emoji": true }
            })],
            Block::Section { spans: s } => vec![json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": truncate(spans(s, incident_channel), 3000) }
            })],
            Block::Fields { fields } => fields
                .chunks(10)
                .map(|chunk| {
                    let fields: Vec<Value> = chunk
                        .iter()
                        .map(|f| {
                            json!({
                                "type": "mrkdwn",
                                "text": truncate(format!("*{}*\n{}", escape(&f.label), spans(&f.value, incident_channel)), 2000)
                            })
                        })
                        .collect();
                    json!({ "type": "section", "fields": fields })
                })
                .collect(),
            Block::Code { text } => vec![json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": truncate(format!("```{}```", escape(text)), 3000) }
            })],
            Block::Actions { buttons } => vec![json!({
                "type": "actions",
                "elements": buttons.iter().map(|b| json!({
                    "type": "button",
                    "text": { "type": "plain_text", "text": b.text },
                    "action_id": b.action_id,
                    "value": b.value,
                    "style": if b.danger { "danger" } else { "primary" },
                })).collect::<Vec<_>>()
            })],
            Block::Context { spans: s } => vec![json!({
                "type": "context",
                "elements": [{ "type": "mrkdwn", "text": truncate(spans(s, incident_channel), 2000) }]
            })],
        })
        .collect();
    (text, Value::Array(blocks))
}

/// Callback id of the declaration form.
pub const DECLARE_CALLBACK: &str = "klaxon_declare";
/// Callback id of the resolution form.
pub const RESOLVE_CALLBACK: &str = "klaxon_resolve";

fn plain(text: &str) -> Value {
    json!({ "type": "plain_text", "text": text })
}

/// Renders a form as a Block Kit modal view. Inputs use `action_id: "value"`; the
/// `block_id` names the field, which is also how validation errors point at it.
pub fn modal(modal: &Modal) -> Value {
    match modal {
        Modal::Declare { channel } => {
            let options: Vec<Value> = Severity::ALL
                .iter()
                .map(|s| json!({ "text": plain(&s.to_string()), "value": s.to_string().to_lowercase() }))
                .collect();
            json!({
                "type": "modal",
                "callback_id": DECLARE_CALLBACK,
                "private_metadata": channel,
                "title": plain("Declare an incident"),
                "submit": plain("Declare"),
                "close": plain("Cancel"),
                "blocks": [
                    {
                        "type": "input", "block_id": "severity", "label": plain("Severity"),
                        "element": { "type": "static_select", "action_id": "value", "options": options }
                    },
                    {
                        "type": "input", "block_id": "title", "label": plain("Title"),
                        "element": { "type": "plain_text_input", "action_id": "value", "max_length": 120 }
                    }
                ]
            })
        }
        Modal::DeclareFrom { offer } => offer::declare_form(offer),
        Modal::Resolve { incident_id } => json!({
            "type": "modal",
            "callback_id": RESOLVE_CALLBACK,
            "private_metadata": incident_id.0.to_string(),
            "title": plain(&format!("Resolve {incident_id}")),
            "submit": plain("Resolve"),
            "close": plain("Cancel"),
            "blocks": [{
                "type": "input", "block_id": "summary", "label": plain("One-line resolution summary"),
                "element": { "type": "plain_text_input", "action_id": "value", "max_length": 2500 }
            }]
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[test]
    fn user_text_cannot_inject_mentions() {
        let (text, _) = message(
            &Message::paragraph(vec![Span::text("<!channel> & <@U1>")]),
            None,
        );
        assert_eq!(text, "&lt;!channel&gt; &amp; &lt;@U1&gt;");
    }

    #[test]
    fn times_render_in_the_readers_zone_with_a_utc_fallback() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(
            spans(&[Span::Time(t)], None),
            "<!date^1700000000^{date_short_pretty} {time}|2023-11-14 22:13 UTC>"
        );
    }

    #[test]
    fn the_incident_channel_is_resolved_at_delivery() {
        assert_eq!(spans(&[Span::IncidentChannel], Some("C9")), "<#C9>");
    }
}
