//! The decisions: for a declaration, an update (plain, `--public` or `--preview`), a
//! resolution or a cadence timer, which groups hear and the [`Notice`] each gets, as one
//! `Effect::Stakeholder` per destination added to the incident's decision; and the
//! cadence timers an open incident keeps.

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::domain::incident::{Decision, Destination, DomainError, Effect, EventKind, Incident};
use crate::domain::message::{Message, Span};
use crate::domain::severity::Severity;
use crate::domain::timers::{TimerKind, TimerSpec};

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
        crate::domain::render::duration(policy.preview_delay),
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
    crate::domain::regulatory::flag_on_declare(decision, security, policy);
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
    out.extend(crate::domain::regulatory::timer(incident, policy));
    out
}
