//! Tests of declaring and changing incidents.

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn declared() -> Decision {
    let sev = SeverityPolicies::default();
    let cal = BusinessCalendar::default();
    let esc = EscalationPolicy::default();
    declare(
        IncidentId(7),
        Severity::Sev1,
        "  Database   is down ",
        &Actor::User("UALICE".into()),
        at("2026-11-23T10:00:00Z"),
        Policy {
            severities: &sev,
            calendar: &cal,
            escalation: &esc,
            stakeholders: &StakeholderPolicy::default(),
        },
    )
    .unwrap()
}

fn change(incident: &Incident, change: Change) -> Result<Decision, DomainError> {
    let sev = SeverityPolicies::default();
    let cal = BusinessCalendar::default();
    let esc = EscalationPolicy::default();
    apply(
        incident,
        change,
        &Actor::User("UBOB".into()),
        at("2026-11-23T10:20:00Z"),
        Policy {
            severities: &sev,
            calendar: &cal,
            escalation: &esc,
            stakeholders: &StakeholderPolicy::default(),
        },
    )
}

#[test]
fn declaring_makes_the_declarer_commander_and_opens_a_channel() {
    let d = declared();
    assert_eq!(d.incident.title, "Database is down");
    assert_eq!(d.incident.commander(), Some("UALICE"));
    assert_eq!(
        d.incident.planned_channel_name,
        "inc-20261123-database-is-down"
    );
    assert_eq!(
        d.events[0],
        EventKind::Declared {
            severity: Severity::Sev1,
            title: "Database is down".into(),
            respond_by: at("2026-11-23T10:15:00Z")
        }
    );
    assert!(
        matches!(&d.effects[0], Effect::OpenIncidentChannel { invite, .. } if invite == &vec!["UALICE".to_string()])
    );
    assert!(matches!(
        &d.effects[3],
        Effect::Post {
            destination: Destination::Announcements,
            ..
        }
    ));
}

#[test]
fn an_empty_title_is_refused_with_the_field() {
    let sev = SeverityPolicies::default();
    let cal = BusinessCalendar::default();
    let esc = EscalationPolicy::default();
    let err = declare(
        IncidentId(1),
        Severity::Sev2,
        "   ",
        &Actor::User("U".into()),
        at("2026-11-23T10:00:00Z"),
        Policy {
            severities: &sev,
            calendar: &cal,
            escalation: &esc,
            stakeholders: &StakeholderPolicy::default(),
        },
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "title: must not be empty");
}

#[test]
fn handing_over_command_records_the_previous_holder_and_updates_the_topic() {
    let d = change(
        &declared().incident,
        Change::AssignRole {
            role: Role::Commander,
            user: "UBOB".into(),
        },
    )
    .unwrap();
    assert_eq!(
        d.events,
        vec![EventKind::RoleAssigned {
            role: Role::Commander,
            user: "UBOB".into(),
            previous: Some("UALICE".into())
        }]
    );
    assert!(
        d.effects
            .iter()
            .any(|e| matches!(e, Effect::SetTopic { topic } if topic.contains("IC: <@UBOB>")))
    );
    let again = change(
        &d.incident,
        Change::AssignRole {
            role: Role::Commander,
            user: "UBOB".into(),
        },
    );
    assert!(matches!(again, Err(DomainError::Unchanged(_))));
}

#[test]
fn severity_and_status_changes_are_recorded_and_refused_when_unchanged() {
    let inc = declared().incident;
    let d = change(&inc, Change::ChangeSeverity(Severity::Sev2)).unwrap();
    assert_eq!(
        d.events,
        vec![EventKind::SeverityChanged {
            from: Severity::Sev1,
            to: Severity::Sev2
        }]
    );
    assert!(change(&inc, Change::ChangeSeverity(Severity::Sev1)).is_err());
    let d = change(&inc, Change::SetStatus(Status::Identified)).unwrap();
    assert_eq!(d.incident.status, Status::Identified);
    assert!(change(&inc, Change::SetStatus(Status::Investigating)).is_err());
    assert!(change(&inc, Change::SetStatus(Status::Resolved)).is_err());
}

#[test]
fn an_update_is_remembered_as_the_last_update() {
    let d = change(
        &declared().incident,
        Change::PostUpdate(" rolled back ".into()),
    )
    .unwrap();
    let last = d.incident.last_update.unwrap();
    assert_eq!(last.text, "rolled back");
    assert_eq!(last.at, at("2026-11-23T10:20:00Z"));
    assert!(change(&declared().incident, Change::PostUpdate(" ".into())).is_err());
}

#[test]
fn a_resolved_incident_refuses_changes() {
    let d = change(
        &declared().incident,
        Change::Resolve("Failed over to the replica".into()),
    )
    .unwrap();
    assert_eq!(d.incident.status, Status::Resolved);
    assert_eq!(
        d.incident.resolution.as_deref(),
        Some("Failed over to the replica")
    );
    let err = change(&d.incident, Change::PostUpdate("late".into())).unwrap_err();
    assert_eq!(err, DomainError::Resolved(IncidentId(7)));
    // The channel may still be reported after resolution (the outbox is behind).
    assert!(
        change(
            &d.incident,
            Change::ChannelOpened(IncidentChannel {
                id: "C1".into(),
                name: "x".into()
            })
        )
        .is_ok()
    );
}
