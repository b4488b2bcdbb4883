//! The outbox queue: claim due rows with a lease, then mark them done, retry later or
//! failed. Rows sharing an `ordering_key` are handed out one at a time, oldest first, so
//! a channel's messages arrive in the order they were decided.

use chrono::{DateTime, Utc};

use super::{Result, Store, from_ms, ms};

/// One claimed outbox row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Rows with the same key are delivered in id order.
    pub ordering_key: String,
    /// JSON payload (see `crate::outbox::Outbound`).
    pub payload: String,
    /// Attempts so far, including this one.
    pub attempts: i64,
}

/// How many rows are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting for delivery.
    pub pending: i64,
    /// Delivered.
    pub done: i64,
    /// Given up on (permanent error or too many attempts).
    pub failed: i64,
}

impl Store {
    /// Claims up to `limit` due rows until `lease_until`. Only the oldest pending row of
    /// each ordering key is eligible. A claim is a conditional UPDATE, so two workers
    /// (replicas on PostgreSQL) never get the same row while its lease holds; a worker
    /// that dies leaves the row to be claimed again when the lease runs out.
    pub async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let candidates: Vec<(i64,)> = sqlx::query_as(
            "select o.id from outbox o \
             where o.state = 'pending' and o.next_attempt_at_ms <= $1 \
               and (o.lease_until_ms is null or o.lease_until_ms <= $1) \
               and not exists (select 1 from outbox p \
                               where p.ordering_key = o.ordering_key and p.state = 'pending' and p.id < o.id) \
             order by o.id limit $2",
        )
        .bind(ms(now))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut claimed = Vec::with_capacity(candidates.len());
        for (id,) in candidates {
            let row: Option<OutboxRow> = sqlx::query_as(
                "update outbox set lease_until_ms = $1, attempts = attempts + 1 \
                 where id = $2 and state = 'pending' and (lease_until_ms is null or lease_until_ms <= $3) \
                 returning id, ordering_key, payload, attempts",
            )
            .bind(ms(lease_until))
            .bind(id)
            .bind(ms(now))
            .fetch_optional(self.pool())
            .await?;
            claimed.extend(row);
        }
        Ok(claimed)
    }

    /// Marks a delivered row done.
    pub async fn complete_outbox(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "update outbox set state = 'done', lease_until_ms = null, finished_at_ms = $1, last_error = null \
             where id = $2",
        )
        .bind(ms(now))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Releases a row to be tried again at `next_attempt_at`, keeping the error.
    pub async fn retry_outbox(
        &self,
        id: i64,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        sqlx::query("update outbox set lease_until_ms = null, next_attempt_at_ms = $1, last_error = $2 where id = $3")
            .bind(ms(next_attempt_at))
            .bind(error)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Gives up on a row. It stays in the table with its error, for people to see.
    pub async fn fail_outbox(&self, id: i64, error: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "update outbox set state = 'failed', lease_until_ms = null, last_error = $1, finished_at_ms = $2 \
             where id = $3",
        )
        .bind(error)
        .bind(ms(now))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// When the next pending row becomes due (or its lease runs out), if any.
    pub async fn next_outbox_due(&self) -> Result<Option<DateTime<Utc>>> {
        let (next,): (Option<i64>,) = sqlx::query_as(
            "select min(case when lease_until_ms is not null and lease_until_ms > next_attempt_at_ms \
                        then lease_until_ms else next_attempt_at_ms end) \
             from outbox where state = 'pending'",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(next.map(from_ms))
    }

    /// Counts rows by state.
    pub async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("select state, count(*) from outbox group by state")
                .fetch_all(self.pool())
                .await?;
        let mut counts = OutboxCounts::default();
        for (state, n) in rows {
            match state.as_str() {
                "pending" => counts.pending = n,
                "done" => counts.done = n,
                _ => counts.failed += n,
            }
        }
        Ok(counts)
    }

    /// Failed rows with their last error, newest first.
    pub async fn failed_outbox(&self) -> Result<Vec<(i64, String, String)>> {
        Ok(sqlx::query_as(
            "select id, payload, coalesce(last_error, '') from outbox where state = 'failed' order by id desc",
        )
        .fetch_all(self.pool())
        .await?)
    }
}
