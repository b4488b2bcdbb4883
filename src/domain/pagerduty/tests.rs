//! Tests of the pure PagerDuty mapping, on the fixtures `tests/pagerduty_webhook.rs`
//! sends (in the shape of PagerDuty's published v3 examples).

use super::*;
use crate::domain::calendar::BusinessCalendar;
use crate::domain::escalation::EscalationPolicy;
use crate::domain::incident::Status;
use crate::domain::severity::SeverityPolicies;
use crate::domain::stakeholders::StakeholderPolicy;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../../tests/fixtures/pagerduty/", $name))
    };
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct Fixture {
    severities: SeverityPolicies,
    calendar: BusinessCalendar,
    escalation: EscalationPolicy,
    stakeholders: StakeholderPolicy,
}

impl Fixture {
    fn new() -> Self {
        Self {
            severities: SeverityPolicies::default(),
            calendar: BusinessCalendar::default(),
            escalation: EscalationPolicy::default(),
            stakeholders: StakeholderPolicy::default(),
        }
    }
    fn policy(&self) -> Policy<'_> {
        Policy {
            severities: &self.severities,
            calendar: &self.calendar,
            escalation: &self.escalation,
            stakeholders: &self.stakeholders,
        }
    }
}

fn triggered() -> PdIncident {
    parse(fixture!("incident_triggered.json"))
        .unwrap()
        .incident
        .unwrap()
}

#[test]
fn the_fixtures_parse_into_typed_events() {
    let t = parse(fixture!("incident_triggered.json")).unwrap();
    assert_eq!(t.id, "01DEN3QLDOH3CGY3KFRHMYCXL2");
    assert_eq!(t.event_type, EventType::Triggered);
    assert_eq!(t.occurred_at, Some(at("2026-11-23T10:00:00Z")));
    assert_eq!(t.agent.as_ref().unwrap().name(), "Earline Greenholt");
    let pd = t.incident.unwrap();
    assert_eq!(pd.id, "PGR0VU2");
    assert_eq!(pd.priority_name(), Some("P1"));
    assert_eq!(pd.service.as_ref().unwrap().id, "PF9KMXH");
    assert_eq!(pd.assignees.len(), 3);
    let note = parse(fixture!("incident_annotated.json")).unwrap();
    assert_eq!(note.incident_id.as_deref(), Some("PGR0VU2"));
    assert!(note.note.unwrap().contains("Rolled back"));
    let other = parse(fixture!("service_updated.json")).unwrap();
    assert_eq!(other.event_type, EventType::Other("service.updated".into()));
    assert_eq!(other.incident_id, None);
    for bad in [
        &b"{}"[..],
        br#"{"event":{"id":"","event_type":"incident.triggered"}}"#,
        b"not json",
    ] {
        assert!(parse(bad).is_err());
    }
    // A known type whose data is not an incident is refused, not guessed at.
    assert!(
        parse(
            br#"{"event":{"id":"x","event_type":"incident.triggered","data":{"type":"incident"}}}"#
        )
        .is_err()
    );
}

#[test]
fn severity_comes_from_priority_then_urgency_then_the_default() {
    let policy = PagerDutyPolicy::default();
    let mut pd = triggered();
    assert_eq!(policy.severity_of(&pd), Severity::Sev1);
    pd.priority = None;
    assert_eq!(policy.severity_of(&pd), Severity::Sev2, "high urgency");
    pd.urgency = Some("low".into());
    assert_eq!(policy.severity_of(&pd), Severity::Sev3);
    pd.urgency = None;
    let custom = PagerDutyPolicy {
        default_severity: Severity::Sev4,
        ..PagerDutyPolicy::default()
    };
    assert_eq!(custom.severity_of(&pd), Severity::Sev4);
}

#[test]
fn assignees_are_sorted_by_how_slack_finds_them() {
    let mut policy = PagerDutyPolicy::default();
    policy
        .users
        .insert("PXPGF42".into(), UserMapping::Slack("U0EARLINE".into()));
    policy.users.insert(
        "PEMAIL1".into(),
        UserMapping::Email("lela@example.com".into()),
    );
    let pd = triggered();
    let without_rest = responders(&pd.assignees, &policy);
    assert_eq!(without_rest.slack, vec!["U0EARLINE".to_string()]);
    assert_eq!(
        without_rest.by_email[0].email.as_deref(),
        Some("lela@example.com")
    );
    assert_eq!(without_rest.unmapped[0].pd_id, "PNOBODY");
    assert!(without_rest.look_up.is_empty());
    policy.rest_api = true;
    let with_rest = responders(&pd.assignees, &policy);
    assert!(with_rest.unmapped.is_empty());
    assert_eq!(with_rest.look_up[0].id, "PNOBODY");
}

#[test]
fn a_storm_joins_the_open_incident_within_the_window_only() {
    let start = at("2026-11-23T10:00:00Z");
    let w = Some(StormWindow {
        incident: IncidentId(4),
        opened_at: start,
    });
    let five = TimeDelta::minutes(5);
    assert_eq!(group(None, false, start, five), Grouping::Declare);
    assert_eq!(
        group(w, true, start + TimeDelta::minutes(4), five),
        Grouping::Join(IncidentId(4))
    );
    assert_eq!(group(w, true, start + five, five), Grouping::Declare);
    assert_eq!(group(w, false, start, five), Grouping::Declare, "resolved");
    assert_eq!(
        group(w, true, start, TimeDelta::zero()),
        Grouping::Declare,
        "off"
    );
}

#[test]
fn a_trigger_declares_without_a_commander_and_links_back() {
    let f = Fixture::new();
    let mut policy = PagerDutyPolicy::default();
    policy.services.insert(
        "PF9KMXH".into(),
        ServiceRoute {
            team: Some("api".into()),
            stakeholder_groups: vec!["customers".into()],
        },
    );
    policy
        .users
        .insert("PXPGF42".into(), UserMapping::Slack("U0EARLINE".into()));
    let now = at("2026-11-23T10:00:00Z");
    let d = declare(IncidentId(1), &triggered(), &policy, now, f.policy()).unwrap();
    assert_eq!(d.incident.severity, Severity::Sev1);
    assert_eq!(d.incident.commander(), None);
    assert_eq!(d.incident.title, "A little bump in the road");
    let Effect::OpenIncidentChannel { invite, .. } = &d.effects[0] else {
        panic!("{:?}", d.effects[0])
    };
    assert_eq!(invite, &vec!["U0EARLINE".to_string()]);
    let link = format!("{:?}", d.effects[3]);
    assert!(
        link.contains("https://acme.pagerduty.com/incidents/PGR0VU2"),
        "{link}"
    );
    assert!(
        link.contains("Team: api") && link.contains("customers"),
        "{link}"
    );
    assert!(matches!(
        d.events.last(),
        Some(EventKind::PagerDuty { pd_incident, .. }) if pd_incident == "PGR0VU2"
    ));
    // Nobody in command: the response deadline is planned (15 min for SEV1).
    let plan = crate::domain::timers::plan(&d.incident, f.policy());
    assert!(plan.iter().any(
        |t| t.kind == crate::domain::timers::TimerKind::ResponseDeadline
            && t.due_at == now + TimeDelta::minutes(15)
    ));
}

#[test]
fn titles_klaxon_refuses_are_replaced_not_fatal() {
    let mut pd = triggered();
    pd.title = Some("bad \u{202e} title".into());
    assert_eq!(title_of(&pd), "PagerDuty incident #2");
    pd.title = Some("x".repeat(500));
    assert_eq!(title_of(&pd).chars().count(), incident::MAX_TITLE_CHARS);
}

#[test]
fn follow_ups_record_and_change_by_config() {
    let f = Fixture::new();
    let policy = PagerDutyPolicy::default();
    let now = at("2026-11-23T10:10:00Z");
    let incident = declare(IncidentId(1), &triggered(), &policy, now, f.policy())
        .unwrap()
        .incident;
    let ack = parse(fixture!("incident_acknowledged.json")).unwrap();
    let d = follow_up(&incident, &ack, &policy, now, f.policy())
        .unwrap()
        .unwrap();
    assert!(
        matches!(&d.events[0], EventKind::PagerDuty { text, .. } if text.contains("acknowledged by Earline"))
    );
    assert_eq!(d.incident, incident);

    let prio = parse(fixture!("incident_priority_updated.json")).unwrap();
    let d = follow_up(&incident, &prio, &policy, now, f.policy())
        .unwrap()
        .unwrap();
    assert_eq!(d.incident.severity, Severity::Sev3);
    let off = PagerDutyPolicy {
        priority_changes_severity: false,
        ..policy.clone()
    };
    let d = follow_up(&incident, &prio, &off, now, f.policy())
        .unwrap()
        .unwrap();
    assert_eq!(d.incident.severity, Severity::Sev1);

    let resolved = parse(fixture!("incident_resolved.json")).unwrap();
    let d = follow_up(&incident, &resolved, &policy, now, f.policy())
        .unwrap()
        .unwrap();
    assert_eq!(d.incident.status, Status::Resolved);
    let keep = PagerDutyPolicy {
        resolve_from_pagerduty: false,
        ..policy.clone()
    };
    let d = follow_up(&incident, &resolved, &keep, now, f.policy())
        .unwrap()
        .unwrap();
    assert_eq!(d.incident.status, Status::Investigating);

    let other = parse(fixture!("service_updated.json")).unwrap();
    assert_eq!(
        follow_up(&incident, &other, &policy, now, f.policy()).unwrap(),
        None
    );
}

#[test]
fn dedup_keys_are_unique_per_installation_and_bounded() {
    let key = incident::dedup_key(IncidentId(1), "team");
    assert_eq!(
        installation_dedup_key("3f2a9c01deadbeef", &key),
        "klaxon-3f2a9c01-1-team"
    );
    assert_ne!(
        installation_dedup_key("3f2a9c01", &key),
        installation_dedup_key("77aa0000", &key)
    );
    let long = incident::dedup_key(IncidentId(1), &"t".repeat(400));
    assert_eq!(installation_dedup_key("3f2a9c01", &long).len(), 255);
}

#[test]
fn unmapped_responders_are_listed_never_dropped() {
    let r = |id: &str, email: Option<&str>| Responder {
        pd_id: id.into(),
        name: format!("Name {id}"),
        email: email.map(str::to_string),
    };
    let m = responders_message(&[
        (r("P1", Some("a@example.com")), Some("U0A".into())),
        (r("P2", Some("b@example.com")), None),
        (r("P3", None), None),
    ]);
    let text = format!("{m:?}");
    assert!(text.contains("U0A"));
    assert!(
        text.contains("Name P2 (b@example.com, not found in Slack)"),
        "{text}"
    );
    assert!(
        text.contains("Name P3 (PagerDuty user P3, no email known)"),
        "{text}"
    );
}

#[test]
fn a_reassignment_invites_new_assignees_mapped_to_slack() {
    let f = Fixture::new();
    let mut policy = PagerDutyPolicy::default();
    let now = at("2026-11-23T10:10:00Z");
    let incident = declare(IncidentId(1), &triggered(), &policy, now, f.policy())
        .unwrap()
        .incident;
    policy
        .users
        .insert("PEMAIL1".into(), UserMapping::Slack("U0LELA0001".into()));
    let reassigned = parse(fixture!("incident_reassigned.json")).unwrap();
    let d = follow_up(&incident, &reassigned, &policy, now, f.policy())
        .unwrap()
        .unwrap();
    assert_eq!(
        d.effects[0],
        Effect::Invite {
            users: vec!["U0LELA0001".into()]
        }
    );
    // An acknowledgement invites nobody.
    let ack = parse(fixture!("incident_acknowledged.json")).unwrap();
    let d = follow_up(&incident, &ack, &policy, now, f.policy())
        .unwrap()
        .unwrap();
    assert!(!d.effects.iter().any(|e| matches!(e, Effect::Invite { .. })));
}
