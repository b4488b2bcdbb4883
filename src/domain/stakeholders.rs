//! Stakeholder communication (issue 9), decided purely: which groups hear about an
//! incident, what each is told, in whose time zone, and what an external group may see.
//!
//! The seed runbooks ask for status "every 30 minutes for Severity 1, hourly for
//! Severity 2" to internal stakeholders, status-page updates for customers, an all-clear
//! after recovery and, for security incidents, a regulatory notification within 24 hours.
//! This module turns an incident change into one [`Effect::Stakeholder`] per group and
//! destination; the engine stores them as outbox rows in the same transaction as the
//! change, and `outbox::stakeholders` delivers them (email, Statuspage, Slack).
//!
//! **Redaction is decided here, once.** An external group's notice is built only from
//! [`external_text`] of what was written: no people, no commands, no channel names. The
//! same function produces the preview the commander sees, so the preview is exactly
//! what goes out.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::incident::{
    Decision, Destination, DomainError, Effect, EventKind, Incident, IncidentId, Status,
};
use super::message::{Message, Span};
use super::severity::Severity;
use super::timers::{TimerKind, TimerSpec};

/// Whether a group is inside the company (sees everything) or outside (customers,
/// status page: sees only the redacted view).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Employees: the full text.
    Internal,
    /// Customers, partners, regulators: [`external_text`] only.
    External,
}

/// Which status updates a group receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateFilter {
    /// Every `/incident update`.
    All,
    /// Only `/incident update --public ...`.
    Public,
}

/// One stakeholder group, as configured (`[stakeholders.groups.<name>]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Name (lane keys, Message-IDs, the timeline).
    pub name: String,
    /// Internal or external.
    pub audience: Audience,
    /// The least severe severity the group hears about (`sev2`: sev1 and sev2).
    pub threshold: Severity,
    /// How often the group must hear something while the incident is open, per
    /// severity; a severity without an entry has no cadence.
    pub every: BTreeMap<Severity, TimeDelta>,
    /// The zone every time the group is shown is written in.
    pub tz: Tz,
    /// Which updates it receives.
    pub updates: UpdateFilter,
    /// Slack channel ids.
    pub slack_channels: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// Statuspage component id, when the group is the public status page.
    pub statuspage_component: Option<String>,
}

impl Group {
    /// Whether an incident of `severity` concerns the group.
    pub fn concerns(&self, severity: Severity) -> bool {
        severity <= self.threshold
    }

    /// Every destination of the group.
    pub fn recipients(&self) -> Vec<Recipient> {
        let slack = self
            .slack_channels
            .iter()
            .map(|c| Recipient::Slack { channel: c.clone() });
        let email = self
            .emails
            .iter()
            .map(|a| Recipient::Email { to: a.clone() });
        let page = self
            .statuspage_component
            .iter()
            .map(|c| Recipient::StatusPage {
                component: c.clone(),
            });
        slack.chain(email).chain(page).collect()
    }
}

/// Stakeholder rules (`[stakeholders]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StakeholderPolicy {
    /// The groups, in configuration order.
    pub groups: Vec<Group>,
    /// How long an external group's update waits after its preview is posted in the
    /// incident channel.
    pub preview_delay: TimeDelta,
    /// Words that make a declared incident a security incident (case-insensitive, in
    /// the title).
    pub security_keywords: Vec<String>,
    /// How long after declaration compliance/legal must be notified.
    pub regulatory_within: TimeDelta,
    /// How often the regulatory reminder repeats until acknowledged.
    pub regulatory_every: TimeDelta,
}

impl Default for StakeholderPolicy {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            preview_delay: TimeDelta::minutes(2),
            security_keywords: Vec::new(),
            regulatory_within: TimeDelta::hours(24),
            regulatory_every: TimeDelta::hours(1),
        }
    }
}

/// Where one notice goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Recipient {
    /// A Slack channel.
    Slack {
        /// Channel id.
        channel: String,
    },
    /// An email address.
    Email {
        /// Address.
        to: String,
    },
    /// The Statuspage incident for this Klaxon incident, and a component on it.
    StatusPage {
        /// Component id.
        component: String,
    },
}

impl Recipient {
    /// The lane family: each kind of destination has a lane of its own per group, so a
    /// mail server that is down never holds back the status page.
    pub fn via(&self) -> &'static str {
        match self {
            Recipient::Slack { .. } => "slack",
            Recipient::Email { .. } => "email",
            Recipient::StatusPage { .. } => "statuspage",
        }
    }
}

/// What a notice is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The incident was declared (internal groups).
    Declared,
    /// A status update.
    Update,
    /// The group's cadence passed with no update: "still investigating".
    StillInvestigating,
    /// Resolved: the all clear.
    AllClear,
}

/// One message to one group, as rendered at decision time (so a retry sends the same
/// words, in the same zone, whatever the config says by then).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Unique per incident and group: with the recipient, the identity of the message
    /// (email Message-ID, the Statuspage update it becomes).
    pub key: String,
    /// What it is about.
    pub kind: NoticeKind,
    /// Incident number.
    pub incident: IncidentId,
    /// Whether this is the redacted view.
    pub external: bool,
    /// Subject line (email) / incident name (Statuspage).
    pub subject: String,
    /// The message.
    pub body: String,
    /// Severity and status when written.
    pub severity: Severity,
    /// Status when written.
    pub status: Status,
    /// When it was written, in the group's zone (`Mon 23 Nov 2026 05:00 EST`).
    pub written_at: String,
    /// The promised next update, in the group's zone (`05:30 EST`).
    pub next_update_by: Option<String>,
}

impl Notice {
    /// Whether people wrote its words (an update, a resolution summary): for an
    /// external group those are previewed to the commander before they go out.
    pub fn is_previewed(&self) -> bool {
        matches!(self.kind, NoticeKind::Update | NoticeKind::AllClear)
    }
}

/// `HH:MM ZONE` in `tz`.
pub fn local_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%H:%M %Z").to_string()
}

fn local_stamp(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%a %-d %b %Y %H:%M %Z")
        .to_string()
}

/// The text an external audience may see: Slack mentions of people, user groups and
/// channels, `@names`, `#channel-names`, incident channel names and anything in
/// backticks (commands, hosts, queries) are replaced by neutral words.
pub fn external_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("```") {
            rest = after.split_once("```").map_or("", |(_, r)| r);
            out.push_str("[details withheld]");
        } else if let Some(after) = rest.strip_prefix('`') {
            rest = after.split_once('`').map_or("", |(_, r)| r);
            out.push_str("[details withheld]");
        } else if rest.starts_with('<')
            && let Some((inner, after)) = rest[1..].split_once('>')
        {
            rest = after;
            out.push_str(match inner.chars().next() {
                Some('@') => "our team",
                Some('#') => "an internal channel",
                Some('!') => "our team",
                // A link: keep its label, never the internal URL.
                _ => inner.split_once('|').map_or("a link", |(_, label)| label),
            });
        } else if (rest.starts_with('@') || rest.starts_with('#'))
            && rest[1..].starts_with(|c: char| c.is_alphanumeric())
        {
            let end = rest[1..]
                .find(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)))
                .map_or(rest.len(), |i| i + 1);
            out.push_str(if rest.starts_with('@') {
                "our team"
            } else {
                "an internal channel"
            });
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    // Incident channel names written without `#`.
    let words: Vec<String> = out
        .split(' ')
        .map(|w| {
            let bare = w.trim_end_matches(|c: char| ".,;:!?)".contains(c));
            let is_channel = bare.len() > 13
                && bare.starts_with("inc-")
                && bare[4..12].chars().all(|c| c.is_ascii_digit());
            if is_channel {
                format!("an internal channel{}", &w[bare.len()..])
            } else {
                w.to_string()
            }
        })
        .collect();
    words
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// How `/incident update` was asked: `--public` marks an update for external groups,
/// `--preview` shows what they would receive without posting anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Internal groups only (and external groups configured `updates = "all"`).
    Plain,
    /// Every group, external ones after the preview delay.
    Public,
    /// Nothing is posted; the reply shows each group's text.
    Preview,
}

/// Splits the leading `--public` / `--preview` flag off an update's text.
pub fn update_mode(text: &str) -> (UpdateMode, &str) {
    let text = text.trim();
    for (flag, mode) in [
        ("--public", UpdateMode::Public),
        ("--preview", UpdateMode::Preview),
    ] {
        if let Some(rest) = text.strip_prefix(flag)
            && (rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            return (mode, rest.trim_start());
        }
    }
    (UpdateMode::Plain, text)
}

/// The groups an update reaches: those the incident's severity concerns, that take
/// every update or this one is public.
pub fn update_groups<'a>(
    incident: &Incident,
    public: bool,
    policy: &'a StakeholderPolicy,
) -> Vec<&'a Group> {
    policy
        .groups
        .iter()
        .filter(|g| g.concerns(incident.severity))
        .filter(|g| public || g.updates == UpdateFilter::All)
        .collect()
}

/// The cadence of `group` for the incident's severity, if any.
fn cadence(group: &Group, severity: Severity) -> Option<TimeDelta> {
    group.every.get(&severity).copied()
}

fn notice(
    incident: &Incident,
    group: &Group,
    kind: NoticeKind,
    key: String,
    text: &str,
    now: DateTime<Utc>,
) -> Notice {
    let external = group.audience == Audience::External;
    let title = if external {
        external_text(&incident.title)
    } else {
        incident.title.clone()
    };
    let next_update_by = match kind {
        NoticeKind::AllClear => None,
        _ => cadence(group, incident.severity).map(|every| local_time(now + every, group.tz)),
    };
    let subject = match kind {
        NoticeKind::Declared => {
            format!("[{}] {} declared: {title}", incident.severity, incident.id)
        }
        NoticeKind::Update | NoticeKind::StillInvestigating => {
            format!("[{}] {} update: {title}", incident.severity, incident.id)
        }
        NoticeKind::AllClear => format!("[Resolved] {}: {title}", incident.id),
    };
    let body = if external {
        external_text(text)
    } else {
        text.to_string()
    };
    Notice {
        key,
        kind,
        incident: incident.id,
        external,
        subject,
        body,
        severity: incident.severity,
        status: incident.status,
        written_at: local_stamp(now, group.tz),
        next_update_by,
    }
}

/// One effect per recipient of `group`, and the group marked as told at `now` (its
/// cadence restarts).
fn send(incident: &mut Incident, group: &Group, notice: Notice, now: DateTime<Utc>) -> Vec<Effect> {
    incident.stakeholders_told.insert(group.name.clone(), now);
    group
        .recipients()
        .into_iter()
        .map(|to| Effect::Stakeholder {
            group: group.name.clone(),
            to,
            notice: notice.clone(),
        })
        .collect()
}

/// A `--preview` is answered, not applied: its text comes back as the refusal (nothing
/// is stored or sent). Otherwise, whether the update is public.
pub fn refuse_preview(
    incident: &Incident,
    text: &str,
    mode: UpdateMode,
    policy: &StakeholderPolicy,
) -> Result<bool, DomainError> {
    let public = mode != UpdateMode::Plain;
    if mode == UpdateMode::Preview {
        return Err(DomainError::Unchanged(format!(
            "Preview only, nothing was posted.\n{}",
            preview(incident, text, public, policy)
        )));
    }
    Ok(public)
}

/// The stakeholder half of a status update `text` (flags already split off): one
/// effect per destination of every group it reaches, the group-told event and, when an
/// external group is among them, the preview in the incident channel (posted first; the
/// external rows wait `preview_delay`, see the engine) and in the reply.
pub fn on_update(
    incident: &mut Incident,
    text: &str,
    public: bool,
    now: DateTime<Utc>,
    policy: &StakeholderPolicy,
    (events, effects, reply): (&mut Vec<EventKind>, &mut Vec<Effect>, &mut String),
) {
    let groups: Vec<Group> = update_groups(incident, public, policy)
        .into_iter()
        .cloned()
        .collect();
    if groups.iter().any(|g| g.audience == Audience::External) {
        show_preview(preview(incident, text, public, policy), effects, reply);
    }
    let key = format!("update-{}", now.timestamp_millis());
    for group in &groups {
        let n = notice(incident, group, NoticeKind::Update, key.clone(), text, now);
        effects.extend(send(incident, group, n, now));
    }
    if !groups.is_empty() {
        events.push(EventKind::StakeholdersNotified {
            notice: NoticeKind::Update,
            groups: groups.into_iter().map(|g| g.name).collect(),
        });
    }
}

/// What each group would receive for update `text`, for the commander: the exact
/// external text, and which groups get the full text.
pub fn preview(
    incident: &Incident,
    text: &str,
    public: bool,
    policy: &StakeholderPolicy,
) -> String {
    let groups = update_groups(incident, public, policy);
    if groups.is_empty() {
        return "No stakeholder group receives this update (check the severity thresholds, or add `--public`).".into();
    }
    let mut lines = Vec::new();
    let internal: Vec<&str> = groups
        .iter()
        .filter(|g| g.audience == Audience::Internal)
        .map(|g| g.name.as_str())
        .collect();
    if !internal.is_empty() {
        lines.push(format!(
            "Internal groups ({}) receive the text as written.",
            internal.join(", ")
        ));
    }
    let external: Vec<&str> = groups
        .iter()
        .filter(|g| g.audience == Audience::External)
        .map(|g| g.name.as_str())
        .collect();
    if !external.is_empty() {
        lines.push(external_preview(&external, text, policy));
    }
    lines.join("\n")
}

/// The preview line of what external groups `names` will receive for `text`.
fn external_preview(names: &[&str], text: &str, policy: &StakeholderPolicy) -> String {
    format!(
        "External groups ({}) receive, {} after it is posted:\n> {}",
        names.join(", "),
        super::render::duration(policy.preview_delay),
        external_text(text)
    )
}

/// Posts `shown` in the incident channel as the stakeholder preview and adds it to the
/// reply of whoever made the change.
fn show_preview(shown: String, effects: &mut Vec<Effect>, reply: &mut String) {
    effects.push(Effect::Post {
        destination: Destination::IncidentChannel,
        message: Message::paragraph(vec![
            Span::bold("Stakeholder preview: "),
            Span::text(shown.clone()),
        ]),
    });
    reply.push('\n');
    reply.push_str(&shown);
}

/// Adds to a declaration what stakeholders need: the security flag (asked with
/// `--security`, or a title matching a configured keyword; the regulatory reminder then
/// fires at once) and the declaration told to the internal groups it concerns (external
/// groups first hear of it through a public update, after its preview). `only`, when
/// not empty, names the groups that may hear of it (a PagerDuty service's
/// `stakeholder_groups`); the severity threshold still applies.
pub fn on_declare(
    decision: &mut Decision,
    security: bool,
    now: DateTime<Utc>,
    policy: &StakeholderPolicy,
    only: &[String],
) {
    super::regulatory::flag_on_declare(decision, security, policy);
    let incident = &mut decision.incident;
    let groups: Vec<Group> = policy
        .groups
        .iter()
        .filter(|g| g.audience == Audience::Internal && g.concerns(incident.severity))
        .filter(|g| only.is_empty() || only.contains(&g.name))
        .cloned()
        .collect();
    let text = format!(
        "{} {} was declared: {}. Status: {}.",
        incident.severity, incident.id, incident.title, incident.status
    );
    for group in &groups {
        let n = notice(
            incident,
            group,
            NoticeKind::Declared,
            "declared".into(),
            &text,
            now,
        );
        decision.effects.extend(send(incident, group, n, now));
    }
    if !groups.is_empty() {
        decision.events.push(EventKind::StakeholdersNotified {
            notice: NoticeKind::Declared,
            groups: groups.into_iter().map(|g| g.name).collect(),
        });
    }
}

/// The all clear, to every group that was told anything about the incident; external
/// groups' version (the summary, redacted) is previewed like a public update.
pub fn on_resolve(
    incident: &mut Incident,
    now: DateTime<Utc>,
    policy: &StakeholderPolicy,
    (events, effects, reply): (&mut Vec<EventKind>, &mut Vec<Effect>, &mut String),
) {
    let summary = incident.resolution.clone().unwrap_or_default();
    let told: Vec<Group> = policy
        .groups
        .iter()
        .filter(|g| incident.stakeholders_told.contains_key(&g.name))
        .cloned()
        .collect();
    if told.is_empty() {
        return;
    }
    let text = format!("All clear: the incident is resolved. {summary}");
    let external: Vec<&str> = told
        .iter()
        .filter(|g| g.audience == Audience::External)
        .map(|g| g.name.as_str())
        .collect();
    if !external.is_empty() {
        show_preview(external_preview(&external, &text, policy), effects, reply);
    }
    for group in &told {
        let n = notice(
            incident,
            group,
            NoticeKind::AllClear,
            "resolved".into(),
            &text,
            now,
        );
        effects.extend(send(incident, group, n, now));
    }
    events.push(EventKind::StakeholdersNotified {
        notice: NoticeKind::AllClear,
        groups: told.into_iter().map(|g| g.name).collect(),
    });
}

/// "Still investigating, next update by HH:MM" to `group`, whose cadence passed.
pub fn on_cadence(
    incident: &mut Incident,
    group_name: &str,
    now: DateTime<Utc>,
    policy: &StakeholderPolicy,
) -> Vec<Effect> {
    let Some(group) = policy.groups.iter().find(|g| g.name == group_name).cloned() else {
        return Vec::new();
    };
    let next = cadence(&group, incident.severity)
        .map(|every| local_time(now + every, group.tz))
        .unwrap_or_default();
    let text = format!(
        "Still investigating, next update by {next}. Current status: {}.",
        incident.status
    );
    let key = format!("cadence-{}", now.timestamp_millis());
    let n = notice(
        incident,
        &group,
        NoticeKind::StillInvestigating,
        key,
        &text,
        now,
    );
    send(incident, &group, n, now)
}

/// The stakeholder timers the incident wants: one cadence per group already told (due
/// one cadence after it was last told), and the regulatory reminder of an
/// unacknowledged security incident.
pub fn timers(incident: &Incident, policy: &StakeholderPolicy) -> Vec<TimerSpec> {
    let mut out = Vec::new();
    for group in &policy.groups {
        if let (Some(told), Some(every), true) = (
            incident.stakeholders_told.get(&group.name),
            cadence(group, incident.severity),
            group.concerns(incident.severity),
        ) {
            out.push(TimerSpec {
                kind: TimerKind::StakeholderCadence {
                    group: group.name.clone(),
                },
                due_at: *told + every,
            });
        }
    }
    out.extend(super::regulatory::timer(incident, policy));
    out
}

#[cfg(test)]
#[path = "stakeholders_tests.rs"]
mod tests;
