//! PagerDuty in (issue 9): webhooks v3 parsed into typed events, and what each one means
//! for Klaxon: which severity a trigger declares, who it invites, whether it joins an
//! incident already open for its service (an alert storm), and what the later events
//! (acknowledged, reassigned, ...) put on the timeline.
//!
//! Pure: no I/O, and time comes in as an argument. The HTTP route verifies the signature
//! and the engine decides in one transaction with these functions.
//!
//! Payload shape (PagerDuty's published v3 examples): `{"event": {"id", "event_type",
//! "resource_type", "occurred_at", "agent": {user_reference}, "data": ...}}` where `data`
//! is the incident (`id`, `html_url`, `number`, `title`, `status`, `urgency`,
//! `priority{summary}`, `service{id, summary}`, `assignees[{id, summary, type:
//! "user_reference"}]`) or, for `incident.annotated`, an `incident_note` (`content`,
//! `incident{id, html_url, summary}`).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

mod payload;
pub use payload::{EventType, ParseError, PdIncident, Priority, Reference, WebhookEvent, parse};

use super::incident::{
    self, Actor, Change, Decision, Destination, DomainError, Effect, EventKind, Incident,
    IncidentId, Policy,
};
use super::message::{Block, Message, Span};
use super::severity::Severity;

/// The `inbound_events.source` of PagerDuty webhook deliveries.
pub const SOURCE: &str = "pagerduty";

/// Who a PagerDuty user is in Slack, by configuration (`[pagerduty.users]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserMapping {
    /// A Slack user id (`U...`): invited as is.
    Slack(String),
    /// An email: found with `users.lookupByEmail`.
    Email(String),
}

/// Where a PagerDuty service's incidents belong (`[pagerduty.services.<id>]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRoute {
    /// The owning team's name.
    pub team: Option<String>,
    /// Stakeholder groups to keep informed (names the stakeholder updates use).
    pub stakeholder_groups: Vec<String>,
}

/// How PagerDuty events become Klaxon decisions (`[pagerduty]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagerDutyPolicy {
    /// Severity when neither priority nor urgency is mapped.
    pub default_severity: Severity,
    /// Priority name (`P1`) -> severity; checked first.
    pub by_priority: BTreeMap<String, Severity>,
    /// Urgency (`high`, `low`) -> severity.
    pub by_urgency: BTreeMap<String, Severity>,
    /// Whether `incident.priority_updated` changes the Klaxon severity.
    pub priority_changes_severity: bool,
    /// Whether `incident.resolved` resolves the Klaxon incident.
    pub resolve_from_pagerduty: bool,
    /// Triggers of one service within this long of the first open one incident (zero:
    /// every trigger its own incident).
    pub storm_window: TimeDelta,
    /// Service id -> team and stakeholder groups.
    pub services: BTreeMap<String, ServiceRoute>,
    /// PagerDuty user id -> Slack user.
    pub users: BTreeMap<String, UserMapping>,
    /// Whether a REST API token is configured (users can be looked up, notes written).
    pub rest_api: bool,
}

impl Default for PagerDutyPolicy {
    fn default() -> Self {
        let sev = |pairs: &[(&str, Severity)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        Self {
            default_severity: Severity::Sev2,
            by_priority: sev(&[
                ("P1", Severity::Sev1),
                ("P2", Severity::Sev2),
                ("P3", Severity::Sev3),
                ("P4", Severity::Sev4),
                ("P5", Severity::Sev4),
            ]),
            by_urgency: sev(&[("high", Severity::Sev2), ("low", Severity::Sev3)]),
            priority_changes_severity: true,
            resolve_from_pagerduty: true,
            storm_window: TimeDelta::minutes(5),
            services: BTreeMap::new(),
            users: BTreeMap::new(),
            rest_api: false,
        }
    }
}

impl PagerDutyPolicy {
    /// The severity of a PagerDuty incident: its priority if mapped, else its urgency if
    /// mapped, else the default.
    pub fn severity_of(&self, pd: &PdIncident) -> Severity {
        pd.priority_name()
            .and_then(|p| self.by_priority.get(p))
            .or_else(|| pd.urgency.as_deref().and_then(|u| self.by_urgency.get(u)))
            .copied()
            .unwrap_or(self.default_severity)
    }

    /// The route of a service, when configured.
    pub fn route(&self, pd: &PdIncident) -> Option<&ServiceRoute> {
        pd.service.as_ref().and_then(|s| self.services.get(&s.id))
    }
}

/// A responder still to be found in Slack (by email), or to be listed as unmapped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Responder {
    /// PagerDuty user id.
    pub pd_id: String,
    /// Display name.
    pub name: String,
    /// Email, when known (config or PagerDuty's REST API).
    pub email: Option<String>,
}

/// How the assignees of a trigger reach the incident channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Responders {
    /// Slack ids from the config map: invited when the channel opens.
    pub slack: Vec<String>,
    /// Known by email (config map): `users.lookupByEmail`, then invite; else listed.
    pub by_email: Vec<Responder>,
    /// Neither: looked up through PagerDuty's REST API (when a token is configured).
    pub look_up: Vec<Reference>,
    /// Neither, and no REST API: listed in the channel as unmapped.
    pub unmapped: Vec<Responder>,
}

/// Sorts `assignees` by how each can be found in Slack.
pub fn responders(assignees: &[Reference], policy: &PagerDutyPolicy) -> Responders {
    let mut out = Responders::default();
    for user in assignees {
        match policy.users.get(&user.id) {
            Some(UserMapping::Slack(id)) => {
                if !out.slack.contains(id) {
                    out.slack.push(id.clone());
                }
            }
            Some(UserMapping::Email(email)) => out.by_email.push(Responder {
                pd_id: user.id.clone(),
                name: user.name().to_string(),
                email: Some(email.clone()),
            }),
            None if policy.rest_api => out.look_up.push(user.clone()),
            None => out.unmapped.push(Responder {
                pd_id: user.id.clone(),
                name: user.name().to_string(),
                email: None,
            }),
        }
    }
    out
}

/// The open storm window of a service: the incident its triggers join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StormWindow {
    /// The incident.
    pub incident: IncidentId,
    /// When its first trigger came.
    pub opened_at: DateTime<Utc>,
}

/// Where a trigger goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// Into this open incident of the same service (an alert storm).
    Join(IncidentId),
    /// A new incident (which opens the service's window).
    Declare,
}

/// Whether a trigger at `now` joins the service's window: only while its incident is
/// open and less than `window` after the window's first trigger.
pub fn group(
    current: Option<StormWindow>,
    incident_open: bool,
    now: DateTime<Utc>,
    window: TimeDelta,
) -> Grouping {
    match current {
        Some(w) if incident_open && window > TimeDelta::zero() && now - w.opened_at < window => {
            Grouping::Join(w.incident)
        }
        _ => Grouping::Declare,
    }
}

/// The title a trigger declares with: one line, within Klaxon's title limit.
pub fn title_of(pd: &PdIncident) -> String {
    let folded = pd
        .display_title()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let title: String = folded.chars().take(incident::MAX_TITLE_CHARS).collect();
    match incident::declared_title(&title) {
        Ok(t) => t,
        // A title Klaxon refuses (control or bidi characters) is replaced, not fatal.
        Err(_) => match pd.number {
            Some(n) => format!("PagerDuty incident #{n}"),
            None => "PagerDuty incident".to_string(),
        },
    }
}

fn line(pd: &PdIncident) -> String {
    let service = pd
        .service
        .as_ref()
        .map(|s| format!(", service {}", s.name()))
        .unwrap_or_default();
    let number = pd.number.map(|n| format!(" #{n}")).unwrap_or_default();
    format!(
        "PagerDuty{number} {}{service}: {}",
        pd.html_url,
        pd.display_title()
    )
}

/// The decision of a trigger that opens a new incident: the ordinary declaration by
/// Klaxon (nobody in command, so the response deadline and escalation run), plus the
/// link to PagerDuty in the channel and on the timeline, the team and stakeholder groups,
/// and the responders mapped to Slack ids invited with the channel.
pub fn declare(
    id: IncidentId,
    pd: &PdIncident,
    pd_policy: &PagerDutyPolicy,
    now: DateTime<Utc>,
    policy: Policy<'_>,
) -> Result<Decision, DomainError> {
    let severity = pd_policy.severity_of(pd);
    let mut decision = incident::declare(id, severity, &title_of(pd), &Actor::Klaxon, now, policy)?;
    let route = pd_policy.route(pd).cloned().unwrap_or_default();
    let invite = responders(&pd.assignees, pd_policy).slack;
    if let Some(Effect::OpenIncidentChannel { invite: list, .. }) = decision.effects.first_mut() {
        list.extend(invite);
    }
    let mut spans = vec![
        Span::bold("Declared from PagerDuty. "),
        Span::text(format!("{}.", line(pd))),
    ];
    if let Some(team) = &route.team {
        spans.push(Span::text(format!(" Team: {team}.")));
    }
    if !route.stakeholder_groups.is_empty() {
        spans.push(Span::text(format!(
            " Stakeholder groups: {}.",
            route.stakeholder_groups.join(", ")
        )));
    }
    spans.push(Span::text(
        " Nobody is in command yet: take it with `/incident role commander @you`.",
    ));
    // After the summary post, before the announcement.
    decision.effects.insert(
        3.min(decision.effects.len()),
        Effect::Post {
            destination: Destination::IncidentChannel,
            message: Message::paragraph(spans),
        },
    );
    decision.events.push(EventKind::PagerDuty {
        event_type: EventType::Triggered.as_str().into(),
        pd_incident: pd.id.clone(),
        text: format!(
            "{}{}{}",
            line(pd),
            route
                .team
                .map(|t| format!("; team {t}"))
                .unwrap_or_default(),
            if route.stakeholder_groups.is_empty() {
                String::new()
            } else {
                format!(
                    "; stakeholder groups {}",
                    route.stakeholder_groups.join(", ")
                )
            }
        ),
    });
    Ok(decision)
}

/// A trigger grouped into `incident` (an alert storm): listed in its channel and on its
/// timeline; no new channel.
pub fn grouped(incident: &Incident, pd: &PdIncident) -> Decision {
    let text = format!("grouped into {}: {}", incident.id, line(pd));
    Decision {
        incident: incident.clone(),
        events: vec![EventKind::PagerDuty {
            event_type: EventType::Triggered.as_str().into(),
            pd_incident: pd.id.clone(),
            text: text.clone(),
        }],
        effects: vec![Effect::Post {
            destination: Destination::IncidentChannel,
            message: Message::paragraph(vec![
                Span::bold("Also triggered in PagerDuty (same service, grouped): "),
                Span::text(line(pd)),
            ]),
        }],
        reply: text,
    }
}

fn by(event: &WebhookEvent) -> String {
    event
        .agent
        .as_ref()
        .map(|a| format!(" by {}", a.name()))
        .unwrap_or_default()
}

fn assignees(pd: Option<&PdIncident>) -> String {
    let names: Vec<&str> = pd
        .map(|p| p.assignees.iter().map(Reference::name).collect())
        .unwrap_or_default();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (now assigned: {})", names.join(", "))
    }
}

/// What a later event does to the incident it is linked to: a timeline event and a post
/// in the channel, and for a priority change (when configured) a severity change, for a
/// resolve (when configured) the resolution. `Ok(None)`: nothing to record (an event
/// type Klaxon ignores, or a resolved incident).
pub fn follow_up(
    incident: &Incident,
    event: &WebhookEvent,
    pd_policy: &PagerDutyPolicy,
    now: DateTime<Utc>,
    policy: Policy<'_>,
) -> Result<Option<Decision>, DomainError> {
    if !incident.is_open() {
        return Ok(None);
    }
    let pd = event.incident.as_ref();
    let pd_id = event.incident_id.clone().unwrap_or_default();
    let text = match &event.event_type {
        EventType::Acknowledged => format!("acknowledged{}", by(event)),
        EventType::Reassigned => format!("reassigned{}{}", by(event), assignees(pd)),
        EventType::Escalated => format!("escalated{}{}", by(event), assignees(pd)),
        EventType::PriorityUpdated => format!(
            "priority set to {}{}",
            pd.and_then(PdIncident::priority_name).unwrap_or("none"),
            by(event)
        ),
        EventType::Annotated => format!(
            "note{}: {}",
            by(event),
            event.note.as_deref().unwrap_or("").trim()
        ),
        EventType::Resolved => format!("resolved{}", by(event)),
        EventType::Triggered | EventType::Other(_) => return Ok(None),
    };
    // Notes are free text from another system: keep them within Klaxon's text rules.
    let text: String = text.chars().take(incident::MAX_TEXT_CHARS).collect();
    let text = incident::clean_text("pagerduty note", &text, incident::MAX_TEXT_CHARS)
        .unwrap_or_else(|_| format!("{} (text not shown)", event.event_type.as_str()));
    let mut decision = Decision {
        incident: incident.clone(),
        events: vec![EventKind::PagerDuty {
            event_type: event.event_type.as_str().into(),
            pd_incident: pd_id,
            text: text.clone(),
        }],
        effects: vec![Effect::Post {
            destination: Destination::IncidentChannel,
            message: Message {
                fallback: vec![Span::text(format!("PagerDuty: {text}"))],
                blocks: vec![Block::Context {
                    spans: vec![Span::text(format!(":pager: PagerDuty: {text}"))],
                }],
            },
        }],
        reply: String::new(),
    };
    // New assignees mapped to Slack ids by config are invited with the post; the others
    // are found by the engine's responder rows.
    if let (EventType::Reassigned | EventType::Escalated, Some(pd)) = (&event.event_type, pd) {
        let users = responders(&pd.assignees, pd_policy).slack;
        if !users.is_empty() {
            decision.effects.insert(0, Effect::Invite { users });
        }
    }
    let then = match (&event.event_type, pd) {
        (EventType::PriorityUpdated, Some(pd)) if pd_policy.priority_changes_severity => pd
            .priority_name()
            .and_then(|p| pd_policy.by_priority.get(p))
            .filter(|s| **s != incident.severity)
            .map(|s| Change::ChangeSeverity(*s)),
        (EventType::Resolved, _) if pd_policy.resolve_from_pagerduty => {
            Some(Change::Resolve("Resolved in PagerDuty".into()))
        }
        _ => None,
    };
    if let Some(change) = then {
        let next = incident::apply(incident, change, &Actor::Klaxon, now, policy)?;
        decision.incident = next.incident;
        decision.events.extend(next.events);
        decision.effects.extend(next.effects);
        decision.reply = next.reply;
    }
    Ok(Some(decision))
}

/// The channel's list of PagerDuty responders: `found` are `(responder, Slack id)`
/// pairs; those without a Slack id could not be mapped and are named so someone invites
/// them by hand (never silently dropped).
pub fn responders_message(found: &[(Responder, Option<String>)]) -> Message {
    let mut spans = vec![Span::bold("Responders assigned in PagerDuty: ")];
    let mapped: Vec<&String> = found.iter().filter_map(|(_, s)| s.as_ref()).collect();
    if mapped.is_empty() {
        spans.push(Span::text("none found in Slack"));
    }
    for (i, user) in mapped.iter().enumerate() {
        if i > 0 {
            spans.push(Span::text(", "));
        }
        spans.push(Span::User((*user).clone()));
    }
    spans.push(Span::text("."));
    let unmapped: Vec<String> = found
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(r, _)| match &r.email {
            Some(email) => format!("{} ({email}, not found in Slack)", r.name),
            None => format!("{} (PagerDuty user {}, no email known)", r.name, r.pd_id),
        })
        .collect();
    if !unmapped.is_empty() {
        spans.push(Span::text(format!(
            " Could not be mapped to Slack, please invite by hand: {}.",
            unmapped.join("; ")
        )));
    }
    Message::paragraph(spans)
}

/// The note on a PagerDuty incident that links it to Klaxon.
pub fn note_text(incident: &Incident, channel: Option<&str>) -> String {
    let channel = channel.unwrap_or(&incident.planned_channel_name);
    format!(
        "Klaxon is running this as {} ({}): {}. Slack channel: #{channel}",
        incident.id, incident.severity, incident.title
    )
}

/// A page's dedup key made unique to this installation: `klaxon-1-team` becomes
/// `klaxon-<first 8 of the install id>-1-team`. Two Klaxons (or one whose database was
/// rebuilt, which numbers incidents from 1 again) then never merge their pages into each
/// other's open PagerDuty alerts, while the key stays the same across restarts (the id
/// is stored in the database). At most 255 characters, as PagerDuty requires.
pub fn installation_dedup_key(install: &str, key: &str) -> String {
    let install: String = install
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let rest = key.strip_prefix("klaxon-").unwrap_or(key);
    format!("klaxon-{install}-{rest}")
        .chars()
        .take(255)
        .collect()
}

#[cfg(test)]
mod tests;
