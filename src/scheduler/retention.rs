//! The retention loop: prunes working rows older than the configured age (see
//! `Store::prune`), so the store's size follows the open work, not the history. The
//! timeline keeps the record.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::Store;

/// Prunes every `every`, rows older than `keep`, until shutdown. Runs once at start.
pub async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    keep: TimeDelta,
    every: TimeDelta,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = clock.now();
        match store.prune(now - keep).await {
            Ok(pruned) if pruned != Default::default() => {
                tracing::info!(
                    outbox = pruned.outbox,
                    timers = pruned.timers,
                    inbound = pruned.inbound,
                    lanes = pruned.lanes,
                    "pruned rows past retention"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "pruning failed; trying again next round"),
        }
        tokio::select! {
            _ = clock.sleep_until(now + every) => {}
            _ = tokio::time::sleep(every.to_std().unwrap_or(Duration::from_secs(3600))) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
