//! The outbox queue, in lanes (`migrations/*/0004_delivery_lanes.sql`).
//!
//! Rows sharing an `ordering_key` form a lane and are delivered one at a time, oldest
//! first, so a channel's messages arrive in the order they were decided. The lane row
//! carries the schedule (`due_at_ms`) and the lease (`lease_owner`), so:
//! - a claim takes the due lanes (an index range), leases them to one worker instance
//!   and returns their heads: its cost does not grow with the rows queued behind;
//! - the lease is short and renewed by the holder's heartbeat while a call is in flight;
//!   a dead holder's lanes come due again when it stops renewing;
//! - settling checks the owner token, so a worker that lost its lease never moves a lane
//!   another worker now holds;
//! - "when is the next thing due" is the earliest lane `due_at_ms`, which is in the future
//!   while a head waits out its backoff: an idle worker sleeps, whatever waits behind.
//!
//! Every statement that locks lanes locks them in key order (claims skip locked ones), so
//! settling, heartbeats and enqueuing transactions never deadlock on PostgreSQL.

use chrono::{DateTime, Utc};

use std::collections::{BTreeMap, BTreeSet};

use sqlx::any::AnyArguments;

use super::rows::{bind, fetch_rows};
use super::{Backend, Placeholders, Result, Store, from_ms, ms};
use crate::domain::outbound::LaneClass;

/// The head of a claimed lane. (Deserialize: on SQLite the heads are read as one JSON
/// row, each head an array of these fields in order; see `store::rows`.)
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Its lane.
    pub ordering_key: String,
    /// The incident it concerns, if any (the worker reads the claimed rows' incidents
    /// in one query instead of one per delivery).
    pub incident_id: Option<i64>,
    /// JSON payload (see `crate::domain::outbound::Outbound`).
    pub payload: String,
    /// Failed attempts so far (rate limits and pacing are not counted).
    pub attempts: i64,
    /// When it was enqueued (epoch ms; for logs and tooling).
    pub created_at_ms: i64,
    /// When an earlier delivery of this row that may have reached Slack started (epoch
    /// ms), as it was before this claim; `None` when nothing can have gone out yet, so
    /// the row is posted without looking for an earlier post first.
    pub attempt_started_at_ms: Option<i64>,
}

/// Where a delivered row's message landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// Channel id.
    pub channel: String,
    /// Message ts.
    pub ts: String,
}

/// How one claimed lane head ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Delivered: the row is done and the lane moves to its next row.
    Delivered {
        /// Row id.
        row_id: i64,
        /// The message it posted, if it posted one.
        posted: Option<Posted>,
        /// The lane's next row is not tried before this (the channel it posted in takes
        /// its next post then): a row claimed sooner would only be handed back by pacing,
        /// one claim and one settle spent for nothing.
        not_before: Option<DateTime<Utc>>,
    },
    /// Try the same row again at `at`. `counted` says whether this was a failed attempt
    /// (a 429 or pacing is not).
    Retry {
        /// Row id.
        row_id: i64,
        /// Next attempt.
        at: DateTime<Utc>,
        /// The error, kept on the row.
        error: String,
        /// Whether it counts toward the attempt limit.
        counted: bool,
        /// Nothing reached Slack, in this attempt or before: the next attempt needs no
        /// look for an earlier post (`attempt_started_at_ms` goes back to null).
        nothing_sent: bool,
    },
    /// Given up: the row is kept as `failed` and the lane moves on.
    Failed {
        /// Row id.
        row_id: i64,
        /// Why.
        error: String,
    },
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

/// Most outcomes settled per group of statements (keeps each statement's parameters well
/// under both backends' limits).
const MAX_SETTLE_CHUNK: usize = 200;

/// `case {on} when ? then ? ... [else {otherwise}] end` with `n` pairs of placeholders
/// (bind each pair as key, value): one statement sets a column per row.
fn case_when(p: &mut Placeholders, on: &str, n: usize, otherwise: Option<&str>) -> String {
    let mut case = format!("case {on}");
    for _ in 0..n {
        case.push_str(&format!(" when {} then {}", p.one(), p.one()));
    }
    if let Some(otherwise) = otherwise {
        case.push_str(&format!(" else {otherwise}"));
    }
    case.push_str(" end");
    case
}

impl Store {
    /// Applies the outcomes of a batch of deliveries in ONE transaction (one commit for
    /// many rows keeps the single SQLite writer free for requests), with a few multi-row
    /// statements whatever the batch size: under load a settle covers dozens of lanes,
    /// and a statement per row per step was most of the writer's time. A lane whose lease
    /// `owner` no longer holds is not moved: the row's own outcome is still recorded.
    pub async fn settle_outbox(
        &self,
        owner: &str,
        outcomes: &[(String, Settlement)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut sorted: Vec<&(String, Settlement)> = outcomes.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut tx, _turn) = self.begin_raw().await?;
        for chunk in sorted.chunks(MAX_SETTLE_CHUNK) {
            self.settle_chunk(&mut tx, owner, chunk, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Releases the leases `owner` still holds among `keys` (locking the lanes first, in
    /// key order, on PostgreSQL) and returns those it held. On SQLite the held lanes are
    /// read first, as one JSON row (`store::rows`), then released: RETURNING's rows come
    /// back one by one; the writer's transaction makes the two one step.
    async fn release_held_lanes(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        owner: &str,
        keys: &[&str],
        now: DateTime<Utc>,
    ) -> Result<BTreeSet<String>> {
        let mut p = Placeholders::new(self.backend());
        let held: Vec<(String,)> = match self.backend() {
            Backend::Postgres => {
                let sql = format!(
                    "update outbox_lanes set lease_owner = null, updated_at_ms = {} where ordering_key in \
                     (select ordering_key from outbox_lanes where lease_owner = {} and ordering_key in ({}) \
                     order by ordering_key for update) \
                     returning ordering_key",
                    p.one(),
                    p.one(),
                    p.list(keys.len())
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(ms(now))
                    .bind(owner);
                for key in keys {
                    query = query.bind(*key);
                }
                query.fetch_all(&mut **tx).await?
            }
            Backend::Sqlite => {
                let sql = format!(
                    "select ordering_key from outbox_lanes where lease_owner = {} and ordering_key in ({})",
                    p.one(),
                    p.list(keys.len())
                );
                let mut args = AnyArguments::default();
                bind(&mut args, owner);
                for key in keys {
                    bind(&mut args, *key);
                }
                let held: Vec<(String,)> =
                    fetch_rows(self.backend(), &mut **tx, &sql, "ordering_key", args).await?;
                if !held.is_empty() {
                    let sql = format!(
                        "update outbox_lanes set lease_owner = null, updated_at_ms = ? where ordering_key in ({})",
                        Placeholders::new(self.backend()).list(held.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ms(now));
                    for (key,) in &held {
                        query = query.bind(key);
                    }
                    query.execute(&mut **tx).await?;
                }
                held
            }
        };
        Ok(held.into_iter().map(|(k,)| k).collect())
    }

    /// [`Store::settle_outbox`] for at most [`MAX_SETTLE_CHUNK`] outcomes, sorted by lane.
    async fn settle_chunk(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        owner: &str,
        outcomes: &[&(String, Settlement)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        // 1. Release the leases this owner still holds (locking the lanes first, in key
        //    order: an enqueue that commits meanwhile then either is seen below or finds
        //    the lane idle and schedules it itself).
        let keys: Vec<&str> = outcomes.iter().map(|(k, _)| k.as_str()).collect();
        let held = self.release_held_lanes(tx, owner, &keys, now).await?;
        for key in &keys {
            if !held.contains(*key) {
                tracing::warn!(lane = %key, "outbox lease lost before settling; the lane is left to its new holder");
            }
        }

        // 2. Each row's own outcome: the deliveries in one statement (`case id when ...`
        //    for where their posts landed), failures and retries (the exception) one each.
        let delivered: Vec<(i64, Option<&Posted>)> = outcomes
            .iter()
            .filter_map(|(_, o)| match o {
                Settlement::Delivered { row_id, posted, .. } => Some((*row_id, posted.as_ref())),
                _ => None,
            })
            .collect();
        if !delivered.is_empty() {
            let posts: Vec<(i64, &Posted)> = delivered
                .iter()
                .filter_map(|(id, posted)| posted.map(|p| (*id, p)))
                .collect();
            let mut p = Placeholders::new(self.backend());
            let now_at = p.one();
            let mut case = |column: &str| {
                if posts.is_empty() {
                    return "null".to_string();
                }
                case_when(&mut p, "id", posts.len(), Some(column))
            };
            let channels = case("slack_channel");
            let stamps = case("slack_ts");
            let sql = format!(
                "update outbox set state = 'done', lease_until_ms = null, finished_at_ms = {now_at}, last_error = null, \
                 slack_channel = {channels}, slack_ts = {stamps} where {} and id in ({})",
                super::still_pending(self.backend()),
                p.list(delivered.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ms(now));
            for (id, post) in &posts {
                query = query.bind(*id).bind(post.channel.as_str());
            }
            for (id, post) in &posts {
                query = query.bind(*id).bind(post.ts.as_str());
            }
            for (id, _) in &delivered {
                query = query.bind(*id);
            }
            query.execute(&mut **tx).await?;
        }
        let mut due: BTreeMap<&str, Option<i64>> = BTreeMap::new();
        let mut not_before: BTreeMap<&str, i64> = BTreeMap::new();
        let mut retries = Vec::new();
        for (key, outcome) in outcomes {
            match outcome {
                Settlement::Delivered { not_before: at, .. } => {
                    if let Some(at) = at {
                        not_before.insert(key.as_str(), ms(*at));
                    }
                }
                Settlement::Failed { row_id, error } => {
                    sqlx::query(
                        "update outbox set state = 'failed', lease_until_ms = null, last_error = $1, finished_at_ms = $2 \
                         where id = $3 and state = 'pending'",
                    )
                    .bind(error)
                    .bind(ms(now))
                    .bind(row_id)
                    .execute(&mut **tx)
                    .await?;
                }
                Settlement::Retry {
                    row_id,
                    at,
                    error,
                    counted,
                    nothing_sent,
                } => {
                    retries.push((*row_id, ms(*at), error.as_str(), *counted, *nothing_sent));
                    if held.contains(key.as_str()) {
                        due.insert(key.as_str(), Some(ms(*at)));
                    }
                }
            }
        }
        if !retries.is_empty() {
            // Retries are many at once when pacing hands lanes back (a channel's second
            // post waits its second): one statement, a `case` per column.
            let mut p = Placeholders::new(self.backend());
            let mut case = |column: &str| case_when(&mut p, "id", retries.len(), Some(column));
            let next_attempt = case("next_attempt_at_ms");
            let last_error = case("last_error");
            let counted = case("0");
            let unsent = case("0");
            let sql = format!(
                "update outbox set next_attempt_at_ms = {next_attempt}, last_error = {last_error}, \
                 attempts = attempts + {counted}, \
                 attempt_started_at_ms = case when {unsent} = 1 then null else attempt_started_at_ms end \
                 where {} and id in ({})",
                super::still_pending(self.backend()),
                p.list(retries.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, at, ..) in &retries {
                query = query.bind(*id).bind(*at);
            }
            for (id, _, error, ..) in &retries {
                query = query.bind(*id).bind(*error);
            }
            for (id, _, _, counted, _) in &retries {
                query = query.bind(*id).bind(i64::from(*counted));
            }
            for (id, .., nothing_sent) in &retries {
                query = query.bind(*id).bind(i64::from(*nothing_sent));
            }
            for (id, ..) in &retries {
                query = query.bind(*id);
            }
            query.execute(&mut **tx).await?;
        }

        // 3. Each held lane's next due time: a retry's time, else its next pending row's
        //    but not before the delivery's `not_before` (none: the lane goes idle).
        let moved_on: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| held.contains(*k) && !due.contains_key(k))
            .collect();
        if !moved_on.is_empty() {
            let next = next_heads_due(self.backend(), tx, &moved_on).await?;
            for key in moved_on {
                let held_back = not_before.get(key).copied();
                let at = next.get(key).map(|&at| held_back.map_or(at, |h| at.max(h)));
                due.insert(key, at);
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let mut p = Placeholders::new(self.backend());
        let case = case_when(&mut p, "ordering_key", due.len(), None);
        let sql = format!(
            "update outbox_lanes set due_at_ms = {case} where ordering_key in ({})",
            p.list(due.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (key, at) in &due {
            query = query.bind(*key).bind(*at);
        }
        for key in due.keys() {
            query = query.bind(*key);
        }
        query.execute(&mut **tx).await?;
        Ok(())
    }

    /// When the next lane of `class` comes due (a fresh row, a retry, or a lease that runs
    /// out), if any. One index lookup.
    pub async fn next_lane_due(&self, class: LaneClass) -> Result<Option<DateTime<Utc>>> {
        let (next,): (Option<i64>,) = sqlx::query_as(
            "select min(due_at_ms) from outbox_lanes where class = $1 and due_at_ms is not null",
        )
        .bind(class.as_str())
        .fetch_one(self.read_pool())
        .await?;
        Ok(next.map(from_ms))
    }

    /// When the next lane of any class comes due.
    pub async fn next_outbox_due(&self) -> Result<Option<DateTime<Utc>>> {
        let mut next = None;
        for class in LaneClass::ALL {
            next = next
                .into_iter()
                .chain(self.next_lane_due(class).await?)
                .min();
        }
        Ok(next)
    }

    /// This database's installation id (`klaxon_install`), written into post metadata.
    pub async fn install_id(&self) -> Result<String> {
        let (id,): (String,) = sqlx::query_as("select id from klaxon_install")
            .fetch_one(self.read_pool())
            .await?;
        Ok(id)
    }

    /// Where a delivered row's message landed, if it posted one.
    pub async fn outbox_posted(&self, row_id: i64) -> Result<Option<Posted>> {
        let found: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("select slack_channel, slack_ts from outbox where id = $1")
                .bind(row_id)
                .fetch_optional(self.read_pool())
                .await?;
        Ok(match found {
            Some((Some(channel), Some(ts))) => Some(Posted { channel, ts }),
            _ => None,
        })
    }

    /// Counts rows by state.
    pub async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("select state, count(*) from outbox group by state")
                .fetch_all(self.read_pool())
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
        .fetch_all(self.read_pool())
        .await?)
    }
}

/// When each lane of `keys` has its next pending row due, for the lanes that have one.
///
/// PostgreSQL looks each lane's head up on its own (`outbox_pending`: state, key, id; one
/// index probe per lane, whatever the statistics say). As one `min(id) ... group by`,
/// its planner walked every pending row through the `state` index whenever its
/// statistics predated a backlog (they said a few dozen rows were pending; there were
/// tens of thousands): 25 ms per settle during the declare benchmark. SQLite, whose
/// planner has no statistics to be misled by, reads them as one JSON row
/// (`store::rows`).
async fn next_heads_due(
    backend: Backend,
    tx: &mut sqlx::AnyConnection,
    keys: &[&str],
) -> Result<BTreeMap<String, i64>> {
    let next: Vec<(String, Option<i64>)> = match backend {
        Backend::Postgres => {
            let sql = format!(
                "select lane.column1, (select next_attempt_at_ms from outbox \
                   where state = 'pending' and ordering_key = lane.column1 order by id limit 1) \
                 from (values {}) as lane",
                super::values_list(backend, keys.len(), 1)
            );
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for key in keys {
                query = query.bind(*key);
            }
            query.fetch_all(&mut *tx).await?
        }
        Backend::Sqlite => {
            let sql = format!(
                "select ordering_key, next_attempt_at_ms from outbox where id in \
                 (select min(id) from outbox where state = 'pending' and ordering_key in ({}) group by ordering_key)",
                Placeholders::new(backend).list(keys.len())
            );
            let mut args = AnyArguments::default();
            for key in keys {
                bind(&mut args, *key);
            }
            fetch_rows(
                backend,
                &mut *tx,
                &sql,
                "ordering_key, next_attempt_at_ms",
                args,
            )
            .await?
        }
    };
    Ok(next
        .into_iter()
        .filter_map(|(key, at)| Some((key, at?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::case_when;
    use crate::store::{Backend, Placeholders};

    #[test]
    fn case_when_pairs_placeholders_in_text_order() {
        let mut p = Placeholders::new(Backend::Postgres);
        assert_eq!(
            case_when(&mut p, "id", 2, Some("slack_ts")),
            "case id when $1 then $2 when $3 then $4 else slack_ts end"
        );
        let mut p = Placeholders::new(Backend::Sqlite);
        assert_eq!(
            case_when(&mut p, "ordering_key", 1, None),
            "case ordering_key when ? then ? end"
        );
    }
}
