//! The escalation ladder: who is paged, per severity, as an unmitigated incident ages.
//!
//! Steps name a *target* (`team`, `management`...); what a target means (a PagerDuty
//! routing key, Slack user groups and channels) is configuration, resolved at delivery so
//! routing keys never sit in the database.

use chrono::TimeDelta;

use super::severity::Severity;

/// One rung: page `target` once the incident is `after` old.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Target name (also the step's identity: a target is paged at most once per incident).
    pub target: String,
    /// Incident age at which the step fires.
    pub after: TimeDelta,
}

/// The ladder of every severity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationPolicy {
    ladders: [Vec<Step>; 4],
}

impl EscalationPolicy {
    /// A policy from one ladder per severity, SEV1 first.
    pub fn new(ladders: [Vec<Step>; 4]) -> Self {
        Self { ladders }
    }

    /// The ladder of `severity`, in firing order.
    pub fn ladder(&self, severity: Severity) -> &[Step] {
        &self.ladders[severity.index()]
    }

    /// Replaces the ladder of `severity` (config overrides).
    pub fn set_ladder(&mut self, severity: Severity, mut steps: Vec<Step>) {
        steps.sort_by_key(|s| s.after);
        self.ladders[severity.index()] = steps;
    }

    /// Every target any ladder names.
    pub fn targets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .ladders
            .iter()
            .flatten()
            .map(|s| s.target.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl Default for EscalationPolicy {
    /// DESIGN.md: SEV1 15 min team, 30 min management, 60 min executives, 120 min external
    /// stakeholders; SEV2 30 min management, 120 min executives; SEV3/4 none.
    fn default() -> Self {
        let step = |target: &str, minutes| Step {
            target: target.into(),
            after: TimeDelta::minutes(minutes),
        };
        Self::new([
            vec![
                step("team", 15),
                step("management", 30),
                step("executives", 60),
                step("external", 120),
            ],
            vec![step("management", 30), step("executives", 120)],
            vec![],
            vec![],
        ])
    }
}
