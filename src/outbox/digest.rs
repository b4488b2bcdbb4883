//! Announcement digests: the announcements waiting for `#incident-response` go out as
//! ONE message.
//!
//! Klaxon posts at most one message per second in a channel (Slack's documented limit),
//! and every incident announces itself in the same `#incident-response`. In a storm
//! (fifty alerts declared within a minute, or a restart with a backlog) one post per
//! announcement would queue them for minutes behind each other. So announcement lanes
//! have a class of their own with ONE slot: the worker claims every announcement due (up
//! to [`MAX_DIGEST`]) in one go and posts them as one message, waiting out the channel's
//! second in place. Each row is settled with that message's outcome. Alone, an
//! announcement is posted as itself, unchanged.
//!
//! An announcement that may have gone out before (claimed with its stamp set: a crash
//! mid-post) first looks for itself in the channel (`once.rs`); found, it is settled with
//! that message and left out; not found, it joins the digest.

use std::sync::Arc;

use crate::domain::incident::{Destination, Effect};
use crate::domain::outbound::LaneClass;
use crate::slack::render;
use crate::store::OutboxRow;

use super::once::AttemptTrace;
use super::{Attempt, DeliveryError, Outbound, OutboxWorker};

/// Most announcements one claim takes (one digest message).
pub(super) const MAX_DIGEST: usize = 120;

/// Slack's limit of blocks in one message.
const MAX_BLOCKS: usize = 50;

/// Slack's limit of characters in one section's text.
const MAX_SECTION_TEXT: usize = 3_000;

/// The notification text of a digest is cut after this many characters (the blocks carry
/// everything; Slack truncates a `text` above 40,000).
const MAX_FALLBACK_TEXT: usize = 3_000;

/// Groups claimed rows into deliveries: the announcements together (up to
/// [`MAX_DIGEST`] per group), everything else on its own.
pub(super) fn group(rows: Vec<crate::store::OutboxRow>) -> Vec<Vec<OutboxRow>> {
    let (announcements, others): (Vec<OutboxRow>, Vec<OutboxRow>) = rows
        .into_iter()
        .partition(|row| LaneClass::of(&row.ordering_key) == LaneClass::Announce);
    let mut groups: Vec<Vec<OutboxRow>> = others.into_iter().map(|row| vec![row]).collect();
    let mut announcements = announcements.into_iter().peekable();
    while announcements.peek().is_some() {
        groups.push(announcements.by_ref().take(MAX_DIGEST).collect());
    }
    groups
}

/// The lanes a group holds.
pub(super) fn lanes(group: &[OutboxRow]) -> Vec<(LaneClass, String)> {
    group
        .iter()
        .map(|row| (LaneClass::of(&row.ordering_key), row.ordering_key.clone()))
        .collect()
}

/// The digest's blocks, packed as they are added: consecutive plain text sections (an
/// announcement is one) share a section, a line each, up to Slack's 3,000 characters;
/// anything else is kept as it is. A storm's hundred announcements then fit one message's
/// 50 blocks.
#[derive(Clone, Debug, Default)]
struct Packer {
    blocks: Vec<serde_json::Value>,
    /// The text of the section still taking lines.
    open: Option<String>,
}

impl Packer {
    fn add(&mut self, blocks: &[serde_json::Value]) {
        for block in blocks {
            match (plain_text(block), self.open.as_mut()) {
                (Some(text), Some(section))
                    if section.chars().count() + 1 + text.chars().count() <= MAX_SECTION_TEXT =>
                {
                    section.push('\n');
                    section.push_str(text);
                }
                (Some(text), _) => {
                    self.close();
                    self.open = Some(text.to_string());
                }
                (None, _) => {
                    self.close();
                    self.blocks.push(block.clone());
                }
            }
        }
    }

    fn close(&mut self) {
        if let Some(text) = self.open.take() {
            self.blocks.push(serde_json::json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": text },
            }));
        }
    }

    /// Blocks the message has so far.
    fn used(&self) -> usize {
        self.blocks.len() + usize::from(self.open.is_some())
    }

    fn finish(mut self) -> Vec<serde_json::Value> {
        self.close();
        self.blocks
    }
}

/// The text of a block that is only a mrkdwn section (no fields, no accessory).
fn plain_text(block: &serde_json::Value) -> Option<&str> {
    let object = block.as_object()?;
    let only_text = object
        .keys()
        .all(|k| k == "type" || k == "text" || k == "block_id");
    if block["type"] == "section" && block["text"]["type"] == "mrkdwn" && only_text {
        block["text"]["text"].as_str()
    } else {
        None
    }
}

/// The digest's notification text: the announcements' own texts, a line each, cut at a
/// line once long, with how many more there are.
fn fallback_text(texts: &[&str]) -> String {
    let mut out = String::new();
    for (i, text) in texts.iter().enumerate() {
        if !out.is_empty() && out.len() + 1 + text.len() > MAX_FALLBACK_TEXT {
            out.push_str(&format!("\n… and {} more", texts.len() - i));
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(text);
    }
    out
}

impl OutboxWorker {
    /// Delivers a group from [`group`]: announcements as one digest message (waiting out
    /// their channel's second in place), anything else as itself.
    pub(super) async fn attempt_group(mut self, mut rows: Vec<OutboxRow>) -> Vec<Attempt> {
        let announcements = rows
            .first()
            .is_some_and(|row| LaneClass::of(&row.ordering_key) == LaneClass::Announce);
        if !announcements {
            let row = rows.pop().expect("a group has a row");
            return vec![self.attempt(row).await];
        }
        self.inline_wait = Some(self.settings.announce_inline_wait());
        self.attempt_digest(rows).await
    }

    async fn attempt_digest(mut self, rows: Vec<OutboxRow>) -> Vec<Attempt> {
        if rows.len() == 1 {
            let row = rows.into_iter().next().expect("one row");
            return vec![self.attempt(row).await];
        }
        let mut attempts = Vec::with_capacity(rows.len());
        // Rows that may have been posted before look for themselves first.
        let channel = self.outlets.announce_channel.clone();
        let mut fresh = Vec::with_capacity(rows.len());
        for row in rows {
            if row.attempt_started_at_ms.is_none() {
                fresh.push(row);
                continue;
            }
            let trace = Arc::new(AttemptTrace::new(&row));
            self.trace = trace.clone();
            match self.find_own_post(&channel, row.id).await {
                Ok(true) => attempts.push(Attempt {
                    row,
                    result: Ok(()),
                    trace,
                }),
                Ok(false) => fresh.push(row),
                Err(e) => attempts.push(Attempt {
                    row,
                    result: Err(e),
                    trace,
                }),
            }
        }
        // Render each; a row that is not an announcement post (it cannot be, by its lane,
        // unless hand-edited) or whose incident is gone gets its own error.
        let mut parts: Vec<(OutboxRow, String, Vec<serde_json::Value>)> = Vec::new();
        for row in fresh {
            match self.render_announcement(&row).await {
                Ok((text, blocks)) => parts.push((row, text, blocks)),
                Err(e) => {
                    let trace = Arc::new(AttemptTrace::new(&row));
                    attempts.push(Attempt {
                        row,
                        result: Err(e),
                        trace,
                    })
                }
            }
        }
        if parts.is_empty() {
            return attempts;
        }
        // Slack takes at most 50 blocks a message: what does not fit waits its turn.
        let mut packer = Packer::default();
        let mut fits = Vec::with_capacity(parts.len());
        for (row, text, blocks) in parts {
            let mut trial = packer.clone();
            trial.add(&blocks);
            if trial.used() <= MAX_BLOCKS && fits.len() < MAX_DIGEST {
                packer = trial;
                fits.push((row, text));
            } else {
                let result = Err(DeliveryError::Deferred(std::time::Duration::from_secs(1)));
                let trace = Arc::new(AttemptTrace::new(&row));
                attempts.push(Attempt { row, result, trace });
            }
        }
        let blocks = packer.finish();
        let texts: Vec<&str> = fits.iter().map(|(_, text)| text.as_str()).collect();
        let text = fallback_text(&texts);
        let blocks = serde_json::Value::Array(blocks);
        // The pacing ticket is the first row's; the post is tagged with every row (none
        // of them was posted before: see above), so each is found by a later look-back;
        // the bound is one delivery's.
        self.delivering = fits[0].0.id;
        let others: Vec<&OutboxRow> = fits[1..].iter().map(|(row, _)| row).collect();
        self.trace = Arc::new(AttemptTrace::for_digest(&fits[0].0, &others));
        let limit = self.settings.delivery_timeout(LaneClass::Announce);
        let post = self.post_once(&channel, &text, &blocks, None);
        let result = match tokio::time::timeout(limit, post).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(DeliveryError::TimedOut("the delivery", limit)),
        };
        tracing::debug!(
            count = fits.len(),
            ok = result.is_ok(),
            "announcement digest"
        );
        for (row, _) in fits {
            let result = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(e.echo()),
            };
            let trace = self.trace.clone();
            attempts.push(Attempt { row, result, trace });
        }
        attempts
    }

    /// An announcement row's text and blocks, as it would be posted alone.
    async fn render_announcement(
        &self,
        row: &OutboxRow,
    ) -> Result<(String, Vec<serde_json::Value>), DeliveryError> {
        let outbound: Outbound = serde_json::from_str(&row.payload)
            .map_err(|e| DeliveryError::Permanent(format!("undecodable payload: {e}")))?;
        let Outbound::Incident {
            incident_id,
            effect:
                Effect::Post {
                    destination: Destination::Announcements,
                    message,
                },
        } = outbound
        else {
            return Err(DeliveryError::Permanent(format!(
                "row {} in an announcement lane is not an announcement",
                row.id
            )));
        };
        let incident = self
            .engine
            .store()
            .incident(incident_id)
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))?
            .ok_or_else(|| DeliveryError::Permanent(format!("{incident_id} does not exist")))?;
        let (text, blocks) =
            render::message(&message, incident.channel.as_ref().map(|c| c.id.as_str()));
        let blocks = match blocks {
            serde_json::Value::Array(blocks) => blocks,
            other => vec![other],
        };
        Ok((text, blocks))
    }
}

impl DeliveryError {
    /// The same outcome for another row of a digest: held as long, permanent or retried
    /// alike.
    fn echo(&self) -> DeliveryError {
        if let Some(hold) = self.hold() {
            DeliveryError::Deferred(hold)
        } else if self.is_permanent() {
            DeliveryError::Permanent(self.to_string())
        } else {
            DeliveryError::Internal(self.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::slack::SlackError;

    fn row(id: i64, key: &str) -> OutboxRow {
        OutboxRow {
            id,
            ordering_key: key.to_string(),
            incident_id: None,
            payload: String::new(),
            attempts: 0,
            created_at_ms: 0,
            attempt_started_at_ms: None,
        }
    }

    #[test]
    fn announcements_are_grouped_and_everything_else_goes_alone() {
        let mut rows: Vec<OutboxRow> = (1..=3).map(|i| row(i, &format!("incident:{i}"))).collect();
        rows.extend((1..=(MAX_DIGEST as i64 + 5)).map(|i| row(100 + i, &format!("announce:{i}"))));
        rows.push(row(9, "page:1"));
        let groups = group(rows);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 1, 1, MAX_DIGEST, 5]);
        assert!(
            groups[4..]
                .iter()
                .flatten()
                .all(|r| r.ordering_key.starts_with("announce:"))
        );
    }

    fn section(text: &str) -> serde_json::Value {
        serde_json::json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
    }

    #[test]
    fn announcements_share_sections_up_to_slacks_limits() {
        let mut packer = Packer::default();
        for i in 0..100 {
            packer.add(&[section(&format!("{i:>3}: {}", "x".repeat(145)))]);
        }
        // 150 characters a line, 3,000 a section: 19 lines each (with the newlines).
        assert_eq!(packer.used(), 6);
        let blocks = packer.finish();
        assert_eq!(blocks.len(), 6);
        let texts: Vec<&str> = blocks
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap())
            .collect();
        assert!(texts.iter().all(|t| t.chars().count() <= MAX_SECTION_TEXT));
        assert_eq!(texts[0].lines().count(), 19);
        assert_eq!(
            texts.concat().matches(": x").count(),
            100,
            "every line kept"
        );
        assert!(texts[0].starts_with("  0: ") && texts[5].ends_with(&"x".repeat(145)));
    }

    #[test]
    fn blocks_other_than_plain_sections_are_kept_whole_and_in_order() {
        let button = serde_json::json!({ "type": "actions", "elements": [] });
        let with_accessory = serde_json::json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": "c" },
            "accessory": { "type": "button" },
        });
        let mut packer = Packer::default();
        packer.add(&[section("a")]);
        packer.add(&[section("b"), button.clone()]);
        packer.add(&[with_accessory.clone(), section("d")]);
        let blocks = packer.finish();
        assert_eq!(
            blocks,
            vec![section("a\nb"), button, with_accessory, section("d")]
        );
    }

    #[test]
    fn a_long_digest_text_is_cut_at_a_line_and_says_how_many_more() {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("{i:03} {}", "y".repeat(96)))
            .collect();
        let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
        let text = fallback_text(&texts);
        assert!(text.len() <= MAX_FALLBACK_TEXT + 20, "{}", text.len());
        let kept = text.lines().filter(|l| l.ends_with('y')).count();
        assert!(
            text.ends_with(&format!("… and {} more", 100 - kept)),
            "{text}"
        );
        assert_eq!(
            fallback_text(&texts[..2]),
            format!("{}\n{}", texts[0], texts[1])
        );
    }

    #[test]
    fn a_digest_outcome_is_echoed_alike_to_each_row() {
        let limited = DeliveryError::Slack(SlackError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        });
        assert!(
            matches!(limited.echo(), DeliveryError::Deferred(d) if d == Duration::from_secs(7))
        );
        let paced = DeliveryError::Deferred(Duration::from_millis(900));
        assert!(
            matches!(paced.echo(), DeliveryError::Deferred(d) if d == Duration::from_millis(900))
        );
        let gone = DeliveryError::Permanent("channel_not_found".into());
        assert!(matches!(gone.echo(), DeliveryError::Permanent(_)));
        assert!(gone.echo().is_permanent());
        let slow = DeliveryError::TimedOut("chat.postMessage", Duration::from_secs(15));
        let echoed = slow.echo();
        assert!(
            !echoed.is_permanent() && echoed.hold().is_none(),
            "{echoed:?}"
        );
    }
}
