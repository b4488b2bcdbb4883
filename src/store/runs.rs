//! The `command_runs` table and the approval tables beside it: recovery command runs,
//! their conditional state changes, the approvers frozen at request time and the approval
//! rows the database itself guards (migration 0005: the requester, anyone outside the
//! frozen set, and a run that is not pending are refused by triggers on both backends).

use chrono::{DateTime, Utc};

use super::{Backend, Result, Store, StoreTx, from_ms, ms};
use crate::domain::access::Eligible;
use crate::domain::approval::RunState;
use crate::domain::incident::IncidentId;

/// One stored run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRow {
    /// Run number.
    pub id: i64,
    /// The incident it belongs to.
    pub incident_id: IncidentId,
    /// Catalog command name.
    pub command: String,
    /// Executor action name.
    pub action: String,
    /// Validated parameters as JSON (`commands::Params`), exactly as approved.
    pub params: String,
    /// Who asked.
    pub requester: String,
    /// Who approved, in order (rows of `run_approvals`).
    pub approvers: Vec<Approval>,
    /// Distinct approvers needed.
    pub required: i64,
    /// Current state.
    pub state: RunState,
    /// Preview JSON, once prepared.
    pub preview: Option<String>,
    /// Result JSON, once finished.
    pub result: Option<String>,
    /// Approval deadline.
    pub expires_at: DateTime<Utc>,
    /// Where the approval message was posted (channel id, message ts).
    pub approval_message: Option<(String, String)>,
    /// When the run started waiting for approval (it then has an approval message).
    pub approval_requested_at: Option<DateTime<Utc>>,
    /// Who denied, withdrew or cancelled it, when and why.
    pub closed: Option<Closed>,
}

impl RunRow {
    /// Approver ids, in order.
    pub fn approver_ids(&self) -> Vec<String> {
        self.approvers.iter().map(|a| a.approver.clone()).collect()
    }
}

/// One approval row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// Who approved.
    pub approver: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// How a run was stopped without running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// A Slack user id, or `klaxon`.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, in words.
    pub reason: String,
}

#[derive(sqlx::FromRow)]
struct RawRun {
    id: i64,
    incident_id: i64,
    command: String,
    action: String,
    params: String,
    requester: String,
    required_approvals: i64,
    state: String,
    preview: Option<String>,
    result: Option<String>,
    expires_at_ms: i64,
    approval_channel: Option<String>,
    approval_ts: Option<String>,
    approval_requested_at_ms: Option<i64>,
    closed_by: Option<String>,
    closed_at_ms: Option<i64>,
    close_reason: Option<String>,
}

const COLUMNS: &str = "id, incident_id, command, action, params, requester, required_approvals, state, preview, result, \
     expires_at_ms, approval_channel, approval_ts, approval_requested_at_ms, closed_by, closed_at_ms, close_reason";

fn decode_run(raw: RawRun, approvers: Vec<Approval>) -> Result<RunRow> {
    Ok(RunRow {
        id: raw.id,
        incident_id: IncidentId(raw.incident_id),
        command: raw.command,
        action: raw.action,
        params: raw.params,
        requester: raw.requester,
        approvers,
        required: raw.required_approvals,
        state: RunState::parse(&raw.state).ok_or(super::StoreError::UnknownValue {
            what: "run state",
            value: raw.state,
        })?,
        preview: raw.preview,
        result: raw.result,
        expires_at: from_ms(raw.expires_at_ms),
        approval_message: raw.approval_channel.zip(raw.approval_ts),
        approval_requested_at: raw.approval_requested_at_ms.map(from_ms),
        closed: match (raw.closed_by, raw.closed_at_ms) {
            (Some(by), Some(at)) => Some(Closed {
                by,
                at: from_ms(at),
                reason: raw.close_reason.unwrap_or_default(),
            }),
            _ => None,
        },
    })
}

const APPROVALS: &str = "select approver, approved_at_ms from run_approvals where run_id = $1 order by approved_at_ms, approver";

fn approvals_of(rows: Vec<(String, i64)>) -> Vec<Approval> {
    rows.into_iter()
        .map(|(approver, at)| Approval {
            approver,
            at: from_ms(at),
        })
        .collect()
}

/// A new run to store.
#[derive(Clone, Debug)]
pub struct NewRun<'a> {
    /// The incident.
    pub incident_id: IncidentId,
    /// Catalog command name.
    pub command: &'a str,
    /// Executor action name.
    pub action: &'a str,
    /// Validated parameters as JSON.
    pub params: &'a str,
    /// Who asked.
    pub requester: &'a str,
    /// Distinct approvers needed.
    pub required: u32,
    /// Approval deadline.
    pub expires_at: DateTime<Utc>,
}

/// What the store said to an approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalWrite {
    /// Recorded; the run now has this many approvals (counted in the same transaction).
    Counted(u32),
    /// A trigger refused it (the text says which rule).
    Refused(String),
}

/// The text of a refusal raised by one of migration 0005's triggers, if `e` is one.
pub fn trigger_refusal(e: &sqlx::Error) -> Option<String> {
    let message = e.as_database_error()?.message().to_string();
    let at = message.find("klaxon-refused: ")?;
    Some(message[at + "klaxon-refused: ".len()..].to_string())
}

impl StoreTx {
    /// Stores a new run in state `preparing`; returns its number.
    pub async fn insert_run(&mut self, run: &NewRun<'_>, now: DateTime<Utc>) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "insert into command_runs (incident_id, command, action, params, requester, required_approvals, state, \
             expires_at_ms, created_at_ms, updated_at_ms) values ($1, $2, $3, $4, $5, $6, 'preparing', $7, $8, $8) returning id",
        )
        .bind(run.incident_id.0)
        .bind(run.command)
        .bind(run.action)
        .bind(run.params)
        .bind(run.requester)
        .bind(i64::from(run.required))
        .bind(ms(run.expires_at))
        .bind(ms(now))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(id)
    }

    /// Freezes who may approve run `run_id` (only possible while it is `preparing`).
    pub async fn insert_eligible(&mut self, run_id: i64, eligible: &[Eligible]) -> Result<()> {
        for e in eligible {
            sqlx::query(
                "insert into run_eligible_approvers (run_id, approver, source) values ($1, $2, $3)",
            )
            .bind(run_id)
            .bind(&e.user)
            .bind(e.source.to_string())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Loads a run with its approvals, locking its row on PostgreSQL until commit (SQLite
    /// has one writer: `begin immediate` already serialises).
    pub async fn lock_run(&mut self, id: i64) -> Result<Option<RunRow>> {
        let lock = match self.backend {
            Backend::Postgres => " for update",
            Backend::Sqlite => "",
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from command_runs where id = $1{lock}"
        ));
        let raw: Option<RawRun> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let approvals: Vec<(String, i64)> = sqlx::query_as(APPROVALS)
            .bind(id)
            .fetch_all(&mut *self.tx)
            .await?;
        decode_run(raw, approvals_of(approvals)).map(Some)
    }

    /// The approvers frozen for `run_id`, one entry per user.
    pub async fn eligible_users(&mut self, run_id: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "select distinct approver from run_eligible_approvers where run_id = $1 order by approver",
        )
        .bind(run_id)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    /// Records `approver`'s approval and counts the run's approvals, in this transaction
    /// (the caller holds the run's lock). A trigger refusal is returned, not raised: the
    /// transaction is then unusable and must be dropped.
    pub async fn approve(
        &mut self,
        run_id: i64,
        approver: &str,
        now: DateTime<Utc>,
    ) -> Result<ApprovalWrite> {
        let inserted = sqlx::query(
            "insert into run_approvals (run_id, approver, approved_at_ms) values ($1, $2, $3)",
        )
        .bind(run_id)
        .bind(approver)
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await;
        if let Err(e) = inserted {
            return match trigger_refusal(&e) {
                Some(rule) => Ok(ApprovalWrite::Refused(rule)),
                None => Err(e.into()),
            };
        }
        let (count,): (i64,) =
            sqlx::query_as("select count(*) from run_approvals where run_id = $1")
                .bind(run_id)
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(ApprovalWrite::Counted(count as u32))
    }

    /// Moves a run from `from` to `to` (and optionally sets preview, result, the executing
    /// lease, who closed it). `false` when the run was not in `from`: someone else moved it.
    pub async fn transition_run(
        &mut self,
        id: i64,
        from: RunState,
        to: RunState,
        set: RunUpdate<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let requested = (to == RunState::Pending).then(|| ms(now));
        let (closed_by, reason) = set.closed.unzip();
        let done = sqlx::query(
            "update command_runs set state = $1, preview = coalesce($2, preview), result = coalesce($3, result), \
             executing_until_ms = $4, updated_at_ms = $5, approval_requested_at_ms = coalesce(approval_requested_at_ms, $6), \
             closed_by = coalesce($7, closed_by), closed_at_ms = coalesce($8, closed_at_ms), close_reason = coalesce($9, close_reason) \
             where id = $10 and state = $11",
        )
        .bind(to.as_str())
        .bind(set.preview)
        .bind(set.result)
        .bind(set.executing_until.map(ms))
        .bind(ms(now))
        .bind(requested)
        .bind(closed_by)
        .bind(closed_by.map(|_| ms(now)))
        .bind(reason)
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Runs of an incident still waiting (preparing, pending or approved), for cancelling
    /// them when it is resolved.
    pub async fn open_runs_of(&mut self, incident_id: IncidentId) -> Result<Vec<(i64, RunState)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "select id, state from command_runs where incident_id = $1 \
             and state in ('preparing', 'pending', 'approved') order by id",
        )
        .bind(incident_id.0)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, s)| RunState::parse(&s).map(|s| (id, s)))
            .collect())
    }

    /// Remembers where the approval message of a run was posted.
    pub async fn set_approval_message(&mut self, id: i64, channel: &str, ts: &str) -> Result<()> {
        sqlx::query(
            "update command_runs set approval_channel = $1, approval_ts = $2 where id = $3",
        )
        .bind(channel)
        .bind(ts)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

/// Optional fields a transition also sets.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunUpdate<'a> {
    /// Preview JSON.
    pub preview: Option<&'a str>,
    /// Result JSON.
    pub result: Option<&'a str>,
    /// Lease on an executing run.
    pub executing_until: Option<DateTime<Utc>>,
    /// Who closed it (user id or `klaxon`) and why.
    pub closed: Option<(&'a str, &'a str)>,
}

impl Store {
    /// One run, with its approvals.
    pub async fn run(&self, id: i64) -> Result<Option<RunRow>> {
        let sql = sqlx::AssertSqlSafe(format!("select {COLUMNS} from command_runs where id = $1"));
        let raw: Option<RawRun> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let approvals: Vec<(String, i64)> = sqlx::query_as(APPROVALS)
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        decode_run(raw, approvals_of(approvals)).map(Some)
    }

    /// The approvers frozen for a run, with their sources (`role:commander`...).
    pub async fn eligible_approvers(&self, run_id: i64) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "select approver, source from run_eligible_approvers where run_id = $1 order by approver, source",
        )
        .bind(run_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Extends the lease of an executing run (the heartbeat while its SDK call is in
    /// flight); `false` when it is no longer executing.
    pub async fn renew_run_lease(&self, id: i64, until: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "update command_runs set executing_until_ms = $1 where id = $2 and state = 'executing'",
        )
        .bind(ms(until))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Runs stuck in `executing` whose lease ran out (their worker died).
    pub async fn interrupted_runs(&self, now: DateTime<Utc>) -> Result<Vec<RunRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from command_runs where state = 'executing' and executing_until_ms <= $1 order by id"
        ));
        let raws: Vec<RawRun> = sqlx::query_as(sql)
            .bind(ms(now))
            .fetch_all(self.pool())
            .await?;
        raws.into_iter()
            .map(|r| decode_run(r, Vec::new()))
            .collect()
    }
}
