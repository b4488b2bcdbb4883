//! The blameless post-mortem draft, in Markdown, following the seed runbooks' template:
//! summary (date and time, duration, impact, root cause), timeline (detection, response,
//! mitigation, resolution), what went well, what could be improved, action items with
//! owner and due date, and whether the response time, RTO and RPO were met.
//!
//! Everything is read from the incident's timeline (and its current projection): no
//! separate bookkeeping, so a draft can be rewritten at any time and says what the
//! record says. What only people know (impact, root cause, lessons) is left as prompts.
//!
//! Pure: `now` and the time zone come in as arguments.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::incident::{Actor, EventKind, Incident, Role};

mod runs;
use super::narrative::{self, Users, local_and_utc};
use super::render::duration;
use super::response_times::{self, ResponseTimes};
use super::severity::{RespondWithin, SeverityPolicies};
use super::timeline::TimelineEntry;
use runs::runs;

/// What a draft is made from.
pub struct DraftInput<'a> {
    /// The incident as it stands.
    pub incident: &'a Incident,
    /// Its whole timeline, in order (including events being written with the draft).
    pub entries: &'a [TimelineEntry],
    /// The severity policy (response, RTO and RPO targets).
    pub severities: &'a SeverityPolicies,
    /// The team's time zone (times are shown in it and in UTC).
    pub tz: Tz,
    /// When the draft is written.
    pub now: DateTime<Utc>,
}

/// The file name of a draft: `INC-7-postmortem-v1.md`.
pub fn file_name(incident: &Incident, version: i64) -> String {
    format!("{}-postmortem-v{version}.md", incident.id)
}

/// The draft's title (shown by Slack above the file).
pub fn title(incident: &Incident) -> String {
    format!("Post-mortem draft: {} {}", incident.id, incident.title)
}

fn verdict(met: Option<bool>, unknown: &str) -> String {
    match met {
        Some(true) => "met".into(),
        Some(false) => "**missed**".into(),
        None => unknown.into(),
    }
}

fn opt_duration(d: Option<TimeDelta>) -> String {
    d.map(duration).unwrap_or_else(|| "-".into())
}

/// Someone holding a role: (role, holder, from, until).
type Stint = (Role, String, DateTime<Utc>, Option<DateTime<Utc>>);

/// Writes the draft.
pub fn draft(input: &DraftInput<'_>) -> String {
    let DraftInput {
        incident,
        entries,
        severities,
        tz,
        now,
    } = *input;
    let at = |t: DateTime<Utc>| local_and_utc(t, tz);
    let u = Users::Plain;
    let times = response_times::from_record(entries);
    let mut md = String::new();
    let _ = writeln!(md, "# Post-mortem: {} — {}", incident.id, incident.title);
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "_Draft written by Klaxon from the incident record at {}. Blameless: describe what systems and decisions did, not who to blame. Replace every _to fill in_ before review._",
        at(now)
    );
    let _ = writeln!(md);

    // Summary.
    let _ = writeln!(md, "## Incident Summary");
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "- **Date/Time**: {} (declared by {})",
        at(incident.declared_at),
        u.actor(&actor_from(&incident.declared_by))
    );
    let duration_line = match incident.resolved_at {
        Some(r) => format!(
            "{} (declared {} → resolved {})",
            duration(r - incident.declared_at),
            at(incident.declared_at),
            at(r)
        ),
        None => format!("ongoing: {} so far", duration(now - incident.declared_at)),
    };
    let _ = writeln!(md, "- **Duration**: {duration_line}");
    let _ = writeln!(md, "- **Status**: {}", incident.status);
    let _ = writeln!(
        md,
        "- **Severity**: {}{}",
        incident.severity,
        times
            .as_ref()
            .filter(|t| t.highest_severity != incident.severity)
            .map(|t| format!(" (highest reached: {})", t.highest_severity))
            .unwrap_or_default()
    );
    let highest = times
        .as_ref()
        .map(|t| t.highest_severity)
        .unwrap_or(incident.severity);
    let _ = writeln!(
        md,
        "- **Impact**: _to fill in_ (declared {}: {})",
        highest,
        severities.get(highest).meaning
    );
    let _ = writeln!(
        md,
        "- **Root Cause**: _to fill in_{}",
        incident
            .resolution
            .as_deref()
            .map(|r| format!(" (resolution: {r})"))
            .unwrap_or_default()
    );
    let _ = writeln!(md);

    // Objectives.
    if let Some(t) = &times {
        objectives(&mut md, t, severities, now);
    }

    // Timeline in the template's four steps.
    let _ = writeln!(md, "## Timeline");
    let _ = writeln!(md);
    if let Some(t) = &times {
        let after = |x: Option<DateTime<Utc>>, none: &str| match x {
            Some(x) => format!(
                "{} ({} after declaration)",
                at(x),
                duration(x - t.declared_at)
            ),
            None => none.to_string(),
        };
        let _ = writeln!(
            md,
            "- **Detection**: declared {} at {}",
            t.declared_severity,
            at(t.declared_at)
        );
        let _ = writeln!(
            md,
            "- **Response**: incident commander in place {}",
            after(t.acknowledged_at, "never (nobody took command)")
        );
        let _ = writeln!(
            md,
            "- **Mitigation**: monitoring {}",
            after(t.mitigated_at, "not reached")
        );
        let _ = writeln!(
            md,
            "- **Resolution**: {}",
            match t.resolved_at {
                Some(_) => format!(
                    "resolved {}{}",
                    after(t.resolved_at, ""),
                    incident
                        .resolution
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                None => "not resolved yet".into(),
            }
        );
    }
    let _ = writeln!(md);

    severity_history(&mut md, entries, &at);
    roles(&mut md, entries, incident, &at);
    list_section(
        &mut md,
        "### Status updates",
        entries.iter().filter_map(|e| match &e.kind {
            EventKind::UpdatePosted { text } => {
                Some(format!("{} — {}: {text}", at(e.at), u.actor(&e.actor)))
            }
            _ => None,
        }),
        "No status updates were posted.",
    );
    list_section(
        &mut md,
        "### Reminders and pages",
        entries.iter().filter_map(|e| match &e.kind {
            EventKind::ReminderSent { .. }
            | EventKind::ResponseMissed { .. }
            | EventKind::Escalated { .. }
            | EventKind::RtoCheckpoint { .. } => Some(format!(
                "{} — {}",
                at(e.at),
                narrative::describe(&e.kind, &e.actor, u)
            )),
            _ => None,
        }),
        "No reminders were needed and nobody was paged.",
    );
    runs(&mut md, entries);
    list_section(
        &mut md,
        "### Notes",
        entries.iter().filter_map(|e| match &e.kind {
            EventKind::NoteAdded { .. } => Some(format!(
                "{} — {}",
                at(e.at),
                narrative::describe(&e.kind, &e.actor, u)
            )),
            _ => None,
        }),
        "No notes were added.",
    );

    // What went well / could be improved: facts from the record as prompts.
    let mut well = Vec::new();
    let mut improve = Vec::new();
    if let Some(t) = &times {
        let sorted = [
            (
                t.response_met(now),
                format!(
                    "Command was taken within the response time ({}).",
                    opt_duration(t.to_acknowledge())
                ),
                "Command was not taken within the response time.".to_string(),
            ),
            (
                t.rto_met(severities, now),
                "Service was restored within the RTO.".to_string(),
                "Service was not restored within the RTO.".to_string(),
            ),
            (
                t.rpo_met(severities),
                "Data lost stayed within the RPO.".to_string(),
                "More data was lost than the RPO allows.".to_string(),
            ),
        ];
        for (met, good, bad) in sorted {
            match met {
                Some(true) => well.push(good),
                Some(false) => improve.push(bad),
                None => {}
            }
        }
    }
    let reminders = entries
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ReminderSent { .. }))
        .count();
    if reminders > 0 {
        improve.push(format!(
            "Klaxon had to remind the channel {reminders} time{} that a status update was due.",
            if reminders == 1 { "" } else { "s" }
        ));
    }
    prompts(&mut md, "## What Went Well", well);
    prompts(&mut md, "## What Could Be Improved", improve);

    // Action items.
    let _ = writeln!(md, "## Action Items");
    let _ = writeln!(md);
    let items: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActionItemAdded {
                number,
                text,
                owner,
                due,
            } => Some(format!(
                "- [ ] **{number}. {text}** - Owner: {}, Due: {}",
                owner
                    .as_deref()
                    .map(|o| u.user(o))
                    .unwrap_or_else(|| "_to assign_".into()),
                due.map(|d| d.to_string())
                    .unwrap_or_else(|| "_to set_".into())
            )),
            _ => None,
        })
        .collect();
    if items.is_empty() {
        let _ = writeln!(
            md,
            "- [ ] _to fill in_ - Owner: _to assign_, Due: _to set_ (record them with `/incident action <text> @owner due YYYY-MM-DD`)"
        );
    }
    for item in items {
        let _ = writeln!(md, "{item}");
    }
    let _ = writeln!(md);

    // The whole record, for reference.
    let _ = writeln!(md, "## Full Record");
    let _ = writeln!(md);
    for e in entries {
        let _ = writeln!(
            md,
            "{}. {} — {}",
            e.seq,
            at(e.at),
            narrative::describe(&e.kind, &e.actor, u)
        );
    }
    md
}

fn actor_from(s: &str) -> Actor {
    if s == "klaxon" {
        Actor::Klaxon
    } else {
        Actor::User(s.to_string())
    }
}

fn objectives(
    md: &mut String,
    t: &ResponseTimes,
    severities: &SeverityPolicies,
    now: DateTime<Utc>,
) {
    let policy = severities.get(t.highest_severity);
    let respond = match policy.respond_within {
        RespondWithin::After(d) => duration(d),
        RespondWithin::NextBusinessDay => "next business day".into(),
    };
    let _ = writeln!(md, "## Response Objectives");
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Targets of {} (the highest severity reached).",
        t.highest_severity
    );
    let _ = writeln!(md);
    let _ = writeln!(md, "| objective | target | actual | verdict |");
    let _ = writeln!(md, "|---|---|---|---|");
    let _ = writeln!(
        md,
        "| Response time (commander in place) | {respond} | {} | {} |",
        opt_duration(t.to_acknowledge()),
        verdict(t.response_met(now), "pending")
    );
    let _ = writeln!(
        md,
        "| Time to mitigate (monitoring) | - | {} | - |",
        opt_duration(t.to_mitigate())
    );
    let _ = writeln!(
        md,
        "| RTO (time to resolve) | {} | {} | {} |",
        duration(policy.rto),
        opt_duration(t.to_resolve()),
        verdict(t.rto_met(severities, now), "pending")
    );
    let _ = writeln!(
        md,
        "| RPO (data lost) | {} | {} | {} |",
        duration(policy.rpo),
        t.rpo_minutes
            .map(|m| duration(TimeDelta::minutes(i64::from(m))))
            .unwrap_or_else(|| "not recorded".into()),
        verdict(
            t.rpo_met(severities),
            "not recorded (`/incident rpo <minutes>`)"
        )
    );
    let _ = writeln!(md);
}

fn severity_history(
    md: &mut String,
    entries: &[TimelineEntry],
    at: &dyn Fn(DateTime<Utc>) -> String,
) {
    let lines = entries.iter().filter_map(|e| match &e.kind {
        EventKind::Declared { severity, .. } => {
            Some(format!("{} — {severity} (declared)", at(e.at)))
        }
        EventKind::SeverityChanged { from, to } => Some(format!(
            "{} — {from} → {to} (by {})",
            at(e.at),
            Users::Plain.actor(&e.actor)
        )),
        _ => None,
    });
    list_section(md, "### Severity history", lines, "");
}

fn roles(
    md: &mut String,
    entries: &[TimelineEntry],
    incident: &Incident,
    at: &dyn Fn(DateTime<Utc>) -> String,
) {
    let u = Users::Plain;
    let end = incident
        .resolved_at
        .map(|r| format!("{} (resolved)", at(r)))
        .unwrap_or_else(|| "now".into());
    // (role, holder, from, until) in order; a hand-over closes the previous holder's stint.
    let mut stints: Vec<Stint> = Vec::new();
    let mut current: BTreeMap<Role, usize> = BTreeMap::new();
    for e in entries {
        if let EventKind::RoleAssigned { role, user, .. } = &e.kind {
            if let Some(i) = current.get(role) {
                stints[*i].3 = Some(e.at);
            }
            current.insert(*role, stints.len());
            stints.push((*role, user.clone(), e.at, None));
        }
    }
    let _ = writeln!(md, "### Who held which role");
    let _ = writeln!(md);
    if stints.is_empty() {
        let _ = writeln!(md, "Nobody held a role.");
        let _ = writeln!(md);
        return;
    }
    let _ = writeln!(md, "| role | holder | from | until |");
    let _ = writeln!(md, "|---|---|---|---|");
    for (role, user, from, until) in stints {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            role.title(),
            u.user(&user),
            at(from),
            until.map(at).unwrap_or_else(|| end.clone())
        );
    }
    let _ = writeln!(md);
}

fn list_section(md: &mut String, heading: &str, lines: impl Iterator<Item = String>, none: &str) {
    let _ = writeln!(md, "{heading}");
    let _ = writeln!(md);
    let mut any = false;
    for line in lines {
        any = true;
        let _ = writeln!(md, "- {line}");
    }
    if !any && !none.is_empty() {
        let _ = writeln!(md, "{none}");
    }
    let _ = writeln!(md);
}

fn prompts(md: &mut String, heading: &str, facts: Vec<String>) {
    let _ = writeln!(md, "{heading}");
    let _ = writeln!(md);
    for f in &facts {
        let _ = writeln!(md, "- {f} _(from the record)_");
    }
    for _ in facts.len()..3 {
        let _ = writeln!(md, "- _to fill in_");
    }
    let _ = writeln!(md);
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::domain::incident::{IncidentId, Status};
    use crate::domain::severity::Severity;
    use crate::domain::timeline::GENESIS;

    #[test]
    fn an_open_incident_nobody_commands_says_so_and_leaves_rpo_unrecorded() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let incident = Incident {
            id: IncidentId(3),
            title: "Queue backlog".into(),
            severity: Severity::Sev2,
            status: Status::Investigating,
            declared_at: t0,
            declared_by: "klaxon".into(),
            planned_channel_name: "inc-x".into(),
            channel: None,
            roles: BTreeMap::new(),
            last_update: None,
            resolved_at: None,
            resolution: None,
            last_reminder_at: None,
            fired_timers: BTreeSet::new(),
            security: false,
            regulatory_ack: None,
            regulatory_reminded_at: None,
            stakeholders_told: BTreeMap::new(),
        };
        let entries = vec![TimelineEntry::chain(
            IncidentId(3),
            1,
            t0,
            Actor::Klaxon,
            "r".into(),
            EventKind::Declared {
                severity: Severity::Sev2,
                title: "Queue backlog".into(),
                respond_by: t0 + TimeDelta::minutes(30),
            },
            GENESIS.into(),
        )];
        let md = draft(&DraftInput {
            incident: &incident,
            entries: &entries,
            severities: &SeverityPolicies::default(),
            tz: chrono_tz::UTC,
            now: t0 + TimeDelta::minutes(45),
        });
        assert!(
            md.contains("- **Duration**: ongoing: 45 min so far"),
            "{md}"
        );
        assert!(
            md.contains("| Response time (commander in place) | 30 min | - | **missed** |"),
            "{md}"
        );
        assert!(
            md.contains("| RPO (data lost) | 4 h | not recorded | not recorded"),
            "{md}"
        );
        assert!(
            md.contains("- **Response**: incident commander in place never (nobody took command)"),
            "{md}"
        );
        assert!(md.contains("No recovery commands were requested."), "{md}");
        assert!(
            md.contains("- [ ] _to fill in_ - Owner: _to assign_"),
            "{md}"
        );
        assert!(
            md.contains("- Command was not taken within the response time. _(from the record)_"),
            "{md}"
        );
    }
}
