//! Post-mortem drafts and their upload progress, the reads behind `/metrics` and
//! `klaxon report`, and the timeline as `klaxon audit verify` reads it.

use chrono::{DateTime, Utc};

use super::{Result, Store, StoreTx, actor_from_str, decode, from_ms, ms};
use crate::domain::incident::IncidentId;
use crate::domain::timeline::{ChainError, TimelineEntry};

/// One stored draft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostmortemRow {
    /// Draft id.
    pub id: i64,
    /// The incident.
    pub incident_id: IncidentId,
    /// Draft number within the incident, from 1.
    pub version: i64,
    /// The Markdown.
    pub markdown: String,
    /// Who asked (a user id, or `klaxon` on resolution).
    pub requested_by: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// Upload step 1 done: Slack's file id and the URL to send the bytes to.
    pub upload: Option<(String, String)>,
    /// Upload step 2 done: the bytes were accepted.
    pub bytes_sent: bool,
    /// Upload step 3 done: the file is shared in the channel.
    pub shared: bool,
}

type Row = (
    i64,
    i64,
    i64,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

const COLUMNS: &str = "id, incident_id, version, markdown, requested_by, created_at_ms, \
     slack_file_id, upload_url, bytes_sent_at_ms, shared_at_ms";

fn row(r: Row) -> PostmortemRow {
    let (id, incident, version, markdown, requested_by, created, file, url, sent, shared) = r;
    PostmortemRow {
        id,
        incident_id: IncidentId(incident),
        version,
        markdown,
        requested_by,
        created_at: from_ms(created),
        upload: file.zip(url),
        bytes_sent: sent.is_some(),
        shared: shared.is_some(),
    }
}

/// Pending outbox rows of one lane class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneDepth {
    /// `slack`, `page` or `run`.
    pub class: String,
    /// Rows waiting.
    pub pending: i64,
    /// When the oldest of them was written.
    pub oldest: Option<DateTime<Utc>>,
}

impl StoreTx {
    /// An incident's timeline as this transaction sees it.
    pub async fn timeline_of(&mut self, id: IncidentId) -> Result<Vec<TimelineEntry>> {
        let rows: Vec<(i64, i64, String, String, String, String, String)> = sqlx::query_as(
            "select seq, at_ms, actor, request_id, kind, prev_hash, hash from timeline \
             where incident_id = $1 order by seq",
        )
        .bind(id.0)
        .fetch_all(&mut *self.tx)
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

    /// The next draft number of an incident.
    pub async fn next_postmortem_version(&mut self, id: IncidentId) -> Result<i64> {
        let (max,): (Option<i64>,) =
            sqlx::query_as("select max(version) from postmortems where incident_id = $1")
                .bind(id.0)
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(max.unwrap_or(0) + 1)
    }

    /// Stores a draft; returns its id.
    pub async fn insert_postmortem(
        &mut self,
        id: IncidentId,
        version: i64,
        markdown: &str,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let (pm,): (i64,) = sqlx::query_as(
            "insert into postmortems (incident_id, version, markdown, requested_by, created_at_ms) \
             values ($1, $2, $3, $4, $5) returning id",
        )
        .bind(id.0)
        .bind(version)
        .bind(markdown)
        .bind(requested_by)
        .bind(ms(now))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(pm)
    }
}

impl Store {
    /// One draft.
    pub async fn postmortem(&self, id: i64) -> Result<Option<PostmortemRow>> {
        let sql = format!("select {COLUMNS} from postmortems where id = $1");
        let r: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(r.map(row))
    }

    /// Every draft of an incident, oldest first.
    pub async fn postmortems_of(&self, incident: IncidentId) -> Result<Vec<PostmortemRow>> {
        let sql =
            format!("select {COLUMNS} from postmortems where incident_id = $1 order by version");
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(incident.0)
            .fetch_all(self.read_pool())
            .await?;
        Ok(rows.into_iter().map(row).collect())
    }

    /// Upload step 1: remembers Slack's file id and upload URL.
    pub async fn postmortem_upload_started(&self, id: i64, file_id: &str, url: &str) -> Result<()> {
        sqlx::query("update postmortems set slack_file_id = $2, upload_url = $3, bytes_sent_at_ms = null where id = $1")
            .bind(id)
            .bind(file_id)
            .bind(url)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Upload step 2: the bytes were accepted.
    pub async fn postmortem_bytes_sent(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("update postmortems set bytes_sent_at_ms = $2 where id = $1")
            .bind(id)
            .bind(ms(now))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets an upload URL Slack no longer accepts, so the next try asks for a new one.
    pub async fn postmortem_upload_reset(&self, id: i64) -> Result<()> {
        sqlx::query("update postmortems set slack_file_id = null, upload_url = null, bytes_sent_at_ms = null where id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Upload step 3: shared in the channel.
    pub async fn postmortem_shared(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("update postmortems set shared_at_ms = $2 where id = $1")
            .bind(id)
            .bind(ms(now))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Incidents by (severity, status), for `/metrics`.
    pub async fn incident_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "select severity, status, count(*) from incidents where status <> 'declaring' group by severity, status order by severity, status",
        )
        .fetch_all(self.read_pool())
        .await?)
    }

    /// Recovery runs by state, for `/metrics`.
    pub async fn run_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as(
                "select state, count(*) from command_runs group by state order by state",
            )
            .fetch_all(self.read_pool())
            .await?,
        )
    }

    /// Pending outbox rows per lane class, with the oldest one's age, for `/metrics`.
    pub async fn outbox_depth(&self) -> Result<Vec<LaneDepth>> {
        let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "select l.class, count(*), min(o.created_at_ms) from outbox o \
             join outbox_lanes l on l.ordering_key = o.ordering_key \
             where o.state = 'pending' group by l.class order by l.class",
        )
        .fetch_all(self.read_pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(class, pending, oldest)| LaneDepth {
                class,
                pending,
                oldest: oldest.map(from_ms),
            })
            .collect())
    }

    /// Incidents declared at or after `since`, oldest first.
    pub async fn incidents_declared_since(&self, since: DateTime<Utc>) -> Result<Vec<IncidentId>> {
        let rows: Vec<(i64,)> =
            sqlx::query_as(
                "select id from incidents where created_at_ms >= $1 and status <> 'declaring' order by id",
            )
                .bind(ms(since))
                .fetch_all(self.read_pool())
                .await?;
        Ok(rows.into_iter().map(|(id,)| IncidentId(id)).collect())
    }

    /// An incident's timeline for the audit: a row whose event no longer decodes is
    /// reported as altered (naming it) instead of failing the whole read.
    pub async fn timeline_for_audit(
        &self,
        id: IncidentId,
    ) -> Result<std::result::Result<Vec<TimelineEntry>, ChainError>> {
        let rows: Vec<(i64, i64, String, String, String, String, String)> = sqlx::query_as(
            "select seq, at_ms, actor, request_id, kind, prev_hash, hash from timeline \
             where incident_id = $1 order by seq",
        )
        .bind(id.0)
        .fetch_all(self.read_pool())
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for (seq, at, actor, request_id, kind, prev_hash, hash) in rows {
            let kind = match serde_json::from_str(&kind) {
                Ok(kind) => kind,
                Err(e) => {
                    // An earlier entry may have been altered too: name the first.
                    if let Err(first) = crate::domain::timeline::verify(&entries) {
                        return Ok(Err(first));
                    }
                    return Ok(Err(ChainError::Unreadable {
                        incident: id,
                        seq,
                        problem: e.to_string(),
                    }));
                }
            };
            entries.push(TimelineEntry {
                incident_id: id,
                seq,
                at: from_ms(at),
                actor: actor_from_str(&actor),
                request_id,
                kind,
                prev_hash,
                hash,
            });
        }
        Ok(Ok(entries))
    }
}
