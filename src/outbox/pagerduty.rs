//! Delivery of the PagerDuty-in rows (issue 9): user look-ups, responder invitations, the
//! note linking PagerDuty to Klaxon, and resolves sent back to PagerDuty.
//!
//! REST calls run on `page:N:rest` lanes (page class: never behind Slack); the Slack side
//! of the responders runs on the incident's own lane, after its channel is opened.

use crate::domain::incident::{Actor, IncidentId};
use crate::domain::outbound::incident_key;
use crate::domain::pagerduty::{self, Reference, Responder};
use crate::engine::{EngineError, RequestMeta};
use crate::slack::render;
use crate::store::OutboxRow;

use super::{DeliveryError, Outbound, OutboxWorker};

impl OutboxWorker {
    /// `GET /users/{id}` for each assignee (cached), then the responders to the incident's
    /// lane. A user PagerDuty does not know, or without a REST client, is passed on
    /// without an email (listed as unmapped). The hand-over is deduplicated by this row's
    /// id, so a retry after a crash does not queue it twice.
    pub(super) async fn pagerduty_users(
        &self,
        row: &OutboxRow,
        incident_id: IncidentId,
        users: Vec<Reference>,
    ) -> Result<(), DeliveryError> {
        let mut responders = Vec::with_capacity(users.len());
        for user in users {
            let found = match &self.outlets.pagerduty_rest {
                Some(rest) => match rest.user(&user.id, self.clock.now()).await {
                    Ok(found) => found,
                    // A refusal (a revoked token, a user PagerDuty will not show) will not
                    // pass on retry: the responder is passed on unmapped, so they are still
                    // named in the channel. Transient failures retry the row.
                    Err(e) if e.is_permanent() => {
                        tracing::warn!(incident = %incident_id, pd_user = %user.id, error = %e, "PagerDuty user look-up refused; listing them unmapped");
                        None
                    }
                    Err(e) => return Err(e.into()),
                },
                None => None,
            };
            responders.push(Responder {
                pd_id: user.id.clone(),
                name: found
                    .as_ref()
                    .and_then(|u| u.name.clone())
                    .unwrap_or_else(|| user.name().to_string()),
                email: found.and_then(|u| u.email),
            });
        }
        let meta = RequestMeta {
            actor: Actor::Klaxon,
            request_id: format!("outbox-{}", row.id),
            dedupe: Some(("outbox".into(), format!("pagerduty-users-{}", row.id))),
        };
        let next = Outbound::InviteResponders {
            incident_id,
            responders,
        };
        match self
            .engine
            .send(&meta, &incident_key(incident_id), next)
            .await
        {
            Ok(()) | Err(EngineError::Duplicate) => Ok(()),
            Err(e) => Err(DeliveryError::Internal(e.to_string())),
        }
    }

    /// Finds each responder in Slack by email, invites those found, and lists everyone in
    /// the channel, naming those who could not be mapped.
    pub(super) async fn invite_responders(
        &self,
        incident_id: IncidentId,
        responders: Vec<Responder>,
    ) -> Result<(), DeliveryError> {
        let incident = self.incident(incident_id).await?;
        let channel = Self::channel_of(&incident)?.id.clone();
        let mut found = Vec::with_capacity(responders.len());
        for responder in responders {
            let slack_id = match &responder.email {
                Some(email) => {
                    self.slack(
                        "users.lookupByEmail",
                        None,
                        self.outlets.slack.user_by_email(email),
                    )
                    .await?
                }
                None => None,
            };
            found.push((responder, slack_id));
        }
        let mut invite: Vec<String> = found.iter().filter_map(|(_, s)| s.clone()).collect();
        invite.sort();
        invite.dedup();
        self.invite(&channel, &invite).await?;
        let message = pagerduty::responders_message(&found);
        let (text, blocks) = render::message(&message, Some(&channel));
        self.post_once(&channel, &text, &blocks, None).await?;
        Ok(())
    }

    /// The note on the PagerDuty incident linking it to Klaxon; skipped without a REST
    /// token or a `From:` email.
    pub(super) async fn pagerduty_note(
        &self,
        incident_id: IncidentId,
        pd_incident: &str,
    ) -> Result<(), DeliveryError> {
        let Some(rest) = self
            .outlets
            .pagerduty_rest
            .as_ref()
            .filter(|r| r.can_write())
        else {
            tracing::info!(incident = %incident_id, "no PagerDuty REST token or from_email; no note written");
            return Ok(());
        };
        let incident = self.incident(incident_id).await?;
        let channel = incident.channel.as_ref().map(|c| c.name.as_str());
        let text = pagerduty::note_text(&incident, channel);
        Ok(rest.add_note(pd_incident, &text).await?)
    }

    /// Resolves the PagerDuty incident after a resolve in Klaxon, when configured.
    pub(super) async fn pagerduty_resolve(
        &self,
        incident_id: IncidentId,
        pd_incident: &str,
    ) -> Result<(), DeliveryError> {
        let rest = self
            .outlets
            .pagerduty_rest
            .as_ref()
            .filter(|r| r.can_write() && self.outlets.resolve_in_pagerduty);
        let Some(rest) = rest else {
            tracing::info!(incident = %incident_id, %pd_incident, "PagerDuty incident not resolved from Klaxon (no REST token, no from_email, or resolve_in_pagerduty = false)");
            return Ok(());
        };
        Ok(rest.resolve(pd_incident).await?)
    }
}
