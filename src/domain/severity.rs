//! Severities and the policy attached to each: how fast someone must respond, the recovery
//! objectives (RTO/RPO) and how often the channel expects a status update.
//!
//! Defaults come from the seed runbooks (DESIGN.md, "Severity policy"); every value can be
//! overridden in the config.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::calendar::BusinessCalendar;

/// How bad an incident is. SEV1 is the worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Complete outage, all users.
    Sev1,
    /// Major degradation.
    Sev2,
    /// Minor, a workaround exists.
    Sev3,
    /// Minimal impact.
    Sev4,
}

impl Severity {
    /// All severities, worst first.
    pub const ALL: [Severity; 4] = [
        Severity::Sev1,
        Severity::Sev2,
        Severity::Sev3,
        Severity::Sev4,
    ];

    /// Parses `1`, `sev1`, `SEV1`, `s1` (any case) into a severity.
    pub fn parse(text: &str) -> Option<Severity> {
        let lower = text.trim().to_ascii_lowercase();
        let digits = lower
            .strip_prefix("sev")
            .or_else(|| lower.strip_prefix('s'))
            .unwrap_or(&lower);
        match digits {
            "1" => Some(Severity::Sev1),
            "2" => Some(Severity::Sev2),
            "3" => Some(Severity::Sev3),
            "4" => Some(Severity::Sev4),
            _ => None,
        }
    }

    /// Index into per-severity tables (SEV1 = 0).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SEV{}", self.index() + 1)
    }
}

/// When someone must have responded to a new incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespondWithin {
    /// A fixed time after the declaration.
    After(TimeDelta),
    /// The start of the next business day in the team's time zone.
    NextBusinessDay,
}

/// What one severity promises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeverityPolicy {
    /// One-line meaning shown to people ("complete outage, all users").
    pub meaning: String,
    /// Response deadline.
    pub respond_within: RespondWithin,
    /// Recovery time objective: service back within this long.
    pub rto: TimeDelta,
    /// Recovery point objective: at most this much data may be lost.
    pub rpo: TimeDelta,
    /// How often the channel expects a status update; `None` means no reminders.
    pub status_every: Option<TimeDelta>,
}

/// The policy for every severity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeverityPolicies {
    by_severity: [SeverityPolicy; 4],
}

impl SeverityPolicies {
    /// Builds the table from one policy per severity, SEV1 first.
    pub fn new(by_severity: [SeverityPolicy; 4]) -> Self {
        Self { by_severity }
    }

    /// The policy of `severity`.
    pub fn get(&self, severity: Severity) -> &SeverityPolicy {
        &self.by_severity[severity.index()]
    }

    /// Mutable access, for config overrides.
    pub fn get_mut(&mut self, severity: Severity) -> &mut SeverityPolicy {
        &mut self.by_severity[severity.index()]
    }

    /// The moment someone must have responded to an incident of `severity` declared at
    /// `declared_at`.
    pub fn respond_by(
        &self,
        severity: Severity,
        declared_at: DateTime<Utc>,
        calendar: &BusinessCalendar,
    ) -> DateTime<Utc> {
        match self.get(severity).respond_within {
            RespondWithin::After(delta) => declared_at + delta,
            RespondWithin::NextBusinessDay => calendar.next_business_day_start(declared_at),
        }
    }
}

impl Default for SeverityPolicies {
    /// The seed runbooks' table (DESIGN.md).
    fn default() -> Self {
        let policy =
            |meaning: &str, respond, rto_h, rpo_h, every_min: Option<i64>| SeverityPolicy {
                meaning: meaning.to_string(),
                respond_within: respond,
                rto: TimeDelta::hours(rto_h),
                rpo: TimeDelta::hours(rpo_h),
                status_every: every_min.map(TimeDelta::minutes),
            };
        Self::new([
            policy(
                "complete outage, all users",
                RespondWithin::After(TimeDelta::minutes(15)),
                4,
                1,
                Some(30),
            ),
            policy(
                "major degradation",
                RespondWithin::After(TimeDelta::minutes(30)),
                8,
                4,
                Some(60),
            ),
            policy(
                "minor, workaround exists",
                RespondWithin::After(TimeDelta::hours(2)),
                24,
                8,
                Some(240),
            ),
            policy(
                "minimal impact",
                RespondWithin::NextBusinessDay,
                72,
                24,
                None,
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spellings_people_type() {
        for text in ["1", "sev1", "SEV1", "Sev1", "s1", " sev1 "] {
            assert_eq!(Severity::parse(text), Some(Severity::Sev1), "{text}");
        }
        assert_eq!(Severity::parse("sev4"), Some(Severity::Sev4));
        for text in ["0", "5", "sev", "", "high", "sev12"] {
            assert_eq!(Severity::parse(text), None, "{text}");
        }
    }

    #[test]
    fn defaults_match_the_runbooks() {
        let p = SeverityPolicies::default();
        assert_eq!(
            p.get(Severity::Sev1).respond_within,
            RespondWithin::After(TimeDelta::minutes(15))
        );
        assert_eq!(p.get(Severity::Sev1).rto, TimeDelta::hours(4));
        assert_eq!(p.get(Severity::Sev2).rpo, TimeDelta::hours(4));
        assert_eq!(
            p.get(Severity::Sev2).status_every,
            Some(TimeDelta::hours(1))
        );
        assert_eq!(
            p.get(Severity::Sev3).respond_within,
            RespondWithin::After(TimeDelta::hours(2))
        );
        assert_eq!(p.get(Severity::Sev4).status_every, None);
        assert_eq!(Severity::Sev3.to_string(), "SEV3");
    }
}
