//! [`StoreTx`]: the writes of one change, committed together or not at all.

use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::{Backend, Result, decode, ms};
use crate::domain::incident::{Actor, EventKind, Incident, IncidentId};
use crate::domain::timeline::{GENESIS, TimelineEntry};

/// One open transaction.
pub struct StoreTx {
    pub(super) tx: Transaction<'static, Any>,
    pub(super) backend: Backend,
}

impl StoreTx {
    pub(super) fn new(tx: Transaction<'static, Any>, backend: Backend) -> Self {
        Self { tx, backend }
    }

    /// Commits everything written through this transaction.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Reserves the next incident number (a row the caller must fill with
    /// [`StoreTx::save_incident`] before committing).
    pub async fn allocate_incident_id(&mut self, now: DateTime<Utc>) -> Result<IncidentId> {
        let (id,): (i64,) = sqlx::query_as(
            "insert into incidents (status, severity, state, created_at_ms, updated_at_ms) \
             values ('investigating', '', '{}', $1, $1) returning id",
        )
        .bind(ms(now))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(IncidentId(id))
    }

    /// Loads an incident and, on PostgreSQL, locks its row until commit so concurrent
    /// changes to one incident apply one after the other. (SQLite has one writer.)
    pub async fn lock_incident(&mut self, id: IncidentId) -> Result<Option<Incident>> {
        let sql = match self.backend {
            Backend::Postgres => "select state from incidents where id = $1 for update",
            Backend::Sqlite => "select state from incidents where id = $1",
        };
        let row: Option<(String,)> = sqlx::query_as(sql)
            .bind(id.0)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|(s,)| decode("incident", &s)).transpose()
    }

    /// Writes the incident's current state.
    pub async fn save_incident(&mut self, incident: &Incident, now: DateTime<Utc>) -> Result<()> {
        let state = serde_json::to_string(incident).expect("incidents serialize");
        sqlx::query(
            "update incidents set status = $1, severity = $2, channel_id = $3, state = $4, updated_at_ms = $5 \
             where id = $6",
        )
        .bind(incident.status.as_str())
        .bind(incident.severity.to_string())
        .bind(incident.channel.as_ref().map(|c| c.id.clone()))
        .bind(state)
        .bind(ms(now))
        .bind(incident.id.0)
        .execute(&mut *self.tx)
        .await?;
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
        let last: Option<(i64, String)> = sqlx::query_as(
            "select seq, hash from timeline where incident_id = $1 order by seq desc limit 1",
        )
        .bind(incident_id.0)
        .fetch_optional(&mut *self.tx)
        .await?;
        let (mut seq, mut prev_hash) = last.unwrap_or((0, GENESIS.to_string()));
        let mut entries = Vec::with_capacity(kinds.len());
        for kind in kinds {
            seq += 1;
            let entry = TimelineEntry::chain(
                incident_id,
                seq,
                // The store keeps milliseconds; hash what will be read back.
                super::from_ms(ms(at)),
                actor.clone(),
                request_id.to_string(),
                kind.clone(),
                prev_hash,
            );
            sqlx::query(
                "insert into timeline (incident_id, seq, at_ms, actor, request_id, kind, prev_hash, hash) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(incident_id.0)
            .bind(seq)
            .bind(ms(at))
            .bind(actor.to_string())
            .bind(request_id)
            .bind(serde_json::to_string(kind).expect("events serialize"))
            .bind(&entry.prev_hash)
            .bind(&entry.hash)
            .execute(&mut *self.tx)
            .await?;
            prev_hash = entry.hash.clone();
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Adds an outbound call to the outbox, due now.
    pub async fn enqueue(
        &mut self,
        ordering_key: &str,
        incident_id: Option<IncidentId>,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "insert into outbox (ordering_key, incident_id, payload, next_attempt_at_ms, created_at_ms) \
             values ($1, $2, $3, $4, $4)",
        )
        .bind(ordering_key)
        .bind(incident_id.map(|i| i.0))
        .bind(payload)
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await?;
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
