use super::*;
use crate::domain::calendar::BusinessCalendar;
use crate::domain::escalation::EscalationPolicy;
use crate::domain::incident::{
    Actor, Change, Decision, DomainError, Effect, EventKind, Incident, Policy, apply, declare,
};
use crate::domain::severity::SeverityPolicies;
use crate::domain::timers::TimerKind;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn group(name: &str, audience: Audience, threshold: Severity, tz: Tz) -> Group {
    Group {
        name: name.into(),
        audience,
        threshold,
        every: BTreeMap::from([
            (Severity::Sev1, TimeDelta::minutes(30)),
            (Severity::Sev2, TimeDelta::minutes(60)),
        ]),
        tz,
        updates: match audience {
            Audience::Internal => UpdateFilter::All,
            Audience::External => UpdateFilter::Public,
        },
        slack_channels: vec![],
        emails: vec![format!("{name}@example.com")],
        statuspage_component: None,
    }
}

fn policy() -> StakeholderPolicy {
    StakeholderPolicy {
        groups: vec![
            group(
                "engineering",
                Audience::Internal,
                Severity::Sev2,
                chrono_tz::Europe::London,
            ),
            group(
                "customers",
                Audience::External,
                Severity::Sev1,
                chrono_tz::America::New_York,
            ),
        ],
        security_keywords: vec!["breach".into()],
        ..StakeholderPolicy::default()
    }
}

fn run<T>(stake: &StakeholderPolicy, f: impl FnOnce(Policy<'_>) -> T) -> T {
    let (sev, cal, esc) = (
        SeverityPolicies::default(),
        BusinessCalendar::default(),
        EscalationPolicy::default(),
    );
    f(Policy {
        severities: &sev,
        calendar: &cal,
        escalation: &esc,
        stakeholders: stake,
    })
}

fn declared(
    severity: Severity,
    title: &str,
    security: bool,
    stake: &StakeholderPolicy,
) -> Decision {
    run(stake, |p| {
        let mut d = declare(
            IncidentId(7),
            severity,
            title,
            &Actor::User("UALICE".into()),
            at("2026-11-23T10:00:00Z"),
            p,
        )
        .unwrap();
        on_declare(&mut d, security, at("2026-11-23T10:00:00Z"), stake, &[]);
        d
    })
}

fn change(
    incident: &Incident,
    change: Change,
    now: &str,
    stake: &StakeholderPolicy,
) -> Result<Decision, DomainError> {
    run(stake, |p| {
        apply(incident, change, &Actor::User("UBOB".into()), at(now), p)
    })
}

fn notices(d: &Decision) -> Vec<(String, Recipient, Notice)> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Stakeholder { group, to, notice } => {
                Some((group.clone(), to.clone(), notice.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn external_text_drops_people_commands_and_channels() {
    let text = "<@U123|alice> restarted `db-primary-1` per <#C0456|inc-20261123-db> and @bob paged <!subteam^S1|oncall>; see inc-20261123-database-is-down. ```kubectl rollout restart``` Errors are falling.";
    assert_eq!(
        external_text(text),
        "our team restarted [details withheld] per an internal channel and our team paged our team; see an internal channel. [details withheld] Errors are falling."
    );
    assert_eq!(
        external_text("Payments #ops-db are slow"),
        "Payments an internal channel are slow"
    );
    assert_eq!(
        external_text("<https://grafana.internal/d/1|a dashboard> shows it"),
        "a dashboard shows it"
    );
    assert_eq!(external_text("Plain words stay."), "Plain words stay.");
}

#[test]
fn update_flags_split_off() {
    assert_eq!(update_mode("--public Fixed"), (UpdateMode::Public, "Fixed"));
    assert_eq!(
        update_mode("--preview  We are on it"),
        (UpdateMode::Preview, "We are on it")
    );
    assert_eq!(
        update_mode("--publicity stunt"),
        (UpdateMode::Plain, "--publicity stunt")
    );
    assert_eq!(update_mode("Plain"), (UpdateMode::Plain, "Plain"));
}

#[test]
fn a_declaration_tells_internal_groups_it_concerns_only() {
    let stake = policy();
    let d = declared(Severity::Sev2, "Search is slow", false, &stake);
    let n = notices(&d);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].0, "engineering");
    assert_eq!(n[0].2.kind, NoticeKind::Declared);
    // London is on GMT in November: 10:00 + 60 min.
    assert_eq!(n[0].2.next_update_by.as_deref(), Some("11:00 GMT"));
    assert!(!d.incident.security);
    let sev3 = declared(Severity::Sev3, "Typo on a page", false, &stake);
    assert!(notices(&sev3).is_empty());
    assert!(timers(&sev3.incident, &stake).is_empty());
}

#[test]
fn a_plain_update_reaches_internal_groups_a_public_one_everyone_redacted() {
    let stake = policy();
    let inc = declared(Severity::Sev1, "Database is down", false, &stake).incident;
    let text = "<@UCAROL> failed over `pg-2`; errors falling";
    let plain = change(
        &inc,
        Change::PostUpdate(text.into()),
        "2026-11-23T10:20:00Z",
        &stake,
    )
    .unwrap();
    let groups: Vec<String> = notices(&plain).into_iter().map(|n| n.0).collect();
    assert_eq!(groups, vec!["engineering"]);
    assert_eq!(notices(&plain)[0].2.body, text);

    let public = change(
        &inc,
        Change::PostUpdate(format!("--public {text}")),
        "2026-11-23T10:20:00Z",
        &stake,
    )
    .unwrap();
    let n = notices(&public);
    assert_eq!(n.len(), 2);
    let customers = &n.iter().find(|n| n.0 == "customers").unwrap().2;
    assert!(customers.external);
    assert_eq!(
        customers.body,
        "our team failed over [details withheld]; errors falling"
    );
    assert!(!customers.subject.contains("UCAROL"));
    // New York: 10:20 UTC is 05:20 EST; the next update 30 min later.
    assert_eq!(customers.next_update_by.as_deref(), Some("05:50 EST"));
    assert_eq!(customers.written_at, "Mon 23 Nov 2026 05:20 EST");
    // The commander sees the exact external text, in the reply and the channel.
    assert!(public.reply.contains(&customers.body), "{}", public.reply);
    assert_eq!(public.incident.stakeholders_told.len(), 2);
}

#[test]
fn a_preview_posts_nothing_and_shows_the_external_text() {
    let stake = policy();
    let inc = declared(Severity::Sev1, "Database is down", false, &stake).incident;
    let err = change(
        &inc,
        Change::PostUpdate("--preview <@UCAROL> on `db1`".into()),
        "2026-11-23T10:20:00Z",
        &stake,
    )
    .unwrap_err();
    let DomainError::Unchanged(text) = err else {
        panic!("a preview is answered, not applied")
    };
    assert!(text.contains("> our team on [details withheld]"), "{text}");
    assert!(
        text.contains("customers") && text.contains("engineering"),
        "{text}"
    );
}

#[test]
fn cadence_timers_follow_what_each_group_was_last_told_and_stop_at_resolve() {
    let stake = policy();
    let inc = declared(Severity::Sev1, "Database is down", false, &stake).incident;
    let due: Vec<(String, DateTime<Utc>)> = timers(&inc, &stake)
        .into_iter()
        .map(|t| (t.kind.key(), t.due_at))
        .collect();
    assert_eq!(
        due,
        vec![("stakeholder:engineering".into(), at("2026-11-23T10:30:00Z"))]
    );
    let fired = change(
        &inc,
        Change::TimerFired {
            kind: TimerKind::StakeholderCadence {
                group: "engineering".into(),
            },
            due_at: at("2026-11-23T10:30:00Z"),
        },
        "2026-11-23T10:30:00Z",
        &stake,
    )
    .unwrap();
    let n = notices(&fired);
    assert_eq!(n[0].2.kind, NoticeKind::StillInvestigating);
    assert_eq!(
        n[0].2.body,
        "Still investigating, next update by 11:00 GMT. Current status: Investigating."
    );
    let due: Vec<DateTime<Utc>> = timers(&fired.incident, &stake)
        .into_iter()
        .map(|t| t.due_at)
        .collect();
    assert_eq!(due, vec![at("2026-11-23T11:00:00Z")]);
    let resolved = change(
        &fired.incident,
        Change::Resolve("Fixed".into()),
        "2026-11-23T10:40:00Z",
        &stake,
    )
    .unwrap();
    let n = notices(&resolved);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].2.kind, NoticeKind::AllClear);
    assert_eq!(n[0].2.next_update_by, None);
    assert!(
        run(&stake, |p| crate::domain::timers::plan(
            &resolved.incident,
            p
        ))
        .is_empty()
    );
}

#[test]
fn security_incidents_are_reminded_until_acknowledged_and_cannot_resolve_before() {
    let stake = policy();
    let d = declared(Severity::Sev2, "Possible data breach", false, &stake);
    assert!(d.incident.security);
    assert!(
        d.events
            .contains(&EventKind::SecurityFlagged { by_rule: true })
    );
    let reminder = |i: &Incident| {
        timers(i, &stake)
            .into_iter()
            .find(|t| t.kind == TimerKind::RegulatoryReminder)
            .map(|t| t.due_at)
    };
    assert_eq!(reminder(&d.incident), Some(at("2026-11-23T10:00:00Z")));
    let fired = change(
        &d.incident,
        Change::TimerFired {
            kind: TimerKind::RegulatoryReminder,
            due_at: at("2026-11-23T10:00:00Z"),
        },
        "2026-11-23T10:00:00Z",
        &stake,
    )
    .unwrap();
    assert_eq!(reminder(&fired.incident), Some(at("2026-11-23T11:00:00Z")));
    let refused = change(
        &fired.incident,
        Change::Resolve("done".into()),
        "2026-11-23T10:30:00Z",
        &stake,
    )
    .unwrap_err();
    assert!(refused.to_string().contains("ack-regulatory"), "{refused}");
    let acked = change(
        &fired.incident,
        Change::AckRegulatory,
        "2026-11-23T10:30:00Z",
        &stake,
    )
    .unwrap();
    assert_eq!(reminder(&acked.incident), None);
    assert!(
        change(
            &acked.incident,
            Change::AckRegulatory,
            "2026-11-23T10:31:00Z",
            &stake
        )
        .is_err()
    );
    change(
        &acked.incident,
        Change::Resolve("done".into()),
        "2026-11-23T10:32:00Z",
        &stake,
    )
    .unwrap();

    let asked = declared(Severity::Sev3, "Odd login", true, &stake);
    assert!(asked.incident.security);
    assert!(
        asked
            .events
            .contains(&EventKind::SecurityFlagged { by_rule: false })
    );
}

#[test]
fn an_external_all_clear_is_redacted_and_previewed() {
    let stake = policy();
    let inc = declared(Severity::Sev1, "Database is down", false, &stake).incident;
    let public = change(
        &inc,
        Change::PostUpdate("--public Failing over".into()),
        "2026-11-23T10:20:00Z",
        &stake,
    )
    .unwrap();
    let resolved = change(
        &public.incident,
        Change::Resolve("<@UBOB> ran `failover.sh`".into()),
        "2026-11-23T10:50:00Z",
        &stake,
    )
    .unwrap();
    let n = notices(&resolved);
    let customers = &n.iter().find(|n| n.0 == "customers").unwrap().2;
    assert_eq!(
        customers.body,
        "All clear: the incident is resolved. our team ran [details withheld]"
    );
    assert!(customers.is_previewed() && customers.external);
    assert!(
        resolved.reply.contains(&format!("> {}", customers.body)),
        "{}",
        resolved.reply
    );
    let engineering = &n.iter().find(|n| n.0 == "engineering").unwrap().2;
    assert!(engineering.body.contains("<@UBOB> ran `failover.sh`"));
    assert!(resolved.events.contains(&EventKind::StakeholdersNotified {
        notice: NoticeKind::AllClear,
        groups: vec!["engineering".into(), "customers".into()],
    }));
}

/// A PagerDuty service that names its stakeholder groups narrows who hears of a
/// declaration to those groups (the severity threshold still applies).
#[test]
fn a_declaration_can_be_narrowed_to_named_groups() {
    let mut stake = policy();
    stake.groups.push(group(
        "finance",
        Audience::Internal,
        Severity::Sev2,
        chrono_tz::Europe::London,
    ));
    let told = |only: &[String]| -> Vec<String> {
        run(&stake, |p| {
            let mut d = declare(
                IncidentId(8),
                Severity::Sev1,
                "Payments down",
                &Actor::Klaxon,
                at("2026-11-23T10:00:00Z"),
                p,
            )
            .unwrap();
            on_declare(&mut d, false, at("2026-11-23T10:00:00Z"), &stake, only);
            let mut groups: Vec<String> = notices(&d).into_iter().map(|(g, _, _)| g).collect();
            groups.dedup();
            groups
        })
    };
    assert_eq!(told(&[]), vec!["engineering", "finance"]);
    assert_eq!(told(&["finance".to_string()]), vec!["finance"]);
    // External groups hear of it only through a public update, named or not.
    assert!(told(&["customers".to_string()]).is_empty());
}
