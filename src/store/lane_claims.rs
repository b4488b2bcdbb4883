//! Claiming lanes and holding them: the claim that leases due lanes and returns their
//! heads, the heartbeat that renews the leases, and the releases at start-up (see
//! `outbox.rs` for the lane model).

use chrono::{DateTime, Utc};

use sqlx::any::AnyArguments;

use super::rows::{bind, fetch_rows};
use super::{Backend, OutboxRow, Placeholders, Result, Store, ms};
use crate::domain::outbound::LaneClass;

impl Store {
    /// Claims up to `limit` due lanes of `class` for `owner` until `lease_until` and
    /// returns their head rows. On PostgreSQL the lanes are picked with `for update skip
    /// locked`, so replicas split the work instead of queueing on each other.
    pub async fn claim_lanes(
        &self,
        class: LaneClass,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        if self.backend() == Backend::Postgres {
            return self
                .claim_lanes_in_one_statement(class, owner, now, lease_until, limit)
                .await;
        }
        let (mut tx, _turn) = self.begin_raw().await?;
        // The due lanes, then their lease and their heads: every read one row back
        // (`store::rows`), as SQLite's RETURNING cannot be folded into one.
        let mut args = AnyArguments::default();
        bind(&mut args, class.as_str());
        bind(&mut args, ms(now));
        bind(&mut args, limit);
        let keys: Vec<(String,)> = fetch_rows(
            self.backend(),
            &mut *tx,
            "select ordering_key from outbox_lanes where class = ? and due_at_ms is not null \
             and due_at_ms <= ? order by due_at_ms limit ?",
            "ordering_key",
            args,
        )
        .await?;
        if keys.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let mut p = Placeholders::new(self.backend());
        let sql = format!(
            "update outbox_lanes set lease_owner = {}, due_at_ms = {} where ordering_key in ({})",
            p.one(),
            p.one(),
            p.list(keys.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(ms(lease_until));
        for (key,) in &keys {
            query = query.bind(key);
        }
        query.execute(&mut *tx).await?;
        let sql = format!(
            "select id, ordering_key, incident_id, payload, attempts, created_at_ms, attempt_started_at_ms from outbox where id in \
             (select min(id) from outbox where state = 'pending' and ordering_key in ({}) group by ordering_key) \
             order by id",
            Placeholders::new(self.backend()).list(keys.len())
        );
        let mut args = AnyArguments::default();
        for (key,) in &keys {
            bind(&mut args, key.as_str());
        }
        let heads: Vec<OutboxRow> = fetch_rows(
            self.backend(),
            &mut *tx,
            &sql,
            "id, ordering_key, incident_id, payload, attempts, created_at_ms, attempt_started_at_ms",
            args,
        )
        .await?;
        // From here on a crash may leave a post behind: the next claim of these rows
        // looks for it before posting (src/outbox/once.rs). One statement per claim.
        let fresh: Vec<i64> = heads
            .iter()
            .filter(|h| h.attempt_started_at_ms.is_none())
            .map(|h| h.id)
            .collect();
        if !fresh.is_empty() {
            let mut p = Placeholders::new(self.backend());
            let sql = format!(
                "update outbox set attempt_started_at_ms = {} where id in ({})",
                p.one(),
                p.list(fresh.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ms(now));
            for id in &fresh {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
        // A lane with nothing pending (its rows were settled elsewhere) goes idle.
        for (key,) in &keys {
            if !heads.iter().any(|h| &h.ordering_key == key) {
                idle_lane(&mut *tx, key, owner, now).await?;
            }
        }
        tx.commit().await?;
        Ok(heads)
    }

    /// [`Store::claim_lanes`] on PostgreSQL: the lease, the heads' read and their
    /// `attempt_started_at_ms` stamp in ONE autocommitted statement (data-modifying CTEs
    /// share one snapshot, so the heads read the stamp as it was before this claim).
    /// Each lane's head is looked up on its own (one probe of `outbox_pending` per lane),
    /// as the settle's read of the next heads is (see `next_heads_due`, where the
    /// `min(id) ... group by` form walked every pending row when the statistics predated
    /// a backlog); here that plan was not seen, and a claim of about 100 lanes still
    /// costs about 10 ms under the declare benchmark (30 pages per lane: the lease, the
    /// head, the stamp).
    /// It replaces a transaction of three statements (five round trips with begin and
    /// commit). Measured: the first-wave figure did not move (the machine's two cores
    /// are busy; round trips were not the bound there), but a claim no longer holds a
    /// pooled connection across five waits.
    async fn claim_lanes_in_one_statement(
        &self,
        class: LaneClass,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        type Claimed = (
            String,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Claimed> = sqlx::query_as(
            "with claimed as ( \
               update outbox_lanes set lease_owner = $1, due_at_ms = $2 where ordering_key in \
                 (select ordering_key from outbox_lanes where class = $3 and due_at_ms is not null and due_at_ms <= $4 \
                  order by due_at_ms limit $5 for update skip locked) \
               returning ordering_key), \
             heads as ( \
               select h.* from claimed c cross join lateral \
                 (select id, ordering_key, incident_id, payload, attempts, created_at_ms, attempt_started_at_ms \
                  from outbox where state = 'pending' and ordering_key = c.ordering_key order by id limit 1) h), \
             stamped as ( \
               update outbox set attempt_started_at_ms = $4 \
               where id in (select id from heads where attempt_started_at_ms is null)) \
             select c.ordering_key, h.id, h.incident_id, h.payload, h.attempts, h.created_at_ms, h.attempt_started_at_ms \
             from claimed c left join heads h on h.ordering_key = c.ordering_key order by h.id",
        )
        .bind(owner)
        .bind(ms(lease_until))
        .bind(class.as_str())
        .bind(ms(now))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut heads = Vec::with_capacity(rows.len());
        for (
            ordering_key,
            id,
            incident_id,
            payload,
            attempts,
            created_at_ms,
            attempt_started_at_ms,
        ) in rows
        {
            match (id, payload, attempts, created_at_ms) {
                (Some(id), Some(payload), Some(attempts), Some(created_at_ms)) => {
                    heads.push(OutboxRow {
                        id,
                        ordering_key,
                        incident_id,
                        payload,
                        attempts,
                        created_at_ms,
                        attempt_started_at_ms,
                    })
                }
                // A lane with nothing pending (its rows were settled elsewhere) goes idle.
                _ => idle_lane(self.pool(), &ordering_key, owner, now).await?,
            }
        }
        Ok(heads)
    }

    /// Extends `owner`'s lease on `keys` to `lease_until` (the heartbeat of in-flight
    /// deliveries). Returns how many lanes it still held.
    pub async fn renew_lanes(
        &self,
        owner: &str,
        keys: &[String],
        lease_until: DateTime<Utc>,
    ) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut keys = keys.to_vec();
        keys.sort();
        let lock = match self.backend() {
            Backend::Postgres => "order by ordering_key for update",
            Backend::Sqlite => "",
        };
        let mut p = Placeholders::new(self.backend());
        let sql = format!(
            "update outbox_lanes set due_at_ms = {} where ordering_key in \
             (select ordering_key from outbox_lanes where lease_owner = {} and ordering_key in ({}) {lock})",
            p.one(),
            p.one(),
            p.list(keys.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(lease_until))
            .bind(owner);
        for key in &keys {
            query = query.bind(key);
        }
        Ok(query.execute(self.pool()).await?.rows_affected())
    }

    /// Lets go of every outbox lease, due now. For SQLite at start-up: one process owns
    /// the file, so any lease found is its previous life's, and waiting it out would only
    /// delay what was being delivered when it died.
    pub async fn release_outbox_leases(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query(
            "update outbox_lanes set lease_owner = null, due_at_ms = $1 where lease_owner is not null",
        )
        .bind(ms(now))
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Releases the lanes leased by owners whose token starts with `prefix` (an earlier
    /// life of this instance, see `OutboxWorker::for_instance`), due at `now`. Returns
    /// how many.
    pub async fn release_instance_leases(&self, prefix: &str, now: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query(
            "update outbox_lanes set lease_owner = null, due_at_ms = $1 \
             where lease_owner is not null and substr(lease_owner, 1, cast($2 as integer)) = $3",
        )
        .bind(ms(now))
        .bind(prefix.chars().count() as i64)
        .bind(prefix)
        .execute(self.pool())
        .await?
        .rows_affected())
    }
}

/// Lets a claimed lane with nothing pending go idle (its rows were settled elsewhere).
async fn idle_lane<'e, E>(executor: E, key: &str, owner: &str, now: DateTime<Utc>) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "update outbox_lanes set due_at_ms = null, lease_owner = null, updated_at_ms = $1 \
         where ordering_key = $2 and lease_owner = $3",
    )
    .bind(ms(now))
    .bind(key)
    .bind(owner)
    .execute(executor)
    .await?;
    Ok(())
}
