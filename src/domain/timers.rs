//! Durable timers, decided purely: given an incident's state, which timers should be
//! pending and when ([`plan`]). The engine reconciles the `timers` table with this plan in
//! the same transaction as every change, so an update, a severity change or a resolution
//! reschedules or cancels timers without any special case, and the scheduler only ever
//! fires what the current state still wants.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::incident::{Incident, Policy, Status};

/// The RTO checkpoints, in percent of the RTO.
pub const RTO_CHECKPOINTS: [u8; 4] = [50, 75, 90, 100];

/// What a timer is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub enum TimerKind {
    /// Nobody posted a status update for the severity's cadence.
    StatusReminder,
    /// Nobody has taken the commander role by the response deadline.
    ResponseDeadline,
    /// An escalation ladder step (by target name).
    Escalation {
        /// Target name.
        target: String,
    },
    /// A share of the RTO has elapsed.
    RtoWatch {
        /// Percent of the RTO.
        percent: u8,
    },
    /// A stakeholder group's cadence passed with nothing sent to it (repeats).
    StakeholderCadence {
        /// Group name.
        group: String,
    },
    /// A security incident's regulatory notification is not acknowledged (repeats).
    RegulatoryReminder,
}

impl TimerKind {
    /// Stable identity, stored in the `timers.kind` column and the incident's fired set.
    pub fn key(&self) -> String {
        match self {
            TimerKind::StatusReminder => "status_reminder".into(),
            TimerKind::ResponseDeadline => "response_deadline".into(),
            TimerKind::Escalation { target } => format!("escalation:{target}"),
            TimerKind::RtoWatch { percent } => format!("rto:{percent}"),
            TimerKind::StakeholderCadence { group } => format!("stakeholder:{group}"),
            TimerKind::RegulatoryReminder => "regulatory".into(),
        }
    }

    /// The inverse of [`TimerKind::key`].
    pub fn from_key(key: &str) -> Option<TimerKind> {
        match key {
            "status_reminder" => Some(TimerKind::StatusReminder),
            "response_deadline" => Some(TimerKind::ResponseDeadline),
            "regulatory" => Some(TimerKind::RegulatoryReminder),
            _ => {
                if let Some(group) = key.strip_prefix("stakeholder:") {
                    return Some(TimerKind::StakeholderCadence {
                        group: group.into(),
                    });
                }
                if let Some(target) = key.strip_prefix("escalation:") {
                    Some(TimerKind::Escalation {
                        target: target.into(),
                    })
                } else {
                    key.strip_prefix("rto:")?
                        .parse()
                        .ok()
                        .map(|percent| TimerKind::RtoWatch { percent })
                }
            }
        }
    }

    /// Whether the timer fires at most once per incident (all but the repeating
    /// reminders).
    pub fn once_per_incident(&self) -> bool {
        !matches!(
            self,
            TimerKind::StatusReminder
                | TimerKind::StakeholderCadence { .. }
                | TimerKind::RegulatoryReminder
        )
    }
}

impl fmt::Display for TimerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A timer the incident wants pending.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimerSpec {
    /// What for.
    pub kind: TimerKind,
    /// When.
    pub due_at: DateTime<Utc>,
}

/// Whether people are still working to stop the impact (escalations fire only then).
pub fn is_unmitigated(status: Status) -> bool {
    matches!(status, Status::Investigating | Status::Identified)
}

/// The timers `incident` wants pending now, soonest first.
pub fn plan(incident: &Incident, policy: Policy<'_>) -> Vec<TimerSpec> {
    if !incident.is_open() {
        return Vec::new();
    }
    let sev = policy.severities.get(incident.severity);
    let mut timers = Vec::new();
    if let Some(every) = sev.status_every {
        let last = [
            incident.last_update.as_ref().map(|u| u.at),
            incident.last_reminder_at,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(incident.declared_at);
        timers.push(TimerSpec {
            kind: TimerKind::StatusReminder,
            due_at: last + every,
        });
    }
    let fired = |kind: &TimerKind| incident.fired_timers.contains(&kind.key());
    let deadline = TimerKind::ResponseDeadline;
    if incident.commander().is_none() && !fired(&deadline) {
        let due_at =
            policy
                .severities
                .respond_by(incident.severity, incident.declared_at, policy.calendar);
        timers.push(TimerSpec {
            kind: deadline,
            due_at,
        });
    }
    if is_unmitigated(incident.status) {
        for step in policy.escalation.ladder(incident.severity) {
            let kind = TimerKind::Escalation {
                target: step.target.clone(),
            };
            if !fired(&kind) {
                timers.push(TimerSpec {
                    kind,
                    due_at: incident.declared_at + step.after,
                });
            }
        }
    }
    for percent in RTO_CHECKPOINTS {
        let kind = TimerKind::RtoWatch { percent };
        if !fired(&kind) {
            let due_at = incident.declared_at + sev.rto * i32::from(percent) / 100;
            timers.push(TimerSpec { kind, due_at });
        }
    }
    timers.extend(super::stakeholders::timers(incident, policy.stakeholders));
    timers.sort_by(|a, b| a.due_at.cmp(&b.due_at).then_with(|| a.kind.cmp(&b.kind)));
    timers
}

/// How late a timer fired, when it is worth saying (more than a minute).
pub fn lateness(due_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<TimeDelta> {
    let late = now - due_at;
    (late > TimeDelta::minutes(1)).then_some(late)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::BusinessCalendar;
    use crate::domain::escalation::EscalationPolicy;
    use crate::domain::incident::{IncidentId, declare};
    use crate::domain::severity::{Severity, SeverityPolicies};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_new_sev1_wants_reminder_ladder_and_rto_watch() {
        let (sev, cal, esc) = (
            SeverityPolicies::default(),
            BusinessCalendar::default(),
            EscalationPolicy::default(),
        );
        let stake = crate::domain::stakeholders::StakeholderPolicy::default();
        let policy = Policy {
            severities: &sev,
            calendar: &cal,
            escalation: &esc,
            stakeholders: &stake,
        };
        let incident = declare(
            IncidentId(1),
            Severity::Sev1,
            "x",
            &crate::domain::incident::Actor::User("UALICE".into()),
            at("2026-11-23T10:00:00Z"),
            policy,
        )
        .unwrap()
        .incident;
        let plan: Vec<(String, String)> = plan(&incident, policy)
            .into_iter()
            .map(|t| (t.kind.key(), t.due_at.format("%H:%M").to_string()))
            .collect();
        let expected = [
            ("escalation:team", "10:15"),
            ("status_reminder", "10:30"),
            ("escalation:management", "10:30"),
            ("escalation:executives", "11:00"),
            ("escalation:external", "12:00"),
            ("rto:50", "12:00"),
            ("rto:75", "13:00"),
            ("rto:90", "13:36"),
            ("rto:100", "14:00"),
        ];
        assert_eq!(plan, expected.map(|(k, t)| (k.to_string(), t.to_string())));
    }

    #[test]
    fn keys_round_trip() {
        for kind in [
            TimerKind::StatusReminder,
            TimerKind::ResponseDeadline,
            TimerKind::Escalation {
                target: "management".into(),
            },
            TimerKind::RtoWatch { percent: 75 },
            TimerKind::StakeholderCadence {
                group: "customers".into(),
            },
            TimerKind::RegulatoryReminder,
        ] {
            assert_eq!(TimerKind::from_key(&kind.key()), Some(kind));
        }
        assert_eq!(TimerKind::from_key("nonsense"), None);
    }
}
