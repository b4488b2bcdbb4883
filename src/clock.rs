//! Where "now" comes from. Handlers, the outbox worker and the scheduler read a [`Clock`];
//! the domain never does. Tests use [`ManualClock`] to run hours in no time: the real
//! background loops sleep on the clock ([`Clock::sleep_until`]), so moving a manual clock
//! wakes them exactly as time passing would.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, watch};

/// A boxed future, for the one async method of the object-safe [`Clock`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once the clock reads `at` or later.
    fn sleep_until(&self, at: DateTime<Utc>) -> Sleep<'_>;
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

    fn sleep_until(&self, at: DateTime<Utc>) -> Sleep<'_> {
        let wait = (at - self.now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(watch::Sender<DateTime<Utc>>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(watch::Sender::new(at))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: TimeDelta) {
        self.0.send_modify(|now| *now += by);
    }

    /// Sets the clock.
    pub fn set(&self, at: DateTime<Utc>) {
        self.0.send_replace(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.borrow()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Sleep<'_> {
        let mut moves = self.0.subscribe();
        Box::pin(async move {
            // `borrow_and_update` then `changed`: a move between the two is not missed.
            while *moves.borrow_and_update() < at {
                if moves.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

/// The wait of a background loop (outbox worker, scheduler): until `next` is due (at most
/// `idle` of real time, so a missed wake-up costs little), until `wake` is notified (new
/// work was committed), or until shutdown. Returns `true` when shutting down.
pub async fn wait_for_work(
    clock: &dyn Clock,
    next: Option<DateTime<Utc>>,
    idle: Duration,
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let due = async {
        match next {
            Some(at) => clock.sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = wake.notified() => {}
        _ = due => {}
        _ = tokio::time::sleep(idle) => {}
        _ = shutdown.changed() => {}
    }
    *shutdown.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_its_sleepers_when_moved() {
        let start = DateTime::from_timestamp(1_000, 0).unwrap();
        let clock = std::sync::Arc::new(ManualClock::new(start));
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(start + TimeDelta::seconds(10)).await })
        };
        tokio::task::yield_now().await;
        clock.advance(TimeDelta::seconds(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(TimeDelta::seconds(5));
        sleeper.await.unwrap();
    }
}
