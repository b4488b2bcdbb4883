//! The `command_runs` table: recovery command runs and their conditional state changes.

use chrono::{DateTime, Utc};

use super::{Backend, Result, Store, StoreTx, decode, from_ms, ms};
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
    /// Who approved, in order.
    pub approvers: Vec<String>,
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
}

type RawRun = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    i64,
);

const COLUMNS: &str = "id, incident_id, command, action, params, requester, approvers, required_approvals, state, preview, result, expires_at_ms";

fn decode_run(raw: RawRun) -> Result<RunRow> {
    let (
        id,
        incident_id,
        command,
        action,
        params,
        requester,
        approvers,
        required,
        state,
        preview,
        result,
        expires,
    ) = raw;
    Ok(RunRow {
        id,
        incident_id: IncidentId(incident_id),
        command,
        action,
        params,
        requester,
        approvers: decode("run approvers", &approvers)?,
        required,
        state: RunState::parse(&state).ok_or(super::StoreError::UnknownValue {
            what: "run state",
            value: state,
        })?,
        preview,
        result,
        expires_at: from_ms(expires),
    })
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

    /// Loads a run, locking it on PostgreSQL until commit.
    pub async fn lock_run(&mut self, id: i64) -> Result<Option<RunRow>> {
        let sql = match self.backend {
            Backend::Postgres => {
                "select id, incident_id, command, action, params, requester, approvers, required_approvals, state, \
                 preview, result, expires_at_ms from command_runs where id = $1 for update"
            }
            Backend::Sqlite => {
                "select id, incident_id, command, action, params, requester, approvers, required_approvals, state, \
                 preview, result, expires_at_ms from command_runs where id = $1"
            }
        };
        let raw: Option<RawRun> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        raw.map(decode_run).transpose()
    }

    /// Moves a run from `from` to `to` (and optionally sets approvers, preview, result,
    /// the executing lease). `false` when the run was not in `from`: someone else moved it.
    pub async fn transition_run(
        &mut self,
        id: i64,
        from: RunState,
        to: RunState,
        set: RunUpdate<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let approvers = set
            .approvers
            .map(|a| serde_json::to_string(a).expect("strings serialize"));
        let done = sqlx::query(
            "update command_runs set state = $1, approvers = coalesce($2, approvers), preview = coalesce($3, preview), \
             result = coalesce($4, result), executing_until_ms = $5, updated_at_ms = $6 where id = $7 and state = $8",
        )
        .bind(to.as_str())
        .bind(approvers)
        .bind(set.preview)
        .bind(set.result)
        .bind(set.executing_until.map(ms))
        .bind(ms(now))
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Optional fields a transition also sets.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunUpdate<'a> {
    /// New approvers list.
    pub approvers: Option<&'a [String]>,
    /// Preview JSON.
    pub preview: Option<&'a str>,
    /// Result JSON.
    pub result: Option<&'a str>,
    /// Lease on an executing run.
    pub executing_until: Option<DateTime<Utc>>,
}

impl Store {
    /// One run.
    pub async fn run(&self, id: i64) -> Result<Option<RunRow>> {
        let sql = sqlx::AssertSqlSafe(format!("select {COLUMNS} from command_runs where id = $1"));
        let raw: Option<RawRun> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        raw.map(decode_run).transpose()
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
        raws.into_iter().map(decode_run).collect()
    }
}
