//! Firing due timers in groups.
//!
//! At a cadence's turn every open incident's reminder comes due at once (10,000 SEV1s on
//! a 30-minute cadence are 10,000 timers within the minute they were declared in), and
//! one transaction per timer queued them on the store's commits: reminders reached Slack
//! seconds late. So the scheduler hands over what it claimed and the timers of distinct
//! incidents fire in ONE transaction, their events, outbox rows and timer changes
//! written with one statement per kind of row (as declarations are, see `intake`).
//! Incidents are locked in ascending id order (one statement for the group, as is the
//! marking of its timers and the reads of its chain heads and pending timers), so two
//! schedulers' groups never deadlock,
//! and a second timer of an incident already in the group fires on its own afterwards
//! (it sees the first one's state). If the group fails, its timers fire one by one.

use std::collections::BTreeSet;

use super::{Engine, EngineError, RequestMeta, TimerOutcome};
use crate::domain::incident::{self, Actor, Change, Decision};
use crate::store::TimerRow;

impl Engine {
    /// Fires claimed timers; returns each one's outcome, in the order given.
    pub async fn fire_timers(&self, timers: &[TimerRow]) -> Vec<Result<TimerOutcome, EngineError>> {
        let mut order: Vec<usize> = (0..timers.len()).collect();
        order.sort_by_key(|&i| (timers[i].incident_id, timers[i].due_at, timers[i].id));
        let mut incidents = BTreeSet::new();
        let (mut grouped, mut alone) = (Vec::new(), Vec::new());
        for i in order {
            if incidents.insert(timers[i].incident_id) {
                grouped.push(i);
            } else {
                alone.push(i);
            }
        }
        let mut outcomes: Vec<Option<Result<TimerOutcome, EngineError>>> =
            timers.iter().map(|_| None).collect();
        if grouped.len() > 1 {
            match self.fire_group(timers, &grouped).await {
                Ok(fired) => {
                    for (&i, outcome) in grouped.iter().zip(fired) {
                        outcomes[i] = Some(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = grouped.len(), "firing a group of timers failed; firing them one by one");
                    alone.extend(grouped);
                }
            }
        } else {
            alone.extend(grouped);
        }
        alone.sort_by_key(|&i| (timers[i].incident_id, timers[i].due_at, timers[i].id));
        for i in alone {
            outcomes[i] = Some(self.fire_timer(&timers[i]).await);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every timer fired or tried"))
            .collect()
    }

    /// Fires `timers[i]` for each `i` in `group` (distinct incidents, ascending) in one
    /// transaction. `Err` rolls it all back.
    async fn fire_group(
        &self,
        timers: &[TimerRow],
        group: &[usize],
    ) -> Result<Vec<TimerOutcome>, EngineError> {
        let now = self.clock.now();
        let metas: Vec<RequestMeta> = group
            .iter()
            .map(|&i| RequestMeta {
                actor: Actor::Klaxon,
                request_id: format!("timer-{}", timers[i].id),
                dedupe: None,
            })
            .collect();
        let started = std::time::Instant::now();
        let mut tx = self.store.begin().await?;
        let gate = started.elapsed();
        // The incidents first, as every change locks them (ascending: see `fire_timer`),
        // then the timers: one statement each for the whole group.
        let ids: Vec<_> = group.iter().map(|&i| timers[i].incident_id).collect();
        let mut incidents = tx.lock_incidents(&ids).await?;
        let timer_ids: Vec<i64> = group.iter().map(|&i| timers[i].id).collect();
        let marked: BTreeSet<i64> = tx
            .mark_timers_fired(&timer_ids, now)
            .await?
            .into_iter()
            .collect();
        let read = started.elapsed();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut decisions: Vec<(usize, Decision)> = Vec::new();
        for (k, &i) in group.iter().enumerate() {
            let timer = &timers[i];
            let incident = incidents
                .remove(&timer.incident_id)
                .ok_or(EngineError::NotFound(timer.incident_id))?;
            if !marked.contains(&timer.id) {
                outcomes.push(TimerOutcome::AlreadyHandled);
                continue;
            }
            let change = Change::TimerFired {
                kind: timer.kind.clone(),
                due_at: timer.due_at,
            };
            match incident::apply(&incident, change, &Actor::Klaxon, now, self.policy()) {
                Ok(decision) => {
                    decisions.push((k, decision));
                    outcomes.push(TimerOutcome::Fired);
                }
                Err(_) => {
                    tx.cancel_timer(timer.id, now).await?;
                    outcomes.push(TimerOutcome::Cancelled);
                }
            }
        }
        let decided = started.elapsed();
        if decisions.is_empty() {
            let committed = tx.commit().await?;
            self.woke(committed);
        } else {
            let pairs: Vec<(&RequestMeta, &Decision)> =
                decisions.iter().map(|(k, d)| (&metas[*k], d)).collect();
            self.commit_many(tx, &pairs, now).await?;
        }
        // Where a group's time goes, with the writer held from `gate` on.
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        tracing::trace!(
            timers = group.len(),
            gate_ms = ms(gate),
            read_ms = ms(read - gate),
            decide_ms = ms(decided - read),
            write_and_commit_ms = ms(started.elapsed() - decided),
            "fired a group"
        );
        Ok(outcomes)
    }
}
