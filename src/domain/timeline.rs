//! Timeline entries and their hash chain.
//!
//! Each entry stores the hash of the previous entry of the same incident, and its own hash
//! covers that link plus every field, so editing or deleting any stored entry breaks the
//! chain from there on. `klaxon audit verify` recomputes it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::incident::{Actor, EventKind, IncidentId};

/// The `prev_hash` of an incident's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored timeline entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// The incident.
    pub incident_id: IncidentId,
    /// Position in the incident's timeline, from 1.
    pub seq: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it.
    pub actor: Actor,
    /// Which request caused it (HTTP request id, outbox row...).
    pub request_id: String,
    /// What happened.
    pub kind: EventKind,
    /// Hash of the previous entry ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

impl TimelineEntry {
    /// Builds the entry that follows `prev_hash`, computing its hash.
    pub fn chain(
        incident_id: IncidentId,
        seq: i64,
        at: DateTime<Utc>,
        actor: Actor,
        request_id: String,
        kind: EventKind,
        prev_hash: String,
    ) -> TimelineEntry {
        let mut entry = TimelineEntry {
            incident_id,
            seq,
            at,
            actor,
            request_id,
            kind,
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        entry
    }

    /// The hash this entry should have. Times are hashed as milliseconds, the precision
    /// the store keeps.
    pub fn compute_hash(&self) -> String {
        let kind = serde_json::to_string(&self.kind).expect("events serialize");
        let mut h = Sha256::new();
        for part in [
            self.incident_id.0.to_string(),
            self.seq.to_string(),
            self.at.timestamp_millis().to_string(),
            self.actor.to_string(),
            self.request_id.clone(),
            kind,
            self.prev_hash.clone(),
        ] {
            // Length-prefix each part so no two different entries hash the same bytes.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// A break in an incident's chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An entry's stored hash does not match its content.
    #[error("{incident} entry {seq}: content does not match its hash (edited?)")]
    Tampered {
        /// Incident.
        incident: IncidentId,
        /// Entry.
        seq: i64,
    },
    /// An entry's stored event is no longer an event Klaxon can read (edited by hand).
    #[error("{incident} entry {seq}: the stored event does not decode (edited?): {problem}")]
    Unreadable {
        /// Incident.
        incident: IncidentId,
        /// Entry.
        seq: i64,
        /// The decode error.
        problem: String,
    },
    /// An entry does not point at the previous one.
    #[error("{incident} entry {seq}: does not follow entry {prev} (deleted or reordered?)")]
    Broken {
        /// Incident.
        incident: IncidentId,
        /// Entry.
        seq: i64,
        /// The entry it should follow.
        prev: i64,
    },
}

/// Checks one incident's entries, in `seq` order.
pub fn verify(entries: &[TimelineEntry]) -> Result<(), ChainError> {
    let mut prev_hash = GENESIS.to_string();
    for (i, e) in entries.iter().enumerate() {
        let expected_seq = i as i64 + 1;
        if e.prev_hash != prev_hash || e.seq != expected_seq {
            return Err(ChainError::Broken {
                incident: e.incident_id,
                seq: e.seq,
                prev: expected_seq - 1,
            });
        }
        if e.compute_hash() != e.hash {
            return Err(ChainError::Tampered {
                incident: e.incident_id,
                seq: e.seq,
            });
        }
        prev_hash = e.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(n: i64) -> Vec<TimelineEntry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let e = TimelineEntry::chain(
                    IncidentId(1),
                    seq,
                    DateTime::from_timestamp_millis(1_700_000_000_000 + seq).unwrap(),
                    Actor::User("U1".into()),
                    format!("req-{seq}"),
                    EventKind::UpdatePosted {
                        text: format!("update {seq}"),
                    },
                    prev.clone(),
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain_of(5)), Ok(()));
    }

    #[test]
    fn an_edit_is_detected() {
        let mut c = chain_of(5);
        c[2].kind = EventKind::UpdatePosted {
            text: "nothing happened".into(),
        };
        assert_eq!(
            verify(&c),
            Err(ChainError::Tampered {
                incident: IncidentId(1),
                seq: 3
            })
        );
    }

    #[test]
    fn a_deletion_is_detected() {
        let mut c = chain_of(5);
        c.remove(1);
        assert!(matches!(verify(&c), Err(ChainError::Broken { seq: 3, .. })));
    }
}
