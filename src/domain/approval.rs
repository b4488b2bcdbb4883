//! The two-person rule for recovery commands, as a pure state machine.
//!
//! A run moves `pending -> approved -> executing -> succeeded | failed | outcome_unknown`
//! (or `pending -> denied | expired`, or `dry_run` when execution is switched off). This
//! module decides what one click does; the store applies each step as a conditional
//! UPDATE so two racing clicks or workers cannot both win.

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
    /// Deny.
    Deny,
}

/// Why a click changed nothing (shown to the clicker, recorded on the timeline).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    /// The requester tried to approve their own request.
    #[error("you asked for this run; a different person must approve it")]
    OwnRequest,
    /// The clicker is not allowed by the command's approver policy.
    #[error("you are not allowed to approve this command ({0})")]
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
    /// Denied.
    Denied,
    /// Refused; the state is unchanged except that an expired run becomes `expired`.
    Refused(Refusal),
}

/// Decides what `clicker` pressing `click` does at `now`. `may_approve` is the command's
/// approver policy evaluated for the clicker (with `policy` describing it), and
/// `incident_open` whether the incident still is.
pub fn click(
    run: &RunView,
    clicker: &str,
    click: Click,
    may_approve: bool,
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
    match click {
        // The requester may withdraw their own request; others need the approver policy.
        Click::Deny if clicker == run.requester || may_approve => ClickOutcome::Denied,
        Click::Deny => ClickOutcome::Refused(Refusal::NotAllowed(policy.to_string())),
        Click::Approve if clicker == run.requester => ClickOutcome::Refused(Refusal::OwnRequest),
        Click::Approve if run.approvers.iter().any(|a| a == clicker) => {
            ClickOutcome::Refused(Refusal::AlreadyApproved)
        }
        Click::Approve if !may_approve => {
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
            required,
            state: RunState::Pending,
            expires_at: now() + TimeDelta::minutes(15),
        }
    }

    #[test]
    fn a_second_person_approves() {
        assert_eq!(
            click(&run(1), "UAPP", Click::Approve, true, "", true, now()),
            ClickOutcome::Approved {
                approvers: vec!["UAPP".into()]
            }
        );
    }

    #[test]
    fn self_approval_is_refused_even_when_allowed() {
        assert_eq!(
            click(&run(1), "UREQ", Click::Approve, true, "", true, now()),
            ClickOutcome::Refused(Refusal::OwnRequest)
        );
    }

    #[test]
    fn two_approvals_need_two_different_people() {
        let mut r = run(2);
        assert_eq!(
            click(&r, "UA", Click::Approve, true, "", true, now()),
            ClickOutcome::Recorded {
                approvers: vec!["UA".into()]
            }
        );
        r.approvers.push("UA".into());
        assert_eq!(
            click(&r, "UA", Click::Approve, true, "", true, now()),
            ClickOutcome::Refused(Refusal::AlreadyApproved)
        );
        assert!(matches!(
            click(&r, "UB", Click::Approve, true, "", true, now()),
            ClickOutcome::Approved { .. }
        ));
    }

    #[test]
    fn policy_expiry_resolution_and_state_are_checked() {
        assert_eq!(
            click(
                &run(1),
                "UX",
                Click::Approve,
                false,
                "roles: commander",
                true,
                now()
            ),
            ClickOutcome::Refused(Refusal::NotAllowed("roles: commander".into()))
        );
        let late = now() + TimeDelta::minutes(15);
        assert_eq!(
            click(&run(1), "UA", Click::Approve, true, "", true, late),
            ClickOutcome::Refused(Refusal::Expired)
        );
        assert_eq!(
            click(&run(1), "UA", Click::Approve, true, "", false, now()),
            ClickOutcome::Refused(Refusal::IncidentResolved)
        );
        let mut done = run(1);
        done.state = RunState::Executing;
        assert_eq!(
            click(&done, "UA", Click::Approve, true, "", true, now()),
            ClickOutcome::Refused(Refusal::NotPending(RunState::Executing))
        );
    }

    #[test]
    fn the_requester_may_withdraw_others_need_the_policy() {
        assert_eq!(
            click(&run(1), "UREQ", Click::Deny, false, "", true, now()),
            ClickOutcome::Denied
        );
        assert_eq!(
            click(&run(1), "UA", Click::Deny, true, "", true, now()),
            ClickOutcome::Denied
        );
        assert!(matches!(
            click(&run(1), "UX", Click::Deny, false, "", true, now()),
            ClickOutcome::Refused(_)
        ));
    }
}
