//! Role changes through the engine: the domain's access rules decide under the incident's
//! lock (so two hand-overs cannot both pass on a stale view), and a refused attempt is
//! recorded on the timeline too.

use super::{Engine, EngineError, Outcome, RequestMeta};
use crate::domain::access::{self, RoleActor, RoleRefusal, UserKind};
use crate::domain::incident::{self, Change, DomainError, EventKind, IncidentId, Role};

/// What the handler learned about the people involved in a role change.
#[derive(Clone, Debug)]
pub struct RoleRequest {
    /// The role.
    pub role: Role,
    /// Who is to hold it.
    pub user: String,
    /// The asker's account kind (`None`: Slack could not say; refused).
    pub actor_kind: Option<UserKind>,
    /// Whether the asker is in an incident-admin user group.
    pub actor_is_admin: bool,
    /// The new holder's account kind, when looked up.
    pub target_kind: Option<UserKind>,
}

impl Engine {
    /// Gives `request.role` to `request.user` if the access rules allow the asker to.
    pub async fn assign_role(
        &self,
        meta: &RequestMeta,
        id: IncidentId,
        request: RoleRequest,
    ) -> Result<Outcome, EngineError> {
        let now = self.now();
        let actor_id = meta.actor.to_string();
        let (tx, incident) = self.begin_on(meta, id, now).await?;
        let allowed = match request.actor_kind {
            _ if !incident.is_open() => Ok(()),
            // Slack could not say who this is: fail closed, and say so.
            None => Err(RoleRefusal::Account(
                "an account Klaxon could not check with Slack (users.info failed; try again)"
                    .into(),
            )),
            Some(kind) => {
                let actor = RoleActor {
                    user: &actor_id,
                    kind,
                    is_admin: request.actor_is_admin,
                };
                access::may_assign_role(
                    &incident.roles,
                    &actor,
                    request.role,
                    &request.user,
                    request.target_kind,
                )
            }
        };
        if let Err(refusal) = allowed {
            drop(tx);
            // Recorded without the request's dedupe key: the handler's reply carries it.
            let mut tx = self.store.begin().await?;
            tx.lock_incident(id).await?;
            let event = EventKind::RoleRefused {
                role: request.role,
                user: request.user.clone(),
                reason: refusal.to_string(),
            };
            tx.append_events(id, now, &meta.actor, &meta.request_id, &[event])
                .await?;
            let committed = tx.commit().await?;
            self.woke(committed);
            return Err(DomainError::NotAllowed(format!(
                "You cannot make <@{}> the {}: {refusal}.",
                request.user,
                request.role.title()
            ))
            .into());
        }
        let change = Change::AssignRole {
            role: request.role,
            user: request.user,
        };
        let decision = incident::apply(&incident, change, &meta.actor, now, self.policy())?;
        self.commit(tx, meta, &decision, now).await?;
        Ok(Outcome {
            incident: decision.incident,
            reply: decision.reply,
        })
    }
}
