//! Persistence: incidents, their timeline, the outbox and inbound-event dedupe, on SQLite
//! (embedded default) or PostgreSQL (production, shared by replicas).
//!
//! One implementation over `sqlx::Any`: the schema keeps to types both backends share
//! (64-bit integers, text; times as UTC epoch milliseconds), SQL uses `$n` placeholders,
//! which SQLite also accepts, and the few dialect differences are branches on
//! [`Backend`]. That keeps one copy of every query instead of two that drift apart.
//!
//! Every change goes through a [`StoreTx`]: the engine appends events, saves the
//! projection and enqueues outbox rows in ONE transaction.

mod declarations;
mod home;
mod lane_claims;
mod listen;
mod outbox;
mod pagerduty;
mod postmortems;
mod retention;
mod rows;
mod runs;
mod stakeholders;
mod timers;
mod totp;
mod tx;
mod writer_gate;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::domain::incident::{Actor, Incident, IncidentId};
use crate::domain::timeline::TimelineEntry;

pub use declarations::{Declaration, PendingDeclaration};
pub use home::AwaitingRun;
pub use listen::{NextDue, OutboxWake, TimerWake};
pub use outbox::{OutboxCounts, OutboxRow, Posted, Settlement};
pub use pagerduty::PagerDutyLink;
pub use postmortems::{LaneDepth, PostmortemRow};
pub use retention::Pruned;
pub use runs::{Approval, ApprovalWrite, Closed, NewRun, RunRow, RunUpdate, trigger_refusal};
pub use timers::TimerRow;
pub use totp::Sealed;
pub use tx::{Committed, MAX_ROWS_PER_INSERT, OUTBOX_CHANNEL, StoreTx, TIMERS_CHANNEL};
pub use writer_gate::{WriterTimes, writer_times};

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file (single process).
    Sqlite,
    /// PostgreSQL (any number of replicas).
    Postgres,
}

/// What can go wrong in the store. None of it is shown to Slack users.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored document did not decode (a bug or a hand edit).
    #[error("corrupt {what} in the database: {source}")]
    Corrupt {
        /// Which document.
        what: &'static str,
        /// The decode error.
        source: serde_json::Error,
    },
    /// A stored state name Klaxon does not know (a hand edit, or a newer version's row).
    #[error("unknown {what} `{value}` in the database")]
    UnknownValue {
        /// Which column.
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// The URL names a database Klaxon does not support.
    #[error("unsupported database URL (expected sqlite:// or postgres://): {0}")]
    UnsupportedUrl(String),
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The VALUES list of a multi-row INSERT: `rows` tuples of `width` placeholders, bound
/// row by row, column by column.
///
/// SQLite gets anonymous `?`s. sqlx asks SQLite for the name of every parameter of a
/// statement, and SQLite finds a parameter's name (and, while parsing, each `$n`) by a
/// linear search of the statement's names: a 1,000-parameter INSERT costs a million
/// steps, which was a tenth of the writer's time under a burst of declarations.
/// PostgreSQL gets `$1..$n`.
pub(crate) fn values_list(backend: Backend, rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * (width * 6 + 4));
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..width {
            if column > 0 {
                out.push_str(", ");
            }
            match backend {
                Backend::Sqlite => out.push('?'),
                Backend::Postgres => {
                    out.push('$');
                    out.push_str(&(row * width + column + 1).to_string());
                }
            }
        }
        out.push(')');
    }
    out
}

/// Placeholders handed out in the order they appear in a statement's text: `?` on
/// SQLite (see [`values_list`] for why), `$1, $2, ...` on PostgreSQL. Bind the values in
/// the same order.
pub(crate) struct Placeholders {
    backend: Backend,
    next: usize,
}

impl Placeholders {
    pub(crate) fn new(backend: Backend) -> Self {
        Self { backend, next: 1 }
    }

    /// The next placeholder.
    pub(crate) fn one(&mut self) -> String {
        let n = self.next;
        self.next += 1;
        match self.backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${n}"),
        }
    }

    /// `n` placeholders separated by commas (an IN list's contents).
    pub(crate) fn list(&mut self, n: usize) -> String {
        (0..n).map(|_| self.one()).collect::<Vec<_>>().join(", ")
    }
}

/// `state = 'pending'` for a statement that picks its rows by a list of ids
/// (`... where {still_pending} and id in (...)`).
///
/// On SQLite it is written `+state`, which no index can serve, so the ids are looked up by
/// primary key. Without statistics SQLite guesses that an index on `state` narrows to a
/// handful of rows and prefers it over a list of three ids or more, and so walks every
/// pending row: marking a group of 100 fired timers took 17 ms with 10,000 reminders
/// pending, and a settle walked every undelivered outbox row.
pub(crate) fn still_pending(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "+state = 'pending'",
        Backend::Postgres => "state = 'pending'",
    }
}

/// Milliseconds since the epoch, how the schema keeps times.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`ms`].
pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &'static str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt { what, source })
}

/// Parses the `actor` column.
pub(crate) fn actor_from_str(s: &str) -> Actor {
    if s == "klaxon" {
        Actor::Klaxon
    } else {
        Actor::User(s.to_string())
    }
}

/// Loads the incidents of `ids` (at most [`MAX_ROWS_PER_INSERT`]) into `found`, in
/// ascending id; with `lock`, `for update` on PostgreSQL (the lock order). Incidents still
/// being declared are left out. For [`Store::incidents`] and [`StoreTx::lock_incidents`].
pub(crate) async fn incidents_in<'e, E>(
    backend: Backend,
    executor: E,
    ids: &[IncidentId],
    lock: bool,
    found: &mut std::collections::HashMap<IncidentId, Incident>,
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let lock = match backend {
        Backend::Postgres if lock => " for update",
        _ => "",
    };
    let sql = format!(
        "select id, state from incidents where status <> 'declaring' and id in ({}) order by id{lock}",
        Placeholders::new(backend).list(ids.len())
    );
    let mut args = sqlx::any::AnyArguments::default();
    for id in ids {
        rows::bind(&mut args, id.0);
    }
    let rows: Vec<(i64, String)> =
        rows::fetch_rows(backend, executor, &sql, "id, state", args).await?;
    for (id, state) in rows {
        found.insert(IncidentId(id), decode("incident", &state)?);
    }
    Ok(())
}

/// The database handle: the pools plus which backend it is.
///
/// - `pool` takes every write transaction. On SQLite it is ONE connection: SQLite has a
///   single writer anyway, and one connection means no SQLITE_BUSY between our own
///   transactions (DESIGN.md: "the single writer on SQLite").
/// - `read` serves plain reads. On SQLite it is a pool of read-only connections beside the
///   writer (WAL lets readers run while the writer commits), so a worker loading an
///   incident never queues behind a declare's transaction. On PostgreSQL it is `pool`.
/// - [`Store::for_background`] gives the scheduler and the outbox worker a PostgreSQL pool
///   of their own, so a burst of HTTP requests cannot take every connection and starve
///   the loops that deliver what those requests stored.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    read: AnyPool,
    backend: Backend,
    /// SQLite: who goes first at the one writer (see `writer_gate`).
    gate: std::sync::Arc<writer_gate::WriterGate>,
    /// This handle is the background loops' (it yields the SQLite writer to requests).
    background: bool,
    url: std::sync::Arc<str>,
}

/// Connections in the SQLite read pool.
const SQLITE_READERS: u32 = 4;
/// Connections in the PostgreSQL request pool.
const POSTGRES_CONNECTIONS: u32 = 10;
/// Connections reserved for the background loops on PostgreSQL: the scheduler, and the
/// outbox worker's claims, settles (a few commit at once) and the reads of its deliveries
/// in flight (with 3, a drain queued on the pool at about 1,100 deliveries/s).
const POSTGRES_BACKGROUND_CONNECTIONS: u32 = 8;
/// WAL, NORMAL durability (FULL for the transactions that decide an execution: see
/// `begin_durable`), how long a statement waits for SQLite's write lock (another process
/// on the file), and for the writer a 64 MiB page cache with memory-mapped reads (fewer
/// syscalls per statement: in the load bench, declarations at 2,000 req/s went from a
/// p50 of 8.2-9.2 ms to 7.9 ms, saturated from 90 % to 111 % of the floor's rate).
const SQLITE_PRAGMAS: &str = "pragma journal_mode = wal; pragma synchronous = normal; \
     pragma foreign_keys = on; pragma busy_timeout = 5000; pragma cache_size = -65536; \
     pragma mmap_size = 268435456; pragma temp_store = memory;";

impl Store {
    /// Connects to `url` (`sqlite://path.db` or `postgres://...`). A SQLite file is
    /// created when missing and put in WAL mode.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(
                url.split(':').next().unwrap_or_default().to_string(),
            ));
        };
        let (pool, read) = match backend {
            Backend::Sqlite => {
                let url = if url.contains("mode=") || url.contains(":memory:") {
                    url.to_string()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                let writer = AnyPoolOptions::new()
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(SQLITE_PRAGMAS).await?;
                            Ok(())
                        })
                    })
                    .connect_with(AnyConnectOptions::from_str(&url)?)
                    .await?;
                // An in-memory database is private to its connection: no readers beside.
                let read = if url.contains(":memory:") {
                    writer.clone()
                } else {
                    AnyPoolOptions::new()
                        .max_connections(SQLITE_READERS)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute("pragma query_only = on; pragma busy_timeout = 5000;")
                                    .await?;
                                Ok(())
                            })
                        })
                        .connect_lazy_with(AnyConnectOptions::from_str(&url)?)
                };
                (writer, read)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_CONNECTIONS)
                    .connect(url)
                    .await?;
                (pool.clone(), pool)
            }
        };
        Ok(Store {
            pool,
            read,
            backend,
            gate: Default::default(),
            background: false,
            url: url.into(),
        })
    }

    /// The same database through connections reserved for the background loops
    /// (scheduler, outbox worker). On SQLite, the same writer, which this handle's
    /// transactions yield to requests' (see `writer_gate`).
    pub fn for_background(&self) -> Result<Store> {
        match self.backend {
            Backend::Sqlite => Ok(Store {
                background: true,
                ..self.clone()
            }),
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_BACKGROUND_CONNECTIONS)
                    .connect_lazy(&self.url)?;
                Ok(Store {
                    pool: pool.clone(),
                    read: pool,
                    backend: self.backend,
                    gate: self.gate.clone(),
                    background: true,
                    url: self.url.clone(),
                })
            }
        }
    }

    /// The URL this store was opened with (it may hold a password: never log it).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations (`migrations/sqlite` or `migrations/postgres`).
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts a transaction for one change.
    pub async fn begin(&self) -> Result<StoreTx> {
        let turn = self.writer_turn().await;
        let tx = StoreTx::new(self.begin_ungated().await?, self.backend, None);
        Ok(tx.holding(turn))
    }

    /// On SQLite, waits for this handle's turn at the one writer, to be held until the
    /// write is committed: a request's goes before the background loops' (see
    /// `writer_gate`). `None` on PostgreSQL (many writers).
    async fn writer_turn(&self) -> Option<writer_gate::WriterTurn> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let priority = if self.background {
            writer_gate::Priority::Background
        } else {
            writer_gate::Priority::Request
        };
        Some(self.gate.turn(priority).await)
    }

    /// Starts a transaction whose commit must survive an OS crash or power loss, for the
    /// few that decide an execution (`approved -> executing`, its result). On SQLite the
    /// commit runs with `synchronous = FULL` (the WAL is fsynced before the commit
    /// returns) instead of the default NORMAL, under which a committed transaction can
    /// be rolled back by a crash before the next checkpoint. PostgreSQL commits are
    /// durable already (`synchronous_commit = on`).
    pub async fn begin_durable(&self) -> Result<StoreTx> {
        match self.backend {
            Backend::Postgres => self.begin().await,
            Backend::Sqlite => {
                // SQLite refuses to change the safety level inside a transaction: set it
                // on the writer first, then begin on that same connection.
                let turn = self.writer_turn().await;
                let mut conn = self.pool.acquire().await?;
                conn.execute("pragma synchronous = full").await?;
                let tx = sqlx::Transaction::begin(
                    conn,
                    Some(sqlx::SqlSafeStr::into_sql_str("begin immediate")),
                )
                .await?;
                Ok(StoreTx::new(tx, self.backend, Some(self.pool.clone())).holding(turn))
            }
        }
    }

    /// A raw write transaction, with this handle's turn at the SQLite writer: keep the
    /// turn until the transaction ends (`let (mut tx, _turn) = ...`). On SQLite it takes
    /// the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction that reads and
    /// then writes can fail at once with "database is locked" when another connection (a
    /// second process on the same file) wrote in between, instead of waiting out the busy
    /// timeout. (The raw transactions are the background loops' claims and settles, and
    /// TOTP enrolment.)
    pub(crate) async fn begin_raw(
        &self,
    ) -> Result<(
        sqlx::Transaction<'static, sqlx::Any>,
        Option<writer_gate::WriterTurn>,
    )> {
        let turn = self.writer_turn().await;
        Ok((self.begin_ungated().await?, turn))
    }

    async fn begin_ungated(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("begin immediate").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// One incident by number.
    pub async fn incident(&self, id: IncidentId) -> Result<Option<Incident>> {
        let row: Option<(String,)> =
            sqlx::query_as("select state from incidents where id = $1 and status <> 'declaring'")
                .bind(id.0)
                .fetch_optional(&self.read)
                .await?;
        row.map(|(s,)| decode("incident", &s)).transpose()
    }

    /// Several incidents by id, in one query (absent: no such incident, or still being
    /// declared).
    pub async fn incidents(
        &self,
        ids: &[IncidentId],
    ) -> Result<std::collections::HashMap<IncidentId, Incident>> {
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_ROWS_PER_INSERT) {
            incidents_in(self.backend, &self.read, chunk, false, &mut found).await?;
        }
        Ok(found)
    }

    /// The incident whose channel is `channel_id`.
    pub async fn incident_by_channel(&self, channel_id: &str) -> Result<Option<Incident>> {
        let row: Option<(String,)> =
            sqlx::query_as("select state from incidents where channel_id = $1")
                .bind(channel_id)
                .fetch_optional(&self.read)
                .await?;
        row.map(|(s,)| decode("incident", &s)).transpose()
    }

    /// Open incidents, oldest first.
    pub async fn open_incidents(&self) -> Result<Vec<Incident>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "select state from incidents where status not in ('resolved', 'declaring') order by id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|(s,)| decode("incident", s)).collect()
    }

    /// Every incident number, for audits (not those still being declared: they have no
    /// timeline yet).
    pub async fn incident_ids(&self) -> Result<Vec<IncidentId>> {
        let rows: Vec<(i64,)> =
            sqlx::query_as("select id from incidents where status <> 'declaring' order by id")
                .fetch_all(&self.read)
                .await?;
        Ok(rows.into_iter().map(|(id,)| IncidentId(id)).collect())
    }

    /// An incident's timeline in order.
    pub async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>> {
        let rows: Vec<(i64, i64, String, String, String, String, String)> = sqlx::query_as(
            "select seq, at_ms, actor, request_id, kind, prev_hash, hash from timeline \
             where incident_id = $1 order by seq",
        )
        .bind(id.0)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(seq, at, actor, request_id, kind, prev_hash, hash)| {
                Ok(TimelineEntry {
                    incident_id: id,
                    seq,
                    at: from_ms(at),
                    actor: actor_from_str(&actor),
                    request_id,
                    kind: decode("timeline event", &kind)?,
                    prev_hash,
                    hash,
                })
            })
            .collect()
    }

    /// Runs raw SQL; for tests that need to tamper with or inspect the database.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<u64> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn read_pool(&self) -> &AnyPool {
        &self.read
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, Placeholders, values_list};

    #[test]
    fn placeholders_follow_the_text_order() {
        let mut sqlite = Placeholders::new(Backend::Sqlite);
        assert_eq!((sqlite.one(), sqlite.list(2)), ("?".into(), "?, ?".into()));
        let mut postgres = Placeholders::new(Backend::Postgres);
        assert_eq!(
            (postgres.one(), postgres.list(2)),
            ("$1".into(), "$2, $3".into())
        );
    }

    #[test]
    fn values_lists_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        assert_eq!(values_list(Backend::Sqlite, 2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(
            values_list(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_list(Backend::Postgres, 1, 1), "($1)");
    }
}
