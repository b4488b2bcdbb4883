//! Approve and Deny clicks on a run: each lands on the timeline, refused ones included
//! (by the domain's rules or by the store's triggers); an approval that completes the
//! count, counted by the store under the run's lock, queues the execution.

use super::*;
use crate::domain::approval::{self, Click, ClickOutcome, Refusal, RunState, RunView};
use crate::domain::incident::{DomainError, EventKind};
use crate::domain::message::Message;
use crate::domain::outbound::Outbound;
use crate::engine::{Engine, EngineError, RequestMeta};
use crate::store::{ApprovalWrite, RunRow, RunUpdate};

impl Engine {
    /// One Approve/Deny click. Every click lands on the timeline, refused ones included;
    /// an approval that completes the count (counted by the store in this transaction)
    /// queues the execution, and every decision queues the approval message's update.
    pub async fn click_run(
        &self,
        meta: &RequestMeta,
        run_id: i64,
        click: Click,
        ctx: ClickContext,
        message: impl Fn(&ClickOutcome, &RunRow) -> Option<Message>,
    ) -> Result<ClickOutcome, EngineError> {
        let now = self.now();
        let missing = || {
            EngineError::Refused(DomainError::Invalid {
                field: "run",
                rule: format!("run #{run_id} does not exist"),
            })
        };
        let incident_id = self.run_incident(run_id).await?.ok_or_else(missing)?;
        let mut tx = self.store.begin().await?;
        let incident = tx
            .lock_incident(incident_id)
            .await?
            .ok_or(EngineError::NotFound(incident_id))?;
        let run = tx.lock_run(run_id).await?.ok_or_else(missing)?;
        let clicker = meta.actor.to_string();
        let outcome = match ctx.refused {
            Some(refusal) => ClickOutcome::Refused(refusal),
            None => {
                let view = RunView {
                    requester: run.requester.clone(),
                    approvers: run.approver_ids(),
                    eligible: tx.eligible_users(run_id).await?,
                    required: run.required as u32,
                    state: run.state,
                    expires_at: run.expires_at,
                };
                approval::click(
                    &view,
                    &clicker,
                    ctx.member,
                    click,
                    &ctx.policy,
                    incident.is_open(),
                    now,
                )
            }
        };
        let mut outbound = Vec::new();
        let (outcome, label) = match outcome {
            ClickOutcome::Recorded { .. } | ClickOutcome::Approved { .. } => {
                match tx.approve(run_id, &clicker, now).await? {
                    ApprovalWrite::Refused(rule) => {
                        // The transaction is spoiled (PostgreSQL aborts it): record the
                        // refusal in a fresh one.
                        drop(tx);
                        return self
                            .store_refused_click(meta, &run, click, rule, message)
                            .await;
                    }
                    ApprovalWrite::Counted(count) => {
                        let approvers = tx.lock_run(run_id).await?.map(|r| r.approver_ids());
                        let approvers = approvers.unwrap_or_default();
                        outbound.push(sync(run_id));
                        if count as i64 >= run.required {
                            tx.transition_run(
                                run_id,
                                RunState::Pending,
                                RunState::Approved,
                                RunUpdate::default(),
                                now,
                            )
                            .await?;
                            outbound.push((run_key(run_id), Outbound::ExecuteRun { run_id }));
                            (ClickOutcome::Approved { approvers }, "approved".to_string())
                        } else {
                            (ClickOutcome::Recorded { approvers }, "recorded".to_string())
                        }
                    }
                }
            }
            ClickOutcome::Denied | ClickOutcome::Cancelled => {
                let (to, reason) = if outcome == ClickOutcome::Denied {
                    (RunState::Denied, "denied")
                } else {
                    (RunState::Cancelled, "withdrawn by the requester")
                };
                let set = RunUpdate {
                    closed: Some((&clicker, reason)),
                    ..Default::default()
                };
                tx.transition_run(run_id, RunState::Pending, to, set, now)
                    .await?;
                outbound.push(sync(run_id));
                let label = if to == RunState::Denied {
                    "denied"
                } else {
                    "cancelled"
                };
                (outcome, label.to_string())
            }
            ClickOutcome::Refused(reason) => {
                if reason == Refusal::Expired {
                    let set = RunUpdate {
                        closed: Some(("klaxon", "nobody approved it in time")),
                        ..Default::default()
                    };
                    tx.transition_run(run_id, RunState::Pending, RunState::Expired, set, now)
                        .await?;
                    outbound.push(sync(run_id));
                }
                let label = format!("refused: {reason}");
                (ClickOutcome::Refused(reason), label)
            }
        };
        if let Some(message) = message(&outcome, &run) {
            outbound.push(Self::post(run.incident_id, message));
        }
        let event = EventKind::RunClicked {
            run_id,
            click: click.as_str().to_string(),
            outcome: label,
        };
        self.record(&mut tx, meta, run.incident_id, &[event], outbound, now)
            .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(outcome)
    }

    /// Records a click the store itself refused (a trigger of migration 0005).
    async fn store_refused_click(
        &self,
        meta: &RequestMeta,
        run: &RunRow,
        click: Click,
        rule: String,
        message: impl Fn(&ClickOutcome, &RunRow) -> Option<Message>,
    ) -> Result<ClickOutcome, EngineError> {
        let now = self.now();
        let outcome = ClickOutcome::Refused(Refusal::WrongPlace(rule));
        let mut tx = self.store.begin().await?;
        let event = EventKind::RunClicked {
            run_id: run.id,
            click: click.as_str().to_string(),
            outcome: match &outcome {
                ClickOutcome::Refused(r) => format!("refused: {r}"),
                _ => unreachable!(),
            },
        };
        let outbound = message(&outcome, run)
            .map(|m| Self::post(run.incident_id, m))
            .into_iter()
            .collect();
        self.record(&mut tx, meta, run.incident_id, &[event], outbound, now)
            .await?;
        let committed = tx.commit().await?;
        self.woke(committed);
        Ok(outcome)
    }
}
