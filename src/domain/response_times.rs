//! How fast an incident was handled, read from its timeline: time to acknowledge
//! (declared -> someone holds command), to mitigate (-> monitoring, or resolved without
//! passing through it) and to resolve; and `klaxon report`'s table over many incidents.
//!
//! Pure: derived from recorded events only, so the numbers can be recomputed at any time
//! and agree with the post-mortem.

use chrono::{DateTime, TimeDelta, Utc};

use super::incident::{EventKind, Role, Status};
use super::render::duration;
use super::severity::{Severity, SeverityPolicies};
use super::timeline::TimelineEntry;

/// The milestones of one incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseTimes {
    /// When it was declared.
    pub declared_at: DateTime<Utc>,
    /// The response deadline set at declaration.
    pub respond_by: DateTime<Utc>,
    /// Severity at declaration.
    pub declared_severity: Severity,
    /// The most severe level it reached (SEV1 beats SEV2); its targets apply.
    pub highest_severity: Severity,
    /// First moment someone held command.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// First moment it was monitoring (or resolved, if it never was).
    pub mitigated_at: Option<DateTime<Utc>>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Minutes of data lost, when recorded (the last entry counts).
    pub rpo_minutes: Option<u32>,
}

impl ResponseTimes {
    /// Declared -> acknowledged.
    pub fn to_acknowledge(&self) -> Option<TimeDelta> {
        self.acknowledged_at.map(|t| t - self.declared_at)
    }
    /// Declared -> mitigated.
    pub fn to_mitigate(&self) -> Option<TimeDelta> {
        self.mitigated_at.map(|t| t - self.declared_at)
    }
    /// Declared -> resolved.
    pub fn to_resolve(&self) -> Option<TimeDelta> {
        self.resolved_at.map(|t| t - self.declared_at)
    }
    /// Whether command was taken by the response deadline (`None` while nobody has and
    /// the deadline is still ahead of `now`).
    pub fn response_met(&self, now: DateTime<Utc>) -> Option<bool> {
        match self.acknowledged_at {
            Some(t) => Some(t <= self.respond_by),
            None if now > self.respond_by => Some(false),
            None => None,
        }
    }
    /// Whether it was resolved within the RTO of its highest severity (`None` while
    /// open and within it).
    pub fn rto_met(&self, policies: &SeverityPolicies, now: DateTime<Utc>) -> Option<bool> {
        let rto = policies.get(self.highest_severity).rto;
        match self.to_resolve() {
            Some(d) => Some(d <= rto),
            None if now - self.declared_at > rto => Some(false),
            None => None,
        }
    }
    /// Whether the data lost is within the RPO (`None`: not recorded).
    pub fn rpo_met(&self, policies: &SeverityPolicies) -> Option<bool> {
        let rpo = policies.get(self.highest_severity).rpo;
        self.rpo_minutes
            .map(|m| TimeDelta::minutes(i64::from(m)) <= rpo)
    }
}

/// Reads the milestones from an incident's timeline; `None` without a declaration.
pub fn from_record(entries: &[TimelineEntry]) -> Option<ResponseTimes> {
    let first = entries.first()?;
    let EventKind::Declared {
        severity,
        respond_by,
        ..
    } = &first.kind
    else {
        return None;
    };
    let mut t = ResponseTimes {
        declared_at: first.at,
        respond_by: *respond_by,
        declared_severity: *severity,
        highest_severity: *severity,
        acknowledged_at: None,
        mitigated_at: None,
        resolved_at: None,
        rpo_minutes: None,
    };
    for e in entries {
        match &e.kind {
            EventKind::RoleAssigned {
                role: Role::Commander,
                ..
            } if t.acknowledged_at.is_none() => t.acknowledged_at = Some(e.at),
            EventKind::SeverityChanged { to, .. } => {
                t.highest_severity = t.highest_severity.min(*to);
            }
            EventKind::StatusChanged { to, .. } => {
                if matches!(to, Status::Monitoring | Status::Resolved) && t.mitigated_at.is_none() {
                    t.mitigated_at = Some(e.at);
                }
                if *to == Status::Resolved {
                    t.resolved_at = Some(e.at);
                }
            }
            EventKind::RpoRecorded { minutes_lost } => t.rpo_minutes = Some(*minutes_lost),
            _ => {}
        }
    }
    Some(t)
}

/// Percentile (nearest rank) of sorted durations.
fn percentile(sorted: &[TimeDelta], p: usize) -> Option<TimeDelta> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn cell(d: Option<TimeDelta>) -> String {
    d.map(duration).unwrap_or_else(|| "-".into())
}

/// `klaxon report`: one row per severity (an incident counts under the highest severity
/// it reached) with medians and 90th percentiles.
pub fn report_table(
    incidents: &[ResponseTimes],
    policies: &SeverityPolicies,
    now: DateTime<Utc>,
) -> String {
    let header = [
        "severity",
        "incidents",
        "open",
        "ack p50",
        "ack p90",
        "mitigate p50",
        "mitigate p90",
        "resolve p50",
        "resolve p90",
        "response met",
        "RTO met",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for sev in Severity::ALL {
        let of: Vec<&ResponseTimes> = incidents
            .iter()
            .filter(|i| i.highest_severity == sev)
            .collect();
        let sorted = |f: fn(&ResponseTimes) -> Option<TimeDelta>| {
            let mut v: Vec<TimeDelta> = of.iter().filter_map(|i| f(i)).collect();
            v.sort();
            v
        };
        let ack = sorted(ResponseTimes::to_acknowledge);
        let mit = sorted(ResponseTimes::to_mitigate);
        let res = sorted(ResponseTimes::to_resolve);
        let ratio = |verdicts: Vec<Option<bool>>| {
            let known: Vec<bool> = verdicts.into_iter().flatten().collect();
            if known.is_empty() {
                "-".to_string()
            } else {
                format!("{}/{}", known.iter().filter(|m| **m).count(), known.len())
            }
        };
        rows.push(vec![
            sev.to_string(),
            of.len().to_string(),
            of.iter()
                .filter(|i| i.resolved_at.is_none())
                .count()
                .to_string(),
            cell(percentile(&ack, 50)),
            cell(percentile(&ack, 90)),
            cell(percentile(&mit, 50)),
            cell(percentile(&mit, 90)),
            cell(percentile(&res, 50)),
            cell(percentile(&res, 90)),
            ratio(of.iter().map(|i| i.response_met(now)).collect()),
            ratio(of.iter().map(|i| i.rto_met(policies, now)).collect()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::{Actor, IncidentId};
    use crate::domain::timeline::GENESIS;

    fn entry(min: i64, kind: EventKind) -> TimelineEntry {
        TimelineEntry::chain(
            IncidentId(1),
            1,
            DateTime::from_timestamp(1_800_000_000 + min * 60, 0).unwrap(),
            Actor::User("U1".into()),
            "r".into(),
            kind,
            GENESIS.into(),
        )
    }

    fn sample() -> Vec<TimelineEntry> {
        let at0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        vec![
            entry(
                0,
                EventKind::Declared {
                    severity: Severity::Sev2,
                    title: "t".into(),
                    respond_by: at0 + TimeDelta::minutes(30),
                },
            ),
            entry(
                12,
                EventKind::RoleAssigned {
                    role: Role::Commander,
                    user: "U2".into(),
                    previous: None,
                },
            ),
            entry(
                20,
                EventKind::SeverityChanged {
                    from: Severity::Sev2,
                    to: Severity::Sev1,
                },
            ),
            entry(
                90,
                EventKind::StatusChanged {
                    from: Status::Identified,
                    to: Status::Monitoring,
                },
            ),
            entry(
                300,
                EventKind::StatusChanged {
                    from: Status::Monitoring,
                    to: Status::Resolved,
                },
            ),
        ]
    }

    #[test]
    fn milestones_come_from_the_record() {
        let t = from_record(&sample()).unwrap();
        assert_eq!(t.to_acknowledge(), Some(TimeDelta::minutes(12)));
        assert_eq!(t.to_mitigate(), Some(TimeDelta::minutes(90)));
        assert_eq!(t.to_resolve(), Some(TimeDelta::minutes(300)));
        assert_eq!(t.highest_severity, Severity::Sev1);
        let p = SeverityPolicies::default();
        // 5 h against SEV1's 4 h RTO: missed; no RPO entry: not recorded.
        assert_eq!(t.rto_met(&p, t.resolved_at.unwrap()), Some(false));
        assert_eq!(t.response_met(t.declared_at), Some(true));
        assert_eq!(t.rpo_met(&p), None);
    }

    #[test]
    fn the_report_counts_under_the_highest_severity() {
        let t = from_record(&sample()).unwrap();
        let table = report_table(
            std::slice::from_ref(&t),
            &SeverityPolicies::default(),
            t.resolved_at.unwrap(),
        );
        let sev1 = table.lines().nth(1).unwrap();
        assert!(sev1.starts_with("SEV1      1          0"), "{table}");
        assert!(sev1.contains("12 min"), "{table}");
        assert!(sev1.contains("5 h"), "{table}");
        assert!(sev1.ends_with("1/1           0/1"), "{table}");
        assert!(table.lines().nth(2).unwrap().starts_with("SEV2      0"));
    }
}
