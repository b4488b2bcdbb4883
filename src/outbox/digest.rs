//! Announcement digests: several announcements waiting for `#incident-response` go out
//! as ONE message.
//!
//! Klaxon posts at most one message per second in a channel (Slack's documented limit),
//! and every incident announces itself in the same `#incident-response`. In a storm
//! (fifty alerts declared within a minute, or a restart with a backlog) one post per
//! announcement would queue them for minutes behind each other. Instead, the announcement
//! rows a worker claims together are posted as one message, one section each, and each
//! row is settled with that message's outcome. Alone, an announcement is posted as
//! itself, unchanged.

use crate::domain::incident::{Destination, Effect};
use crate::domain::outbound::LaneClass;
use crate::slack::render;
use crate::store::OutboxRow;

use super::once::AttemptTrace;
use super::{Attempt, DeliveryError, Outbound, OutboxWorker};

/// Most announcements in one message (each announcement is one block or a few).
pub(super) const MAX_DIGEST: usize = 40;

/// Slack's limit of blocks in one message.
const MAX_BLOCKS: usize = 50;

/// Groups claimed rows into deliveries: the announcement posts together (up to
/// [`MAX_DIGEST`] per group), everything else on its own.
pub(super) fn group(rows: Vec<crate::store::OutboxRow>) -> Vec<Vec<OutboxRow>> {
    // Only rows that cannot have been posted before: one that may have been (a crash
    // mid-post) goes alone, through the look-back that keeps it from posting twice.
    let (announcements, others): (Vec<OutboxRow>, Vec<OutboxRow>) =
        rows.into_iter().partition(|row| {
            row.ordering_key.starts_with("announce:") && row.attempt_started_at_ms.is_none()
        });
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

impl OutboxWorker {
    /// Delivers a group from [`group`]: one row as itself, several announcements as one
    /// digest message.
    pub(super) async fn attempt_group(self, mut rows: Vec<OutboxRow>) -> Vec<Attempt> {
        if rows.len() == 1 {
            let row = rows.pop().expect("one row");
            return vec![self.attempt(row).await];
        }
        self.attempt_digest(rows).await
    }

    async fn attempt_digest(mut self, rows: Vec<OutboxRow>) -> Vec<Attempt> {
        // Render each; a row that is not an announcement post (it cannot be, by its lane,
        // unless hand-edited) or whose incident is gone gets its own error.
        let mut attempts = Vec::with_capacity(rows.len());
        let mut parts: Vec<(OutboxRow, String, Vec<serde_json::Value>)> = Vec::new();
        for row in rows {
            match self.render_announcement(&row).await {
                Ok((text, blocks)) => parts.push((row, text, blocks)),
                Err(e) => {
                    let trace = std::sync::Arc::new(AttemptTrace::new(&row));
                    attempts.push(Attempt {
                        row,
                        result: Err(e),
                        trace,
                    })
                }
            }
        }
        match parts.len() {
            0 => return attempts,
            1 => {
                let (row, _, _) = parts.pop().expect("one part");
                attempts.push(self.attempt(row).await);
                return attempts;
            }
            _ => {}
        }
        // Slack takes at most 50 blocks a message: what does not fit waits its turn.
        let mut room = MAX_BLOCKS;
        let mut fits = Vec::with_capacity(parts.len());
        for (row, text, blocks) in parts {
            if blocks.len() <= room {
                room -= blocks.len();
                fits.push((row, text, blocks));
            } else {
                let result = Err(DeliveryError::Deferred(std::time::Duration::from_secs(1)));
                let trace = std::sync::Arc::new(AttemptTrace::new(&row));
                attempts.push(Attempt { row, result, trace });
            }
        }
        let parts = fits;
        let channel = self.outlets.announce_channel.clone();
        let text = parts
            .iter()
            .map(|(_, text, _)| text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let blocks: Vec<serde_json::Value> = parts
            .iter()
            .flat_map(|(_, _, blocks)| blocks.iter().cloned())
            .collect();
        let blocks = serde_json::Value::Array(blocks);
        // The pacing ticket is the first row's; the post is tagged with every row (all
        // fresh: see `group`); the bound is one delivery's.
        self.delivering = parts[0].0.id;
        let others: Vec<&OutboxRow> = parts[1..].iter().map(|(row, _, _)| row).collect();
        self.trace = std::sync::Arc::new(AttemptTrace::for_digest(&parts[0].0, &others));
        let limit = self.settings.delivery_timeout(LaneClass::Slack);
        let post = self.post_once(&channel, &text, &blocks, None);
        let result = match tokio::time::timeout(limit, post).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(DeliveryError::TimedOut("the delivery", limit)),
        };
        tracing::debug!(
            count = parts.len(),
            ok = result.is_ok(),
            "announcement digest"
        );
        for (row, _, _) in parts {
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
