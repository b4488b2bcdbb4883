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
use crate::store::{Backend, NextDue, TimerRow, TimerWake};

pub mod declarations;
pub mod retention;

/// How long a claimed timer is reserved for one firing (PostgreSQL), and how long one that
/// failed to fire waits before it is tried again (both). A batch fires in well under a
/// second; a scheduler that dies leaves its timers to the others this much later.
pub const LEASE: TimeDelta = TimeDelta::seconds(15);
/// The longest the scheduler sleeps without looking at the timers.
const IDLE_LOOK: Duration = Duration::from_secs(60);
/// Timers taken (and fired together) per round. One batch at a time: two at once (the
/// second waiting for the writer while the first writes) fired a burst of 10,000 SEV1
/// reminders faster on SQLite (lateness p99 0.6-0.7 s instead of 1.0-1.8 s, load bench
/// `reminders`), but took the writer from the outbox, and the posts reached Slack later
/// (steady round p50 0.44-0.67 s instead of 0.04-0.14 s).
const BATCH: i64 = 100;
/// Timers taken per round while a backlog lasts (the previous round was full): one
/// transaction's fixed costs (its wait for the SQLite writer, which the outbox's claims
/// and settles hold meanwhile; its statements and commit) are then shared by more
/// timers, where a second batch in flight (above) competed with the outbox instead.
/// Measured (load bench `reminders`, 10,000 SEV1s due within 0.8 s, SQLite): firing
/// lateness p99 57-220 ms instead of 705 ms, due -> Slack p99 in round 1 702-973 ms
/// instead of 1.05-1.3 s. The outbox is then the bound: the steady round's p50 rose from
/// 0.13 s to 0.46-0.73 s (its p99 0.55-0.80 s), as the posts now come due as fast as
/// they were declared.
const BACKLOG_BATCH: i64 = 400;

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
        let mut batch = BATCH;
        loop {
            let now = self.clock.now();
            let started = std::time::Instant::now();
            let due = self.take_due(now, batch).await?;
            if due.is_empty() {
                return Ok(report);
            }
            batch = if due.len() as i64 >= batch {
                BACKLOG_BATCH
            } else {
                BATCH
            };
            let taken = started.elapsed();
            let outcomes = self.engine.fire_timers(&due).await;
            tracing::trace!(
                timers = due.len(),
                take_ms = taken.as_secs_f64() * 1e3,
                fire_ms = (started.elapsed() - taken).as_secs_f64() * 1e3,
                "fired a batch"
            );
            let mut failed = Vec::new();
            for (timer, outcome) in due.iter().zip(outcomes) {
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
    async fn take_due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<TimerRow>, EngineError> {
        let store = self.engine.store();
        Ok(match store.backend() {
            Backend::Sqlite => store.due_timers(now, limit).await?,
            Backend::Postgres => store.claim_timers(now, now + LEASE, limit).await?,
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
            let mut next = self
                .engine
                .store()
                .next_timer_due()
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read the next due time; polling");
                    None
                });
            // Sleep until the next due time. A wake-up says when the timers it wrote are
            // due: an earlier one becomes the next due time without a query, later ones
            // change nothing (see `TimerWake::next_due`). The idle minute still looks (a
            // safety net for a missed wake-up).
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
                if due || idle {
                    break;
                }
                match self.wake.next_due(next.map(|at| at.timestamp_millis())) {
                    NextDue::Unchanged => {}
                    // Sleeps until then (at once if it is due already).
                    NextDue::At(ms) => next = Some(crate::store::from_ms(ms)),
                    NextDue::Look => break,
                }
            }
        }
    }
}
