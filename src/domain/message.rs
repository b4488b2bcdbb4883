//! A chat message in a neutral form: Klaxon's domain decides *what* to say with these
//! types, and `src/slack/render.rs` (later `src/discord`) decides how it looks.
//!
//! Spans can refer to things only known at delivery time (the incident channel's id) and
//! to instants that each reader should see in their own time zone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One piece of inline text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "span", content = "value", rename_all = "snake_case")]
pub enum Span {
    /// Plain text, escaped by the renderer.
    Text(String),
    /// Bold text.
    Bold(String),
    /// A user mention.
    User(String),
    /// A link to a channel by id.
    Channel(String),
    /// A link to the incident's own channel, resolved when the message is delivered.
    IncidentChannel,
    /// An instant, shown in the reader's time zone where the platform can.
    Time(DateTime<Utc>),
}

impl Span {
    /// Plain text span.
    pub fn text(s: impl Into<String>) -> Span {
        Span::Text(s.into())
    }
    /// Bold span.
    pub fn bold(s: impl Into<String>) -> Span {
        Span::Bold(s.into())
    }
}

/// A labelled value in a two-column field list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Label, e.g. "Severity".
    pub label: String,
    /// Value spans.
    pub value: Vec<Span>,
}

/// A block of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "block", rename_all = "snake_case")]
pub enum Block {
    /// A large heading (plain text only).
    Header {
        /// Heading text.
        text: String,
    },
    /// A paragraph.
    Section {
        /// Paragraph spans.
        spans: Vec<Span>,
    },
    /// Label/value pairs.
    Fields {
        /// The pairs.
        fields: Vec<Field>,
    },
    /// Small print under the message.
    Context {
        /// Context spans.
        spans: Vec<Span>,
    },
    /// Preformatted text (an SDK call, a list of changes).
    Code {
        /// The text, shown verbatim.
        text: String,
    },
    /// Buttons.
    Actions {
        /// The buttons, left to right.
        buttons: Vec<Button>,
    },
}

/// A button; `action_id` and `value` come back when it is pressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    /// Label.
    pub text: String,
    /// Which action.
    pub action_id: String,
    /// Payload (e.g. a run number).
    pub value: String,
    /// Styled as dangerous (red) rather than primary.
    pub danger: bool,
}

/// A whole message: `fallback` is what notifications and screen readers show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Notification text.
    pub fallback: Vec<Span>,
    /// Rich layout.
    pub blocks: Vec<Block>,
}

impl Message {
    /// A message that is one paragraph.
    pub fn paragraph(spans: Vec<Span>) -> Message {
        Message {
            fallback: spans.clone(),
            blocks: vec![Block::Section { spans }],
        }
    }
}
