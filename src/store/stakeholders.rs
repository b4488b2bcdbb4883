//! Queries for issue 9: the Statuspage incident of each Klaxon incident (migration 0013).

use chrono::{DateTime, Utc};

use super::{Result, Store, ms};
use crate::domain::incident::IncidentId;

impl Store {
    /// The Statuspage incident id opened for `incident` on `page_id`, if any.
    pub async fn statuspage_incident(
        &self,
        incident: IncidentId,
        page_id: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "select statuspage_id from statuspage_incidents where incident_id = $1 and page_id = $2",
        )
        .bind(incident.0)
        .bind(page_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Records the Statuspage incident opened for `incident` (the first one recorded
    /// stays: one Klaxon incident, one Statuspage incident).
    pub async fn save_statuspage_incident(
        &self,
        incident: IncidentId,
        page_id: &str,
        statuspage_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "insert into statuspage_incidents (incident_id, page_id, statuspage_id, created_at_ms) \
             values ($1, $2, $3, $4) on conflict (incident_id, page_id) do nothing",
        )
        .bind(incident.0)
        .bind(page_id)
        .bind(statuspage_id)
        .bind(ms(now))
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
