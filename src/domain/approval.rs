//! The two-person rule for recovery commands, as a pure state machine.
//!
//! A run moves `pending -> approved -> executing -> succeeded | failed | outcome_unknown`
//! (or `pending -> denied | expired | cancelled`, or `dry_run` when execution is switched
//! off). This module decides what one click does and whether an approved run may still
//! execute; the store applies each step as a conditional UPDATE so two racing clicks or
//! workers cannot both win, and its triggers refuse approvals by the requester or by
//! anyone outside the approvers frozen at request time.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Validated and stored; the preview is being prepared.
    Preparing,
    /// Waiting for approvals.
    Pending,
    /// Approved; waiting for a worker.
    Approved,
    /// A worker is running it.
    Executing,
    /// It ran and the API said yes.
    Succeeded,
    /// It ran and the API said no.
    Failed,
    /// Klaxon stopped while running it: nobody knows whether it happened. Never re-run.
    OutcomeUnknown,
    /// Someone denied it.
    Denied,
    /// Nobody approved it in time.
    Expired,
    /// Execution is switched off (`execution = "dry-run"`): stopped at the preview.
    DryRun,
    /// Withdrawn by the requester, or stopped because the incident was resolved.
    Cancelled,
}

impl RunState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Preparing => "preparing",
            RunState::Pending => "pending",
            RunState::Approved => "approved",
            RunState::Executing => "executing",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::OutcomeUnknown => "outcome_unknown",
            RunState::Denied => "denied",
            RunState::Expired => "expired",
            RunState::DryRun => "dry_run",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<RunState> {
        [
            RunState::Preparing,
            RunState::Pending,
            RunState::Approved,
            RunState::Executing,
            RunState::Succeeded,
            RunState::Failed,
            RunState::OutcomeUnknown,
            RunState::Denied,
            RunState::Expired,
            RunState::DryRun,
            RunState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the approval logic needs to know about a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunView {
    /// Who asked for it.
    pub requester: String,
    /// Who approved so far, in order.
    pub approvers: Vec<String>,
    /// Who may approve: frozen when the run was requested.
    pub eligible: Vec<String>,
    /// Distinct approvers needed besides the requester.
    pub required: u32,
    /// Current state.
    pub state: RunState,
    /// After this, clicks are refused.
    pub expires_at: DateTime<Utc>,
}

/// A button press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Click {
    /// Approve.
    Approve,
    /// Deny (by an approver) or withdraw (by the requester).
    Deny,
}

impl Click {
    /// The word recorded on the timeline.
    pub fn as_str(self) -> &'static str {
        match self {
            Click::Approve => "approve",
            Click::Deny => "deny",
        }
    }
}

/// Why a click changed nothing (shown to the clicker, recorded on the timeline).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    /// The requester tried to approve their own request.
    #[error("you asked for this run; a different person must approve it")]
    OwnRequest,
    /// The clicker was not an eligible approver when the run was requested.
    #[error(
        "you are not allowed to approve this command: its approvers were fixed when the run was requested ({0})"
    )]
    NotAllowed(String),
    /// Same approver clicked twice.
    #[error("you already approved this run; it needs a different person")]
    AlreadyApproved,
    /// Too late.
    #[error("this request expired; ask again with /incident run")]
    Expired,
    /// The incident is over.
    #[error("the incident is resolved; recovery commands can no longer run")]
    IncidentResolved,
    /// Not waiting for approval any more.
    #[error("this run is already {0}")]
    NotPending(RunState),
    /// The clicker's account may not take part (guest, external, bot).
    #[error("{0} cannot approve or deny recovery commands")]
    Account(String),
    /// The click did not come from where the run's approval message is.
    #[error("{0}")]
    WrongPlace(String),
    /// The command needs a step-up code that was missing, wrong or reused.
    #[error("{0}")]
    StepUp(String),
}

/// What a click does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClickOutcome {
    /// Approval recorded; more are needed.
    Recorded {
        /// Approvers after this click.
        approvers: Vec<String>,
    },
    /// Enough approvals: the run is approved.
    Approved {
        /// Approvers after this click.
        approvers: Vec<String>,
    },
    /// Denied by an eligible approver.
    Denied,
    /// Withdrawn by the requester.
    Cancelled,
    /// Refused; the state is unchanged except that an expired run becomes `expired`.
    Refused(Refusal),
}

/// Decides what `clicker` (an account of the workspace when `member` is true) pressing
/// `click` does at `now`. Eligibility is `run.eligible`, frozen at request time: a role
/// taken since grants nothing. `policy` describes the approver rule for refusals.
pub fn click(
    run: &RunView,
    clicker: &str,
    member: bool,
    click: Click,
    policy: &str,
    incident_open: bool,
    now: DateTime<Utc>,
) -> ClickOutcome {
    if run.state != RunState::Pending {
        return ClickOutcome::Refused(Refusal::NotPending(run.state));
    }
    if !incident_open {
        return ClickOutcome::Refused(Refusal::IncidentResolved);
    }
    if now >= run.expires_at {
        return ClickOutcome::Refused(Refusal::Expired);
    }
    let eligible = run.eligible.iter().any(|e| e == clicker);
    match click {
        // The requester may withdraw their own request; others need frozen eligibility.
        Click::Deny if clicker == run.requester => ClickOutcome::Cancelled,
        Click::Deny | Click::Approve if !member => {
            ClickOutcome::Refused(Refusal::Account("a guest or external account".into()))
        }
        Click::Deny if eligible => ClickOutcome::Denied,
        Click::Deny => ClickOutcome::Refused(Refusal::NotAllowed(policy.to_string())),
        Click::Approve if clicker == run.requester => ClickOutcome::Refused(Refusal::OwnRequest),
        Click::Approve if run.approvers.iter().any(|a| a == clicker) => {
            ClickOutcome::Refused(Refusal::AlreadyApproved)
        }
        Click::Approve if !eligible => {
            ClickOutcome::Refused(Refusal::NotAllowed(policy.to_string()))
        }
        Click::Approve => {
            let mut approvers = run.approvers.clone();
            approvers.push(clicker.to_string());
            if approvers.len() as u32 >= run.required {
                ClickOutcome::Approved { approvers }
            } else {
                ClickOutcome::Recorded { approvers }
            }
        }
    }
}

/// Why an approved run must not execute after all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LateRefusal {
    /// Its request expired before a worker got to it.
    #[error("the request expired before it could run; ask again with /incident run")]
    Expired,
    /// The incident was resolved meanwhile.
    #[error("the incident was resolved before it could run")]
    IncidentResolved,
    /// Its approvals no longer add up (a hand edit, or a bug).
    #[error("its approvals are no longer valid ({have} of {need})")]
    Approvals {
        /// Valid approvals found.
        have: u32,
        /// Approvals needed.
        need: u32,
    },
}

impl LateRefusal {
    /// The state the run ends in.
    pub fn state(&self) -> RunState {
        match self {
            LateRefusal::Expired => RunState::Expired,
            _ => RunState::Cancelled,
        }
    }
}

/// Checks again, when a worker is about to execute an approved run, that it may: the
/// request has not expired, the incident is open and the approvals still add up.
pub fn may_execute(
    expires_at: DateTime<Utc>,
    incident_open: bool,
    approvals: u32,
    required: u32,
    now: DateTime<Utc>,
) -> Result<(), LateRefusal> {
    if !incident_open {
        return Err(LateRefusal::IncidentResolved);
    }
    if now >= expires_at {
        return Err(LateRefusal::Expired);
    }
    if approvals < required {
        return Err(LateRefusal::Approvals {
            have: approvals,
            need: required,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn run(required: u32) -> RunView {
        RunView {
            requester: "UREQ".into(),
            approvers: vec![],
            eligible: vec!["UREQ".into(), "UA".into(), "UB".into(), "UAPP".into()],
            required,
            state: RunState::Pending,
            expires_at: now() + TimeDelta::minutes(15),
        }
    }

    fn press(r: &RunView, who: &str, c: Click) -> ClickOutcome {
        click(r, who, true, c, "roles commander", true, now())
    }

    #[test]
    fn a_second_person_approves() {
        assert_eq!(
            press(&run(1), "UAPP", Click::Approve),
            ClickOutcome::Approved {
                approvers: vec!["UAPP".into()]
            }
        );
    }

    #[test]
    fn self_approval_is_refused_even_when_eligible() {
        assert_eq!(
            press(&run(1), "UREQ", Click::Approve),
            ClickOutcome::Refused(Refusal::OwnRequest)
        );
    }

    #[test]
    fn two_approvals_need_two_different_people() {
        let mut r = run(2);
        assert_eq!(
            press(&r, "UA", Click::Approve),
            ClickOutcome::Recorded {
                approvers: vec!["UA".into()]
            }
        );
        r.approvers.push("UA".into());
        assert_eq!(
            press(&r, "UA", Click::Approve),
            ClickOutcome::Refused(Refusal::AlreadyApproved)
        );
        assert!(matches!(
            press(&r, "UB", Click::Approve),
            ClickOutcome::Approved { .. }
        ));
    }

    #[test]
    fn only_the_frozen_set_approves() {
        assert_eq!(
            press(&run(1), "ULATECOMER", Click::Approve),
            ClickOutcome::Refused(Refusal::NotAllowed("roles commander".into()))
        );
        assert_eq!(
            press(&run(1), "ULATECOMER", Click::Deny),
            ClickOutcome::Refused(Refusal::NotAllowed("roles commander".into()))
        );
    }

    #[test]
    fn guests_and_outsiders_are_refused_even_when_eligible() {
        assert!(matches!(
            click(&run(1), "UA", false, Click::Approve, "", true, now()),
            ClickOutcome::Refused(Refusal::Account(_))
        ));
    }

    #[test]
    fn expiry_resolution_and_state_are_checked() {
        let late = now() + TimeDelta::minutes(15);
        assert_eq!(
            click(&run(1), "UA", true, Click::Approve, "", true, late),
            ClickOutcome::Refused(Refusal::Expired)
        );
        assert_eq!(
            click(&run(1), "UA", true, Click::Approve, "", false, now()),
            ClickOutcome::Refused(Refusal::IncidentResolved)
        );
        let mut done = run(1);
        done.state = RunState::Executing;
        assert_eq!(
            press(&done, "UA", Click::Approve),
            ClickOutcome::Refused(Refusal::NotPending(RunState::Executing))
        );
    }

    #[test]
    fn the_requester_withdraws_an_approver_denies() {
        assert_eq!(press(&run(1), "UREQ", Click::Deny), ClickOutcome::Cancelled);
        assert_eq!(press(&run(1), "UA", Click::Deny), ClickOutcome::Denied);
    }

    #[test]
    fn execution_is_checked_again() {
        let exp = now() + TimeDelta::minutes(1);
        assert_eq!(may_execute(exp, true, 1, 1, now()), Ok(()));
        assert_eq!(may_execute(exp, true, 1, 1, exp), Err(LateRefusal::Expired));
        assert_eq!(
            may_execute(exp, false, 1, 1, now()),
            Err(LateRefusal::IncidentResolved)
        );
        assert_eq!(
            may_execute(exp, true, 0, 1, now()),
            Err(LateRefusal::Approvals { have: 0, need: 1 })
        );
        assert_eq!(LateRefusal::Expired.state(), RunState::Expired);
        assert_eq!(LateRefusal::IncidentResolved.state(), RunState::Cancelled);
    }
}
