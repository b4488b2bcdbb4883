//! Retention: what the store may forget once it is old. The timeline is the record and is
//! never pruned; these are the working rows around it.

use chrono::{DateTime, Utc};

use super::{Result, Store, ms};

/// Rows deleted per statement: short write transactions, so pruning a large backlog never
/// holds the single SQLite writer for long.
const BATCH: i64 = 1_000;

/// What one prune removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Delivered outbox rows (failed ones are kept for people to see).
    pub outbox: u64,
    /// Fired or cancelled timers of resolved incidents.
    pub timers: u64,
    /// Inbound event ids (Slack retries come within minutes).
    pub inbound: u64,
    /// Idle outbox lanes.
    pub lanes: u64,
}

impl Store {
    /// Deletes working rows finished before `before`, in batches.
    ///
    /// Timers are only pruned for resolved incidents: a fired once-only timer of an open
    /// incident is what keeps it from firing a second time.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<Pruned> {
        let cutoff = ms(before);
        Ok(Pruned {
            outbox: self
                .delete_batches(
                    "delete from outbox where id in (select id from outbox \
                     where state = 'done' and finished_at_ms < $1 limit $2)",
                    cutoff,
                )
                .await?,
            timers: self
                .delete_batches(
                    "delete from timers where id in (select t.id from timers t join incidents i on i.id = t.incident_id \
                     where t.state <> 'pending' and t.finished_at_ms < $1 and i.status = 'resolved' limit $2)",
                    cutoff,
                )
                .await?,
            inbound: self
                .delete_batches(
                    "delete from inbound_events where (source, event_id) in (select source, event_id from inbound_events \
                     where received_at_ms < $1 limit $2)",
                    cutoff,
                )
                .await?,
            lanes: self
                .delete_batches(
                    "delete from outbox_lanes where ordering_key in (select ordering_key from outbox_lanes \
                     where due_at_ms is null and updated_at_ms < $1 limit $2) and due_at_ms is null",
                    cutoff,
                )
                .await?,
        })
    }

    async fn delete_batches(&self, sql: &'static str, cutoff: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = sqlx::query(sql)
                .bind(cutoff)
                .bind(BATCH)
                .execute(self.pool())
                .await?
                .rows_affected();
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
