//! [`StoreTx`]: the writes of one change, committed together or not at all.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::{Any, AnyPool, Transaction};

use super::{Backend, Result, decode, ms};
use crate::domain::incident::{Actor, EventKind, Incident, IncidentId};
use crate::domain::outbound::LaneClass;
use crate::domain::timeline::{GENESIS, TimelineEntry};

/// One open transaction.
pub struct StoreTx {
    pub(super) tx: Transaction<'static, Any>,
    pub(super) backend: Backend,
    /// For a durable transaction on SQLite: the writer pool, to put back to
    /// `synchronous = NORMAL` after the commit.
    durable_sqlite: Option<AnyPool>,
    /// Outbox lanes to schedule at commit: the earliest due time of the rows this
    /// transaction added to each, and whether to bring the lane forward (see
    /// [`StoreTx::hurry_lane`]).
    lanes: BTreeMap<String, LaneSchedule>,
    /// Whether a pending timer was added or moved (see `sync_timers`).
    pub(super) timers_moved: bool,
    /// The earliest due time (epoch ms) of the timers this transaction added.
    pub(super) earliest_timer_ms: Option<i64>,
    /// An incident allocated in this transaction: it has no timeline and no timers yet,
    /// so the first append and the first timer sync skip reading them (the declare path).
    pub(super) fresh: Fresh,
    /// The turn at the SQLite writer, held until commit or rollback.
    _turn: Option<super::writer_gate::WriterTurn>,
}

/// What is known to be empty for incidents created in this transaction: they have no
/// timeline and no timers yet, so their first append and first timer sync skip reading
/// them (the declare path).
#[derive(Clone, Debug, Default)]
pub(super) struct Fresh {
    timeline_empty: BTreeSet<IncidentId>,
    timers_empty: BTreeSet<IncidentId>,
}

impl Fresh {
    pub(super) fn add(&mut self, id: IncidentId) {
        self.timeline_empty.insert(id);
        self.timers_empty.insert(id);
    }

    /// Whether `id`'s timeline is known empty (and, from now on, no longer).
    fn take_timeline(&mut self, id: IncidentId) -> bool {
        self.timeline_empty.remove(&id)
    }

    /// Whether `id` is known to have no timers (and, from now on, may have).
    pub(super) fn take_timers(&mut self, id: IncidentId) -> bool {
        self.timers_empty.remove(&id)
    }
}

#[derive(Clone, Copy, Debug)]
struct LaneSchedule {
    due_ms: i64,
    hurry: bool,
}

/// Rows per multi-row INSERT (PostgreSQL allows 65,535 bind parameters, SQLite 32,766).
pub const MAX_ROWS_PER_INSERT: usize = 200;

/// What a commit changed that the background loops care about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The classes of lanes outbox rows were added to (bits of
    /// [`super::listen::class_bit`]; 0: none): wake the worker for those.
    pub enqueued: u8,
    /// Timers were added or moved.
    pub timers_moved: bool,
    /// The earliest due time (epoch ms) of the timers added: the scheduler is woken
    /// only when this is before its own next due time (a cancelled timer needs no
    /// wake-up: the scheduler wakes for it, finds nothing and looks again).
    pub earliest_timer_ms: Option<i64>,
}

/// PostgreSQL `NOTIFY` channel: a commit added outbox rows.
pub const OUTBOX_CHANNEL: &str = "klaxon_outbox";
/// PostgreSQL `NOTIFY` channel: a commit added or moved timers.
pub const TIMERS_CHANNEL: &str = "klaxon_timers";

impl StoreTx {
    pub(super) fn new(
        tx: Transaction<'static, Any>,
        backend: Backend,
        durable_sqlite: Option<AnyPool>,
    ) -> Self {
        Self {
            tx,
            backend,
            durable_sqlite,
            lanes: BTreeMap::new(),
            timers_moved: false,
            earliest_timer_ms: None,
            fresh: Fresh::default(),
            _turn: None,
        }
    }

    /// This transaction holds `turn` (at the SQLite writer) until it ends.
    pub(super) fn holding(mut self, turn: Option<super::writer_gate::WriterTurn>) -> Self {
        self._turn = turn;
        self
    }

    /// Commits everything written through this transaction: first the lanes of the rows
    /// it enqueued (in key order, the order every transaction locks lanes in, so two
    /// never deadlock on them), then on PostgreSQL a `NOTIFY` so every replica's worker
    /// and scheduler wake up, then the commit itself.
    pub async fn commit(mut self) -> Result<Committed> {
        let lanes = std::mem::take(&mut self.lanes);
        for hurry in [false, true] {
            let batch: Vec<(&String, &LaneSchedule)> =
                lanes.iter().filter(|(_, l)| l.hurry == hurry).collect();
            if batch.is_empty() {
                continue;
            }
            // A new row never pulls a lane forward: a head waiting out its backoff keeps
            // waiting, and an idle lane is due when its new row is. A hurried lane is
            // due now unless a worker holds it. Rows in key order: the lock order.
            let on_conflict = if hurry {
                "case when outbox_lanes.lease_owner is null then excluded.due_at_ms else outbox_lanes.due_at_ms end"
            } else {
                "coalesce(outbox_lanes.due_at_ms, excluded.due_at_ms)"
            };
            let now = batch
                .iter()
                .map(|(_, l)| l.due_ms)
                .min()
                .unwrap_or_default();
            for chunk in batch.chunks(MAX_ROWS_PER_INSERT) {
                let sql = format!(
                    "insert into outbox_lanes (ordering_key, class, due_at_ms, updated_at_ms) values {} \
                     on conflict (ordering_key) do update set due_at_ms = {on_conflict}, updated_at_ms = excluded.updated_at_ms",
                    super::values_list(self.backend, chunk.len(), 4)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (key, schedule) in chunk {
                    query = query
                        .bind(key.as_str())
                        .bind(LaneClass::of(key).as_str())
                        .bind(schedule.due_ms)
                        .bind(now);
                }
                query.execute(&mut *self.tx).await?;
            }
        }
        let committed = Committed {
            enqueued: lanes
                .keys()
                .map(|key| super::listen::class_bit(LaneClass::of(key)))
                .fold(0, |set, bit| set | bit),
            timers_moved: self.timers_moved,
            earliest_timer_ms: self.earliest_timer_ms,
        };
        if self.backend == Backend::Postgres {
            if committed.enqueued != 0 {
                // The payload says which classes, so idle ones are not looked at again.
                sqlx::query("select pg_notify($1, $2)")
                    .bind(OUTBOX_CHANNEL)
                    .bind(committed.enqueued.to_string())
                    .execute(&mut *self.tx)
                    .await?;
            }
            if let Some(due_ms) = committed.earliest_timer_ms {
                sqlx::query("select pg_notify($1, $2)")
                    .bind(TIMERS_CHANNEL)
                    .bind(due_ms.to_string())
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        match self.durable_sqlite.take() {
            None => self.tx.commit().await?,
            Some(writer) => {
                // Begun with `synchronous = FULL`: this commit fsyncs the WAL.
                self.tx.commit().await?;
                sqlx::query("pragma synchronous = normal")
                    .execute(&writer)
                    .await?;
            }
        }
        Ok(committed)
    }

    /// Reserves the next incident number (a row the caller must fill with
    /// [`StoreTx::save_incidents`] before committing).
    pub async fn allocate_incident_id(&mut self, now: DateTime<Utc>) -> Result<IncidentId> {
        Ok(self.allocate_incident_ids(1, now).await?[0])
    }

    /// Reserves `count` incident numbers in one statement, ascending (rows the caller must
    /// fill with [`StoreTx::save_incidents`] before committing, or delete).
    pub async fn allocate_incident_ids(
        &mut self,
        count: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<IncidentId>> {
        let mut ids = Vec::with_capacity(count);
        let mut left = count;
        while left > 0 {
            let n = left.min(MAX_ROWS_PER_INSERT);
            let values = vec!["('investigating', '', '{}', $1, $1)"; n].join(", ");
            let sql = format!(
                "insert into incidents (status, severity, state, created_at_ms, updated_at_ms) \
                 values {values} returning id"
            );
            let rows: Vec<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(ms(now))
                .fetch_all(&mut *self.tx)
                .await?;
            ids.extend(rows.into_iter().map(|(id,)| IncidentId(id)));
            left -= n;
        }
        // RETURNING gives no order guarantee; numbers are handed out in ascending order.
        ids.sort();
        for id in &ids {
            self.fresh.add(*id);
        }
        Ok(ids)
    }

    /// Loads an incident and, on PostgreSQL, locks its row until commit so concurrent
    /// changes to one incident apply one after the other. (SQLite has one writer.)
    pub async fn lock_incident(&mut self, id: IncidentId) -> Result<Option<Incident>> {
        let sql = match self.backend {
            Backend::Postgres => {
                "select state from incidents where id = $1 and status <> 'declaring' for update"
            }
            Backend::Sqlite => {
                "select state from incidents where id = $1 and status <> 'declaring'"
            }
        };
        let row: Option<(String,)> = sqlx::query_as(sql)
            .bind(id.0)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|(s,)| decode("incident", &s)).transpose()
    }

    /// Writes the incident's current state.
    pub async fn save_incident(&mut self, incident: &Incident, now: DateTime<Utc>) -> Result<()> {
        self.save_incidents(&[incident], now).await
    }

    /// Writes several incidents' current state in one statement (an upsert on rows that
    /// exist: allocated, or older).
    pub async fn save_incidents(
        &mut self,
        incidents: &[&Incident],
        now: DateTime<Utc>,
    ) -> Result<()> {
        for chunk in incidents.chunks(MAX_ROWS_PER_INSERT) {
            let sql = format!(
                "insert into incidents (id, status, severity, channel_id, state, created_at_ms, updated_at_ms) \
                 values {} on conflict (id) do update set status = excluded.status, \
                 severity = excluded.severity, channel_id = excluded.channel_id, \
                 state = excluded.state, updated_at_ms = excluded.updated_at_ms",
                super::values_list(self.backend, chunk.len(), 7)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for incident in chunk {
                query = query
                    .bind(incident.id.0)
                    .bind(incident.status.as_str())
                    .bind(incident.severity.to_string())
                    .bind(incident.channel.as_ref().map(|c| c.id.clone()))
                    .bind(serde_json::to_string(incident).expect("incidents serialize"))
                    .bind(ms(now))
                    .bind(ms(now));
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Appends events to the incident's timeline, extending its hash chain.
    pub async fn append_events(
        &mut self,
        incident_id: IncidentId,
        at: DateTime<Utc>,
        actor: &Actor,
        request_id: &str,
        kinds: &[EventKind],
    ) -> Result<Vec<TimelineEntry>> {
        self.append_events_many(at, &[(incident_id, actor, request_id, kinds)])
            .await
    }

    /// Appends events to several incidents' timelines (each `(incident, actor, request
    /// id, events)`, at most once per incident), extending each hash chain, in one INSERT.
    pub async fn append_events_many(
        &mut self,
        at: DateTime<Utc>,
        appends: &[(IncidentId, &Actor, &str, &[EventKind])],
    ) -> Result<Vec<TimelineEntry>> {
        let mut entries = Vec::new();
        // The chain heads of the incidents that have a timeline, in one query (a group of
        // fired timers appends to a hundred incidents at once).
        let existing: Vec<IncidentId> = appends
            .iter()
            .map(|(id, ..)| *id)
            .filter(|id| !self.fresh.take_timeline(*id))
            .collect();
        let heads = self.timeline_heads(&existing).await?;
        for (incident_id, actor, request_id, kinds) in appends {
            let last = heads.get(incident_id).cloned();
            let (mut seq, mut prev_hash) = last.unwrap_or((0, GENESIS.to_string()));
            for kind in kinds.iter() {
                seq += 1;
                let entry = TimelineEntry::chain(
                    *incident_id,
                    seq,
                    // The store keeps milliseconds; hash what will be read back.
                    super::from_ms(ms(at)),
                    (*actor).clone(),
                    request_id.to_string(),
                    kind.clone(),
                    prev_hash,
                );
                prev_hash = entry.hash.clone();
                entries.push(entry);
            }
        }
        // One INSERT for all of them: fewer round trips on the write path.
        for chunk in entries.chunks(MAX_ROWS_PER_INSERT) {
            let sql = format!(
                "insert into timeline (incident_id, seq, at_ms, actor, request_id, kind, prev_hash, hash) values {}",
                super::values_list(self.backend, chunk.len(), 8)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for entry in chunk {
                query = query
                    .bind(entry.incident_id.0)
                    .bind(entry.seq)
                    .bind(ms(at))
                    .bind(entry.actor.to_string())
                    .bind(&entry.request_id)
                    .bind(serde_json::to_string(&entry.kind).expect("events serialize"))
                    .bind(&entry.prev_hash)
                    .bind(&entry.hash);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(entries)
    }

    /// The last `(seq, hash)` of each of `ids`' timelines (absent: no timeline yet).
    async fn timeline_heads(
        &mut self,
        ids: &[IncidentId],
    ) -> Result<std::collections::HashMap<IncidentId, (i64, String)>> {
        let mut heads = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_ROWS_PER_INSERT) {
            let sql = match self.backend {
                // One probe of the primary key per incident, whatever the statistics say
                // (as a `max(seq) ... group by` join, 35 pages read per incident while a
                // burst outgrew them: the third largest cost in the declare benchmark).
                Backend::Postgres => format!(
                    "select w.column1::bigint, t.seq, t.hash from (values {}) as w cross join lateral \
                     (select seq, hash from timeline where incident_id = w.column1::bigint \
                      order by seq desc limit 1) t",
                    super::values_list(self.backend, chunk.len(), 1)
                ),
                Backend::Sqlite => format!(
                    "select t.incident_id, t.seq, t.hash from timeline t join \
                     (select incident_id, max(seq) as seq from timeline where incident_id in ({}) group by incident_id) m \
                     on t.incident_id = m.incident_id and t.seq = m.seq",
                    super::Placeholders::new(self.backend).list(chunk.len())
                ),
            };
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.0);
            }
            let rows: Vec<(i64, i64, String)> = query.fetch_all(&mut *self.tx).await?;
            heads.extend(
                rows.into_iter()
                    .map(|(id, seq, hash)| (IncidentId(id), (seq, hash))),
            );
        }
        Ok(heads)
    }

    /// Locks several incidents (ascending id, the lock order) and loads them: one
    /// statement for a group of fired timers instead of one per incident.
    pub async fn lock_incidents(
        &mut self,
        ids: &[IncidentId],
    ) -> Result<std::collections::HashMap<IncidentId, Incident>> {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_ROWS_PER_INSERT) {
            super::incidents_in(self.backend, &mut *self.tx, chunk, true, &mut found).await?;
        }
        Ok(found)
    }

    /// Adds an outbound call to the outbox, due now.
    pub async fn enqueue(
        &mut self,
        ordering_key: &str,
        incident_id: Option<IncidentId>,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.enqueue_all(&[(ordering_key, incident_id, payload)], now)
            .await
    }

    /// Adds several outbound calls in one INSERT, due at `now`, in the order given (ids
    /// ascend, so each lane delivers them in this order). Their lanes are scheduled at
    /// commit. (`now` may be in the future: the rows wait until then.)
    pub async fn enqueue_all(
        &mut self,
        rows: &[(&str, Option<IncidentId>, &str)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let rows: Vec<_> = rows
            .iter()
            .map(|(key, incident_id, payload)| (*key, *incident_id, *payload, now))
            .collect();
        self.enqueue_due(&rows).await
    }

    /// [`StoreTx::enqueue_all`] with a due time per row (a row may wait for something,
    /// e.g. an announcement for its channel), in one INSERT.
    pub async fn enqueue_due(
        &mut self,
        rows: &[(&str, Option<IncidentId>, &str, DateTime<Utc>)],
    ) -> Result<()> {
        for chunk in rows.chunks(MAX_ROWS_PER_INSERT) {
            let sql = format!(
                "insert into outbox (ordering_key, incident_id, payload, next_attempt_at_ms, created_at_ms) values {}",
                super::values_list(self.backend, chunk.len(), 5)
            );
            let created = chunk.iter().map(|r| ms(r.3)).min().unwrap_or_default();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (key, incident_id, payload, due) in chunk {
                query = query
                    .bind(*key)
                    .bind(incident_id.map(|i| i.0))
                    .bind(*payload)
                    .bind(ms(*due))
                    .bind(created);
            }
            query.execute(&mut *self.tx).await?;
        }
        for (key, _, _, due) in rows {
            let lane = self.lanes.entry(key.to_string()).or_insert(LaneSchedule {
                due_ms: ms(*due),
                hurry: false,
            });
            lane.due_ms = lane.due_ms.min(ms(*due));
        }
        Ok(())
    }

    /// Makes a lane's pending rows due at `now` (they were enqueued to wait for something
    /// that has now happened, e.g. announcements waiting for the incident channel).
    pub async fn hurry_lane(&mut self, key: &str, now: DateTime<Utc>) -> Result<()> {
        let hurried = sqlx::query(
            "update outbox set next_attempt_at_ms = $1 where ordering_key = $2 and state = 'pending' \
             and next_attempt_at_ms > $1 and attempts = 0",
        )
        .bind(ms(now))
        .bind(key)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        if hurried > 0 {
            self.lanes.insert(
                key.to_string(),
                LaneSchedule {
                    due_ms: ms(now),
                    hurry: true,
                },
            );
        }
        Ok(())
    }

    /// Records that an inbound event was processed. `false` means it already had been
    /// (a retry): the caller should roll back and acknowledge without acting.
    pub async fn record_inbound(
        &mut self,
        source: &str,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "insert into inbound_events (source, event_id, received_at_ms) values ($1, $2, $3) \
             on conflict do nothing",
        )
        .bind(source)
        .bind(event_id)
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
