//! The words Klaxon says about an incident, in the neutral [`Message`] model.
//!
//! Kept apart from the state machine so the wording can change without touching the rules.

use chrono::{DateTime, TimeDelta, Utc};

use super::incident::Policy;
use super::incident::{Actor, Incident, Role, Status};
use super::message::{Block, Field, Message, Span};
use super::severity::Severity;

fn actor_span(actor: &Actor) -> Span {
    match actor {
        Actor::User(u) => Span::User(u.clone()),
        Actor::Klaxon => Span::text("Klaxon"),
    }
}

/// `4 h`, `30 min`, `1 h 30 min`, `3 d`.
pub fn duration(d: TimeDelta) -> String {
    let minutes = d.num_minutes();
    if minutes % (24 * 60) == 0 && minutes >= 24 * 60 {
        return format!("{} d", minutes / (24 * 60));
    }
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// The channel purpose. It names the incident so that a retried channel creation can
/// recognise a channel Klaxon itself created for this incident (DESIGN.md).
pub fn channel_purpose(incident: &Incident) -> String {
    format!("Klaxon incident {}: {}", incident.id, incident.title)
}

/// The channel topic: severity, commander, status, title. Slack caps topics at 250 chars.
pub fn topic(incident: &Incident) -> String {
    let ic = incident
        .commander()
        .map_or_else(|| "unassigned".to_string(), |u| format!("<@{u}>"));
    let topic = format!(
        "{} | IC: {} | Status: {} | {}",
        incident.severity, ic, incident.status, incident.title
    );
    topic.chars().take(250).collect()
}

/// The summary posted in the new incident channel.
pub fn summary(incident: &Incident, policy: Policy<'_>) -> Message {
    let sev = policy.severities.get(incident.severity);
    let respond_by =
        policy
            .severities
            .respond_by(incident.severity, incident.declared_at, policy.calendar);
    let mut blocks = vec![
        Block::Header {
            text: format!("{}: {}", incident.id, incident.title),
        },
        Block::Fields {
            fields: deadline_fields(incident, policy),
        },
    ];
    blocks.push(Block::Context {
        spans: vec![Span::text(format!(
            "Post updates with `/incident update <text>`{}. Hand over with `/incident role commander @someone`. `/incident help` lists everything.",
            sev.status_every.map(|d| format!(" (expected every {})", duration(d))).unwrap_or_default()
        ))],
    });
    Message {
        fallback: vec![
            Span::text(format!(
                "{} {} declared: {} (respond by ",
                incident.id, incident.severity, incident.title
            )),
            Span::Time(respond_by),
            Span::text(")"),
        ],
        blocks,
    }
}

fn deadline_fields(incident: &Incident, policy: Policy<'_>) -> Vec<Field> {
    let sev = policy.severities.get(incident.severity);
    let respond_by =
        policy
            .severities
            .respond_by(incident.severity, incident.declared_at, policy.calendar);
    let field = |label: &str, value: Vec<Span>| Field {
        label: label.into(),
        value,
    };
    vec![
        field(
            "Severity",
            vec![Span::text(format!(
                "{} — {}",
                incident.severity, sev.meaning
            ))],
        ),
        field("Status", vec![Span::text(incident.status.to_string())]),
        field(
            "Incident commander",
            vec![
                incident
                    .commander()
                    .map_or_else(|| Span::text("unassigned"), |u| Span::User(u.into())),
            ],
        ),
        field("Declared", vec![Span::Time(incident.declared_at)]),
        field("Respond by", vec![Span::Time(respond_by)]),
        field(
            "RTO",
            vec![
                Span::text(format!("{}: service back by ", duration(sev.rto))),
                Span::Time(incident.declared_at + sev.rto),
            ],
        ),
        field(
            "RPO",
            vec![
                Span::text(format!(
                    "{}: restore to a point no earlier than ",
                    duration(sev.rpo)
                )),
                Span::Time(incident.declared_at - sev.rpo),
            ],
        ),
    ]
}

/// The announcement in `#incident-response`.
pub fn announcement(incident: &Incident) -> Message {
    let mut spans = vec![
        Span::bold(format!(
            ":rotating_light: {} declared: {} — {}",
            incident.severity, incident.id, incident.title
        )),
        Span::text(". Join "),
        Span::IncidentChannel,
        Span::text(". Incident commander: "),
    ];
    spans.push(
        incident
            .commander()
            .map_or_else(|| Span::text("unassigned"), |u| Span::User(u.into())),
    );
    spans.push(Span::text("."));
    Message::paragraph(spans)
}

/// Someone took or was given a role.
pub fn role_assigned(role: Role, user: &str, previous: Option<&str>, actor: &Actor) -> Message {
    let mut spans = vec![
        Span::User(user.into()),
        Span::text(format!(" is now the {}", role.title())),
    ];
    if let Some(prev) = previous {
        spans.push(Span::text(", taking over from "));
        spans.push(Span::User(prev.into()));
    }
    spans.push(Span::text(" (set by "));
    spans.push(actor_span(actor));
    spans.push(Span::text(")."));
    Message::paragraph(spans)
}

/// Severity changed: says the new deadlines.
pub fn severity_changed(
    incident: &Incident,
    from: Severity,
    actor: &Actor,
    policy: Policy<'_>,
) -> Message {
    let direction = if incident.severity < from {
        "raised"
    } else {
        "lowered"
    };
    let spans = vec![
        Span::bold(format!(
            "{} severity {direction}: {from} → {}",
            incident.id, incident.severity
        )),
        Span::text(format!(" ({}) by ", incident.title)),
        actor_span(actor),
        Span::text(" in "),
        Span::IncidentChannel,
        Span::text("."),
    ];
    let fallback = spans.clone();
    Message {
        fallback,
        blocks: vec![
            Block::Section { spans },
            Block::Fields {
                fields: deadline_fields(incident, policy),
            },
        ],
    }
}

/// Status changed.
pub fn status_changed(incident: &Incident, from: Status, actor: &Actor) -> Message {
    Message::paragraph(vec![
        Span::bold(format!("Status: {from} → {}", incident.status)),
        Span::text(" (set by "),
        actor_span(actor),
        Span::text(")."),
    ])
}

/// A status update, as posted in the channel.
pub fn status_update(
    incident: &Incident,
    text: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Message {
    Message {
        fallback: vec![Span::text(format!(
            "Status update on {}: {text}",
            incident.id
        ))],
        blocks: vec![
            Block::Section {
                spans: vec![Span::bold(format!(
                    "Status update — {} {}",
                    incident.severity, incident.status
                ))],
            },
            Block::Section {
                spans: vec![Span::text(text)],
            },
            Block::Context {
                spans: vec![
                    Span::text("Posted by "),
                    actor_span(actor),
                    Span::text(" at "),
                    Span::Time(now),
                ],
            },
        ],
    }
}

/// The incident was resolved.
pub fn resolved(incident: &Incident, actor: &Actor) -> Message {
    let resolved_at = incident.resolved_at.unwrap_or(incident.declared_at);
    let lasted = duration(resolved_at - incident.declared_at);
    Message {
        fallback: vec![Span::text(format!(
            "{} resolved: {}",
            incident.id, incident.title
        ))],
        blocks: vec![
            Block::Section {
                spans: vec![
                    Span::bold(format!(
                        ":white_check_mark: {} resolved: {}",
                        incident.id, incident.title
                    )),
                    Span::text(format!(" after {lasted}. Resolved by ")),
                    actor_span(actor),
                    Span::text(" in "),
                    Span::IncidentChannel,
                    Span::text("."),
                ],
            },
            Block::Section {
                spans: vec![
                    Span::bold("Resolution: "),
                    Span::text(incident.resolution.clone().unwrap_or_default()),
                ],
            },
        ],
    }
}

/// One line per open incident for `/incident list`.
pub fn incident_line(incident: &Incident) -> Vec<Span> {
    let mut spans = vec![
        Span::bold(format!("{} {}", incident.id, incident.severity)),
        Span::text(format!(" {} — {} — ", incident.title, incident.status)),
    ];
    match &incident.channel {
        Some(c) => spans.push(Span::Channel(c.id.clone())),
        None => spans.push(Span::text(format!(
            "#{} (opening)",
            incident.planned_channel_name
        ))),
    }
    spans.push(Span::text(" — IC "));
    spans.push(
        incident
            .commander()
            .map_or_else(|| Span::text("unassigned"), |u| Span::User(u.into())),
    );
    spans.push(Span::text(" — declared "));
    spans.push(Span::Time(incident.declared_at));
    spans
}

fn late_note(late: Option<TimeDelta>) -> Vec<Span> {
    match late {
        Some(late) => vec![Span::text(format!(
            " (sent {} late: Klaxon could not send it on time)",
            duration(late)
        ))],
        None => vec![],
    }
}

fn mention_leads(incident: &Incident) -> Vec<Span> {
    let mut spans = Vec::new();
    for role in [Role::Commander, Role::Comms] {
        if let Some(user) = incident.roles.get(&role) {
            spans.push(Span::User(user.clone()));
            spans.push(Span::text(" "));
        }
    }
    if spans.is_empty() {
        spans.push(Span::text("Nobody is incident commander yet. "));
    }
    spans
}

/// The status reminder: how long since the last update, what it said, how to post one.
pub fn status_reminder(
    incident: &Incident,
    now: DateTime<Utc>,
    late: Option<TimeDelta>,
    policy: Policy<'_>,
) -> Message {
    let every = policy
        .severities
        .get(incident.severity)
        .status_every
        .map(duration)
        .unwrap_or_default();
    let mut spans = mention_leads(incident);
    match &incident.last_update {
        Some(update) => {
            spans.push(Span::bold(format!(
                "No status update for {}",
                duration(now - update.at)
            )));
            spans.push(Span::text(format!(
                " ({} expects one every {every}). Last update, by ",
                incident.severity
            )));
            spans.push(Span::User(update.by.clone()));
            spans.push(Span::text(" at "));
            spans.push(Span::Time(update.at));
            spans.push(Span::text(format!(": \"{}\"", update.text)));
        }
        None => {
            spans.push(Span::bold(format!(
                "No status update yet, {} after declaration",
                duration(now - incident.declared_at)
            )));
            spans.push(Span::text(format!(
                " ({} expects one every {every})",
                incident.severity
            )));
        }
    }
    spans.push(Span::text(
        ". Post one with `/incident update <what changed, what is next>`.",
    ));
    spans.extend(late_note(late));
    Message::paragraph(spans)
}

/// Nobody took command by the response deadline.
pub fn response_missed(incident: &Incident, late: Option<TimeDelta>) -> Message {
    let mut spans = vec![
        Span::bold(format!(
            ":rotating_light: {} {} has no incident commander",
            incident.id, incident.severity
        )),
        Span::text(format!(
            " ({}) and its response deadline has passed. Take it with `/incident role commander @you` in ",
            incident.title
        )),
        Span::IncidentChannel,
        Span::text("."),
    ];
    spans.extend(late_note(late));
    Message::paragraph(spans)
}

/// An escalation step fired.
pub fn escalated(
    incident: &Incident,
    target: &str,
    now: DateTime<Utc>,
    late: Option<TimeDelta>,
) -> Message {
    let mut spans = vec![
        Span::bold(format!(":mega: Escalated {} to {target}", incident.id)),
        Span::text(format!(
            ": {} {} ({}), unmitigated for {}, status {}. Join ",
            incident.severity,
            incident.title,
            incident.id,
            duration(now - incident.declared_at),
            incident.status
        )),
        Span::IncidentChannel,
        Span::text("."),
    ];
    spans.extend(late_note(late));
    Message::paragraph(spans)
}

/// A share of the RTO has elapsed; times in the team's zone and in UTC.
pub fn rto_checkpoint(
    incident: &Incident,
    percent: u8,
    now: DateTime<Utc>,
    late: Option<TimeDelta>,
    policy: Policy<'_>,
) -> Message {
    let rto = policy.severities.get(incident.severity).rto;
    let deadline = incident.declared_at + rto;
    let left = deadline - now;
    let headline = if left > TimeDelta::zero() {
        format!(
            ":hourglass_flowing_sand: {percent}% of the {} RTO used: {} left",
            duration(rto),
            duration(left)
        )
    } else {
        format!(":hourglass: RTO of {} reached", duration(rto))
    };
    let mut spans = vec![
        Span::bold(headline),
        Span::text(format!(
            ". Service must be back by {} ({} UTC).",
            policy.calendar.format_local(deadline),
            deadline.format("%H:%M")
        )),
    ];
    spans.extend(late_note(late));
    Message::paragraph(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(TimeDelta::minutes(30)), "30 min");
        assert_eq!(duration(TimeDelta::hours(4)), "4 h");
        assert_eq!(duration(TimeDelta::minutes(90)), "1 h 30 min");
        assert_eq!(duration(TimeDelta::hours(72)), "3 d");
    }
}
