//! Cross-replica wake-ups on PostgreSQL: every commit that adds outbox rows or moves
//! timers sends `NOTIFY` (see [`super::StoreTx::commit`]); each replica LISTENs and wakes
//! its own worker and scheduler, so a declare served by one replica is delivered by
//! whichever is free without waiting for anyone's poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};

use super::{Backend, OUTBOX_CHANNEL, Store, TIMERS_CHANNEL};
use crate::domain::outbound::LaneClass;

/// The outbox worker's wake-up: a [`Notify`] plus which classes of lanes got rows since
/// the worker last looked.
///
/// The worker remembers each idle class's next due time so it does not query it on
/// every turn of its loop. Under load every settle commits new rows (a channel created
/// queues the incident's next calls) and a bare wake-up made it forget them all: four
/// empty claims per turn, a third of its round trips, while only Slack lanes were
/// moving. With the classes, a wake-up forgets only what it concerns.
#[derive(Debug, Default)]
pub struct OutboxWake {
    notify: Notify,
    classes: AtomicU8,
}

/// The bit of `class` in a class set (`u8`).
pub fn class_bit(class: LaneClass) -> u8 {
    1 << LaneClass::ALL
        .iter()
        .position(|c| *c == class)
        .expect("every class is in ALL")
}

/// Every class (what a wake-up of unknown cause means).
pub const ALL_CLASSES: u8 = (1 << LaneClass::ALL.len()) - 1;

impl OutboxWake {
    /// Rows of the classes in `classes` (see [`class_bit`]) were committed.
    pub fn lanes_added(&self, classes: u8) {
        self.classes.fetch_or(classes, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Rows were committed, of classes unknown: the worker looks at every class.
    pub fn notify_one(&self) {
        self.lanes_added(ALL_CLASSES);
    }

    /// What the worker waits on.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }

    /// The classes woken since the last call (and resets them). Take the `Notify`'s
    /// permit first, then this: a commit's bits are set before its notification.
    pub fn take(&self) -> Vec<LaneClass> {
        let bits = self.classes.swap(0, Ordering::SeqCst);
        LaneClass::ALL
            .into_iter()
            .filter(|c| bits & class_bit(*c) != 0)
            .collect()
    }
}

/// The scheduler's wake-up: a [`Notify`] plus the earliest due time (epoch ms) among the
/// timers written since the scheduler last looked.
///
/// Under a burst every commit writes timers (nine per declaration), and a bare wake-up
/// made the scheduler run its claim and two next-due queries after each one: a quarter of
/// PostgreSQL's time in the declare benchmark. With the hint, a wake-up whose timers all
/// fall after the scheduler's next due time costs nothing.
#[derive(Debug)]
pub struct TimerWake {
    notify: Notify,
    earliest_ms: AtomicI64,
}

/// "A timer was written, due when is unknown" (e.g. after a missed `NOTIFY`).
const UNKNOWN: i64 = i64::MIN;
/// Nothing written since the last look.
const NONE: i64 = i64::MAX;

impl Default for TimerWake {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            earliest_ms: AtomicI64::new(NONE),
        }
    }
}

impl TimerWake {
    /// A timer due at `due_ms` (epoch ms) was committed: wake the scheduler.
    pub fn timer_due(&self, due_ms: i64) {
        self.earliest_ms.fetch_min(due_ms, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Timers were committed, due when is unknown: the scheduler looks.
    pub fn look(&self) {
        self.timer_due(UNKNOWN);
    }

    /// What the scheduler waits on.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }

    /// The scheduler's next due time, `next_ms`, after what was written since its last
    /// look: the earlier of the two when every timer written said when it is due, or
    /// [`NextDue::Look`] when one did not (the store must be read). Resets the hint.
    ///
    /// A known time is taken as it is, without a query: PostgreSQL's write-outs commit
    /// concurrently and out of order, so under a burst most commits carried a timer
    /// earlier than the last one seen, and reading the next due time back after each
    /// (two statements whose plans go wrong on a table that grew since its last
    /// `ANALYZE`: a sort of every pending timer) took about 12 s of PostgreSQL's
    /// statement time in one run of the declare benchmark (1,100 reads, 11 ms each).
    pub fn next_due(&self, next_ms: Option<i64>) -> NextDue {
        match self.earliest_ms.swap(NONE, Ordering::SeqCst) {
            UNKNOWN => NextDue::Look,
            NONE => NextDue::Unchanged,
            earliest if next_ms.is_some_and(|next| next <= earliest) => NextDue::Unchanged,
            earliest => NextDue::At(earliest),
        }
    }
}

/// What [`TimerWake::next_due`] makes of a wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextDue {
    /// Nothing written before the scheduler's next due time.
    Unchanged,
    /// A timer written is due at this time (epoch ms), before the scheduler's next.
    At(i64),
    /// A timer of unknown due time was written: read the store.
    Look,
}

impl Store {
    /// Until shutdown: wakes `outbox` and `timers` on the matching notifications. Lost
    /// connections are re-established (with backoff); since notifications may have been
    /// missed meanwhile, both are woken after every reconnect. Returns at once on SQLite
    /// (one process: the engine wakes its loops directly).
    pub async fn listen_for_commits(
        &self,
        outbox: Arc<OutboxWake>,
        timers: Arc<TimerWake>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            let listener = async {
                let mut listener = PgListener::connect(self.url()).await?;
                listener
                    .listen_all([OUTBOX_CHANNEL, TIMERS_CHANNEL])
                    .await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                l = listener => l,
                _ = shutdown.changed() => return,
            };
            match listener.as_mut() {
                Ok(listener) => {
                    backoff = Duration::from_millis(500);
                    outbox.notify_one();
                    timers.look();
                    loop {
                        let next = tokio::select! {
                            n = listener.try_recv() => n,
                            _ = shutdown.changed() => return,
                        };
                        match next {
                            // The payload is the set of classes the commit added rows to.
                            Ok(Some(n)) if n.channel() == OUTBOX_CHANNEL => {
                                match n.payload().parse::<u8>() {
                                    Ok(classes) if classes != 0 => outbox.lanes_added(classes),
                                    _ => outbox.notify_one(),
                                }
                            }
                            // The payload is the earliest due time the commit wrote.
                            Ok(Some(n)) => match n.payload().parse::<i64>() {
                                Ok(due_ms) => timers.timer_due(due_ms),
                                Err(_) => timers.look(),
                            },
                            // The connection dropped and was re-established.
                            Ok(None) => {
                                outbox.notify_one();
                                timers.look();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN for commits; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_learns_an_earlier_due_time_from_the_wake_up_itself() {
        let wake = TimerWake::default();
        assert_eq!(
            wake.next_due(Some(1_000)),
            NextDue::Unchanged,
            "nothing written"
        );
        wake.timer_due(5_000);
        wake.timer_due(2_000);
        assert_eq!(
            wake.next_due(Some(1_000)),
            NextDue::Unchanged,
            "all after the next due time"
        );
        wake.timer_due(5_000);
        wake.timer_due(500);
        assert_eq!(
            wake.next_due(Some(1_000)),
            NextDue::At(500),
            "one before it"
        );
        assert_eq!(
            wake.next_due(Some(500)),
            NextDue::Unchanged,
            "the hint was reset"
        );
        wake.timer_due(9_000);
        assert_eq!(
            wake.next_due(None),
            NextDue::At(9_000),
            "nothing was due: any timer is next"
        );
        wake.timer_due(700);
        wake.look();
        assert_eq!(wake.next_due(Some(1_000)), NextDue::Look, "unknown: look");
    }

    #[test]
    fn a_wake_up_names_the_classes_committed_since_the_last_look() {
        let wake = OutboxWake::default();
        assert!(wake.take().is_empty());
        wake.lanes_added(class_bit(LaneClass::Slack));
        wake.lanes_added(class_bit(LaneClass::Page));
        assert_eq!(wake.take(), vec![LaneClass::Slack, LaneClass::Page]);
        assert!(wake.take().is_empty(), "taking resets");
        // A wake-up of unknown cause (a reconnected LISTEN, a test) names every class.
        wake.notify_one();
        assert_eq!(wake.take(), LaneClass::ALL.to_vec());
    }

    #[test]
    fn class_bits_are_distinct_and_all_classes_covers_them() {
        let bits: Vec<u8> = LaneClass::ALL.iter().map(|c| class_bit(*c)).collect();
        assert_eq!(bits.iter().fold(0, |a, b| a | b), ALL_CLASSES);
        assert_eq!(bits.iter().map(|b| b.count_ones()).sum::<u32>(), 5);
    }
}
