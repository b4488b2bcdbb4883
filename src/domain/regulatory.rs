//! Security incidents' regulatory duty (issue 9): "regulatory communication: within 24
//! hours for security incidents". An incident flagged as a security incident (declared
//! with `--security`, flagged with `/incident security`, or titled with a configured
//! keyword) gets a reminder to notify compliance/legal at once and every
//! `regulatory_every` until someone acknowledges it with `/incident ack-regulatory`;
//! until then it cannot be resolved (resolving would stop the reminders while the duty
//! still stands). Pure, like the rest of the domain.

use chrono::{DateTime, Utc};

use super::incident::{
    Acknowledgement, Actor, Decision, Destination, DomainError, Effect, EventKind, Incident,
};
use super::message::{Message, Span};
use super::stakeholders::StakeholderPolicy;
use super::timers::{TimerKind, TimerSpec};

/// What a change records, sends and answers.
type Outcome = (Vec<EventKind>, Vec<Effect>, String);

/// The deadline for the regulatory notification.
pub fn deadline(incident: &Incident, policy: &StakeholderPolicy) -> DateTime<Utc> {
    incident.declared_at + policy.regulatory_within
}

/// Flags a new incident when asked (`--security`) or when its title contains a
/// configured keyword.
pub fn flag_on_declare(decision: &mut Decision, asked: bool, policy: &StakeholderPolicy) {
    let title = decision.incident.title.to_lowercase();
    let by_rule = policy
        .security_keywords
        .iter()
        .any(|k| title.contains(&k.to_lowercase()));
    if !(asked || by_rule) {
        return;
    }
    decision.incident.security = true;
    decision
        .events
        .push(EventKind::SecurityFlagged { by_rule: !asked });
    decision.effects.push(Effect::Post {
        destination: Destination::IncidentChannel,
        message: flagged(&decision.incident, policy),
    });
    decision.reply.push_str(
        " This is a security incident: compliance/legal must be notified; confirm with `/incident ack-regulatory`.",
    );
}

/// `/incident security`.
pub fn mark(next: &mut Incident, policy: &StakeholderPolicy) -> Result<Outcome, DomainError> {
    let id = next.id;
    if next.security {
        return Err(DomainError::Unchanged(format!(
            "{id} is already a security incident."
        )));
    }
    next.security = true;
    Ok((
        vec![EventKind::SecurityFlagged { by_rule: false }],
        vec![Effect::Post {
            destination: Destination::IncidentChannel,
            message: flagged(next, policy),
        }],
        format!(
            "{id} is now a security incident: compliance/legal must be notified; `/incident ack-regulatory` once they are."
        ),
    ))
}

/// `/incident ack-regulatory`.
pub fn acknowledge(
    next: &mut Incident,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Outcome, DomainError> {
    let id = next.id;
    if !next.security {
        return Err(DomainError::Unchanged(format!(
            "{id} is not a security incident; there is no regulatory notification to acknowledge."
        )));
    }
    if let Some(ack) = &next.regulatory_ack {
        return Err(DomainError::Unchanged(format!(
            "<@{}> already acknowledged the regulatory notification of {id}.",
            ack.by
        )));
    }
    next.regulatory_ack = Some(Acknowledgement {
        by: actor.to_string(),
        at: now,
    });
    let who = match actor {
        Actor::User(u) => Span::User(u.clone()),
        Actor::Klaxon => Span::text("Klaxon"),
    };
    Ok((
        vec![EventKind::RegulatoryAcknowledged],
        vec![Effect::Post {
            destination: Destination::IncidentChannel,
            message: Message::paragraph(vec![
                who,
                Span::text(
                    " confirmed that compliance/legal were notified. Regulatory reminders stopped.",
                ),
            ]),
        }],
        format!("Regulatory notification of {id} acknowledged."),
    ))
}

/// Refuses to resolve a security incident whose notification is not acknowledged.
pub fn may_resolve(incident: &Incident) -> Result<(), DomainError> {
    if incident.security && incident.regulatory_ack.is_none() {
        return Err(DomainError::NotAllowed(format!(
            "{} is a security incident whose regulatory notification is not acknowledged. Notify compliance/legal, then `/incident ack-regulatory`, then resolve.",
            incident.id
        )));
    }
    Ok(())
}

/// The reminder timer: at once for a new security incident, then every
/// `regulatory_every`, until acknowledged.
pub fn timer(incident: &Incident, policy: &StakeholderPolicy) -> Option<TimerSpec> {
    if !incident.security || incident.regulatory_ack.is_some() {
        return None;
    }
    let due_at = match incident.regulatory_reminded_at {
        None => incident.declared_at,
        Some(last) => last + policy.regulatory_every,
    };
    Some(TimerSpec {
        kind: TimerKind::RegulatoryReminder,
        due_at,
    })
}

/// The reminder came due: in the incident channel and `#incident-response`.
pub fn fire(
    next: &mut Incident,
    now: DateTime<Utc>,
    late_by_secs: Option<i64>,
    policy: &StakeholderPolicy,
) -> (Vec<EventKind>, Vec<Effect>) {
    next.regulatory_reminded_at = Some(now);
    let message = reminder(next, now, policy);
    (
        vec![EventKind::RegulatoryReminded { late_by_secs }],
        [Destination::IncidentChannel, Destination::Announcements]
            .into_iter()
            .map(|destination| Effect::Post {
                destination,
                message: message.clone(),
            })
            .collect(),
    )
}

/// Posted in the incident channel when it becomes a security incident.
pub fn flagged(incident: &Incident, policy: &StakeholderPolicy) -> Message {
    Message::paragraph(vec![
        Span::bold(format!("{} is a security incident.", incident.id)),
        Span::text(" Compliance/legal must be notified by "),
        Span::Time(deadline(incident, policy)),
        Span::text(". Reminders repeat until someone confirms with `/incident ack-regulatory`."),
    ])
}

/// The reminder's words: the deadline and how long is left (or how late it is).
pub fn reminder(incident: &Incident, now: DateTime<Utc>, policy: &StakeholderPolicy) -> Message {
    let by = deadline(incident, policy);
    let left = if by > now {
        format!("{} left", super::render::duration(by - now))
    } else {
        format!("overdue by {}", super::render::duration(now - by))
    };
    Message::paragraph(vec![
        Span::bold(format!(":scales: {} regulatory notification", incident.id)),
        Span::text(format!(
            ": security incident \"{}\": notify compliance/legal by ",
            incident.title
        )),
        Span::Time(by),
        Span::text(format!(" ({left}). Once done: `/incident ack-regulatory`.")),
    ])
}
