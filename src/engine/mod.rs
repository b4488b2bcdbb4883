//! The engine: one change = load the incident, ask the domain, write everything the
//! decision says in ONE transaction (projection, timeline, outbox), then wake the outbox.
//!
//! HTTP handlers and the outbox worker both come through here, so every change to an
//! incident lands on its timeline the same way, whoever caused it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::domain::calendar::BusinessCalendar;
use crate::domain::escalation::EscalationPolicy;
use crate::domain::incident::{
    self, Actor, Change, Decision, Destination, DomainError, Effect, Incident, IncidentId, Policy,
};
use crate::domain::outbound::{Outbound, announce_key, effect_key};
use crate::domain::severity::{Severity, SeverityPolicies};
use crate::domain::timers;
use crate::store::{Committed, Store, StoreError, StoreTx, TimerRow};

pub use crate::domain::outbound::incident_key;

mod fire;
mod intake;
mod pagerduty;
mod record;
mod roles;
mod runs;
pub use pagerduty::PagerDutyOutcome;
pub use record::{Addition, Drafted};
pub use roles::RoleRequest;
pub use runs::{Begin, ClickContext, Finished, Prepared, run_key};

/// Who asked, and through which request.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    /// The person (or Klaxon) making the change.
    pub actor: Actor,
    /// Request id recorded on the timeline.
    pub request_id: String,
    /// `(source, id)` of an inbound event to process at most once (Slack `event_id`).
    pub dedupe: Option<(String, String)>,
}

impl RequestMeta {
    /// A request by a Slack user.
    pub fn user(user: &str, request_id: &str) -> Self {
        Self {
            actor: Actor::User(user.to_string()),
            request_id: request_id.to_string(),
            dedupe: None,
        }
    }
}

/// Why a change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The domain refused; the text is for the person who asked.
    #[error(transparent)]
    Refused(#[from] DomainError),
    /// No such incident.
    #[error("{0} does not exist")]
    NotFound(IncidentId),
    /// This inbound event was already processed.
    #[error("already processed")]
    Duplicate,
    /// Storage failed (internal; never shown to users).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The intake task is gone (the process is shutting down).
    #[error("the engine is shutting down")]
    Unavailable,
}

/// The result of a change.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The incident after the change.
    pub incident: Incident,
    /// What to tell the person who asked.
    pub reply: String,
}

/// The policy an engine decides with (owned; [`Policy`] borrows from it).
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// Severity table.
    pub severities: SeverityPolicies,
    /// Team calendar.
    pub calendar: BusinessCalendar,
    /// Escalation ladders.
    pub escalation: EscalationPolicy,
    /// Stakeholder groups and the security rule.
    pub stakeholders: crate::domain::stakeholders::StakeholderPolicy,
}

/// Who to wake after a commit.
#[derive(Clone, Debug, Default)]
pub struct Wakers {
    /// The outbox worker (new rows to deliver).
    pub outbox: Arc<crate::store::OutboxWake>,
    /// The scheduler (timers added), with the earliest due time added.
    pub scheduler: Arc<crate::store::TimerWake>,
}

/// Applies changes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    store: Store,
    clock: Arc<dyn Clock>,
    policy: Arc<PolicySet>,
    wakers: Wakers,
    /// Where declarations queue for group commit (see [`intake`]).
    intake: Arc<intake::Intake>,
}

/// What happened to a due timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerOutcome {
    /// It fired: its events and effects are committed.
    Fired,
    /// Its purpose was gone (update posted, incident resolved...): cancelled.
    Cancelled,
    /// Someone else fired or cancelled it first.
    AlreadyHandled,
}

/// How long an announcement in `#incident-response` waits for the incident channel to
/// exist (so it can link to it) before it goes out without the link.
pub const ANNOUNCEMENT_WAITS_FOR_CHANNEL: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

impl Engine {
    /// Builds an engine; `wakers` are notified after commits that enqueue work or move
    /// timers.
    pub fn new(store: Store, clock: Arc<dyn Clock>, policy: PolicySet, wakers: Wakers) -> Self {
        Self {
            store,
            clock,
            policy: Arc::new(policy),
            wakers,
            intake: Arc::default(),
        }
    }

    /// This engine without its intake queue: what the intake task commits through (so
    /// the task does not keep its own queue open).
    fn detached(&self) -> Engine {
        Engine {
            intake: Arc::default(),
            ..self.clone()
        }
    }

    /// What the declaration intake has written out: `(transactions, declarations)`.
    pub fn intake_totals(&self) -> (u64, u64) {
        self.intake.stats().totals()
    }

    /// What the declaration intake has acknowledged: `(transactions, declarations)`.
    pub fn intake_ack_totals(&self) -> (u64, u64) {
        self.intake.stats().ack_totals()
    }

    /// Declaration batches that failed as a whole and were retried one by one (so one
    /// bad declaration does not fail its neighbours).
    pub fn intake_split_batches(&self) -> u64 {
        self.intake.stats().split_batches()
    }

    /// Returns once every declaration acknowledged so far (see [`Engine::declare_acked`])
    /// has been written out, or left for [`Engine::complete_declarations`] after a
    /// failure: before a clean shutdown, and in tests before they look at the store.
    pub async fn declarations_written(&self) {
        self.intake.stats().write_outs_done().await
    }

    /// The store behind the engine (for reads).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The policy the domain decides with.
    pub fn policy(&self) -> Policy<'_> {
        Policy {
            severities: &self.policy.severities,
            calendar: &self.policy.calendar,
            escalation: &self.policy.escalation,
            stakeholders: &self.policy.stakeholders,
        }
    }

    async fn begin(&self, meta: &RequestMeta, now: DateTime<Utc>) -> Result<StoreTx, EngineError> {
        let mut tx = self.store.begin().await?;
        if let Some((source, id)) = &meta.dedupe
            && !tx.record_inbound(source, id, now).await?
        {
            return Err(EngineError::Duplicate);
        }
        Ok(tx)
    }

    /// Begins a change to incident `id`: the transaction (the request's dedupe recorded)
    /// and the incident, locked until commit on PostgreSQL. The incident is locked first
    /// everywhere, so two changes never wait on each other in opposite orders.
    pub(super) async fn begin_on(
        &self,
        meta: &RequestMeta,
        id: IncidentId,
        now: DateTime<Utc>,
    ) -> Result<(StoreTx, Incident), EngineError> {
        let mut tx = self.begin(meta, now).await?;
        let incident = tx
            .lock_incident(id)
            .await?
            .ok_or(EngineError::NotFound(id))?;
        Ok((tx, incident))
    }

    async fn commit(
        &self,
        tx: StoreTx,
        meta: &RequestMeta,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        self.commit_many(tx, &[(meta, decision)], now).await
    }

    /// Writes what each decision says (projection, timeline, outbox rows, timers) with one
    /// statement per kind of row for all of them, then commits and wakes the loops.
    async fn commit_many(
        &self,
        mut tx: StoreTx,
        decisions: &[(&RequestMeta, &Decision)],
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        self.write_decisions(&mut tx, decisions, now).await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(())
    }

    /// Writes what each decision says (projection, timeline, outbox rows, timers) into
    /// `tx`, with one statement per kind of row for all of them, without committing (the
    /// intake's write-out commits many; a PagerDuty trigger adds rows that must come
    /// after the decision's own on the incident's lane).
    async fn write_decisions(
        &self,
        tx: &mut StoreTx,
        decisions: &[(&RequestMeta, &Decision)],
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let incidents: Vec<&Incident> = decisions.iter().map(|(_, d)| &d.incident).collect();
        tx.save_incidents(&incidents, now).await?;
        let appends: Vec<_> = decisions
            .iter()
            .map(|(meta, d)| {
                (
                    d.incident.id,
                    &meta.actor,
                    meta.request_id.as_str(),
                    d.events.as_slice(),
                )
            })
            .collect();
        tx.append_events_many(now, &appends).await?;
        let rows: Vec<(String, IncidentId, String, DateTime<Utc>)> = decisions
            .iter()
            .flat_map(|(_, decision)| outbox_rows(decision, now, &self.policy.stakeholders))
            .collect();
        let batch: Vec<(&str, Option<IncidentId>, &str, DateTime<Utc>)> = rows
            .iter()
            .map(|(key, id, payload, due)| (key.as_str(), Some(*id), payload.as_str(), *due))
            .collect();
        if !batch.is_empty() {
            tx.enqueue_due(&batch).await?;
        }
        let plans: Vec<_> = decisions
            .iter()
            .map(|(_, d)| (d.incident.id, timers::plan(&d.incident, self.policy())))
            .collect();
        let plans: Vec<_> = plans.iter().map(|(id, p)| (*id, p.as_slice())).collect();
        tx.sync_timers_many(&plans, now).await?;
        Ok(())
    }

    /// Wakes this process's worker and scheduler after a commit (other replicas hear the
    /// commit's `NOTIFY`).
    pub(crate) fn woke(&self, committed: Committed) {
        if committed.enqueued != 0 {
            self.wakers.outbox.lanes_added(committed.enqueued);
        }
        if let Some(due_ms) = committed.earliest_timer_ms {
            self.wakers.scheduler.timer_due(due_ms);
        }
    }

    /// Declares a new incident and returns once all of it is written: state, timeline,
    /// outbox rows, timers (what a caller needs before it changes the incident further).
    pub async fn declare(
        &self,
        meta: &RequestMeta,
        severity: Severity,
        title: &str,
    ) -> Result<Outcome, EngineError> {
        self.queue_declaration(meta, severity, title, false, intake::Wait::Written)
            .await
    }

    /// Declares a new incident (a security incident when `security`, or when the title
    /// matches a configured security keyword) and returns as soon as the declaration is
    /// durable: its number allocated and what was asked committed (one short INSERT,
    /// grouped with whatever else is waiting). The rest is written right after by the
    /// intake, and completed from the stored declaration if the process dies first (see
    /// [`intake`]). For the slash command, whose answer Slack wants within 3 s.
    pub async fn declare_acked(
        &self,
        meta: &RequestMeta,
        severity: Severity,
        title: &str,
        security: bool,
    ) -> Result<Outcome, EngineError> {
        self.queue_declaration(meta, severity, title, security, intake::Wait::Acked)
            .await
    }

    async fn queue_declaration(
        &self,
        meta: &RequestMeta,
        severity: Severity,
        title: &str,
        security: bool,
        wait: intake::Wait,
    ) -> Result<Outcome, EngineError> {
        // Refuse a bad title before allocating a number, so it does not burn one.
        incident::declared_title(title)?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = intake::DeclareJob {
            meta: meta.clone(),
            severity,
            title: title.to_string(),
            security,
            wait,
            answer,
        };
        if self.intake.send(self, job).is_err() {
            return Err(EngineError::Unavailable);
        }
        answered.await.map_err(|_| EngineError::Unavailable)?
    }

    /// Writes out the declarations acknowledged before `before` that are still not
    /// written (their process died between the ack and the write); returns how many this
    /// call wrote. Safe beside other processes doing the same: each is written once.
    pub async fn complete_declarations(&self, before: DateTime<Utc>) -> Result<usize, EngineError> {
        intake::complete_pending(self, before).await
    }

    /// When the oldest declaration this process acknowledged and has not yet been
    /// through its write-out was acknowledged (`None`: none in hand). The periodic
    /// completion pass leaves those to this process's own write-out.
    pub fn oldest_declaration_in_hand(&self) -> Option<DateTime<Utc>> {
        self.intake.stats().oldest_in_hand()
    }

    /// Applies `change` to incident `id`.
    pub async fn change(
        &self,
        meta: &RequestMeta,
        id: IncidentId,
        change: Change,
    ) -> Result<Outcome, EngineError> {
        let now = self.clock.now();
        let (mut tx, incident) = self.begin_on(meta, id, now).await?;
        let channel_opened = matches!(change, Change::ChannelOpened(_));
        let mut decision = incident::apply(&incident, change, &meta.actor, now, self.policy())?;
        if channel_opened {
            // The announcements that were waiting for the channel can link to it now.
            tx.hurry_lane(&announce_key(id), now).await?;
        }
        self.close_runs_on_resolve(&mut tx, &incident, &mut decision, now)
            .await?;
        self.draft_on_resolve(&mut tx, &incident, &mut decision, meta, now)
            .await?;
        self.resolve_pagerduty_on_resolve(&mut tx, &incident, &decision, now)
            .await?;
        self.commit(tx, meta, &decision, now).await?;
        Ok(Outcome {
            incident: decision.incident,
            reply: decision.reply,
        })
    }

    /// Queues an outbound call that is not an incident change (a modal, a reply), with the
    /// request's dedupe applied.
    pub async fn send(
        &self,
        meta: &RequestMeta,
        ordering_key: &str,
        outbound: Outbound,
    ) -> Result<(), EngineError> {
        let now = self.clock.now();
        let mut tx = self.begin(meta, now).await?;
        tx.enqueue(ordering_key, None, &outbound.to_json(), now)
            .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(())
    }

    /// Fires a claimed timer: marks it fired and applies what it does in ONE transaction,
    /// so a timer's page or reminder is committed exactly once however many schedulers
    /// race for it.
    pub async fn fire_timer(&self, timer: &TimerRow) -> Result<TimerOutcome, EngineError> {
        let now = self.clock.now();
        let meta = RequestMeta {
            actor: Actor::Klaxon,
            request_id: format!("timer-{}", timer.id),
            dedupe: None,
        };
        // Lock the incident first, as every other change does: on PostgreSQL a timer
        // firing while someone posts an update to the same incident then waits its turn
        // instead of deadlocking (incident, then timers, everywhere).
        let mut tx = self.store.begin().await?;
        let incident = tx
            .lock_incident(timer.incident_id)
            .await?
            .ok_or(EngineError::NotFound(timer.incident_id))?;
        if !tx.mark_timer_fired(timer.id, now).await? {
            return Ok(TimerOutcome::AlreadyHandled);
        }
        let change = Change::TimerFired {
            kind: timer.kind.clone(),
            due_at: timer.due_at,
        };
        match incident::apply(&incident, change, &meta.actor, now, self.policy()) {
            Ok(decision) => {
                self.commit(tx, &meta, &decision, now).await?;
                Ok(TimerOutcome::Fired)
            }
            Err(_) => {
                tx.cancel_timer(timer.id, now).await?;
                tx.commit().await?;
                Ok(TimerOutcome::Cancelled)
            }
        }
    }

    /// Records an inbound event as seen without acting on it; `false` if it was a repeat.
    pub async fn mark_seen(&self, source: &str, event_id: &str) -> Result<bool, EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let new = tx.record_inbound(source, event_id, now).await?;
        tx.commit().await?;
        Ok(new)
    }
}

/// The outbox rows a decision's effects become: `(lane, incident, payload, due)`.
fn outbox_rows<'a>(
    decision: &'a Decision,
    now: DateTime<Utc>,
    stakeholders: &'a crate::domain::stakeholders::StakeholderPolicy,
) -> impl Iterator<Item = (String, IncidentId, String, DateTime<Utc>)> + 'a {
    let id = decision.incident.id;
    decision.effects.iter().map(move |effect| {
        // An announcement waits (a little) for the channel it links to.
        let waits = decision.incident.channel.is_none()
            && matches!(
                effect,
                Effect::Post {
                    destination: Destination::Announcements,
                    ..
                }
            );
        let payload = Outbound::Incident {
            incident_id: id,
            effect: effect.clone(),
        }
        .to_json();
        // An external group's update or all clear waits for its preview in the
        // incident channel (posted by the same decision) to be read.
        let previewed = matches!(
            effect,
            Effect::Stakeholder { notice, .. } if notice.external && notice.is_previewed()
        );
        let due = if waits {
            now + ANNOUNCEMENT_WAITS_FOR_CHANNEL
        } else if previewed {
            now + stakeholders.preview_delay
        } else {
            now
        };
        (effect_key(id, effect), id, payload, due)
    })
}
