//! The `timers` table: reconcile an incident's pending timers with its plan, claim due
//! timers with a lease, and mark them fired or cancelled.

use chrono::{DateTime, Utc};

use super::{Backend, Result, Store, StoreTx, from_ms, ms};
use crate::domain::incident::IncidentId;
use crate::domain::timers::{TimerKind, TimerSpec};

/// A claimed timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerRow {
    /// Row id.
    pub id: i64,
    /// The incident.
    pub incident_id: IncidentId,
    /// What for.
    pub kind: TimerKind,
    /// When it was due.
    pub due_at: DateTime<Utc>,
}

type RawTimer = (i64, i64, String, i64);

fn decode_timer((id, incident_id, kind, due): RawTimer) -> Option<TimerRow> {
    Some(TimerRow {
        id,
        incident_id: IncidentId(incident_id),
        kind: TimerKind::from_key(&kind)?,
        due_at: from_ms(due),
    })
}

impl StoreTx {
    /// Makes the incident's pending timers exactly `plan`: cancels pending rows the plan no
    /// longer has (same kind at another time counts as different) and inserts the missing.
    pub async fn sync_timers(
        &mut self,
        incident_id: IncidentId,
        plan: &[TimerSpec],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let pending: Vec<(i64, String, i64)> = sqlx::query_as(
            "select id, kind, due_at_ms from timers where incident_id = $1 and state = 'pending'",
        )
        .bind(incident_id.0)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut changed = false;
        for (id, kind, due) in &pending {
            let wanted = plan
                .iter()
                .any(|t| t.kind.key() == *kind && ms(t.due_at) == *due);
            if !wanted {
                sqlx::query("update timers set state = 'cancelled', lease_until_ms = null where id = $1 and state = 'pending'")
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await?;
                changed = true;
            }
        }
        for spec in plan {
            let key = spec.kind.key();
            let exists = pending
                .iter()
                .any(|(_, kind, due)| *kind == key && *due == ms(spec.due_at));
            if !exists {
                sqlx::query("insert into timers (incident_id, kind, due_at_ms, created_at_ms) values ($1, $2, $3, $4)")
                    .bind(incident_id.0)
                    .bind(key)
                    .bind(ms(spec.due_at))
                    .bind(ms(now))
                    .execute(&mut *self.tx)
                    .await?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Marks a timer fired if it is still pending; `false` means another scheduler (or an
    /// earlier run) already fired or cancelled it, and the caller must do nothing.
    pub async fn mark_timer_fired(&mut self, id: i64, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "update timers set state = 'fired', fired_at_ms = $1, lease_until_ms = null where id = $2 and state = 'pending'",
        )
        .bind(ms(now))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a timer whose purpose is gone as cancelled.
    pub async fn cancel_timer(&mut self, id: i64) -> Result<()> {
        sqlx::query("update timers set state = 'cancelled', lease_until_ms = null where id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Claims up to `limit` due timers until `lease_until`. On PostgreSQL the candidates are
    /// locked with `for update skip locked`, so replicas split the work instead of queueing
    /// on each other; the lease keeps a crashed replica's timers from being lost.
    pub async fn claim_timers(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TimerRow>> {
        let mut tx = self.begin_raw().await?;
        let select = match self.backend() {
            Backend::Postgres => {
                "select id, incident_id, kind, due_at_ms from timers \
                 where state = 'pending' and due_at_ms <= $1 and (lease_until_ms is null or lease_until_ms <= $1) \
                 order by due_at_ms, id limit $2 for update skip locked"
            }
            Backend::Sqlite => {
                "select id, incident_id, kind, due_at_ms from timers \
                 where state = 'pending' and due_at_ms <= $1 and (lease_until_ms is null or lease_until_ms <= $1) \
                 order by due_at_ms, id limit $2"
            }
        };
        let rows: Vec<RawTimer> = sqlx::query_as(select)
            .bind(ms(now))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for raw in rows {
            let id = raw.0;
            let done = sqlx::query(
                "update timers set lease_until_ms = $1 where id = $2 and state = 'pending' \
                 and (lease_until_ms is null or lease_until_ms <= $3)",
            )
            .bind(ms(lease_until))
            .bind(id)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                match decode_timer(raw) {
                    Some(timer) => claimed.push(timer),
                    None => {
                        tracing::error!(timer_id = id, "unknown timer kind; cancelling it");
                        sqlx::query("update timers set state = 'cancelled' where id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// When the next pending timer is due (or its lease runs out).
    pub async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>> {
        let (next,): (Option<i64>,) = sqlx::query_as(
            "select min(case when lease_until_ms is not null and lease_until_ms > due_at_ms \
                        then lease_until_ms else due_at_ms end) \
             from timers where state = 'pending'",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(next.map(from_ms))
    }

    /// An incident's timers as `(kind, due_at, state)`, soonest first (for tests and
    /// `klaxon` tooling).
    pub async fn timers_of(
        &self,
        incident_id: IncidentId,
    ) -> Result<Vec<(String, DateTime<Utc>, String)>> {
        let rows: Vec<(String, i64, String)> =
            sqlx::query_as("select kind, due_at_ms, state from timers where incident_id = $1 order by due_at_ms, id")
                .bind(incident_id.0)
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(k, d, s)| (k, from_ms(d), s))
            .collect())
    }
}
