//! Reading the incidents of a claim's rows in one query, before their deliveries start.
//!
//! Each delivery looks at its incident first (its channel, its roles). One point read
//! per row was the largest per-delivery statement left on PostgreSQL: 52,000 in one
//! benchmark run, and the first wave of 5,001 posts went out at ~1,700/s; with one read
//! per claim, ~2,600/s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::OutboxWorker;
use crate::domain::incident::{Incident, IncidentId};
use crate::domain::outbound::LaneClass;
use crate::store::OutboxRow;

impl OutboxWorker {
    /// The incidents of a claim's rows, in one query (see the module). A failed read
    /// only costs the saving: each delivery then reads its own.
    pub(super) async fn prefetch(&self, rows: &[OutboxRow]) -> HashMap<IncidentId, Incident> {
        let mut ids: Vec<_> = rows
            .iter()
            .filter(|row| LaneClass::of(&row.ordering_key) != LaneClass::Announce)
            .filter_map(|row| row.incident_id.map(IncidentId))
            .collect();
        if ids.is_empty() {
            return HashMap::new();
        }
        ids.sort();
        ids.dedup();
        self.engine
            .store()
            .incidents(&ids)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the claimed rows' incidents; each delivery reads its own");
                HashMap::new()
            })
    }

    /// A clone to deliver `group`, holding its incident when it is one row of one.
    pub(super) fn for_group(
        &self,
        group: &[OutboxRow],
        incidents: &HashMap<IncidentId, Incident>,
    ) -> Self {
        let mut worker = self.clone();
        let incident = match group {
            [row] => row
                .incident_id
                .and_then(|id| incidents.get(&IncidentId(id)))
                .cloned(),
            _ => None,
        };
        worker.prefetched = Arc::new(Mutex::new(incident));
        worker
    }
}
