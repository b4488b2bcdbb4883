//! Completes declarations a stopped process acknowledged but did not write out (see
//! `engine::intake`): all of them once at start-up, then, every `every`, those older than
//! `every` and older than any this process still has in hand (another live replica
//! writes its own out within milliseconds; completing one of those anyway is harmless,
//! each is written once).

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::engine::Engine;

/// How often the pass runs, and how old a `declaring` row must be to be taken.
pub const EVERY: TimeDelta = TimeDelta::seconds(5);

/// One pass over everything acknowledged before now: what start-up runs before serving.
pub async fn complete_all(engine: &Engine, clock: &dyn Clock) {
    pass(engine, clock.now() + TimeDelta::milliseconds(1)).await;
}

/// Every `every` until shutdown: completes what was acknowledged more than `every` ago.
pub async fn run(
    engine: Engine,
    clock: Arc<dyn Clock>,
    every: TimeDelta,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = clock.now();
        tokio::select! {
            _ = clock.sleep_until(now + every) => {}
            _ = tokio::time::sleep(every.to_std().unwrap_or(Duration::from_secs(5))) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        // What this process still has in hand is left to its own write-out, however
        // old: under a burst the write-outs run seconds behind the acks, and a pass that
        // took them too did the same work twice on a store already saturated (load bench
        // `declare` on PostgreSQL: a 200-row read of 21 ms each time, then the same
        // declarations decided and written again).
        let before = clock.now() - every;
        let before = engine
            .oldest_declaration_in_hand()
            .map_or(before, |oldest| oldest.min(before));
        pass(&engine, before).await;
    }
}

async fn pass(engine: &Engine, before: chrono::DateTime<chrono::Utc>) {
    if let Err(e) = engine.complete_declarations(before).await {
        tracing::error!(error = %e, "completing acknowledged declarations failed; trying again next round");
    }
}
