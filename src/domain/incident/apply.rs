//! The transitions: [`declare`] a new incident and [`apply`] a [`Change`] to an open one,
//! each returning the new state with its timeline events, outbound effects and the reply
//! for the person who asked. Timer firings are in `fire`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::domain::channel_name;
use crate::domain::regulatory;
use crate::domain::render;
use crate::domain::severity::Severity;
use crate::domain::stakeholders;
use crate::domain::timers::{self, TimerKind};

use super::fire::fire_timer;
use super::*;

/// Declares a new incident numbered `id`. The declarer becomes incident commander.
pub fn declare(
    id: IncidentId,
    severity: Severity,
    title: &str,
    declared_by: &Actor,
    now: DateTime<Utc>,
    policy: Policy<'_>,
) -> Result<Decision, DomainError> {
    let title = declared_title(title)?;
    let respond_by = policy.severities.respond_by(severity, now, policy.calendar);
    let local_date = now.with_timezone(&policy.calendar.tz).date_naive();
    let incident = Incident {
        id,
        title: title.clone(),
        severity,
        status: Status::Investigating,
        declared_at: now,
        declared_by: declared_by.to_string(),
        planned_channel_name: channel_name::planned(local_date, &title),
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
    let mut incident = incident;
    let mut events = vec![EventKind::Declared {
        severity,
        title,
        respond_by,
    }];
    let mut invite = Vec::new();
    // A person who declares commands until they hand over; an incident Klaxon opens
    // itself (a PagerDuty trigger) has no commander until someone takes the role.
    if let Actor::User(user) = declared_by {
        incident.roles.insert(Role::Commander, user.clone());
        events.push(EventKind::RoleAssigned {
            role: Role::Commander,
            user: user.clone(),
            previous: None,
        });
        invite.push(user.clone());
    }
    let effects = vec![
        Effect::OpenIncidentChannel {
            name: incident.planned_channel_name.clone(),
            purpose: render::channel_purpose(&incident),
            invite,
        },
        Effect::SetTopic {
            topic: render::topic(&incident),
        },
        Effect::Post {
            destination: Destination::IncidentChannel,
            message: render::summary(&incident, policy),
        },
        Effect::Post {
            destination: Destination::Announcements,
            message: render::announcement(&incident),
        },
    ];
    let reply = format!(
        "{id} declared ({severity}): opening #{}. You are the incident commander until you hand over with `/incident role commander @someone`.",
        incident.planned_channel_name
    );
    Ok(Decision {
        incident,
        events,
        effects,
        reply,
    })
}

/// Applies `change` by `actor` to `incident` at `now`.
pub fn apply(
    incident: &Incident,
    change: Change,
    actor: &Actor,
    now: DateTime<Utc>,
    policy: Policy<'_>,
) -> Result<Decision, DomainError> {
    if !incident.is_open() && !matches!(change, Change::ChannelOpened(_)) {
        return Err(DomainError::Resolved(incident.id));
    }
    let mut next = incident.clone();
    let id = incident.id;
    let actor_mention = match actor {
        Actor::User(u) => format!("<@{u}>"),
        Actor::Klaxon => "Klaxon".to_string(),
    };
    let (events, effects, reply) =
        match change {
            Change::AssignRole { role, user } => {
                let previous = next.roles.insert(role, user.clone());
                if previous.as_deref() == Some(user.as_str()) {
                    return Err(DomainError::Unchanged(format!(
                        "<@{user}> is already the {} of {id}.",
                        role.title()
                    )));
                }
                let mut effects = vec![Effect::Invite {
                    users: vec![user.clone()],
                }];
                if role == Role::Commander {
                    effects.push(Effect::SetTopic {
                        topic: render::topic(&next),
                    });
                }
                effects.push(Effect::Post {
                    destination: Destination::IncidentChannel,
                    message: render::role_assigned(role, &user, previous.as_deref(), actor),
                });
                (
                    vec![EventKind::RoleAssigned {
                        role,
                        user: user.clone(),
                        previous,
                    }],
                    effects,
                    format!("<@{user}> is now the {} of {id}.", role.title()),
                )
            }
            Change::ChangeSeverity(to) => {
                let from = incident.severity;
                if from == to {
                    return Err(DomainError::Unchanged(format!("{id} is already {to}.")));
                }
                next.severity = to;
                let message = render::severity_changed(&next, from, actor, policy);
                (
                    vec![EventKind::SeverityChanged { from, to }],
                    vec![
                        Effect::SetTopic {
                            topic: render::topic(&next),
                        },
                        Effect::Post {
                            destination: Destination::IncidentChannel,
                            message: message.clone(),
                        },
                        Effect::Post {
                            destination: Destination::Announcements,
                            message,
                        },
                    ],
                    format!("{id} is now {to}."),
                )
            }
            Change::SetStatus(to) => {
                let from = incident.status;
                if to == Status::Resolved {
                    return Err(DomainError::Invalid {
                        field: "status",
                        rule: "use `/incident resolve` to resolve".into(),
                    });
                }
                if from == to {
                    return Err(DomainError::Unchanged(format!("{id} is already {to}.")));
                }
                next.status = to;
                (
                    vec![EventKind::StatusChanged { from, to }],
                    vec![
                        Effect::SetTopic {
                            topic: render::topic(&next),
                        },
                        Effect::Post {
                            destination: Destination::IncidentChannel,
                            message: render::status_changed(&next, from, actor),
                        },
                    ],
                    format!("{id} is now {to}."),
                )
            }
            Change::PostUpdate(text) => {
                let (mode, text) = stakeholders::update_mode(&text);
                let text = clean_text("update", text, MAX_TEXT_CHARS)?;
                let public = stakeholders::refuse_preview(&next, &text, mode, policy.stakeholders)?;
                let by = actor.to_string();
                next.last_update = Some(StatusUpdate {
                    at: now,
                    by,
                    text: text.clone(),
                });
                let mut effects = vec![Effect::Post {
                    destination: Destination::IncidentChannel,
                    message: render::status_update(&next, &text, actor, now),
                }];
                let mut events = vec![EventKind::UpdatePosted { text: text.clone() }];
                let mut reply = format!("Status update posted to {id}.");
                stakeholders::on_update(
                    &mut next,
                    &text,
                    public,
                    now,
                    policy.stakeholders,
                    (&mut events, &mut effects, &mut reply),
                );
                (events, effects, reply)
            }
            Change::MarkSecurity => regulatory::mark(&mut next, policy.stakeholders)?,
            Change::AckRegulatory => regulatory::acknowledge(&mut next, actor, now)?,
            Change::Resolve(summary) => {
                let summary = clean_text("summary", &summary, MAX_TEXT_CHARS)?;
                regulatory::may_resolve(incident)?;
                let from = incident.status;
                next.status = Status::Resolved;
                next.resolved_at = Some(now);
                next.resolution = Some(summary.clone());
                let message = render::resolved(&next, actor);
                let mut effects = vec![
                    Effect::SetTopic {
                        topic: render::topic(&next),
                    },
                    Effect::Post {
                        destination: Destination::IncidentChannel,
                        message: message.clone(),
                    },
                    Effect::Post {
                        destination: Destination::Announcements,
                        message,
                    },
                ];
                effects.extend(paged_targets(&next, policy).into_iter().map(|target| {
                    Effect::Page {
                        action: PageAction::Resolve,
                        dedup_key: dedup_key(id, &target),
                        summary: format!("{id} resolved: {}", next.title),
                        severity: page_severity(next.severity).into(),
                        target,
                    }
                }));
                let mut events = vec![
                    EventKind::StatusChanged {
                        from,
                        to: Status::Resolved,
                    },
                    EventKind::Resolved { summary },
                ];
                let mut reply = format!("{id} resolved. Thank you, {actor_mention}.");
                stakeholders::on_resolve(
                    &mut next,
                    now,
                    policy.stakeholders,
                    (&mut events, &mut effects, &mut reply),
                );
                (events, effects, reply)
            }
            Change::TimerFired { kind, due_at } => {
                // Stored due times have millisecond precision: compare at that precision,
                // or a state time with microseconds would make every timer look moved.
                let planned = timers::plan(incident, policy).into_iter().any(|t| {
                    t.kind == kind && t.due_at.timestamp_millis() == due_at.timestamp_millis()
                });
                if !planned {
                    return Err(DomainError::Unchanged(format!(
                        "{id}: timer {kind} is no longer wanted"
                    )));
                }
                let (events, effects) = fire_timer(&mut next, &kind, due_at, now, policy);
                (events, effects, String::new())
            }
            Change::ChannelOpened(channel) => {
                if incident.channel.as_ref() == Some(&channel) {
                    return Err(DomainError::Unchanged(format!(
                        "{id} already has channel {}.",
                        channel.name
                    )));
                }
                next.channel = Some(channel.clone());
                (
                    vec![EventKind::ChannelOpened {
                        channel_id: channel.id,
                        name: channel.name,
                    }],
                    vec![],
                    String::new(),
                )
            }
        };
    Ok(Decision {
        incident: next,
        events,
        effects,
        reply,
    })
}

/// Targets already paged for this incident (to resolve their alerts).
fn paged_targets(incident: &Incident, policy: Policy<'_>) -> Vec<String> {
    let mut targets: Vec<String> = incident
        .fired_timers
        .iter()
        .filter_map(|k| k.strip_prefix("escalation:").map(str::to_string))
        .collect();
    if incident
        .fired_timers
        .contains(&TimerKind::ResponseDeadline.key())
        && let Some(first) = policy.escalation.ladder(incident.severity).first()
        && !targets.contains(&first.target)
    {
        targets.push(first.target.clone());
    }
    targets
}
