//! Where "now" comes from. Handlers, the outbox worker and (later) the scheduler read a
//! [`Clock`]; the domain never does. Tests use [`ManualClock`] to run hours in no time.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, watch};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// Now, to the millisecond: the precision the store keeps. Times that go into an
    /// incident's state and into its timer rows then compare equal after a round trip
    /// (a sub-millisecond `declared_at` once made every real timer look rescheduled).
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: TimeDelta) {
        *self.0.lock().expect("clock lock") += by;
    }

    /// Sets the clock.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// The wait of a background loop (outbox worker, scheduler): until `next` is due (at most
/// `idle`, so a clock jump or a missed wake-up costs little), until `wake` is notified
/// (new work was committed), or until shutdown. Returns `true` when shutting down.
pub async fn wait_for_work(
    clock: &dyn Clock,
    next: Option<DateTime<Utc>>,
    idle: Duration,
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let sleep_for = next.map_or(idle, |t| {
        (t - clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(idle)
    });
    tokio::select! {
        _ = wake.notified() => {}
        _ = tokio::time::sleep(sleep_for) => {}
        _ = shutdown.changed() => {}
    }
    *shutdown.borrow()
}
