//! Queries for issue 11: who opened the App Home recently (`home_viewers`, migration
//! 0007), whether a lane already has a row waiting (so a refresh is coalesced), and what
//! a Home tab shows (the next timer of an incident, the runs awaiting someone's approval).

use chrono::{DateTime, Utc};

use super::{Result, Store, StoreTx, from_ms, ms};
use crate::domain::incident::IncidentId;

/// A run waiting for one person's approval, for the Home tab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwaitingRun {
    /// Run number.
    pub id: i64,
    /// Its incident.
    pub incident_id: IncidentId,
    /// Catalog command.
    pub command: String,
    /// Who asked.
    pub requester: String,
    /// When the request lapses.
    pub expires_at: DateTime<Utc>,
}

impl StoreTx {
    /// Remembers that `user` opened the Home tab at `now`.
    pub async fn record_home_viewer(&mut self, user: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "insert into home_viewers (user_id, opened_at_ms) values ($1, $2) \
             on conflict (user_id) do update set opened_at_ms = excluded.opened_at_ms",
        )
        .bind(user)
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Whether lane `key` has a row not yet attempted (a pending publish stands for any
    /// number of changes: it renders the tab as it is when delivered).
    pub async fn lane_has_fresh_row(&mut self, key: &str) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(
            "select id from outbox where ordering_key = $1 and state = 'pending' and attempts = 0 limit 1",
        )
        .bind(key)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.is_some())
    }
}

impl Store {
    /// Users who opened the Home tab since `since`, most recent first, at most `limit`.
    pub async fn home_viewers(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "select user_id from home_viewers where opened_at_ms >= $1 \
             order by opened_at_ms desc limit $2",
        )
        .bind(ms(since))
        .bind(limit)
        .fetch_all(self.read_pool())
        .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    /// The latest change to any incident and to any run: when it moved, Home tabs may be
    /// out of date.
    pub async fn change_marker(&self) -> Result<(i64, i64)> {
        let (incidents,): (i64,) =
            sqlx::query_as("select coalesce(max(updated_at_ms), 0) from incidents")
                .fetch_one(self.read_pool())
                .await?;
        let (runs,): (i64,) =
            sqlx::query_as("select coalesce(max(updated_at_ms), 0) from command_runs")
                .fetch_one(self.read_pool())
                .await?;
        Ok((incidents, runs))
    }

    /// The earliest pending timer of `kind` for an incident.
    pub async fn next_timer_of(
        &self,
        incident: IncidentId,
        kind: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "select due_at_ms from timers where incident_id = $1 and kind = $2 and state = 'pending' \
             order by due_at_ms limit 1",
        )
        .bind(incident.0)
        .bind(kind)
        .fetch_optional(self.read_pool())
        .await?;
        Ok(row.map(|(t,)| from_ms(t)))
    }

    /// Pending runs `user` may approve and has not: in the frozen eligible set, not the
    /// requester, no approval row yet.
    pub async fn runs_awaiting(&self, user: &str) -> Result<Vec<AwaitingRun>> {
        let rows: Vec<(i64, i64, String, String, i64)> = sqlx::query_as(
            "select r.id, r.incident_id, r.command, r.requester, r.expires_at_ms from command_runs r \
             where r.state = 'pending' and r.requester <> $1 \
             and exists (select 1 from run_eligible_approvers e where e.run_id = r.id and e.approver = $1) \
             and not exists (select 1 from run_approvals a where a.run_id = r.id and a.approver = $1) \
             order by r.id",
        )
        .bind(user)
        .fetch_all(self.read_pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, incident, command, requester, expires)| AwaitingRun {
                id,
                incident_id: IncidentId(incident),
                command,
                requester,
                expires_at: from_ms(expires),
            })
            .collect())
    }
}
