//! Additions to an incident's record that change nothing else: notes, action items and
//! the data lost (RPO). They are allowed after resolution too, since post-mortems are
//! written after the fact; each is one timeline event and, when said in the channel, one
//! post.
//!
//! Pure: callers pass the incident, what the timeline already holds and `now`.

use chrono::NaiveDate;

use super::command::parse_user;
use super::incident::{
    Actor, Decision, Destination, DomainError, Effect, EventKind, Incident, MAX_TEXT_CHARS,
    clean_text,
};
use super::message::{Message, Span};

/// Where a note came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoteSource {
    /// `/incident note <text>`.
    Command,
    /// A message pinned in the incident channel.
    Pin {
        /// Who wrote the message.
        author: Option<String>,
        /// Its `ts`.
        ts: String,
    },
    /// A message marked with a configured reaction.
    Reaction {
        /// The emoji name, without colons.
        emoji: String,
        /// Who wrote the message.
        author: Option<String>,
        /// Its `ts`.
        ts: String,
    },
}

impl NoteSource {
    fn parts(&self) -> (String, Option<String>, Option<String>) {
        match self {
            NoteSource::Command => ("command".into(), None, None),
            NoteSource::Pin { author, ts } => ("pin".into(), author.clone(), Some(ts.clone())),
            NoteSource::Reaction { emoji, author, ts } => (
                format!("reaction:{emoji}"),
                author.clone(),
                Some(ts.clone()),
            ),
        }
    }
}

/// Whether `kinds` already hold a note of the message `ts`.
pub fn has_note_of(kinds: &[&EventKind], ts: &str) -> bool {
    kinds
        .iter()
        .any(|k| matches!(k, EventKind::NoteAdded { message_ts: Some(t), .. } if t.as_str() == ts))
}

/// Adds a note. A channel message already on the record (pinned, then reacted to) is
/// refused as unchanged, so it is recorded once.
pub fn note(
    incident: &Incident,
    text: &str,
    source: NoteSource,
    recorded: &[&EventKind],
    actor: &Actor,
) -> Result<Decision, DomainError> {
    let text = clean_text("note", text, MAX_TEXT_CHARS)?;
    let (source_name, author, message_ts) = source.parts();
    if let Some(ts) = &message_ts
        && has_note_of(recorded, ts)
    {
        return Err(DomainError::Unchanged(format!(
            "That message is already on the timeline of {}.",
            incident.id
        )));
    }
    let reply = format!("Note added to the timeline of {}.", incident.id);
    let effects = match source {
        // A note typed as a command is said in the channel, so everyone sees the record
        // grow; a pinned or reacted message is already there.
        NoteSource::Command => vec![post(vec![
            Span::text(":memo: Note by "),
            who(actor),
            Span::text(": "),
            Span::text(text.clone()),
        ])],
        _ => vec![],
    };
    Ok(Decision {
        incident: incident.clone(),
        events: vec![EventKind::NoteAdded {
            text,
            source: source_name,
            author,
            message_ts,
        }],
        effects,
        reply,
    })
}

/// An action item as typed: `<text> [@owner] [due YYYY-MM-DD]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionItem {
    /// What is to be done.
    pub text: String,
    /// Who owns it.
    pub owner: Option<String>,
    /// When it is due.
    pub due: Option<NaiveDate>,
}

/// Parses `/incident action` text. The owner is the last user mention, the due date the
/// `due YYYY-MM-DD` pair; both may appear anywhere, the rest is the text.
pub fn parse_action(text: &str) -> Result<ActionItem, DomainError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut rest = Vec::new();
    let mut owner = None;
    let mut due = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if w.eq_ignore_ascii_case("due") && i + 1 < words.len() {
            let date = NaiveDate::parse_from_str(words[i + 1], "%Y-%m-%d").map_err(|_| {
                DomainError::Invalid {
                    field: "due",
                    rule: format!(
                        "`{}` is not a date written YYYY-MM-DD (e.g. due 2026-12-01)",
                        words[i + 1]
                    ),
                }
            })?;
            if due.replace(date).is_some() {
                return Err(DomainError::Invalid {
                    field: "due",
                    rule: "give one due date".into(),
                });
            }
            i += 2;
            continue;
        }
        if w.starts_with("<@") {
            let user = parse_user(w).ok_or_else(|| DomainError::Invalid {
                field: "owner",
                rule: format!("`{w}` is not a user mention"),
            })?;
            if owner.replace(user).is_some() {
                return Err(DomainError::Invalid {
                    field: "owner",
                    rule: "give one owner".into(),
                });
            }
            i += 1;
            continue;
        }
        rest.push(w);
        i += 1;
    }
    let text = clean_text("action", &rest.join(" "), MAX_TEXT_CHARS)?;
    Ok(ActionItem { text, owner, due })
}

/// Records an action item; `recorded` is the timeline so far (numbers follow on).
pub fn action_item(
    incident: &Incident,
    item: ActionItem,
    recorded: &[&EventKind],
    actor: &Actor,
) -> Result<Decision, DomainError> {
    let number = recorded
        .iter()
        .filter(|k| matches!(k, EventKind::ActionItemAdded { .. }))
        .count() as u32
        + 1;
    let mut spans = vec![
        Span::text(format!(":ballot_box_with_check: Action item {number}: ")),
        Span::text(item.text.clone()),
    ];
    if let Some(owner) = &item.owner {
        spans.push(Span::text(" — owner "));
        spans.push(Span::User(owner.clone()));
    }
    if let Some(due) = item.due {
        spans.push(Span::text(format!(", due {due}")));
    }
    spans.push(Span::text(" (added by "));
    spans.push(who(actor));
    spans.push(Span::text(")"));
    Ok(Decision {
        incident: incident.clone(),
        events: vec![EventKind::ActionItemAdded {
            number,
            text: item.text,
            owner: item.owner,
            due: item.due,
        }],
        effects: vec![post(spans)],
        reply: format!("Action item {number} recorded for {}.", incident.id),
    })
}

/// Records the minutes of data lost (a later entry replaces an earlier one).
pub fn rpo(incident: &Incident, minutes_lost: u32, actor: &Actor) -> Decision {
    Decision {
        incident: incident.clone(),
        events: vec![EventKind::RpoRecorded { minutes_lost }],
        effects: vec![post(vec![
            Span::text(format!(
                ":floppy_disk: Data lost recorded: {minutes_lost} min (by "
            )),
            who(actor),
            Span::text(")"),
        ])],
        reply: format!(
            "Recorded {minutes_lost} minutes of data lost for {}.",
            incident.id
        ),
    }
}

fn who(actor: &Actor) -> Span {
    match actor {
        Actor::User(u) => Span::User(u.clone()),
        Actor::Klaxon => Span::text("Klaxon"),
    }
}

fn post(spans: Vec<Span>) -> Effect {
    Effect::Post {
        destination: Destination::IncidentChannel,
        message: Message::paragraph(spans),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_items_take_an_owner_and_a_due_date_anywhere() {
        let a = parse_action("Add replica lag alert <@U1ABC|al> due 2026-12-01").unwrap();
        assert_eq!(a.text, "Add replica lag alert");
        assert_eq!(a.owner.as_deref(), Some("U1ABC"));
        assert_eq!(a.due, NaiveDate::from_ymd_opt(2026, 12, 1));
        let a = parse_action("due 2026-12-01 Write the runbook").unwrap();
        assert_eq!((a.text.as_str(), a.owner), ("Write the runbook", None));
    }

    #[test]
    fn bad_action_items_name_the_field() {
        let e = parse_action("Fix it due tomorrow").unwrap_err();
        assert!(e.to_string().starts_with("due: `tomorrow`"), "{e}");
        let e = parse_action("<@U1> due 2026-12-01").unwrap_err();
        assert_eq!(e.to_string(), "action: must not be empty");
        let e = parse_action("Fix <@U1> <@U2>").unwrap_err();
        assert!(e.to_string().starts_with("owner:"), "{e}");
    }
}
