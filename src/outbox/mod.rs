//! The outbox worker: delivers what the engine stored, at least once, in order per lane,
//! many lanes at a time.
//!
//! - **Lanes** (`domain::outbound`): rows of one ordering key go one at a time, oldest
//!   first; different lanes go concurrently, with a bounded number in flight per class
//!   (Slack, PagerDuty, recovery runs), so a slow Slack never holds back a page.
//! - **Leases that prove liveness**: a claimed lane is leased for [`DeliverySettings::lease`]
//!   and the worker renews the leases of everything in flight every
//!   [`DeliverySettings::heartbeat`]. A dead process's lanes come due again within the
//!   lease (PostgreSQL), or at once when it restarts (SQLite: one process owns the file).
//! - **Time-bounded**: every Slack call runs under [`DeliverySettings::call_timeout`]; a
//!   delivery as a whole under a bound of its class.
//! - **Paced** ([`pacing`]): Slack's per-channel and per-method limits are kept before
//!   Slack says 429; a 429 pauses that method or channel for `Retry-After` and is not a
//!   failed attempt.
//! - **Failures**: transient errors back off exponentially (1 s, 2 s, 4 s... capped at
//!   5 min) up to [`MAX_ATTEMPTS`]; permanent errors and rows that kept failing are marked
//!   `failed`, kept in the table, and said in `#incident-response`: never dropped.
//! - **Batched writes**: the outcomes of a batch of deliveries are settled in one
//!   transaction, so the worker takes the single SQLite writer a few times per batch, not
//!   several times per row.

mod deliver;
mod digest;
mod failure;
mod leases;
mod listen;
mod once;
pub mod pacing;
mod pagerduty;
mod prefetch;
mod runs;
mod stakeholders;
mod upload;

/// Recovery runs live with the recovery code; named here too for existing callers.
pub use crate::commands::execution::{EXECUTION_LEASE, Recovery};
/// The worker's settings are parsed from `[delivery]`; named here too for callers.
pub use crate::config::DeliverySettings;
pub use crate::domain::outbound::{Modal, Outbound};
pub use failure::{DeliveryError, MAX_ATTEMPTS, backoff};
pub use once::LOOKBACK_MARGIN;
pub use pacing::{PaceSettings, Pacer};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use futures_util::FutureExt;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::domain::outbound::LaneClass;
use crate::engine::Engine;
use crate::paging::{PagerDuty, Target};
use crate::slack::SlackApi;
use crate::store::{OutboxRow, OutboxWake, Settlement, StoreError};
use failure::DEFAULT_RETRY_AFTER;
use once::AttemptTrace;

/// How long the run loop waits for more deliveries to finish before settling the ones
/// that have (when others are in flight): short next to any Slack call, long enough to
/// make one transaction of a burst's completions.
const SETTLE_GATHER: Duration = Duration::from_millis(2);
/// Settle transactions the run loop lets commit at once, beside its deliveries.
const MAX_SETTLES_IN_FLIGHT: usize = 4;
/// Completions after which the run loop settles without waiting for more.
const SETTLE_GATHER_ROWS: usize = 32;

/// How the worker reads its settings (the type is `[delivery]`'s, in `config`).
impl DeliverySettings {
    fn slots(&self, class: LaneClass) -> usize {
        match class {
            LaneClass::Slack => self.slack_slots,
            // One digest at a time: the channel takes one post per second anyway, and
            // one claim then takes every announcement waiting (see `claim_limit`).
            LaneClass::Announce => 1,
            LaneClass::Page => self.page_slots,
            LaneClass::Run => self.run_slots,
            LaneClass::Stakeholder => self.stakeholder_slots,
        }
    }

    /// How many lanes of `class` to claim with `free` slots: one per slot, except
    /// announcements, whose one slot takes a whole digest's worth.
    fn claim_limit(&self, class: LaneClass, free: usize) -> usize {
        match class {
            LaneClass::Announce if free > 0 => digest::MAX_DIGEST,
            _ => free,
        }
    }

    /// The bound on one whole delivery of `class`.
    fn delivery_timeout(&self, class: LaneClass) -> Duration {
        match class {
            LaneClass::Run => self.run_timeout,
            // One post, after waiting out the channel's second.
            LaneClass::Announce => self.call_timeout * 2 + self.announce_inline_wait(),
            // Several calls, plus up to one inline pacing wait each.
            LaneClass::Slack | LaneClass::Page | LaneClass::Stakeholder => {
                self.call_timeout * 4 + self.pacing.inline_wait * 4
            }
        }
    }

    /// The pacing wait an announcement digest sleeps through: its channel's one post per
    /// second, and a little (longer waits are 429 pauses: the lanes are handed back).
    fn announce_inline_wait(&self) -> Duration {
        self.pacing.post_interval + Duration::from_millis(250)
    }
}

/// What one pass of [`OutboxWorker::deliver_due`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Rows delivered.
    pub delivered: usize,
    /// Rows put back for a later retry (failed attempts, rate limits, pacing).
    pub retried: usize,
    /// Rows given up on.
    pub failed: usize,
}

/// Where deliveries go.
#[derive(Clone)]
pub struct Outlets {
    /// Slack Web API.
    pub slack: Arc<dyn SlackApi>,
    /// PagerDuty Events API.
    pub pagerduty: PagerDuty,
    /// Channel id of `#incident-response`.
    pub announce_channel: String,
    /// Escalation targets by name.
    pub targets: Arc<BTreeMap<String, Target>>,
    /// Recovery command catalog and executors.
    pub recovery: Recovery,
    /// PagerDuty's REST API (user look-ups, notes, resolves), when a token is configured.
    pub pagerduty_rest: Option<Arc<crate::paging::rest::PagerDutyRest>>,
    /// Whether resolving in Klaxon resolves the linked PagerDuty incidents.
    pub resolve_in_pagerduty: bool,
    /// Stakeholder email and status page.
    pub notify: crate::notify::Notifier,
}

/// Delivers outbox rows. Cheap to clone: each delivery runs in its own task on a clone.
#[derive(Clone)]
pub struct OutboxWorker {
    engine: Engine,
    outlets: Outlets,
    clock: Arc<dyn Clock>,
    wake: Arc<OutboxWake>,
    /// This worker's lease token: `instance/random` when it knows its instance.
    owner: Arc<str>,
    /// Which instance this worker is (see [`OutboxWorker::for_instance`]).
    instance: Option<Arc<str>>,
    settings: DeliverySettings,
    pacer: Arc<Pacer>,
    bot_user_id: Arc<OnceCell<String>>,
    /// The row this clone is delivering (its pacing ticket); 0 outside a delivery.
    delivering: i64,
    /// The longest pacing wait this clone sleeps through, when not the settings'.
    inline_wait: Option<Duration>,
    /// What this clone's delivery posted or may have posted (see [`once`]).
    trace: Arc<AttemptTrace>,
    /// This database's installation id, for post metadata.
    install: Arc<OnceCell<String>>,
    /// The incident of the row this clone delivers, read with the rest of its claim;
    /// taken by the delivery's first look at it (see [`OutboxWorker::prefetch`]).
    prefetched: Arc<std::sync::Mutex<Option<crate::domain::incident::Incident>>>,
    /// Where claims and settles run, when set (`serve` sets it; see
    /// [`crate::background::StoreThread`]); otherwise on the worker's own runtime.
    store_thread: Option<Arc<crate::background::StoreThread>>,
}

/// One finished delivery, waiting to be settled.
struct Attempt {
    row: OutboxRow,
    result: Result<(), DeliveryError>,
    trace: Arc<AttemptTrace>,
}

impl OutboxWorker {
    /// A worker delivering to `outlets`, woken by `wake`.
    pub fn new(
        engine: Engine,
        outlets: Outlets,
        clock: Arc<dyn Clock>,
        wake: Arc<OutboxWake>,
        settings: DeliverySettings,
    ) -> Self {
        Self {
            engine,
            outlets,
            clock,
            wake,
            owner: uuid::Uuid::new_v4().simple().to_string().into(),
            instance: None,
            settings,
            pacer: Arc::new(Pacer::new(settings.pacing)),
            bot_user_id: Arc::new(OnceCell::new()),
            delivering: 0,
            inline_wait: None,
            trace: Arc::default(),
            install: Arc::new(OnceCell::new()),
            prefetched: Arc::default(),
            store_thread: None,
        }
    }

    /// Delivers one row under its class's time bound.
    async fn attempt(mut self, row: OutboxRow) -> Attempt {
        self.delivering = row.id;
        self.trace = Arc::new(AttemptTrace::new(&row));
        let class = LaneClass::of(&row.ordering_key);
        let limit = self.settings.delivery_timeout(class);
        let result = match tokio::time::timeout(limit, self.deliver(&row)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::TimedOut("the delivery", limit)),
        };
        Attempt {
            row,
            result,
            trace: self.trace,
        }
    }

    /// Delivers every lane that is due now, concurrently within the slot limits, until
    /// none is left due. Returns what happened; errors only when the database fails. The
    /// tests' way to run the worker one pass at a time; [`OutboxWorker::run`] is the loop.
    pub async fn deliver_due(&self) -> Result<PassReport, StoreError> {
        self.recover_interrupted_runs().await?;
        let mut report = PassReport::default();
        loop {
            let mut tasks = Vec::new();
            for class in LaneClass::ALL {
                let limit = self.settings.claim_limit(class, self.settings.slots(class));
                let rows = self.claim(class, limit).await?;
                let incidents = self.prefetch(&rows).await;
                for group in digest::group(rows) {
                    tasks.push(self.for_group(&group, &incidents).attempt_group(group));
                }
            }
            if tasks.is_empty() {
                return Ok(report);
            }
            let mut attempts = Vec::with_capacity(tasks.len());
            let mut set: JoinSet<Vec<Attempt>> = tasks.into_iter().collect();
            while let Some(done) = set.join_next().await {
                match done {
                    Ok(group) => attempts.extend(group),
                    // Its lease runs out and the row is tried again.
                    Err(e) => tracing::error!(error = %e, "an outbox delivery task failed"),
                }
            }
            self.settle(attempts, &mut report).await?;
        }
    }

    /// Records a batch of outcomes in one transaction, then says what failed for good.
    async fn settle(
        &self,
        attempts: Vec<Attempt>,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut outcomes = Vec::with_capacity(attempts.len());
        let mut notices = Vec::new();
        for Attempt { row, result, trace } in attempts {
            let settlement = match result {
                Ok(()) => {
                    report.delivered += 1;
                    let posted = trace.posted();
                    Settlement::Delivered {
                        row_id: row.id,
                        // Its lane's next row, likely a post in the same channel, is not
                        // claimed before the channel takes one, when that is further off
                        // than a delivery sleeps through (see `Settlement`).
                        not_before: posted
                            .as_ref()
                            .and_then(|p| self.pacer.next_post_at(&p.channel))
                            .filter(|at| {
                                (*at - now).to_std().unwrap_or_default()
                                    > self.settings.pacing.inline_wait
                            }),
                        posted,
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    let attempts = row.attempts + 1;
                    if let Some(hold) = e.hold() {
                        tracing::debug!(outbox_id = row.id, lane = %row.ordering_key, hold_ms = hold.as_millis() as u64, reason = %message, "outbox delivery held back");
                        report.retried += 1;
                        Settlement::Retry {
                            row_id: row.id,
                            at: now + TimeDelta::from_std(hold).unwrap_or(TimeDelta::seconds(60)),
                            error: message,
                            counted: false,
                            nothing_sent: trace.nothing_sent(),
                        }
                    } else if e.is_permanent()
                        || (attempts >= MAX_ATTEMPTS
                            && LaneClass::of(&row.ordering_key) != LaneClass::Stakeholder)
                    {
                        tracing::error!(outbox_id = row.id, lane = %row.ordering_key, attempts, error = %message, "outbox delivery failed for good");
                        report.failed += 1;
                        if !matches!(e, DeliveryError::Dependency(_)) {
                            notices.push((row.clone(), message.clone()));
                        }
                        Settlement::Failed {
                            row_id: row.id,
                            error: message,
                        }
                    } else {
                        let wait = backoff(attempts);
                        tracing::warn!(outbox_id = row.id, lane = %row.ordering_key, attempts, retry_in_ms = wait.num_milliseconds(), error = %message, "outbox delivery will be retried");
                        report.retried += 1;
                        Settlement::Retry {
                            row_id: row.id,
                            at: now + wait,
                            error: message,
                            counted: true,
                            nothing_sent: trace.nothing_sent(),
                        }
                    }
                }
            };
            outcomes.push((row.ordering_key, settlement));
        }
        self.engine
            .store()
            .settle_outbox(&self.owner, &outcomes, now)
            .await?;
        for (row, error) in notices {
            self.tell_failure(&row, &error).await;
        }
        Ok(())
    }

    /// Runs until `shutdown` turns true: keeps up to the slot limit of each class in
    /// flight, settles outcomes as they come, renews the leases of what is in flight, and
    /// otherwise sleeps until the next lane is due or the engine (or, on PostgreSQL, a
    /// `NOTIFY` from any replica) says there is new work.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.start_up().await {
            tracing::error!(error = %e, "outbox start-up recovery failed; leases will run out instead");
        }
        let mut in_flight: JoinSet<Vec<Attempt>> = JoinSet::new();
        let mut lanes_in_flight: HashMap<tokio::task::Id, Vec<(LaneClass, String)>> =
            HashMap::new();
        let mut next_heartbeat = self.clock.now() + self.settings.heartbeat;
        // Settles committing beside the deliveries (each says which classes it moved).
        let mut settling: JoinSet<Vec<LaneClass>> = JoinSet::new();
        // What this loop knows of each class's next due lane, learned from its last claim
        // (absent: unknown, claim to find out). Forgotten when the class's lanes move
        // (a settle) or new work may have come (a wake), so an idle class costs no query
        // per turn of the loop while another class is busy.
        let mut known_due: HashMap<LaneClass, Option<chrono::DateTime<chrono::Utc>>> =
            HashMap::new();
        loop {
            if self.wake.notify().notified().now_or_never().is_some() {
                forget_woken(&mut known_due, &self.wake);
            }
            // Fill the free slots of every class. A class whose slots are all taken is
            // looked at again when one of its deliveries finishes; a class that still has
            // free slots after claiming got everything due, so its next due time is ahead.
            let mut next_due: Option<chrono::DateTime<chrono::Utc>> = None;
            for class in LaneClass::ALL {
                let busy = lanes_in_flight
                    .values()
                    .flatten()
                    .filter(|(c, _)| *c == class)
                    .count();
                let free = self.settings.slots(class).saturating_sub(busy);
                if free == 0 {
                    continue;
                }
                if let Some(due) = known_due.get(&class)
                    && due.is_none_or(|due| due > self.clock.now())
                {
                    next_due = next_due.into_iter().chain(*due).min();
                    continue;
                }
                let limit = self.settings.claim_limit(class, free);
                let claiming = std::time::Instant::now();
                match self.claim(class, limit).await {
                    Ok(rows) => {
                        tracing::trace!(
                            class = class.as_str(),
                            limit,
                            claimed = rows.len(),
                            claim_us = claiming.elapsed().as_micros() as u64,
                            "outbox claim"
                        );
                        let all_claimed = rows.len() < limit;
                        // A lane this worker is still delivering, whose lease ran out
                        // before a late heartbeat (a stalled process): the claim just
                        // renewed the lease; it must not be sent a second time.
                        let rows: Vec<OutboxRow> = rows
                            .into_iter()
                            .filter(|row| {
                                !lanes_in_flight
                                    .values()
                                    .flatten()
                                    .any(|(_, k)| *k == row.ordering_key)
                            })
                            .collect();
                        let incidents = self.prefetch(&rows).await;
                        for group in digest::group(rows) {
                            let lanes = digest::lanes(&group);
                            let handle = in_flight
                                .spawn(self.for_group(&group, &incidents).attempt_group(group));
                            lanes_in_flight.insert(handle.id(), lanes);
                        }
                        if all_claimed {
                            match self.engine.store().next_lane_due(class).await {
                                Ok(due) => {
                                    next_due = next_due.into_iter().chain(due).min();
                                    known_due.insert(class, due);
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot read the next due time; polling")
                                }
                            }
                        } else {
                            known_due.remove(&class);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "outbox claim failed; retrying shortly"),
                }
            }
            if self.clock.now() >= next_heartbeat {
                self.heartbeat(&lanes_in_flight).await;
                next_heartbeat = self.clock.now() + self.settings.heartbeat;
            }
            let wake_at = match (next_due, lanes_in_flight.is_empty()) {
                (Some(due), false) => Some(due.min(next_heartbeat)),
                (Some(due), true) => Some(due),
                (None, false) => Some(next_heartbeat),
                (None, true) => None,
            };
            let finished = tokio::select! {
                Some(done) = in_flight.join_next_with_id() => Some(done),
                Some(settled) = settling.join_next() => {
                    forget_settled(&mut known_due, settled);
                    None
                }
                stop = crate::clock::wait_for_work(&*self.clock, wake_at, Duration::from_secs(30), self.wake.notify(), &mut shutdown) => {
                    if stop {
                        break;
                    }
                    // Woken by new work (look at its classes), or by a due time or the
                    // idle check (look at every class).
                    if !forget_woken(&mut known_due, &self.wake) {
                        known_due.clear();
                    }
                    None
                }
            };
            // Settle everything that has finished, in one transaction. Under load the
            // deliveries finish one after another: gather those finishing within
            // SETTLE_GATHER (at most a slot pool's worth), so one settle and one claim
            // serve many rows instead of one each.
            let mut batch = Vec::new();
            let mut next = finished;
            let gather_until = tokio::time::Instant::now() + SETTLE_GATHER;
            loop {
                match next {
                    Some(Ok((id, attempts))) => {
                        lanes_in_flight.remove(&id);
                        batch.extend(attempts);
                    }
                    Some(Err(e)) => {
                        // A delivery task panicked: its lane's lease runs out and the row
                        // is tried again.
                        lanes_in_flight.remove(&e.id());
                        tracing::error!(error = %e, "an outbox delivery task failed");
                    }
                    None => break,
                }
                next = match in_flight.try_join_next_with_id() {
                    Some(done) => Some(done),
                    None if batch.len() < SETTLE_GATHER_ROWS && !in_flight.is_empty() => {
                        tokio::time::timeout_at(gather_until, in_flight.join_next_with_id())
                            .await
                            .ok()
                            .flatten()
                    }
                    None => None,
                };
            }
            if batch.is_empty() {
                continue;
            }
            // The settle runs beside the next claims and deliveries (its lanes stay
            // leased to this worker until it commits, so nobody claims them meanwhile);
            // a few at once at most.
            while settling.len() >= MAX_SETTLES_IN_FLIGHT {
                if let Some(settled) = settling.join_next().await {
                    forget_settled(&mut known_due, settled);
                }
            }
            let worker = self.clone();
            let settle = async move {
                let mut classes: Vec<LaneClass> = batch
                    .iter()
                    .map(|a| LaneClass::of(&a.row.ordering_key))
                    .collect();
                classes.sort();
                classes.dedup();
                let (count, started) = (batch.len(), std::time::Instant::now());
                if let Err(e) = worker.settle(batch, &mut PassReport::default()).await {
                    // The leases run out and the rows are delivered again: at least once.
                    tracing::error!(error = %e, "could not record outbox outcomes");
                }
                tracing::trace!(
                    settled = count,
                    settle_us = started.elapsed().as_micros() as u64,
                    "outbox settle"
                );
                classes
            };
            settling.spawn_on(settle, &self.store_runtime());
        }
        // Shutting down: let what is in flight finish (bounded by its timeouts) and record
        // it, so a clean stop repeats nothing.
        let mut batch = Vec::new();
        while let Some(done) = in_flight.join_next().await {
            if let Ok(attempts) = done {
                batch.extend(attempts);
            }
        }
        while settling.join_next().await.is_some() {}
        if !batch.is_empty()
            && let Err(e) = self.settle(batch, &mut PassReport::default()).await
        {
            tracing::error!(error = %e, "could not record outbox outcomes at shutdown");
        }
    }
}

/// After a wake-up: the classes that got new rows may have lanes due now. Returns
/// whether the wake-up named any.
fn forget_woken(
    known_due: &mut HashMap<LaneClass, Option<chrono::DateTime<chrono::Utc>>>,
    wake: &OutboxWake,
) -> bool {
    let woken = wake.take();
    for class in &woken {
        known_due.remove(class);
    }
    !woken.is_empty()
}

/// After a settle committed: its lanes moved on, so their classes may have lanes due now
/// (all classes, if the settle task died and cannot say which).
fn forget_settled(
    known_due: &mut HashMap<LaneClass, Option<chrono::DateTime<chrono::Utc>>>,
    settled: Result<Vec<LaneClass>, tokio::task::JoinError>,
) {
    for class in settled.unwrap_or_else(|_| LaneClass::ALL.to_vec()) {
        known_due.remove(&class);
    }
}
