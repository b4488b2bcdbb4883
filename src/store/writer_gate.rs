//! Who goes next at SQLite's one writer: requests first, then the background loops.
//!
//! SQLite has one writer connection. Under a burst of declarations the outbox worker, the
//! scheduler and the intake's write-outs (many short transactions: claims, settles, fired
//! timers) would queue between the acknowledgements, and each ack would wait for every
//! background transaction queued ahead of it, though a delivery has no deadline and an ack
//! has Slack's 3 s. So the writer is handed out here, one holder at a time, held from
//! `BEGIN` to `COMMIT`: a request's transaction waiting goes before every background one
//! waiting, and only waits for the one transaction running. A background transaction
//! that has waited [`MAX_YIELD`] goes next regardless, one per [`MAX_YIELD`], so under a
//! sustained burst the deliveries still get a turn at least that often (and every gap
//! between requests), and catch up fully once it passes.
//! PostgreSQL has many writers and no gate.
//!
//! Measured in the load bench (`declare`, SQLite, 2,000 req/s offered): the handler's p50
//! was about 20 ms when background transactions queued at the connection pool in front of
//! the acks (the previous gate only held them back *before* they queued), and is about
//! 4 ms with this one; `/metrics` has the wait and hold per priority
//! (`klaxon_sqlite_writer_{wait,hold}_seconds`).

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// The longest a background transaction waits while requests' transactions go first.
pub const MAX_YIELD: Duration = Duration::from_millis(50);

/// Whose turn is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A request's transaction: an acknowledgement has a deadline.
    Request,
    /// The background loops': goes when no request waits, or after [`MAX_YIELD`].
    Background,
}

/// Shared by every handle on one SQLite store.
#[derive(Debug, Default)]
pub struct WriterGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Someone holds the writer (a [`WriterTurn`] exists, or one is on its way to a
    /// waiter).
    held: bool,
    requests: VecDeque<Waiter>,
    background: VecDeque<Waiter>,
    /// When a background transaction last went ahead of waiting requests. At most one
    /// does per [`MAX_YIELD`]: under a backlog every background waiter is overdue, and
    /// letting each one go first would hand the writer to the backlog and starve the acks.
    last_forced: Option<Instant>,
}

#[derive(Debug)]
struct Waiter {
    since: Instant,
    grant: oneshot::Sender<()>,
}

impl Priority {
    fn label(self) -> &'static str {
        match self {
            Priority::Request => "request",
            Priority::Background => "background",
        }
    }
}

/// How long turns at the writer waited and were held, process-wide, by priority
/// (`request`, `background`). Kept here, not in `metrics` (which reads the store): the
/// `/metrics` page registers these two.
pub struct WriterTimes {
    /// From asking for the writer to getting it.
    pub wait: prometheus::HistogramVec,
    /// From getting the writer to letting it go (one transaction).
    pub hold: prometheus::HistogramVec,
}

/// The process's [`WriterTimes`].
pub fn writer_times() -> &'static WriterTimes {
    static TIMES: LazyLock<WriterTimes> = LazyLock::new(|| {
        let histogram = |name: &str, help: &str| {
            prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new(name, help).buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                ]),
                &["priority"],
            )
            .expect("valid metric")
        };
        WriterTimes {
            wait: histogram(
                "klaxon_sqlite_writer_wait_seconds",
                "SQLite: time a transaction waited for the one writer, by priority.",
            ),
            hold: histogram(
                "klaxon_sqlite_writer_hold_seconds",
                "SQLite: time one transaction held the one writer, by priority.",
            ),
        }
    });
    &TIMES
}

/// The writer, held until dropped (at the end of the transaction that holds it).
#[derive(Debug)]
pub struct WriterTurn {
    gate: Arc<WriterGate>,
    priority: Priority,
    /// Wall time (for `/metrics`), whatever the engine's clock says.
    since: std::time::Instant,
}

impl WriterTurn {
    fn new(gate: Arc<WriterGate>, priority: Priority, asked: std::time::Instant) -> Self {
        let since = std::time::Instant::now();
        writer_times()
            .wait
            .with_label_values(&[priority.label()])
            .observe((since - asked).as_secs_f64());
        WriterTurn {
            gate,
            priority,
            since,
        }
    }
}

impl WriterGate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        // The state is consistent at every unlock (no code under the lock panics).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the writer, in `priority`'s queue. Cancel-safe: a waiter dropped before
    /// or after its turn came loses nothing and wedges nothing.
    pub async fn turn(self: &Arc<Self>, priority: Priority) -> WriterTurn {
        let asked = std::time::Instant::now();
        let receiver = {
            let mut state = self.state();
            if !state.held {
                state.held = true;
                return WriterTurn::new(self.clone(), priority, asked);
            }
            let (grant, receiver) = oneshot::channel();
            let waiter = Waiter {
                since: Instant::now(),
                grant,
            };
            match priority {
                Priority::Request => state.requests.push_back(waiter),
                Priority::Background => state.background.push_back(waiter),
            }
            receiver
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            receiver: Some(receiver),
        };
        let receiver = waiting.receiver.as_mut().expect("set above");
        // The sender is only dropped after a send (the gate lives as long as `self`).
        let _ = receiver.await;
        waiting.receiver = None;
        WriterTurn::new(self.clone(), priority, asked)
    }

    /// Hands the writer to the next waiter, or marks it free.
    fn release(&self) {
        let mut state = self.state();
        loop {
            let overdue = state
                .background
                .front()
                .is_some_and(|w| w.since.elapsed() >= MAX_YIELD);
            let forced_lately = state.last_forced.is_some_and(|at| at.elapsed() < MAX_YIELD);
            let next = if overdue && !forced_lately && !state.requests.is_empty() {
                state.last_forced = Some(Instant::now());
                state.background.pop_front()
            } else {
                state
                    .requests
                    .pop_front()
                    .or_else(|| state.background.pop_front())
            };
            match next {
                // Still held: the turn passes to the waiter.
                Some(waiter) => {
                    if waiter.grant.send(()).is_ok() {
                        return;
                    }
                    // That waiter was cancelled: the next one.
                }
                None => {
                    state.held = false;
                    return;
                }
            }
        }
    }
}

impl Drop for WriterTurn {
    fn drop(&mut self) {
        writer_times()
            .hold
            .with_label_values(&[self.priority.label()])
            .observe(self.since.elapsed().as_secs_f64());
        self.gate.release();
    }
}

/// A waiter's receiver while it waits: if the wait is cancelled after the turn was
/// granted, the turn is passed on instead of being lost.
struct Waiting {
    gate: Arc<WriterGate>,
    receiver: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            receiver.close();
            if receiver.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Spawns a waiter that records the order it got the writer in, and holds it for
    /// `hold` of (paused) time.
    fn waiter(
        gate: &Arc<WriterGate>,
        priority: Priority,
        hold: Duration,
        order: &Arc<Mutex<Vec<&'static str>>>,
        name: &'static str,
    ) -> tokio::task::JoinHandle<()> {
        let (gate, order) = (gate.clone(), order.clone());
        tokio::spawn(async move {
            let _turn = gate.turn(priority).await;
            order.lock().unwrap().push(name);
            tokio::time::sleep(hold).await;
        })
    }

    /// Queues one request per name, in order, each holding the writer 10 ms.
    async fn queue_requests(
        gate: &Arc<WriterGate>,
        order: &Arc<Mutex<Vec<&'static str>>>,
        names: &[&'static str],
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for name in names {
            let hold = Duration::from_millis(10);
            tasks.push(waiter(gate, Priority::Request, hold, order, name));
            tokio::task::yield_now().await;
        }
        tasks
    }

    #[tokio::test(start_paused = true)]
    async fn requests_go_before_background_transactions_waiting() {
        let gate = Arc::new(WriterGate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        // Free: at once.
        let start = Instant::now();
        let first = gate.turn(Priority::Background).await;
        assert_eq!(start.elapsed(), Duration::ZERO);

        let ms = Duration::from_millis(1);
        let b1 = waiter(&gate, Priority::Background, ms, &order, "b1");
        tokio::task::yield_now().await;
        let b2 = waiter(&gate, Priority::Background, ms, &order, "b2");
        tokio::task::yield_now().await;
        let r1 = waiter(&gate, Priority::Request, ms, &order, "r1");
        tokio::task::yield_now().await;
        let r2 = waiter(&gate, Priority::Request, ms, &order, "r2");
        tokio::task::yield_now().await;
        drop(first);
        for t in [b1, b2, r1, r2] {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["r1", "r2", "b1", "b2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_background_transaction_waits_at_most_max_yield_for_requests() {
        let gate = Arc::new(WriterGate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = gate.turn(Priority::Request).await;
        let background = waiter(&gate, Priority::Background, Duration::ZERO, &order, "b");
        tokio::task::yield_now().await;
        // Requests keep coming, each holding the writer 10 ms.
        let names = ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"];
        let requests = queue_requests(&gate, &order, &names).await;
        drop(held);
        background.await.unwrap();
        for r in requests {
            r.await.unwrap();
        }
        let order = order.lock().unwrap();
        let at = order.iter().position(|n| *n == "b").unwrap();
        // Requests went first for MAX_YIELD (50 ms: five of 10 ms), then the background.
        assert_eq!(at, 5, "{order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_goes_ahead_of_requests_once_per_max_yield_not_every_time() {
        let gate = Arc::new(WriterGate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = gate.turn(Priority::Request).await;
        let mut tasks = Vec::new();
        for name in ["b1", "b2"] {
            tasks.push(waiter(
                &gate,
                Priority::Background,
                Duration::ZERO,
                &order,
                name,
            ));
            tokio::task::yield_now().await;
        }
        let names = [
            "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12",
        ];
        tasks.extend(queue_requests(&gate, &order, &names).await);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        let at = |name| order.iter().position(|n| *n == name).unwrap();
        // b2 was overdue as soon as b1 went (both waited from the start), but went ahead
        // of the requests only one MAX_YIELD later.
        assert_eq!((at("b1"), at("b2")), (5, 11), "{order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_neither_holds_nor_loses_the_writer() {
        let gate = Arc::new(WriterGate::default());
        let held = gate.turn(Priority::Request).await;
        // Cancelled while waiting.
        let cancelled = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _turn = gate.turn(Priority::Request).await;
                unreachable!("aborted before its turn");
            }
        });
        tokio::task::yield_now().await;
        cancelled.abort();
        let _ = cancelled.await;
        // Granted, then dropped before it was polled again: the turn passes on.
        let mut granted_then_dropped = {
            let gate = gate.clone();
            Box::pin(async move { gate.turn(Priority::Request).await })
        };
        assert!(
            futures_util::poll!(&mut granted_then_dropped).is_pending(),
            "queued behind the holder"
        );
        let got = Arc::new(AtomicUsize::new(0));
        let next = tokio::spawn({
            let (gate, got) = (gate.clone(), got.clone());
            async move {
                let _turn = gate.turn(Priority::Background).await;
                got.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await;
        drop(held);
        drop(granted_then_dropped);
        next.await.unwrap();
        assert_eq!(got.load(Ordering::SeqCst), 1);
        // And the writer is free again.
        let start = Instant::now();
        drop(gate.turn(Priority::Background).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
