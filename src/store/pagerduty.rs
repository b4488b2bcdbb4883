//! PagerDuty links (issue 9): PagerDuty incident -> Klaxon incident, and each service's
//! alert-storm window (see `migrations/*/0012_pagerduty.sql`).

use chrono::{DateTime, Utc};

use super::{Backend, Result, Store, StoreTx, from_ms, ms};
use crate::domain::incident::IncidentId;
use crate::domain::pagerduty::StormWindow;

/// A PagerDuty incident linked to a Klaxon incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagerDutyLink {
    /// PagerDuty incident id.
    pub pd_incident: String,
    /// Klaxon incident.
    pub incident: IncidentId,
    /// Its page in PagerDuty.
    pub html_url: String,
    /// Its service.
    pub service_id: Option<String>,
    /// The service's team, by config.
    pub team: Option<String>,
    /// The service's stakeholder groups, by config.
    pub stakeholder_groups: Vec<String>,
}

impl StoreTx {
    /// The Klaxon incident a PagerDuty incident is linked to.
    pub async fn pagerduty_link(&mut self, pd_incident: &str) -> Result<Option<IncidentId>> {
        let row: Option<(i64,)> =
            sqlx::query_as("select incident_id from pagerduty_incidents where pd_incident_id = $1")
                .bind(pd_incident)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(row.map(|(id,)| IncidentId(id)))
    }

    /// Links a PagerDuty incident to `incident`; `false` when it already was linked.
    pub async fn link_pagerduty(
        &mut self,
        link: &PagerDutyLink,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "insert into pagerduty_incidents (pd_incident_id, incident_id, html_url, service_id, team, \
             stakeholder_groups, created_at_ms) values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
        )
        .bind(&link.pd_incident)
        .bind(link.incident.0)
        .bind(&link.html_url)
        .bind(&link.service_id)
        .bind(&link.team)
        .bind(serde_json::to_string(&link.stakeholder_groups).expect("names serialize"))
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The PagerDuty incidents linked to `incident`, oldest first.
    pub async fn pagerduty_links_of(&mut self, incident: IncidentId) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "select pd_incident_id from pagerduty_incidents where incident_id = $1 \
             order by created_at_ms, pd_incident_id",
        )
        .bind(incident.0)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Takes `service`'s storm row, creating it if missing, and holds it until commit:
    /// concurrent triggers of one service (on any replica) wait here for each other, so
    /// only one of them can open the service's incident. On PostgreSQL the insert of a
    /// row another transaction is inserting waits for that one to finish, and the select
    /// locks the row; SQLite has one writer. Returns the service's current window.
    pub async fn lock_storm(&mut self, service: &str) -> Result<Option<StormWindow>> {
        sqlx::query(
            "insert into pagerduty_storms (service_id, incident_id, opened_at_ms) values ($1, null, 0) \
             on conflict do nothing",
        )
        .bind(service)
        .execute(&mut *self.tx)
        .await?;
        let sql = match self.backend {
            Backend::Postgres => {
                "select incident_id, opened_at_ms from pagerduty_storms where service_id = $1 for update"
            }
            Backend::Sqlite => {
                "select incident_id, opened_at_ms from pagerduty_storms where service_id = $1"
            }
        };
        let row: Option<(Option<i64>, i64)> = sqlx::query_as(sql)
            .bind(service)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.and_then(|(incident, opened)| {
            incident.map(|id| StormWindow {
                incident: IncidentId(id),
                opened_at: from_ms(opened),
            })
        }))
    }

    /// Opens `service`'s window on `incident` (its row is locked by [`Self::lock_storm`]).
    pub async fn open_storm(
        &mut self,
        service: &str,
        incident: IncidentId,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "update pagerduty_storms set incident_id = $1, opened_at_ms = $2 where service_id = $3",
        )
        .bind(incident.0)
        .bind(ms(now))
        .bind(service)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// The PagerDuty incidents linked to `incident`, oldest first.
    pub async fn pagerduty_links(&self, incident: IncidentId) -> Result<Vec<PagerDutyLink>> {
        type Row = (String, i64, String, Option<String>, Option<String>, String);
        let rows: Vec<Row> = sqlx::query_as(
            "select pd_incident_id, incident_id, html_url, service_id, team, stakeholder_groups \
             from pagerduty_incidents where incident_id = $1 order by created_at_ms, pd_incident_id",
        )
        .bind(incident.0)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(pd_incident, id, html_url, service_id, team, groups)| {
                Ok(PagerDutyLink {
                    pd_incident,
                    incident: IncidentId(id),
                    html_url,
                    service_id,
                    team,
                    stakeholder_groups: super::decode("stakeholder groups", &groups)?,
                })
            })
            .collect()
    }
}
