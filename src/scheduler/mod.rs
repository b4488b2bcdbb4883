//! The scheduler: fires durable timers (rows in `timers`) when they come due.
//!
//! It sleeps until the earliest due time, or until the engine says a nearer timer was
//! written, takes due rows (on PostgreSQL claimed with a lease and `for update skip
//! locked`, so any number of replicas share the work; on SQLite, which one process owns,
//! just read), and feeds each into the engine, which marks it
//! fired and writes its events and outbox rows in one transaction. After downtime, every
//! overdue timer fires once, saying how late it is; one whose purpose is gone is cancelled.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::engine::{Engine, EngineError, TimerOutcome};
use crate::store::{Backend, TimerRow, TimerWake};

pub mod declarations;
pub mod retention;

/// How long a claimed timer is reserved for one firing (PostgreSQL), and how long one that
/// failed to fire waits before it is tried again (both). A batch fires in well under a
/// second; a scheduler that dies leaves its timers to the others this much later.
pub const LEASE: TimeDelta = TimeDelta::seconds(15);
/// The longest the scheduler sleeps without looking at the timers.
const IDLE_LOOK: Duration = Duration::from_secs(60);
/// Timers fired together, in one transaction.
const BATCH: usize = 100;
/// Batches fired at once. A batch's transaction waits its turn at the store (on SQLite
/// the one writer, held meanwhile by the outbox's claims and settles), and that wait was
/// half of a batch's time in a burst while the writer itself was idle half the time; a
/// second batch waits while the first writes. Measured (load bench, `reminders`, SQLite,
/// 10,000 SEV1 reminders coming due within 1.4 s):
/// with one batch at a time the first round fired at about 4,500/s and reached Slack
/// 1.0-1.9 s late at p99.
const BATCHES_IN_FLIGHT: usize = 1;
/// Timers taken per round: the batches fired at once.
const TAKEN: i64 = (BATCH * BATCHES_IN_FLIGHT) as i64;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FireReport {
    /// Timers that fired.
    pub fired: usize,
    /// Timers whose purpose was gone.
    pub cancelled: usize,
    /// Timers another scheduler handled first.
    pub skipped: usize,
}

/// Fires due timers. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    engine: Engine,
    clock: Arc<dyn Clock>,
    wake: Arc<TimerWake>,
}

/// `due` split into at most [`BATCHES_IN_FLIGHT`] batches fired at once, every incident's
/// timers in one batch: within a batch they fire in due order (see `Engine::fire_timers`),
/// while two batches would race for the incident.
fn batches(due: &[TimerRow]) -> Vec<Vec<TimerRow>> {
    let count = due.len().div_ceil(BATCH).clamp(1, BATCHES_IN_FLIGHT);
    let mut batches = vec![Vec::new(); count];
    for timer in due {
        let at = timer.incident_id.0.unsigned_abs() as usize % count;
        batches[at].push(timer.clone());
    }
    batches.retain(|batch| !batch.is_empty());
    batches
}

impl Scheduler {
    /// A scheduler for `engine`, woken by `wake` (the engine's scheduler waker).
    pub fn new(engine: Engine, clock: Arc<dyn Clock>, wake: Arc<TimerWake>) -> Self {
        Self {
            engine,
            clock,
            wake,
        }
    }

    /// The engine timers are fired through.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Fires every timer due now. Errors only when the database fails.
    pub async fn fire_due(&self) -> Result<FireReport, EngineError> {
        let mut report = FireReport::default();
        loop {
            let now = self.clock.now();
            let started = std::time::Instant::now();
            let due = self.take_due(now).await?;
            if due.is_empty() {
                return Ok(report);
            }
            let taken = started.elapsed();
            let batches = batches(&due);
            let fired = futures_util::future::join_all(
                batches.iter().map(|batch| self.engine.fire_timers(batch)),
            )
            .await;
            tracing::trace!(
                timers = due.len(),
                take_ms = taken.as_secs_f64() * 1e3,
                fire_ms = (started.elapsed() - taken).as_secs_f64() * 1e3,
                "fired a batch"
            );
            let mut failed = Vec::new();
            let outcomes = batches.iter().flatten().zip(fired.into_iter().flatten());
            for (timer, outcome) in outcomes {
                match outcome {
                    Ok(TimerOutcome::Fired) => {
                        report.fired += 1;
                        if timer.kind == crate::domain::timers::TimerKind::StatusReminder {
                            crate::metrics::process().reminders_sent.inc();
                        }
                    }
                    Ok(TimerOutcome::Cancelled) => report.cancelled += 1,
                    Ok(TimerOutcome::AlreadyHandled) => report.skipped += 1,
                    // Tried again when its lease runs out.
                    Err(e) => {
                        tracing::error!(timer_id = timer.id, incident = %timer.incident_id, error = %e, "timer failed to fire");
                        failed.push(timer.id);
                    }
                }
            }
            if !failed.is_empty() && self.engine.store().backend() == Backend::Sqlite {
                // Unclaimed (see `take_due`): hold them for a lease's time, or the next
                // round would pick them up again at once.
                self.engine
                    .store()
                    .hold_timers(&failed, now + LEASE)
                    .await?;
            }
        }
    }

    /// The next batch of due timers. PostgreSQL: claimed under a lease, as replicas share
    /// the timers. SQLite: read, not claimed, since this is the only scheduler on the
    /// file (see `Store::due_timers`).
    async fn take_due(&self, now: DateTime<Utc>) -> Result<Vec<TimerRow>, EngineError> {
        let store = self.engine.store();
        Ok(match store.backend() {
            Backend::Sqlite => store.due_timers(now, TAKEN).await?,
            Backend::Postgres => store.claim_timers(now, now + LEASE, TAKEN).await?,
        })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if self.engine.store().backend() == Backend::Sqlite {
            // One process owns the file: any lease is from this process's previous life.
            match self.engine.store().release_timer_leases().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(timers = n, "resuming timers interrupted by the last stop"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot release old timer leases; they run out instead")
                }
            }
        }
        loop {
            if let Err(e) = self.fire_due().await {
                tracing::error!(error = %e, "scheduler pass failed; retrying shortly");
            }
            let next = self
                .engine
                .store()
                .next_timer_due()
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read the next due time; polling");
                    None
                });
            // Sleep until the next due time. A wake-up for timers that all come due
            // after it changes nothing: sleep on without a query (see `TimerWake`). The
            // idle minute still looks (a safety net for a missed wake-up).
            let asleep = std::time::Instant::now();
            loop {
                if crate::clock::wait_for_work(
                    &*self.clock,
                    next,
                    IDLE_LOOK,
                    self.wake.notify(),
                    &mut shutdown,
                )
                .await
                {
                    return;
                }
                let due = next.is_some_and(|at| self.clock.now() >= at);
                let idle = asleep.elapsed() >= IDLE_LOOK;
                if due || idle || self.wake.earlier_than(next.map(|at| at.timestamp_millis())) {
                    break;
                }
            }
        }
    }
}
