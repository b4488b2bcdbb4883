//! What the intake committed, counted: how much grouping the load produced, how many
//! batches had to be split, and what is acknowledged but not yet written out (what a
//! clean shutdown and the tests wait for).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

    pub(super) fn queued_for_write(&self, n: usize) {
        self.unwritten.fetch_add(n, Ordering::SeqCst);
    }

    pub(super) fn write_attempted(&self, n: usize) {
        if self.unwritten.fetch_sub(n, Ordering::SeqCst) == n {
            self.drained.notify_waiters();
        }
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
