//! Issue 9, PagerDuty in: `POST /pagerduty/webhook` on both backends, with signed
//! deliveries built from the fixtures in `tests/fixtures/pagerduty` (the shape of
//! PagerDuty's published v3 examples), the Slack emulator, the Events API receiver and a
//! PagerDuty REST stand-in.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::TimeDelta;
use klaxon::clock::Clock;
use klaxon::domain::incident::{EventKind, Status};
use klaxon::domain::severity::Severity;
use klaxon::http::pagerduty::sign;
use secrecy::SecretString;
use serde_json::Value;
use support::pagerduty_rest::{self, PagerDutyRest};
use support::{Db, TestApp};

both_backends!(
    a_trigger_declares_invites_and_links_both_ways,
    without_a_rest_token_unmapped_responders_are_listed,
    a_refused_user_look_up_still_lists_the_responders,
    signatures_rotation_tampering_and_missing,
    a_replayed_delivery_acts_once,
    an_unknown_event_type_is_acknowledged_and_ignored,
    later_events_go_on_the_timeline_and_pagerduty_resolves,
    resolving_in_klaxon_resolves_pagerduty,
    nobody_in_command_so_the_deadline_escalates_with_installation_keys,
    a_storm_of_concurrent_triggers_opens_one_incident,
);

const OLD_SECRET: &str = "pd-webhook-secret-old";
const NEW_SECRET: &str = "pd-webhook-secret-new";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/pagerduty/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A Klaxon taking PagerDuty webhooks signed with [`NEW_SECRET`], its REST API pointed at
/// `rest` when given (Lela is mapped to Slack by email in the config).
async fn start(db: Db, rest: Option<&PagerDutyRest>) -> TestApp {
    let rest_url = rest.map(|r| r.url.clone());
    let app = TestApp::start_configured(db, move |config| {
        let pd = &mut config.pagerduty;
        pd.webhook_secrets = vec![SecretString::from(NEW_SECRET.to_string())];
        pd.policy.users.insert(
            "PEMAIL1".into(),
            klaxon::domain::pagerduty::UserMapping::Email("lela@example.com".into()),
        );
        pd.policy.services.insert(
            "PF9KMXH".into(),
            klaxon::domain::pagerduty::ServiceRoute {
                team: Some("api".into()),
                stakeholder_groups: vec!["customers".into()],
            },
        );
        if let Some(url) = rest_url {
            pd.api_url = url;
            pd.api_token = Some(SecretString::from(pagerduty_rest::TOKEN.to_string()));
            pd.from_email = Some(pagerduty_rest::FROM.into());
            pd.policy.rest_api = true;
        }
    })
    .await;
    app.slack.set_email("lela@example.com", "U0LELA0001");
    app.slack.set_email("earline@example.com", "U0EARLINE1");
    app
}

async fn post(app: &TestApp, body: &str, signature: Option<&str>) -> (StatusCode, String) {
    let mut request =
        Request::post("/pagerduty/webhook").header("content-type", "application/json");
    if let Some(sig) = signature {
        request = request.header("x-pagerduty-signature", sig);
    }
    app.send(request.body(Body::from(body.to_string())).unwrap())
        .await
}

/// Delivers `event` signed with the current secret.
async fn deliver(app: &TestApp, event: &Value) -> (StatusCode, String) {
    let body = event.to_string();
    post(app, &body, Some(&sign(NEW_SECRET, body.as_bytes()))).await
}

/// Delivers the outbox until nothing is pending. A lane delivers one row per pass, and a
/// row held back (pacing, a backoff) waits for the manual clock: when a pass finds nothing
/// due while rows are pending, the clock moves on a second.
async fn settle(app: &TestApp) {
    for _ in 0..600 {
        let report = app.deliver().await;
        if report.delivered == 0 && report.retried == 0 {
            if app.store.outbox_counts().await.unwrap().pending == 0 {
                return;
            }
            app.clock.advance(TimeDelta::seconds(1));
        }
    }
    panic!("the outbox did not drain");
}

/// The emails of the `users.lookupByEmail` calls, found or not, in order.
fn lookups(app: &TestApp) -> Vec<String> {
    app.slack
        .calls()
        .iter()
        .filter(|c| c.method == "users.lookupByEmail")
        .map(|c| c.body["email"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn invited(app: &TestApp) -> Vec<String> {
    app.slack
        .calls_to("conversations.invite")
        .iter()
        .flat_map(|c| {
            c["users"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn pagerduty_events(app: &TestApp, id: i64) -> Vec<(String, String)> {
    app.store
        .timeline(klaxon::domain::incident::IncidentId(id))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::PagerDuty {
                event_type, text, ..
            } => Some((event_type, text)),
            _ => None,
        })
        .collect()
}

async fn a_trigger_declares_invites_and_links_both_ways(db: Db) {
    let rest = PagerDutyRest::start().await;
    let app = start(db, Some(&rest)).await;
    let (status, body) = deliver(&app, &fixture("incident_triggered.json")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "declared INC-1"));
    // Nothing was sent on the request path.
    assert!(app.slack.calls().is_empty() && rest.calls().is_empty());
    settle(&app).await;

    let incident = app.store.open_incidents().await.unwrap().remove(0);
    assert_eq!(incident.severity, Severity::Sev1, "P1");
    assert_eq!(incident.commander(), None, "nobody is in command");
    let channel = incident.channel.expect("channel opened").id;
    let posts = app.messages_in(&channel).join("\n");
    assert!(
        posts.contains("https://acme.pagerduty.com/incidents/PGR0VU2"),
        "{posts}"
    );
    assert!(
        posts.contains("Team: api") && posts.contains("customers"),
        "{posts}"
    );
    // Lela by the configured email, Earline through GET /users then lookupByEmail;
    // Tanner has no Slack account: listed, not dropped.
    let invited = invited(&app);
    assert!(invited.contains(&"U0LELA0001".to_string()), "{invited:?}");
    assert!(invited.contains(&"U0EARLINE1".to_string()), "{invited:?}");
    assert!(
        posts.contains("Tanner Gutkowski (tanner@contractor.example, not found in Slack)"),
        "{posts}"
    );
    let requests = rest.requests();
    assert!(
        requests.contains(&"GET /users/PXPGF42".to_string()),
        "{requests:?}"
    );
    assert!(
        requests.contains(&"GET /users/PNOBODY".to_string()),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("PEMAIL1")),
        "mapped by config"
    );
    let note = rest
        .calls()
        .into_iter()
        .find(|c| c.path == "/incidents/PGR0VU2/notes")
        .expect("note on the PagerDuty incident");
    assert_eq!(note.from.as_deref(), Some(pagerduty_rest::FROM));
    let content = note.body["note"]["content"].as_str().unwrap();
    assert!(
        content.contains("INC-1") && content.contains("#inc-"),
        "{content}"
    );
    let events = pagerduty_events(&app, 1).await;
    assert_eq!(events[0].0, "incident.triggered");
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
}

async fn without_a_rest_token_unmapped_responders_are_listed(db: Db) {
    let app = start(db, None).await;
    let (status, _) = deliver(&app, &fixture("incident_triggered.json")).await;
    assert_eq!(status, StatusCode::OK);
    settle(&app).await;
    let incident = app.store.open_incidents().await.unwrap().remove(0);
    let channel = incident.channel.unwrap().id;
    let posts = app.messages_in(&channel).join("\n");
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
    assert_eq!(invited(&app), vec!["U0LELA0001".to_string()]);
    assert!(
        posts.contains("Earline Greenholt (PagerDuty user PXPGF42, no email known)"),
        "{posts}"
    );
    assert!(
        posts.contains("Tanner Gutkowski (PagerDuty user PNOBODY, no email known)"),
        "{posts}"
    );
}

async fn a_refused_user_look_up_still_lists_the_responders(db: Db) {
    let rest = PagerDutyRest::start().await;
    let app = start(db, Some(&rest)).await;
    // Both GET /users answer 403 (PagerDuty will not show them): not retried forever,
    // and nobody dropped.
    rest.fail_next(&[403, 403]);
    deliver(&app, &fixture("incident_triggered.json")).await;
    settle(&app).await;
    let incident = app.store.open_incidents().await.unwrap().remove(0);
    let posts = app.messages_in(&incident.channel.unwrap().id).join("\n");
    assert!(
        posts.contains("Earline Greenholt (PagerDuty user PXPGF42, no email known)"),
        "{posts}"
    );
    assert!(
        posts.contains("Tanner Gutkowski (PagerDuty user PNOBODY, no email known)"),
        "{posts}"
    );
    assert_eq!(invited(&app), vec!["U0LELA0001".to_string()]);
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
}

async fn signatures_rotation_tampering_and_missing(db: Db) {
    let app = start(db, None).await;
    let body = fixture("incident_triggered.json").to_string();
    let old = sign(OLD_SECRET, body.as_bytes());
    let new = sign(NEW_SECRET, body.as_bytes());

    // Tampered: the signature of the original body over a changed one.
    let tampered = body.replace("A little bump", "A large bump");
    assert_eq!(
        post(&app, &tampered, Some(&new)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Missing, malformed, or only the retired secret's signature.
    assert_eq!(post(&app, &body, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post(&app, &body, Some("sha256=abc")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&app, &body, Some(&old)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Nothing was stored: not the incident, and not the event id either.
    assert!(app.store.open_incidents().await.unwrap().is_empty());
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, 0);

    // During a rotation PagerDuty signs with both: one match is enough.
    let (status, answer) = post(&app, &body, Some(&format!("{old},{new}"))).await;
    assert_eq!(
        (status, answer.as_str()),
        (StatusCode::OK, "declared INC-1")
    );
}

async fn a_replayed_delivery_acts_once(db: Db) {
    let app = start(db, None).await;
    let event = fixture("incident_triggered.json");
    assert_eq!(deliver(&app, &event).await.1, "declared INC-1");
    let pending = app.store.outbox_counts().await.unwrap().pending;
    assert_eq!(
        deliver(&app, &event).await,
        (StatusCode::OK, "duplicate".into())
    );
    // A new delivery of the same PagerDuty incident (new event id) declares nothing either.
    let mut again = event.clone();
    again["event"]["id"] = "01DEN3QLDOH3CGY3KFRHMYCXL9".into();
    let (status, body) = deliver(&app, &again).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("already linked"), "{body}");
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, pending);
    settle(&app).await;
    assert_eq!(app.store.open_incidents().await.unwrap().len(), 1);
    assert_eq!(app.slack.calls_to("conversations.create").len(), 1);
}

async fn an_unknown_event_type_is_acknowledged_and_ignored(db: Db) {
    let app = start(db, None).await;
    let event = fixture("service_updated.json");
    let (status, body) = deliver(&app, &event).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("ignored"), "{body}");
    assert_eq!(deliver(&app, &event).await.1, "duplicate");
    // A known type about a PagerDuty incident Klaxon never saw: also ignored.
    let (status, body) = deliver(&app, &fixture("incident_acknowledged.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("not linked"), "{body}");
    assert!(app.store.open_incidents().await.unwrap().is_empty());
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, 0);
    // Malformed JSON with a good signature: 400.
    let body = "{\"event\": 1}";
    let (status, _) = post(&app, body, Some(&sign(NEW_SECRET, body.as_bytes()))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn later_events_go_on_the_timeline_and_pagerduty_resolves(db: Db) {
    let rest = PagerDutyRest::start().await;
    let app = start(db, Some(&rest)).await;
    deliver(&app, &fixture("incident_triggered.json")).await;
    settle(&app).await;
    let lookups_before = lookups(&app).len();
    for name in [
        "incident_acknowledged.json",
        "incident_reassigned.json",
        "incident_escalated.json",
        "incident_annotated.json",
        "incident_priority_updated.json",
    ] {
        let (status, body) = deliver(&app, &fixture(name)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "recorded on INC-1"),
            "{name}"
        );
    }
    settle(&app).await;
    let events = pagerduty_events(&app, 1).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "incident.triggered",
            "incident.acknowledged",
            "incident.reassigned",
            "incident.escalated",
            "incident.annotated",
            "incident.priority_updated"
        ]
    );
    assert!(
        events[2].1.contains("now assigned: Lela Hayes"),
        "{:?}",
        events[2]
    );
    // The new assignees were looked for in Slack again: Lela (reassigned, by the
    // configured email) and Tanner (escalated, through GET /users, cached).
    let looked_up: Vec<String> = lookups(&app)[lookups_before..].to_vec();
    assert!(
        looked_up.contains(&"lela@example.com".to_string())
            && looked_up.contains(&"tanner@contractor.example".to_string()),
        "{looked_up:?}"
    );
    assert_eq!(
        rest.requests()
            .iter()
            .filter(|r| *r == "GET /users/PNOBODY")
            .count(),
        1,
        "cached"
    );
    assert!(
        events[4].1.contains("Rolled back deploy 4711"),
        "{:?}",
        events[4]
    );
    let incident = app
        .store
        .incident(klaxon::domain::incident::IncidentId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        incident.severity,
        Severity::Sev3,
        "P3 by the default priority map"
    );
    let channel = incident.channel.unwrap().id;
    assert!(
        app.messages_in(&channel)
            .join("\n")
            .contains("acknowledged by Earline Greenholt")
    );

    let (status, body) = deliver(&app, &fixture("incident_resolved.json")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "recorded on INC-1")
    );
    settle(&app).await;
    let incident = app
        .store
        .incident(klaxon::domain::incident::IncidentId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(incident.status, Status::Resolved);
    // Resolved from PagerDuty: nothing is sent back.
    assert!(
        !rest.requests().iter().any(|r| r.starts_with("PUT")),
        "{:?}",
        rest.requests()
    );
    // Events after the resolve change nothing.
    let mut late = fixture("incident_acknowledged.json");
    late["event"]["id"] = "01DEN3ZZZZZZZZZZZZZZZZZZZZ".into();
    assert!(deliver(&app, &late).await.1.contains("ignored"));
}

async fn resolving_in_klaxon_resolves_pagerduty(db: Db) {
    let rest = PagerDutyRest::start().await;
    let app = start(db, Some(&rest)).await;
    deliver(&app, &fixture("incident_triggered.json")).await;
    settle(&app).await;
    let channel = app.store.open_incidents().await.unwrap()[0]
        .channel
        .clone()
        .unwrap()
        .id;
    let reply = app.command("UBOB", &channel, "resolve Rolled back").await;
    assert!(reply.contains("resolved"), "{reply}");
    // PagerDuty fails once: the resolve is retried after a backoff, not lost.
    rest.fail_next(&[503]);
    settle(&app).await;
    let puts: Vec<_> = rest
        .calls()
        .into_iter()
        .filter(|c| c.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 2, "{:?}", rest.requests());
    assert_eq!(puts[1].path, "/incidents/PGR0VU2");
    assert_eq!(puts[1].body["incident"]["status"], "resolved");
    assert_eq!(puts[1].from.as_deref(), Some(pagerduty_rest::FROM));
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
}

async fn nobody_in_command_so_the_deadline_escalates_with_installation_keys(db: Db) {
    let app = start(db, None).await;
    deliver(&app, &fixture("incident_triggered.json")).await;
    settle(&app).await;
    let start = app.clock.now();
    app.run_until(start + TimeDelta::minutes(14)).await;
    assert!(
        app.pagerduty.actions().is_empty(),
        "not before the 15 minutes"
    );
    app.run_until(start + TimeDelta::minutes(16)).await;
    let timeline = app
        .store
        .timeline(klaxon::domain::incident::IncidentId(1))
        .await
        .unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| matches!(e.kind, EventKind::ResponseMissed { .. }))
    );
    let install = app.store.install_id().await.unwrap();
    let key = format!("klaxon-{}-1-team", &install[..8]);
    assert_eq!(
        app.pagerduty.actions(),
        [("trigger".to_string(), key.clone())]
    );
    app.run_until(start + TimeDelta::minutes(31)).await;
    let keys: Vec<String> = app
        .pagerduty
        .actions()
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    assert_eq!(
        keys,
        [key, format!("klaxon-{}-1-management", &install[..8])]
    );

    // Another database is another installation: its keys differ.
    let other = support::fresh_store(db).await.install_id().await.unwrap();
    assert_ne!(other[..8], install[..8]);
}

async fn a_storm_of_concurrent_triggers_opens_one_incident(db: Db) {
    let app = start(db, None).await;
    let template = fixture("incident_triggered.json");
    let storm: Vec<Value> = (0..40)
        .map(|i| {
            let mut e = template.clone();
            e["event"]["id"] = format!("01STORM{i:019}").into();
            e["event"]["data"]["id"] = format!("PSTORM{i:02}").into();
            e["event"]["data"]["html_url"] =
                format!("https://acme.pagerduty.com/incidents/PSTORM{i:02}").into();
            e["event"]["data"]["title"] = format!("Disk full on db-{i}").into();
            e
        })
        .collect();
    let answers = futures_util::future::join_all(storm.iter().map(|e| deliver(&app, e))).await;
    let declared = answers
        .iter()
        .filter(|(_, b)| b.starts_with("declared"))
        .count();
    let grouped = answers
        .iter()
        .filter(|(_, b)| b == "grouped into INC-1")
        .count();
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::OK),
        "{answers:?}"
    );
    assert_eq!((declared, grouped), (1, 39), "{answers:?}");
    settle(&app).await;
    let open = app.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(app.slack.calls_to("conversations.create").len(), 1);
    let posts = app
        .messages_in(&open[0].channel.clone().unwrap().id)
        .join("\n");
    assert_eq!(
        posts.matches("Also triggered in PagerDuty").count() / 2,
        39,
        "text and blocks"
    );
    assert_eq!(pagerduty_events(&app, 1).await.len(), 40);
    let links = app.store.pagerduty_links(open[0].id).await.unwrap();
    assert_eq!(links.len(), 40);
    assert!(
        links
            .iter()
            .all(|l| l.team.as_deref() == Some("api") && l.stakeholder_groups == ["customers"])
    );

    // After the window, the same service opens a new incident.
    app.clock.advance(TimeDelta::minutes(6));
    let mut later = template.clone();
    later["event"]["id"] = "01STORMLATER00000000000000".into();
    later["event"]["data"]["id"] = "PLATER1".into();
    assert_eq!(deliver(&app, &later).await.1, "declared INC-2");
}
