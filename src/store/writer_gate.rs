//! Who goes first at SQLite's one writer: requests, then the background loops.
//!
//! SQLite has one writer connection, handed out first come, first served. Under a burst of
//! declarations the outbox worker and the scheduler (many short transactions: claims,
//! settles, fired timers) would queue between the acknowledgements, and each ack would
//! wait for the deliveries' transactions ahead of it, though a delivery has no deadline
//! and an ack has Slack's 3 s. So a background transaction waits to begin while a
//! request's transaction is waiting for the writer or holding it, for at most
//! [`MAX_YIELD`]: under a sustained burst the deliveries still get a turn at least that
//! often, and catch up fully once it passes. PostgreSQL has many writers and no gate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest a background transaction waits for requests' transactions to pass.
pub const MAX_YIELD: Duration = Duration::from_millis(50);

/// Shared by every handle on one SQLite store.
#[derive(Debug, Default)]
pub struct WriterGate {
    /// Requests' transactions waiting for the writer or holding it.
    foreground: AtomicUsize,
    /// Signalled when `foreground` drops to zero.
    clear: Notify,
}

/// A request's claim on the writer: background transactions wait while one is held.
#[derive(Debug)]
pub struct ForegroundTurn(Arc<WriterGate>);

impl WriterGate {
    /// Marks a request's transaction as waiting for (then holding) the writer until the
    /// returned turn is dropped.
    pub fn foreground(self: &Arc<Self>) -> ForegroundTurn {
        self.foreground.fetch_add(1, Ordering::SeqCst);
        ForegroundTurn(self.clone())
    }

    /// Waits until no request's transaction wants the writer, or [`MAX_YIELD`] passed.
    pub async fn background(&self) {
        let deadline = tokio::time::Instant::now() + MAX_YIELD;
        loop {
            let clear = self.clear.notified();
            if self.foreground.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, clear).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for ForegroundTurn {
    fn drop(&mut self) {
        if self.0.foreground.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.clear.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn background_waits_for_requests_but_not_forever() {
        let gate = Arc::new(WriterGate::default());
        // Nobody in front: at once.
        let start = tokio::time::Instant::now();
        gate.background().await;
        assert_eq!(start.elapsed(), Duration::ZERO);

        // A request holds the writer: the background waits until it is done.
        let turn = gate.foreground();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move {
                let start = tokio::time::Instant::now();
                gate.background().await;
                start.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(turn);
        assert_eq!(waiting.await.unwrap(), Duration::from_millis(10));

        // Requests that never stop: the background goes after MAX_YIELD anyway.
        let _held = gate.foreground();
        let start = tokio::time::Instant::now();
        gate.background().await;
        assert_eq!(start.elapsed(), MAX_YIELD);
    }
}
