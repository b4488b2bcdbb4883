//! PagerDuty webhooks in (issue 9): each verified delivery is decided and committed in
//! ONE transaction with its event id recorded, so a replayed delivery does nothing and a
//! crash leaves either everything or nothing.
//!
//! A trigger takes its service's storm row first (see `store::pagerduty`), then the
//! incident it may join: concurrent triggers of one service, on any replica, decide one
//! after the other, and only the first opens an incident. Every transaction takes storm
//! rows before incidents, so none waits on another in the opposite order.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, RequestMeta};
use crate::domain::incident::{Decision, Incident, IncidentId};
use crate::domain::outbound::{Outbound, incident_key, pagerduty_rest_key};
use crate::domain::pagerduty::{
    self, EventType, Grouping, PagerDutyPolicy, PdIncident, WebhookEvent,
};
use crate::store::{PagerDutyLink, StoreTx};

/// What a delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PagerDutyOutcome {
    /// A trigger declared this incident.
    Declared(IncidentId),
    /// A trigger joined this open incident of the same service (alert storm).
    Grouped(IncidentId),
    /// A later event was recorded on this incident.
    Recorded(IncidentId),
    /// Nothing to do (the reason is logged): an unknown type, an incident Klaxon does not
    /// know, a trigger of a PagerDuty incident already linked, a resolved incident.
    Ignored(&'static str),
}

impl Engine {
    /// Applies one verified PagerDuty delivery. `meta.dedupe` must carry the event id:
    /// a repeat answers [`EngineError::Duplicate`] and changes nothing.
    pub async fn pagerduty_event(
        &self,
        meta: &RequestMeta,
        event: &WebhookEvent,
        pd_policy: &PagerDutyPolicy,
    ) -> Result<PagerDutyOutcome, EngineError> {
        let now = self.clock.now();
        let mut tx = self.begin(meta, now).await?;
        let outcome = match (&event.event_type, &event.incident) {
            (EventType::Triggered, Some(pd)) => {
                return self.triggered(tx, meta, pd, pd_policy, now).await;
            }
            (EventType::Other(_), _) => PagerDutyOutcome::Ignored("event type not handled"),
            _ => {
                let linked = match &event.incident_id {
                    Some(pd_id) => tx.pagerduty_link(pd_id).await?,
                    None => None,
                };
                match linked {
                    Some(id) => return self.follow_up(tx, meta, id, event, pd_policy, now).await,
                    None => PagerDutyOutcome::Ignored("PagerDuty incident not linked to Klaxon"),
                }
            }
        };
        // The event id stays recorded: a replay is answered as a duplicate.
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(outcome)
    }

    async fn triggered(
        &self,
        mut tx: StoreTx,
        meta: &RequestMeta,
        pd: &PdIncident,
        pd_policy: &PagerDutyPolicy,
        now: DateTime<Utc>,
    ) -> Result<PagerDutyOutcome, EngineError> {
        if tx.pagerduty_link(&pd.id).await?.is_some() {
            let committed = tx.commit().await?;
            self.woke(committed);
            return Ok(PagerDutyOutcome::Ignored(
                "PagerDuty incident already linked",
            ));
        }
        let service = pd
            .service
            .as_ref()
            .map(|s| s.id.clone())
            .filter(|_| pd_policy.storm_window > chrono::TimeDelta::zero());
        let window = match &service {
            Some(s) => tx.lock_storm(s).await?,
            None => None,
        };
        let open: Option<Incident> = match window {
            Some(w) => tx
                .lock_incident(w.incident)
                .await?
                .filter(Incident::is_open),
            None => None,
        };
        let route = pd_policy.route(pd).cloned().unwrap_or_default();
        let link = |incident| PagerDutyLink {
            pd_incident: pd.id.clone(),
            incident,
            html_url: pd.html_url.clone(),
            service_id: pd.service.as_ref().map(|s| s.id.clone()),
            team: route.team.clone(),
            stakeholder_groups: route.stakeholder_groups.clone(),
        };
        match pagerduty::group(window, open.is_some(), now, pd_policy.storm_window) {
            Grouping::Join(id) => {
                let incident = open.expect("joined only an open incident");
                let decision = pagerduty::grouped(&incident, pd);
                tx.link_pagerduty(&link(id), now).await?;
                self.commit(tx, meta, &decision, now).await?;
                tracing::info!(incident = %id, pd_incident = %pd.id, "PagerDuty trigger grouped into an open incident");
                Ok(PagerDutyOutcome::Grouped(id))
            }
            Grouping::Declare => {
                let id = tx.allocate_incident_id(now).await?;
                let mut decision = pagerduty::declare(id, pd, pd_policy, now, self.policy())?;
                // Stakeholders hear of it as of a declaration in Slack: the internal
                // groups the severity concerns, narrowed to the service's groups when it
                // names some (and the security rule on the title).
                crate::domain::stakeholders::on_declare(
                    &mut decision,
                    false,
                    now,
                    self.policy().stakeholders,
                    &route.stakeholder_groups,
                );
                tx.link_pagerduty(&link(id), now).await?;
                if let Some(service) = &service {
                    tx.open_storm(service, id, now).await?;
                }
                self.write_decisions(&mut tx, &[(meta, &decision)], now)
                    .await?;
                // After the decision's rows: the responders' row needs the channel, which
                // the first row of the incident's lane opens.
                for (lane, row) in after_declare(id, pd, pd_policy) {
                    tx.enqueue(&lane, Some(id), &row.to_json(), now).await?;
                }
                let committed = tx.commit().await?;
                self.woke(committed);
                tracing::info!(incident = %id, pd_incident = %pd.id, severity = %decision.incident.severity, "incident declared from PagerDuty");
                Ok(PagerDutyOutcome::Declared(id))
            }
        }
    }

    async fn follow_up(
        &self,
        mut tx: StoreTx,
        meta: &RequestMeta,
        id: IncidentId,
        event: &WebhookEvent,
        pd_policy: &PagerDutyPolicy,
        now: DateTime<Utc>,
    ) -> Result<PagerDutyOutcome, EngineError> {
        let incident = tx
            .lock_incident(id)
            .await?
            .ok_or(EngineError::NotFound(id))?;
        let Some(mut decision) =
            pagerduty::follow_up(&incident, event, pd_policy, now, self.policy())?
        else {
            let committed = tx.commit().await?;
            self.woke(committed);
            return Ok(PagerDutyOutcome::Ignored("incident already resolved"));
        };
        // Resolved from PagerDuty: the same clean-up as a resolve in Slack, but nothing
        // is sent back to PagerDuty (it already knows).
        self.close_runs_on_resolve(&mut tx, &incident, &mut decision, now)
            .await?;
        self.draft_on_resolve(&mut tx, &incident, &mut decision, meta, now)
            .await?;
        self.write_decisions(&mut tx, &[(meta, &decision)], now)
            .await?;
        // Reassigned or escalated to someone new: find them in Slack like a trigger's
        // assignees (the Slack ids the config maps are in the decision's invite).
        if let (EventType::Reassigned | EventType::Escalated, Some(pd)) =
            (&event.event_type, &event.incident)
        {
            for (lane, row) in responder_rows(id, pd, pd_policy) {
                tx.enqueue(&lane, Some(id), &row.to_json(), now).await?;
            }
        }
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(PagerDutyOutcome::Recorded(id))
    }

    /// When `decision` resolves `before` (in Klaxon), queues the resolve of every
    /// PagerDuty incident linked to it, in the same transaction. Whether it is sent
    /// (a REST token, `pagerduty.resolve_in_pagerduty`) is decided at delivery.
    pub(super) async fn resolve_pagerduty_on_resolve(
        &self,
        tx: &mut StoreTx,
        before: &Incident,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if !before.is_open() || decision.incident.is_open() {
            return Ok(());
        }
        let id = before.id;
        for pd_incident in tx.pagerduty_links_of(id).await? {
            let row = Outbound::PagerDutyResolve {
                incident_id: id,
                pd_incident,
            };
            tx.enqueue(&pagerduty_rest_key(id), Some(id), &row.to_json(), now)
                .await?;
        }
        Ok(())
    }
}

/// The rows a PagerDuty declaration adds to its decision's: the responders to find in
/// Slack and the note linking the PagerDuty incident back to Klaxon.
fn after_declare(
    id: IncidentId,
    pd: &PdIncident,
    pd_policy: &PagerDutyPolicy,
) -> Vec<(String, Outbound)> {
    let mut rows = responder_rows(id, pd, pd_policy);
    if pd_policy.rest_api {
        rows.push((
            pagerduty_rest_key(id),
            Outbound::PagerDutyNote {
                incident_id: id,
                pd_incident: pd.id.clone(),
            },
        ));
    }
    rows
}

/// The rows that bring `pd`'s assignees into the channel: those known by email (config)
/// or known by nobody straight to the incident's lane, those PagerDuty's REST API must
/// name first to its REST lane (which hands them on).
fn responder_rows(
    id: IncidentId,
    pd: &PdIncident,
    pd_policy: &PagerDutyPolicy,
) -> Vec<(String, Outbound)> {
    let plan = pagerduty::responders(&pd.assignees, pd_policy);
    let mut rows = Vec::new();
    let mut direct = plan.by_email;
    direct.extend(plan.unmapped);
    if !direct.is_empty() {
        rows.push((
            incident_key(id),
            Outbound::InviteResponders {
                incident_id: id,
                responders: direct,
            },
        ));
    }
    if !plan.look_up.is_empty() {
        rows.push((
            pagerduty_rest_key(id),
            Outbound::PagerDutyUsers {
                incident_id: id,
                users: plan.look_up,
            },
        ));
    }
    rows
}
