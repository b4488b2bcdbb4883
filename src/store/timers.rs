//! The `timers` table: reconcile an incident's pending timers with its plan, take due
//! timers (claimed with a lease on PostgreSQL, read on SQLite), and mark them fired or
//! cancelled.

use chrono::{DateTime, Utc};

use super::{Backend, Placeholders, Result, Store, StoreTx, from_ms, ms};
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

/// The query for the pending timers of `n` incidents (`incident_id, id, kind, due_at_ms`).
///
/// On PostgreSQL, `state = 'pending' and incident_id in (...)` let the planner scan every
/// pending timer through an index on `state` whenever its statistics were taken while the
/// table was small (a storm of declarations grows it from nothing in seconds, well before
/// autovacuum analyzes it again): 110 ms per group of 100 fired timers with 90,000
/// pending, which made reminders seconds late. One index lookup per incident (a lateral
/// subquery the planner cannot flatten, `offset 0`) does not depend on the statistics.
fn pending_timers_of(backend: Backend, n: usize) -> String {
    let mut p = Placeholders::new(backend);
    match backend {
        Backend::Postgres => {
            let ids: Vec<String> = (0..n).map(|_| format!("({}::bigint)", p.one())).collect();
            format!(
                "select t.incident_id, t.id, t.kind, t.due_at_ms from (values {}) as wanted (incident_id) \
                 cross join lateral (select incident_id, id, kind, due_at_ms from timers \
                 where timers.incident_id = wanted.incident_id and state = 'pending' offset 0) t",
                ids.join(", ")
            )
        }
        Backend::Sqlite => format!(
            "select incident_id, id, kind, due_at_ms from timers \
             where state = 'pending' and incident_id in ({})",
            p.list(n)
        ),
    }
}

/// `(incident_id, id, kind, due_at_ms)` of every pending timer of `ids` (at most
/// [`super::tx::MAX_ROWS_PER_INSERT`]), through [`pending_timers_of`]. On SQLite in one
/// row (`store::rows`): eight pending timers for each of 100 incidents were 16 hand-overs
/// of 50 rows, 2.5 to 20 ms per group of fired timers with the writer held.
async fn pending_timers_in(
    backend: Backend,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ids: &[IncidentId],
) -> Result<Vec<(i64, i64, String, i64)>> {
    let sql = pending_timers_of(backend, ids.len());
    let mut args = sqlx::any::AnyArguments::default();
    for id in ids {
        super::rows::bind(&mut args, id.0);
    }
    super::rows::fetch_rows(
        backend,
        &mut **tx,
        &sql,
        "incident_id, id, kind, due_at_ms",
        args,
    )
    .await
}

impl StoreTx {
    /// Makes the incident's pending timers exactly `plan`: cancels pending rows the plan no
    /// longer has (same kind at another time counts as different) and inserts the missing
    /// ones in one statement. Returns whether anything changed (the scheduler is then
    /// woken at commit).
    pub async fn sync_timers(
        &mut self,
        incident_id: IncidentId,
        plan: &[TimerSpec],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.sync_timers_many(&[(incident_id, plan)], now).await
    }

    /// [`StoreTx::sync_timers`] for several incidents, the missing timers of all of them
    /// inserted together (a batch of declarations writes its timers in one statement).
    pub async fn sync_timers_many(
        &mut self,
        plans: &[(IncidentId, &[TimerSpec])],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut unwanted: Vec<i64> = Vec::new();
        let mut missing: Vec<(IncidentId, &TimerSpec)> = Vec::new();
        // The pending timers of the incidents that may have some, in one query.
        let existing: Vec<IncidentId> = plans
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !self.fresh.take_timers(*id))
            .collect();
        let mut pending_of: std::collections::HashMap<i64, Vec<(i64, String, i64)>> =
            std::collections::HashMap::new();
        for chunk in existing.chunks(super::tx::MAX_ROWS_PER_INSERT) {
            let rows = pending_timers_in(self.backend, &mut self.tx, chunk).await?;
            for (incident, id, kind, due) in rows {
                pending_of
                    .entry(incident)
                    .or_default()
                    .push((id, kind, due));
            }
        }
        for (incident_id, plan) in plans {
            let pending = pending_of.remove(&incident_id.0).unwrap_or_default();
            unwanted.extend(
                pending
                    .iter()
                    .filter(|(_, kind, due)| {
                        !plan
                            .iter()
                            .any(|t| t.kind.key() == *kind && ms(t.due_at) == *due)
                    })
                    .map(|(id, _, _)| *id),
            );
            missing.extend(
                plan.iter()
                    .filter(|spec| {
                        let key = spec.kind.key();
                        !pending
                            .iter()
                            .any(|(_, kind, due)| *kind == key && *due == ms(spec.due_at))
                    })
                    .map(|spec| (*incident_id, spec)),
            );
        }
        for chunk in unwanted.chunks(super::tx::MAX_ROWS_PER_INSERT) {
            let mut p = super::Placeholders::new(self.backend);
            let sql = format!(
                "update timers set state = 'cancelled', lease_until_ms = null, finished_at_ms = {} \
                 where {} and id in ({})",
                p.one(),
                super::still_pending(self.backend),
                p.list(chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ms(now));
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *self.tx).await?;
        }
        for chunk in missing.chunks(super::tx::MAX_ROWS_PER_INSERT) {
            let sql = format!(
                "insert into timers (incident_id, kind, due_at_ms, created_at_ms) values {}",
                super::values_list(self.backend, chunk.len(), 4)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (incident_id, spec) in chunk {
                query = query
                    .bind(incident_id.0)
                    .bind(spec.kind.key())
                    .bind(ms(spec.due_at))
                    .bind(ms(now));
            }
            query.execute(&mut *self.tx).await?;
        }
        if let Some(earliest) = missing.iter().map(|(_, spec)| ms(spec.due_at)).min() {
            self.earliest_timer_ms =
                Some(self.earliest_timer_ms.map_or(earliest, |e| e.min(earliest)));
        }
        let changed = !unwanted.is_empty() || !missing.is_empty();
        self.timers_moved |= changed;
        Ok(changed)
    }

    /// Marks a timer fired if it is still pending; `false` means another scheduler (or an
    /// earlier run) already fired or cancelled it, and the caller must do nothing.
    pub async fn mark_timer_fired(&mut self, id: i64, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "update timers set state = 'fired', fired_at_ms = $1, finished_at_ms = $1, lease_until_ms = null \
             where id = $2 and state = 'pending'",
        )
        .bind(ms(now))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// [`StoreTx::mark_timer_fired`] for several timers in one statement; returns the ids
    /// it marked (the others were fired or cancelled by someone else already).
    pub async fn mark_timers_fired(&mut self, ids: &[i64], now: DateTime<Utc>) -> Result<Vec<i64>> {
        let mut marked = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::tx::MAX_ROWS_PER_INSERT) {
            let mut p = super::Placeholders::new(self.backend);
            let sql = format!(
                "update timers set state = 'fired', fired_at_ms = {}, finished_at_ms = {}, lease_until_ms = null \
                 where {} and id in ({}) returning id",
                p.one(),
                p.one(),
                super::still_pending(self.backend),
                p.list(chunk.len())
            );
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(ms(now))
                .bind(ms(now));
            for id in chunk {
                query = query.bind(*id);
            }
            let rows: Vec<(i64,)> = query.fetch_all(&mut *self.tx).await?;
            marked.extend(rows.into_iter().map(|(id,)| id));
        }
        Ok(marked)
    }

    /// Marks a timer whose purpose is gone as cancelled.
    pub async fn cancel_timer(&mut self, id: i64, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("update timers set state = 'cancelled', lease_until_ms = null, finished_at_ms = $1 where id = $2")
            .bind(ms(now))
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Claims up to `limit` due timers until `lease_until`, soonest first, in one
    /// statement. On PostgreSQL the candidates are locked with `for update skip locked`,
    /// so replicas split the work instead of queueing on each other; the lease keeps a
    /// crashed replica's timers from being lost.
    pub async fn claim_timers(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TimerRow>> {
        let lock = match self.backend() {
            Backend::Postgres => "for update skip locked",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "update timers set lease_until_ms = $1 where id in (\
             select id from timers where state = 'pending' and due_at_ms <= $2 \
             and (lease_until_ms is null or lease_until_ms <= $2) \
             order by due_at_ms, id limit $3 {lock}) \
             returning id, incident_id, kind, due_at_ms"
        );
        // One statement, committed on its own: one round trip (on SQLite, in this
        // handle's turn at the writer).
        let turn = self.writer_turn().await;
        let rows: Vec<RawTimer> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(ms(lease_until))
            .bind(ms(now))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        drop(turn);
        self.known_timers(rows, now).await
    }

    /// Up to `limit` due timers nobody holds, soonest first, read without claiming them
    /// (and without a turn at the writer). For SQLite, where one process owns the file
    /// and its one scheduler fires them: the firing transaction marks each timer fired
    /// only if it is still pending, which is all the exclusion one scheduler needs, and
    /// a crash rolls that transaction back whole. A lease there would cost a second
    /// write transaction per batch (40 % of the scheduler's time when 10,000 reminders
    /// came due together) and protect against nobody.
    pub async fn due_timers(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<TimerRow>> {
        let mut args = sqlx::any::AnyArguments::default();
        super::rows::bind(&mut args, ms(now));
        super::rows::bind(&mut args, limit);
        // Up to `limit` rows: one JSON row on SQLite (`store::rows`).
        let rows: Vec<RawTimer> = super::rows::fetch_rows(
            self.backend(),
            self.read_pool(),
            "select id, incident_id, kind, due_at_ms from timers \
             where state = 'pending' and due_at_ms <= $1 and (lease_until_ms is null or lease_until_ms <= $1) \
             order by due_at_ms, id limit $2",
            "id, incident_id, kind, due_at_ms",
            args,
        )
        .await?;
        self.known_timers(rows, now).await
    }

    /// Decodes timer rows; one of a kind this build does not know is cancelled (it would
    /// otherwise come due forever) and left out.
    async fn known_timers(&self, rows: Vec<RawTimer>, now: DateTime<Utc>) -> Result<Vec<TimerRow>> {
        let mut known = Vec::with_capacity(rows.len());
        for raw in rows {
            let id = raw.0;
            match decode_timer(raw) {
                Some(timer) => known.push(timer),
                None => {
                    tracing::error!(timer_id = id, "unknown timer kind; cancelling it");
                    let _turn = self.writer_turn().await;
                    sqlx::query("update timers set state = 'cancelled', lease_until_ms = null, finished_at_ms = $1 where id = $2")
                        .bind(ms(now))
                        .bind(id)
                        .execute(self.pool())
                        .await?;
                }
            }
        }
        Ok(known)
    }

    /// Holds `ids` until `until`: timers that failed to fire are tried again then, not in
    /// a loop (on SQLite, where [`Store::due_timers`] takes no lease).
    pub async fn hold_timers(&self, ids: &[i64], until: DateTime<Utc>) -> Result<()> {
        for chunk in ids.chunks(super::tx::MAX_ROWS_PER_INSERT) {
            let mut p = Placeholders::new(self.backend());
            let sql = format!(
                "update timers set lease_until_ms = {} where {} and id in ({})",
                p.one(),
                super::still_pending(self.backend()),
                p.list(chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ms(until));
            for id in chunk {
                query = query.bind(*id);
            }
            let _turn = self.writer_turn().await;
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Lets go of every timer lease, so a restarted process fires its overdue timers at
    /// once instead of waiting out the lease its previous life took. Only for SQLite,
    /// where one process owns the file (DESIGN.md); on PostgreSQL other replicas may hold
    /// live leases, and short leases bound the wait instead.
    pub async fn release_timer_leases(&self) -> Result<u64> {
        Ok(sqlx::query("update timers set lease_until_ms = null where state = 'pending' and lease_until_ms is not null")
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// When the next pending timer is due (or, for one claimed by a scheduler that may
    /// have died, when its lease runs out). Two index lookups, whatever the number of
    /// pending timers: the earliest unclaimed due time and the earliest lease expiry.
    pub async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>> {
        let free: Option<(i64,)> = sqlx::query_as(
            "select due_at_ms from timers where state = 'pending' and lease_until_ms is null \
             order by due_at_ms limit 1",
        )
        .fetch_optional(self.read_pool())
        .await?;
        let (leased,): (Option<i64>,) = sqlx::query_as(
            "select min(lease_until_ms) from timers where lease_until_ms is not null and state = 'pending'",
        )
        .fetch_one(self.read_pool())
        .await?;
        Ok(free
            .map(|(t,)| t)
            .into_iter()
            .chain(leased)
            .min()
            .map(from_ms))
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
                .fetch_all(self.read_pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(k, d, s)| (k, from_ms(d), s))
            .collect())
    }
}
