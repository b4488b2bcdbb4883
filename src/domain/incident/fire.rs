//! What a due timer does to an incident (status reminders, the response deadline,
//! escalation steps, the RTO watch, stakeholder cadences, regulatory reminders): the
//! events it records and the effects it sends, applied through [`super::apply`].

use chrono::{DateTime, Utc};

use crate::domain::regulatory;
use crate::domain::render;
use crate::domain::stakeholders;
use crate::domain::timers::{self, TimerKind};

use super::*;

/// What a due timer does: records it and says what to send.
pub(super) fn fire_timer(
    next: &mut Incident,
    kind: &TimerKind,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: Policy<'_>,
) -> (Vec<EventKind>, Vec<Effect>) {
    let late = timers::lateness(due_at, now);
    let late_by_secs = late.map(|d| d.num_seconds());
    if kind.once_per_incident() {
        next.fired_timers.insert(kind.key());
    }
    let post = |message| Effect::Post {
        destination: Destination::IncidentChannel,
        message,
    };
    let page = |target: &str, summary: String| Effect::Page {
        action: PageAction::Trigger,
        target: target.to_string(),
        dedup_key: dedup_key(next.id, target),
        summary,
        severity: page_severity(next.severity).into(),
    };
    match kind {
        TimerKind::StatusReminder => {
            next.last_reminder_at = Some(now);
            (
                vec![EventKind::ReminderSent { late_by_secs }],
                vec![post(render::status_reminder(next, now, late, policy))],
            )
        }
        TimerKind::ResponseDeadline => {
            let message = render::response_missed(next, late);
            let mut effects = vec![
                post(message.clone()),
                Effect::Post {
                    destination: Destination::Announcements,
                    message,
                },
            ];
            // The first step's own timer may have paged its target already (both are
            // due together when nobody took command): one page per target.
            if let Some(first) = policy.escalation.ladder(next.severity).first()
                && !next.fired_timers.contains(
                    &TimerKind::Escalation {
                        target: first.target.clone(),
                    }
                    .key(),
                )
            {
                let summary = format!(
                    "{} {}: nobody has taken command: {}",
                    next.id, next.severity, next.title
                );
                effects.push(page(&first.target, summary));
            }
            (vec![EventKind::ResponseMissed { late_by_secs }], effects)
        }
        TimerKind::Escalation { target } => {
            let age = render::duration(now - next.declared_at);
            let summary = format!(
                "{} {} unmitigated for {age}: {}",
                next.id, next.severity, next.title
            );
            let message = render::escalated(next, target, now, late);
            // Paged already by the response deadline (the ladder's first target, when
            // nobody took command): the notice and post still go out, the page does not.
            let paged_by_deadline = next
                .fired_timers
                .contains(&TimerKind::ResponseDeadline.key())
                && policy
                    .escalation
                    .ladder(next.severity)
                    .first()
                    .is_some_and(|first| first.target == *target);
            let mut effects = Vec::with_capacity(3);
            if !paged_by_deadline {
                effects.push(page(target, summary));
            }
            effects.push(Effect::NotifyTarget {
                target: target.clone(),
                message: message.clone(),
            });
            effects.push(post(message));
            (
                vec![EventKind::Escalated {
                    target: target.clone(),
                    late_by_secs,
                }],
                effects,
            )
        }
        TimerKind::RtoWatch { percent } => (
            vec![EventKind::RtoCheckpoint {
                percent: *percent,
                late_by_secs,
            }],
            vec![post(render::rto_checkpoint(
                next, *percent, now, late, policy,
            ))],
        ),
        TimerKind::StakeholderCadence { group } => {
            let effects = stakeholders::on_cadence(next, group, now, policy.stakeholders);
            (
                vec![EventKind::StakeholdersNotified {
                    notice: stakeholders::NoticeKind::StillInvestigating,
                    groups: vec![group.clone()],
                }],
                effects,
            )
        }
        TimerKind::RegulatoryReminder => {
            regulatory::fire(next, now, late_by_secs, policy.stakeholders)
        }
    }
}
