//! What the intake committed, counted: how much grouping the load produced, how many
//! batches had to be split, and what is acknowledged but not yet written out (what a
//! clean shutdown and the tests wait for).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// Counts of what the intake committed (for tests and metrics): how much grouping the
/// load produced, and what is acknowledged but not yet written out.
#[derive(Debug, Default)]
pub struct IntakeStats {
    pub(super) ack_transactions: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) write_transactions: AtomicU64,
    pub(super) written: AtomicU64,
    /// Batches that failed as a whole and were retried one by one (either step).
    pub(super) split: AtomicU64,
    /// Acknowledged declarations not yet through their write-out attempt.
    unwritten: AtomicUsize,
    /// The same, counted by acknowledgement time (epoch ms): what this process still has
    /// in hand, which the periodic completion pass leaves to it.
    in_hand: Mutex<BTreeMap<i64, usize>>,
    /// Signalled when `unwritten` drops to zero.
    drained: Notify,
}

impl IntakeStats {
    /// `(transactions, declarations)` written out (step 2).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.write_transactions.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// `(transactions, declarations)` acknowledged (step 1).
    pub fn ack_totals(&self) -> (u64, u64) {
        (
            self.ack_transactions.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
        )
    }

    /// Batches that failed as a whole and were retried one declaration at a time.
    pub fn split_batches(&self) -> u64 {
        self.split.load(Ordering::Relaxed)
    }

    pub(super) fn queued_for_write(&self, at: DateTime<Utc>) {
        *self
            .in_hand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(at.timestamp_millis())
            .or_default() += 1;
        self.unwritten.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn write_attempted(&self, ats: impl IntoIterator<Item = DateTime<Utc>>) {
        let mut n = 0;
        {
            let mut in_hand = self.in_hand.lock().unwrap_or_else(|e| e.into_inner());
            for at in ats {
                n += 1;
                let key = at.timestamp_millis();
                if let Some(count) = in_hand.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        in_hand.remove(&key);
                    }
                }
            }
        }
        if n > 0 && self.unwritten.fetch_sub(n, Ordering::SeqCst) == n {
            self.drained.notify_waiters();
        }
    }

    /// When the oldest declaration this process acknowledged and has not yet been
    /// through its write-out was acknowledged.
    pub(in crate::engine) fn oldest_in_hand(&self) -> Option<DateTime<Utc>> {
        let in_hand = self.in_hand.lock().unwrap_or_else(|e| e.into_inner());
        in_hand
            .keys()
            .next()
            .and_then(|&ms| DateTime::from_timestamp_millis(ms))
    }

    /// Returns once every declaration acknowledged so far has been through its write-out
    /// (written, or left `declaring` for [`complete_pending`] after a failure).
    pub async fn write_outs_done(&self) {
        loop {
            let drained = self.drained.notified();
            if self.unwritten.load(Ordering::SeqCst) == 0 {
                return;
            }
            drained.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn the_oldest_declaration_in_hand_is_the_oldest_not_yet_through_its_write_out() {
        let stats = IntakeStats::default();
        assert_eq!(stats.oldest_in_hand(), None);
        stats.queued_for_write(at(2_000));
        stats.queued_for_write(at(1_000));
        stats.queued_for_write(at(1_000));
        stats.queued_for_write(at(3_000));
        assert_eq!(stats.oldest_in_hand(), Some(at(1_000)));
        stats.write_attempted([at(1_000)]);
        assert_eq!(stats.oldest_in_hand(), Some(at(1_000)), "one of two left");
        stats.write_attempted([at(1_000), at(2_000)]);
        assert_eq!(stats.oldest_in_hand(), Some(at(3_000)));
        stats.write_attempted([at(3_000)]);
        assert_eq!(stats.oldest_in_hand(), None);
        assert_eq!(stats.unwritten.load(Ordering::SeqCst), 0);
    }
}
