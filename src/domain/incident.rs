//! The incident state machine: what an incident is, what people can change, and what each
//! change records (timeline events) and causes (outbound effects).
//!
//! Pure: callers pass `now` and the policy in; nothing here reads a clock or does I/O.
//!
//! This file holds the machine's interface: a [`Change`] someone asks for, the [`Policy`]
//! it is decided under, the [`Decision`] it yields and the [`DomainError`] that refuses
//! it. The parts: `model` (what an incident is), `event` (what the timeline records),
//! `effect` (what is sent), `apply` (declaring and applying changes) and `fire` (what a
//! due timer does). Everything is re-exported here, so callers name `incident::X`.

use chrono::{DateTime, Utc};

use crate::domain::calendar::BusinessCalendar;
use crate::domain::escalation::EscalationPolicy;
use crate::domain::severity::{Severity, SeverityPolicies};
use crate::domain::stakeholders::StakeholderPolicy;
use crate::domain::timers::TimerKind;

mod apply;
mod effect;
mod event;
mod fire;
mod model;

pub use apply::{apply, declare};
pub use effect::{Destination, Effect, PageAction, dedup_key, page_severity};
pub use event::EventKind;
pub use model::{
    Acknowledgement, Actor, Incident, IncidentChannel, IncidentId, Role, Status, StatusUpdate,
};

/// A user-facing refusal: the change does not apply to this incident as it stands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The incident is resolved; nothing more can change.
    #[error("{0} is resolved; it can no longer be changed.")]
    Resolved(IncidentId),
    /// The change would not change anything.
    #[error("{0}")]
    Unchanged(String),
    /// The person may not make this change (the text says why and what to do).
    #[error("{0}")]
    NotAllowed(String),
    /// A text field broke a rule.
    #[error("{field}: {rule}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
}

/// A change someone asks for on an existing incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Give `role` to `user` (hand-over when someone holds it).
    AssignRole {
        /// Role.
        role: Role,
        /// New holder.
        user: String,
    },
    /// Change severity.
    ChangeSeverity(Severity),
    /// Change status (not to resolved).
    SetStatus(Status),
    /// Post a status update.
    PostUpdate(String),
    /// Resolve with a summary.
    Resolve(String),
    /// The outbox opened the channel.
    ChannelOpened(IncidentChannel),
    /// Flag the incident as a security incident (regulatory reminders start).
    MarkSecurity,
    /// Compliance/legal were notified: stop the regulatory reminders.
    AckRegulatory,
    /// A durable timer came due.
    TimerFired {
        /// Which timer.
        kind: TimerKind,
        /// When it was due.
        due_at: DateTime<Utc>,
    },
}

/// Everything the policy says that a decision needs.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// Severity table.
    pub severities: &'a SeverityPolicies,
    /// Team calendar.
    pub calendar: &'a BusinessCalendar,
    /// Escalation ladders.
    pub escalation: &'a EscalationPolicy,
    /// Stakeholder groups and the security rule.
    pub stakeholders: &'a StakeholderPolicy,
}

/// The outcome of a change: the new state, what to record and what to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// State after the change.
    pub incident: Incident,
    /// Timeline events, in order.
    pub events: Vec<EventKind>,
    /// Outbound effects, in order.
    pub effects: Vec<Effect>,
    /// What to tell the person who asked (ephemeral).
    pub reply: String,
}

/// Longest title accepted; Slack headers allow 150 characters.
pub const MAX_TITLE_CHARS: usize = 120;
/// Longest update or summary accepted (Slack section text allows 3000).
pub const MAX_TEXT_CHARS: usize = 2500;

/// Validates free text: trimmed, not empty, not longer than `max` characters, and free of
/// control, bidirectional and invisible characters (see [`super::text`]); a title must be
/// one line.
pub fn clean_text(field: &'static str, text: &str, max: usize) -> Result<String, DomainError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DomainError::Invalid {
            field,
            rule: "must not be empty".into(),
        });
    }
    let kind = if field == "title" {
        super::text::TextKind::Line
    } else {
        super::text::TextKind::Block
    };
    super::text::check(text, kind).map_err(|rule| DomainError::Invalid { field, rule })?;
    let chars = text.chars().count();
    if chars > max {
        return Err(DomainError::Invalid {
            field,
            rule: format!("must be at most {max} characters (got {chars})"),
        });
    }
    Ok(text.to_string())
}

/// The title as [`declare`] keeps it, or why it is refused. Lets the engine refuse a title
/// before it reserves an incident number. Titles are one line: a modal's multi-line input
/// is folded.
pub fn declared_title(title: &str) -> Result<String, DomainError> {
    clean_text(
        "title",
        &title.split_whitespace().collect::<Vec<_>>().join(" "),
        MAX_TITLE_CHARS,
    )
}

#[cfg(test)]
mod tests;
