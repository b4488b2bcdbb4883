//! The timeline in words: one line per recorded event, for `/incident timeline` and the
//! post-mortem draft. Pure; users are written for Slack (`<@U1>`, a mention Slack renders
//! as a name) or for a file (`@U1`, since an uploaded Markdown file renders no mentions).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::incident::{Actor, EventKind};
use super::render::duration;

/// How users are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Users {
    /// `<@U1>`: Slack shows the person's name.
    Slack,
    /// `@U1`: plain text, for files.
    Plain,
}

impl Users {
    /// One user.
    pub fn user(self, id: &str) -> String {
        match self {
            Users::Slack => format!("<@{id}>"),
            Users::Plain => format!("@{id}"),
        }
    }

    /// Whoever caused an event.
    pub fn actor(self, actor: &Actor) -> String {
        match actor {
            Actor::User(id) => self.user(id),
            Actor::Klaxon => "Klaxon".into(),
        }
    }
}

/// `2026-11-23 10:00 UTC`.
pub fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `2026-11-23 11:00 CET (10:00 UTC)`, or just the UTC form when `tz` is UTC.
pub fn local_and_utc(at: DateTime<Utc>, tz: Tz) -> String {
    if tz == chrono_tz::UTC {
        return utc(at);
    }
    let local = at.with_timezone(&tz);
    format!(
        "{} ({} UTC)",
        local.format("%Y-%m-%d %H:%M %Z"),
        at.format("%H:%M")
    )
}

fn late(secs: &Option<i64>) -> String {
    match secs {
        Some(s) if *s >= 60 => format!(" ({} late)", duration(chrono::TimeDelta::seconds(*s))),
        _ => String::new(),
    }
}

/// What an event says, in one line (without its time).
pub fn describe(kind: &EventKind, actor: &Actor, users: Users) -> String {
    let by = users.actor(actor);
    match kind {
        EventKind::Declared {
            severity, title, ..
        } => format!("{by} declared the incident as {severity}: {title}"),
        EventKind::ChannelOpened { name, .. } => format!("Channel #{name} opened"),
        EventKind::RoleAssigned {
            role,
            user,
            previous,
        } => match previous {
            Some(previous) => format!(
                "{} handed over from {} to {} (by {by})",
                role.title(),
                users.user(previous),
                users.user(user)
            ),
            None => format!("{} is {} (set by {by})", users.user(user), role.title()),
        },
        EventKind::RoleRefused { role, user, reason } => format!(
            "{by} could not make {} {}: {reason}",
            users.user(user),
            role.title()
        ),
        EventKind::SeverityChanged { from, to } => format!("{by} changed severity {from} → {to}"),
        EventKind::StatusChanged { from, to } => format!("Status {from} → {to} (by {by})"),
        EventKind::UpdatePosted { text } => format!("Status update by {by}: {text}"),
        EventKind::Resolved { summary } => format!("{by} resolved the incident: {summary}"),
        EventKind::ReminderSent { late_by_secs } => {
            format!("Status update reminder posted{}", late(late_by_secs))
        }
        EventKind::ResponseMissed { late_by_secs } => format!(
            "Nobody took command by the response deadline; the first escalation target was paged{}",
            late(late_by_secs)
        ),
        EventKind::Escalated {
            target,
            late_by_secs,
        } => format!("Escalated: paged {target}{}", late(late_by_secs)),
        EventKind::RtoCheckpoint {
            percent,
            late_by_secs,
        } => format!("{percent}% of the RTO elapsed{}", late(late_by_secs)),
        EventKind::RunRequested {
            run_id,
            command,
            params,
        } => format!("{by} requested run #{run_id}: `{command} {params}`"),
        EventKind::RunEligibility { run_id, eligible } => {
            let names: Vec<String> = eligible
                .iter()
                .map(|e| users.user(e.split('@').next().unwrap_or(e)))
                .collect();
            format!("Run #{run_id} may be approved by {}", names.join(", "))
        }
        EventKind::RunPrepared { run_id, state } => {
            format!("Run #{run_id} previewed; now {state}")
        }
        EventKind::RunClicked {
            run_id,
            click,
            outcome,
        } => format!("{by} pressed {click} on run #{run_id}: {outcome}"),
        EventKind::RunStarted { run_id } => format!("Run #{run_id} started executing"),
        EventKind::RunFinished {
            run_id,
            state,
            summary,
            request_id,
        } => format!(
            "Run #{run_id} {state}: {summary}{}",
            request_id
                .as_ref()
                .map(|r| format!(" (request id {r})"))
                .unwrap_or_default()
        ),
        EventKind::RunClosed {
            run_id,
            state,
            reason,
        } => format!("Run #{run_id} {state}: {reason}"),
        EventKind::RunLateResult {
            run_id,
            state,
            summary,
            ..
        } => format!("Run #{run_id} reported late: {state}: {summary}"),
        EventKind::NoteAdded {
            text,
            source,
            author,
            ..
        } => {
            let author = author
                .as_deref()
                .map(|a| users.user(a))
                .unwrap_or_else(|| "someone".into());
            match source.as_str() {
                "pin" => format!("{by} pinned a message by {author}: {text}"),
                s if s.starts_with("reaction:") => format!(
                    "{by} marked a message by {author} with :{}:: {text}",
                    &s["reaction:".len()..]
                ),
                _ => format!("Note by {by}: {text}"),
            }
        }
        EventKind::ActionItemAdded {
            number,
            text,
            owner,
            due,
        } => format!(
            "{by} added action item {number}: {text}{}{}",
            owner
                .as_deref()
                .map(|o| format!(", owner {}", users.user(o)))
                .unwrap_or_default(),
            due.map(|d| format!(", due {d}")).unwrap_or_default()
        ),
        EventKind::RpoRecorded { minutes_lost } => {
            format!("{by} recorded {minutes_lost} min of data lost")
        }
        EventKind::PagerDuty { text, .. } => format!("PagerDuty: {text}"),
        EventKind::PostmortemDrafted { version, .. } => {
            format!("Post-mortem draft {version} written (asked by {by})")
        }
        EventKind::StakeholdersNotified { notice, groups } => {
            let what = match notice {
                super::stakeholders::NoticeKind::Declared => "the declaration",
                super::stakeholders::NoticeKind::Update => "the update",
                super::stakeholders::NoticeKind::StillInvestigating => "\"still investigating\"",
                super::stakeholders::NoticeKind::AllClear => "the all clear",
            };
            format!("Stakeholders told {what}: {}", groups.join(", "))
        }
        EventKind::SecurityFlagged { by_rule: true } => {
            "Flagged as a security incident (title matched a security keyword)".to_string()
        }
        EventKind::SecurityFlagged { by_rule: false } => {
            format!("{by} flagged this as a security incident")
        }
        EventKind::RegulatoryReminded { late_by_secs } => format!(
            "Regulatory notification reminder posted{}",
            late(late_by_secs)
        ),
        EventKind::RegulatoryAcknowledged => {
            format!("{by} confirmed compliance/legal were notified")
        }
    }
}
