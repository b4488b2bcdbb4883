//! Additions to the record (notes, action items, data lost) and post-mortem drafts.
//!
//! A draft is written from the timeline inside the transaction that asks for it (on
//! resolution: the resolving one), stored in `postmortems`, and its upload is an outbox
//! row on the incident's lane, after whatever else that transaction sends.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, Outcome, RequestMeta};
use crate::domain::incident::{Decision, Destination, Effect, EventKind, Incident, IncidentId};
use crate::domain::message::{Message, Span};
use crate::domain::narrative::Users;
use crate::domain::postmortem::{self, DraftInput};
use crate::domain::record::{self, ActionItem, NoteSource};
use crate::domain::timeline::TimelineEntry;
use crate::store::StoreTx;

/// Something to add to an incident's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addition {
    /// A note, typed or taken from a channel message.
    Note {
        /// Its text.
        text: String,
        /// Where it came from.
        source: NoteSource,
    },
    /// An action item.
    Action(ActionItem),
    /// Minutes of data lost.
    Rpo(u32),
}

/// A draft that was written.
#[derive(Clone, Debug)]
pub struct Drafted {
    /// Stored draft id.
    pub postmortem_id: i64,
    /// Draft number.
    pub version: i64,
    /// The Markdown.
    pub markdown: String,
}

impl Engine {
    /// Adds `addition` to incident `id`'s record (resolved incidents included).
    pub async fn add_to_record(
        &self,
        meta: &RequestMeta,
        id: IncidentId,
        addition: Addition,
    ) -> Result<Outcome, EngineError> {
        let now = self.clock.now();
        let (mut tx, incident) = self.begin_on(meta, id, now).await?;
        let entries = tx.timeline_of(id).await?;
        let kinds: Vec<&EventKind> = entries.iter().map(|e| &e.kind).collect();
        let decision = match addition {
            Addition::Note { text, source } => {
                record::note(&incident, &text, source, &kinds, &meta.actor)?
            }
            Addition::Action(item) => record::action_item(&incident, item, &kinds, &meta.actor)?,
            Addition::Rpo(minutes) => record::rpo(&incident, minutes, &meta.actor),
        };
        self.commit(tx, meta, &decision, now).await?;
        Ok(Outcome {
            incident: decision.incident,
            reply: decision.reply,
        })
    }

    /// Writes a post-mortem draft of incident `id` now, stores it and queues its upload
    /// to the incident channel.
    pub async fn draft_postmortem(
        &self,
        meta: &RequestMeta,
        id: IncidentId,
    ) -> Result<Drafted, EngineError> {
        let now = self.clock.now();
        let (mut tx, incident) = self.begin_on(meta, id, now).await?;
        let mut decision = Decision {
            incident,
            events: vec![],
            effects: vec![],
            reply: String::new(),
        };
        let drafted = self.add_draft(&mut tx, meta, &mut decision, now).await?;
        decision.reply = format!(
            "Post-mortem draft {} of {id} written; it is being uploaded to the channel.",
            drafted.version
        );
        self.commit(tx, meta, &decision, now).await?;
        Ok(drafted)
    }

    /// On resolution, in the resolving transaction: lists the action items in the channel
    /// and writes the draft.
    pub(super) async fn draft_on_resolve(
        &self,
        tx: &mut StoreTx,
        before: &Incident,
        decision: &mut Decision,
        meta: &RequestMeta,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if !before.is_open() || decision.incident.is_open() {
            return Ok(());
        }
        let entries = tx.timeline_of(before.id).await?;
        let items: Vec<String> = entries
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ActionItemAdded { .. }))
            .map(|e| crate::domain::narrative::describe(&e.kind, &e.actor, Users::Slack))
            .collect();
        let text = if items.is_empty() {
            "No action items were recorded. Add them with `/incident action <text> @owner due YYYY-MM-DD`; the post-mortem draft follows.".to_string()
        } else {
            format!(
                "Action items ({}):\n• {}\nThe post-mortem draft follows.",
                items.len(),
                items.join("\n• ")
            )
        };
        decision.effects.push(Effect::Post {
            destination: Destination::IncidentChannel,
            message: Message::paragraph(vec![Span::text(text)]),
        });
        self.add_draft(tx, meta, decision, now).await?;
        decision
            .reply
            .push_str(" The post-mortem draft follows in the channel.");
        Ok(())
    }

    /// Writes the draft from the stored timeline plus `decision`'s events (about to be
    /// appended), stores it, and adds its record and upload to `decision`.
    async fn add_draft(
        &self,
        tx: &mut StoreTx,
        meta: &RequestMeta,
        decision: &mut Decision,
        now: DateTime<Utc>,
    ) -> Result<Drafted, EngineError> {
        let id = decision.incident.id;
        let mut entries = tx.timeline_of(id).await?;
        let last = entries.last().map(|e| e.seq).unwrap_or(0);
        // The store keeps milliseconds: draft with the times it will read back.
        let at = crate::store::from_ms(crate::store::ms(now));
        for (seq, kind) in (last + 1..).zip(&decision.events) {
            entries.push(TimelineEntry {
                incident_id: id,
                seq,
                at,
                actor: meta.actor.clone(),
                request_id: meta.request_id.clone(),
                kind: kind.clone(),
                prev_hash: String::new(),
                hash: String::new(),
            });
        }
        let markdown = postmortem::draft(&DraftInput {
            incident: &decision.incident,
            entries: &entries,
            severities: &self.policy.severities,
            tz: self.policy.calendar.tz,
            now: at,
        });
        let version = tx.next_postmortem_version(id).await?;
        let postmortem_id = tx
            .insert_postmortem(id, version, &markdown, &meta.actor.to_string(), now)
            .await?;
        decision.events.push(EventKind::PostmortemDrafted {
            postmortem_id,
            version,
        });
        decision
            .effects
            .push(Effect::UploadPostmortem { postmortem_id });
        Ok(Drafted {
            postmortem_id,
            version,
            markdown,
        })
    }
}
