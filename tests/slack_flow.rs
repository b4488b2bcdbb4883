//! End to end over Slack: signed requests into the real router, the outbox delivering
//! through the real slack-morphism client to the Slack emulator. Every scenario runs on
//! SQLite and, when KLAXON_TEST_DATABASE_URL is set, on PostgreSQL.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::TimeDelta;
use klaxon::clock::Clock;
use klaxon::domain::incident::{EventKind, Role, Status};
use klaxon::domain::severity::Severity;
use serde_json::{Value, json};
use support::slack_emulator::{BOT_USER_ID, Failure};
use support::{ANNOUNCE, Db, TestApp};

both_backends!(
    declare_inline_opens_a_channel_and_announces_it,
    declare_without_arguments_opens_a_form,
    roles_severity_status_update_and_resolve,
    list_shows_open_incidents_only_to_the_asker,
    incident_commands_outside_an_incident_channel_are_explained,
    unknown_subcommands_and_bad_arguments_get_usage,
    forged_or_stale_requests_get_401_and_store_nothing,
    malformed_bodies_get_400,
    events_url_verification_and_mentions_processed_once,
    a_taken_channel_name_gets_a_suffix,
    a_channel_created_on_an_earlier_attempt_is_adopted,
    rate_limits_wait_for_retry_after_and_keep_order,
    a_worker_that_died_mid_delivery_loses_nothing,
    permanent_errors_are_kept_not_dropped,
    the_timeline_is_append_only_and_verifies,
    health_and_readiness,
);

async fn declare_inline_opens_a_channel_and_announces_it(db: Db) {
    let app = TestApp::start(db).await;
    let reply = app
        .command("UALICE", "CGENERAL01", "declare sev1 Database is down")
        .await;
    assert!(
        reply.starts_with("INC-1 declared (SEV1): opening #inc-20261123-database-is-down"),
        "{reply}"
    );
    // Nothing reaches Slack before the outbox runs: the HTTP answer came after the commit.
    assert!(app.slack.calls().is_empty());
    let report = app.deliver().await;
    assert_eq!((report.delivered, report.failed), (4, 0), "{report:?}");

    let created = app.slack.calls_to("conversations.create");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["name"], "inc-20261123-database-is-down");
    let channel = app
        .slack
        .channel_by_name("inc-20261123-database-is-down")
        .expect("channel");
    assert!(
        channel.purpose.starts_with("Klaxon incident INC-1:"),
        "{}",
        channel.purpose
    );
    assert!(channel.members.contains(&"UALICE".to_string()));
    assert_eq!(
        channel.topic,
        "SEV1 | IC: <@UALICE> | Status: Investigating | Database is down"
    );

    let summary = app.messages_in(&channel.id);
    assert_eq!(summary.len(), 1);
    assert!(
        summary[0].contains("INC-1: Database is down"),
        "{}",
        summary[0]
    );
    // Respond by 10:15, RTO 14:00, restore point 09:00 (UTC fallbacks of <!date>).
    for expected in [
        "2026-11-23 10:15 UTC",
        "2026-11-23 14:00 UTC",
        "2026-11-23 09:00 UTC",
        "complete outage",
    ] {
        assert!(
            summary[0].contains(expected),
            "missing {expected}: {}",
            summary[0]
        );
    }
    let announced = app.messages_in(ANNOUNCE);
    assert_eq!(announced.len(), 1);
    assert!(
        announced[0].contains(&format!("<#{}>", channel.id)),
        "{}",
        announced[0]
    );
    assert!(
        announced[0].contains("SEV1 declared: INC-1"),
        "{}",
        announced[0]
    );
    // The channel's own lane is ordered: create, purpose, invite, topic, then its posts.
    // The announcement has a lane of its own that waits for the channel (to link to it).
    let calls: Vec<_> = app
        .slack
        .calls()
        .into_iter()
        .filter(|c| !c.failed)
        .collect();
    let pos = |m: &str, channel: Option<&str>| {
        calls
            .iter()
            .position(|c| c.method == m && channel.is_none_or(|ch| c.body["channel"] == ch))
            .unwrap_or_else(|| panic!("{m} in {calls:?}"))
    };
    assert!(pos("conversations.create", None) < pos("conversations.setTopic", None));
    assert!(
        pos("conversations.setTopic", None) < pos("chat.postMessage", Some(channel.id.as_str()))
    );
    assert!(pos("conversations.create", None) < pos("chat.postMessage", Some(ANNOUNCE)));

    let incident = app
        .store
        .incident_by_channel(&channel.id)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(incident.severity, Severity::Sev1);
    assert_eq!(incident.commander(), Some("UALICE"));
    let kinds: Vec<_> = app
        .store
        .timeline(incident.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(matches!(
        kinds[0],
        EventKind::Declared {
            severity: Severity::Sev1,
            ..
        }
    ));
    assert!(matches!(
        kinds[1],
        EventKind::RoleAssigned {
            role: Role::Commander,
            ..
        }
    ));
    assert!(
        matches!(&kinds[2], EventKind::ChannelOpened { channel_id, .. } if *channel_id == channel.id)
    );
    // Every call carried the bot token.
    assert!(
        app.slack
            .calls()
            .iter()
            .all(|c| c.bearer_token.as_deref() == Some("xoxb-test-token"))
    );
}

fn submission(callback_id: &str, metadata: &str, values: Value) -> String {
    let payload = json!({
        "type": "view_submission",
        // As Slack sends it: the workspace and app it is for (issue 8 checks both).
        "team": { "id": support::slack_emulator::TEAM_ID },
        "api_app_id": support::APP_ID,
        "user": { "id": "UBOB" },
        "view": { "callback_id": callback_id, "private_metadata": metadata, "state": { "values": values } }
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

async fn declare_without_arguments_opens_a_form(db: Db) {
    let app = TestApp::start(db).await;
    assert_eq!(app.command("UBOB", "CGENERAL01", "declare").await, "");
    app.deliver().await;
    let views = app.slack.calls_to("views.open");
    assert_eq!(views.len(), 1);
    assert_eq!(views[0]["trigger_id"], "1337.42.abcd");
    assert_eq!(views[0]["view"]["callback_id"], "klaxon_declare");

    // A submission with an empty title is refused on the title field.
    let bad = submission(
        "klaxon_declare",
        "CGENERAL01",
        json!({ "severity": { "value": { "selected_option": { "value": "sev2" } } }, "title": { "value": { "value": "  " } } }),
    );
    let (status, body) = app
        .post_signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            &bad,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({ "response_action": "errors", "errors": { "title": "must not be empty" } })
    );
    assert!(app.store.open_incidents().await.unwrap().is_empty());

    let good = submission(
        "klaxon_declare",
        "CGENERAL01",
        json!({ "severity": { "value": { "selected_option": { "value": "sev2" } } }, "title": { "value": { "value": "Checkout is slow" } } }),
    );
    let (status, body) = app
        .post_signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            &good,
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    app.deliver().await;
    let open = app.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].severity, open[0].title.as_str()),
        (Severity::Sev2, "Checkout is slow")
    );
    assert_eq!(open[0].commander(), Some("UBOB"));
    assert!(
        app.slack
            .channel_by_name("inc-20261123-checkout-is-slow")
            .is_some()
    );
}

async fn roles_severity_status_update_and_resolve(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev2 Payments failing").await;

    let reply = app
        .command("UALICE", &ch, "role commander <@UBOB|bob>")
        .await;
    assert_eq!(reply, "<@UBOB> is now the incident commander of INC-1.");
    // Roles are handed out by the commander now in charge (issue 8).
    assert_eq!(
        app.command("UBOB", &ch, "role comms <@UCAROL>").await,
        "<@UCAROL> is now the comms lead of INC-1."
    );
    assert_eq!(
        app.command("UBOB", &ch, "role comms <@UCAROL>").await,
        "<@UCAROL> is already the comms lead of INC-1."
    );
    app.clock.advance(TimeDelta::minutes(5));
    assert_eq!(
        app.command("UBOB", &ch, "sev 1").await,
        "INC-1 is now SEV1."
    );
    assert_eq!(
        app.command("UBOB", &ch, "sev 1").await,
        "INC-1 is already SEV1."
    );
    assert_eq!(
        app.command("UBOB", &ch, "status identified").await,
        "INC-1 is now Identified."
    );
    assert_eq!(
        app.command(
            "UBOB",
            &ch,
            "update Rolled back the deploy; error rate falling"
        )
        .await,
        "Status update posted to INC-1."
    );
    app.deliver().await;

    let channel = app.slack.channel(&ch).unwrap();
    assert_eq!(
        channel.topic,
        "SEV1 | IC: <@UBOB> | Status: Identified | Payments failing"
    );
    assert!(
        channel.members.contains(&"UBOB".to_string())
            && channel.members.contains(&"UCAROL".to_string())
    );
    let msgs = app.messages_in(&ch);
    assert!(
        msgs.iter().any(
            |m| m.contains("<@UBOB> is now the incident commander, taking over from <@UALICE>")
        ),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("severity raised: SEV2 → SEV1")),
        "{msgs:#?}"
    );
    assert!(
        msgs.last()
            .unwrap()
            .contains("Rolled back the deploy; error rate falling"),
        "{msgs:#?}"
    );
    assert!(
        app.messages_in(ANNOUNCE)
            .iter()
            .any(|m| m.contains("severity raised"))
    );

    // Resolving without a summary opens a form; the form resolves.
    assert_eq!(app.command("UBOB", &ch, "resolve").await, "");
    app.deliver().await;
    assert_eq!(
        app.slack.calls_to("views.open")[0]["view"]["callback_id"],
        "klaxon_resolve"
    );
    let form = submission(
        "klaxon_resolve",
        "1",
        json!({ "summary": { "value": { "value": "Reverted v42" } } }),
    );
    let (status, _) = app
        .post_signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            &form,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.deliver().await;
    let incident = app.store.incident_by_channel(&ch).await.unwrap().unwrap();
    assert_eq!(incident.status, Status::Resolved);
    assert_eq!(incident.resolution.as_deref(), Some("Reverted v42"));
    assert!(
        app.slack
            .channel(&ch)
            .unwrap()
            .topic
            .contains("Status: Resolved")
    );
    assert!(
        app.messages_in(ANNOUNCE)
            .last()
            .unwrap()
            .contains("INC-1 resolved")
    );
    assert_eq!(
        app.command("UBOB", &ch, "update too late").await,
        "INC-1 is resolved; it can no longer be changed."
    );
    assert_eq!(
        app.command("UBOB", &ch, "resolve").await,
        "INC-1 is already resolved."
    );

    let timeline = app.store.timeline(incident.id).await.unwrap();
    let kinds: Vec<&str> = timeline
        .iter()
        .map(|e| match &e.kind {
            EventKind::Declared { .. } => "declared",
            EventKind::ChannelOpened { .. } => "channel",
            EventKind::RoleAssigned { .. } => "role",
            EventKind::SeverityChanged { .. } => "sev",
            EventKind::StatusChanged { .. } => "status",
            EventKind::UpdatePosted { .. } => "update",
            EventKind::Resolved { .. } => "resolved",
            EventKind::PostmortemDrafted { .. } => "postmortem",
            _ => "timer",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "declared",
            "role",
            "channel",
            "role",
            "role",
            "sev",
            "status",
            "update",
            "status",
            "resolved",
            "postmortem"
        ]
    );
    assert_eq!(timeline[5].actor.to_string(), "UBOB");
    assert_eq!(timeline[5].at, support::start() + TimeDelta::minutes(5));
    assert!(timeline.iter().all(|e| !e.request_id.is_empty()));
}

async fn list_shows_open_incidents_only_to_the_asker(db: Db) {
    let app = TestApp::start(db).await;
    assert_eq!(
        app.command("UALICE", "CGENERAL01", "list").await,
        "No open incidents."
    );
    let first = app.declare("UALICE", "sev1 Database is down").await;
    app.declare("UBOB", "sev3 Flaky CI").await;
    app.command("UALICE", &first, "resolve Fixed").await;
    let list = app.command("UCAROL", "CGENERAL01", "list").await;
    assert!(list.starts_with("*1 open incident:*"), "{list}");
    assert!(
        list.contains("INC-2 SEV3") && list.contains("Flaky CI") && !list.contains("INC-1"),
        "{list}"
    );
}

async fn incident_commands_outside_an_incident_channel_are_explained(db: Db) {
    let app = TestApp::start(db).await;
    let reply = app.command("UALICE", "CGENERAL01", "sev 2").await;
    assert_eq!(
        reply,
        "`/incident sev` works in an incident's own channel, and this is not one. There are no open incidents."
    );
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    let reply = app.command("UALICE", "CGENERAL01", "update hello").await;
    assert!(
        reply.contains(&format!("Did you mean INC-1? Run it in <#{ch}>.")),
        "{reply}"
    );
    app.declare("UALICE", "sev2 Second").await;
    let reply = app.command("UALICE", "CGENERAL01", "resolve done").await;
    assert!(reply.contains("2 incidents are open"), "{reply}");
    // Nothing changed anywhere.
    assert!(
        app.store
            .incident(klaxon::domain::incident::IncidentId(1))
            .await
            .unwrap()
            .unwrap()
            .last_update
            .is_none()
    );
}

async fn unknown_subcommands_and_bad_arguments_get_usage(db: Db) {
    let app = TestApp::start(db).await;
    let reply = app.command("UALICE", "CGENERAL01", "explode").await;
    assert!(
        reply.starts_with("`explode` is not an /incident command."),
        "{reply}"
    );
    assert!(reply.contains("/incident declare"));
    let reply = app
        .command("UALICE", "CGENERAL01", "declare sev7 Something")
        .await;
    assert_eq!(
        reply,
        "severity: `sev7` is not one of sev1, sev2, sev3, sev4.\nUsage: `/incident declare [--security] [<sev1|sev2|sev3|sev4> <title>]`"
    );
    let ch = app.declare("UALICE", "sev2 Thing").await;
    let reply = app.command("UALICE", &ch, "role boss <@UBOB>").await;
    assert!(
        reply.starts_with("role: `boss` is not one of commander, comms, ops, scribe."),
        "{reply}"
    );
    let reply = app.command("UALICE", &ch, "status done").await;
    assert!(
        reply.contains("Usage: `/incident status <investigating|identified|monitoring>`"),
        "{reply}"
    );
    let help = app.command("UALICE", "CGENERAL01", "help").await;
    assert!(
        help.contains("/incident role <commander|comms|ops|scribe> @user"),
        "{help}"
    );
    let long = "x".repeat(200);
    let reply = app
        .command("UALICE", "CGENERAL01", &format!("declare sev1 {long}"))
        .await;
    assert_eq!(reply, "title: must be at most 120 characters (got 200)");
}

async fn forged_or_stale_requests_get_401_and_store_nothing(db: Db) {
    let app = TestApp::start(db).await;
    let body = "command=%2Fincident&text=declare+sev1+Forged&user_id=UEVE&channel_id=C1";
    let now = support::start().timestamp();
    let cases = [
        ("no headers", None, None),
        (
            "wrong secret",
            Some(now),
            Some(klaxon::http::verify::sign(
                "not-the-secret",
                now,
                body.as_bytes(),
            )),
        ),
        (
            "stale",
            Some(now - 301),
            Some(klaxon::http::verify::sign(
                support::SECRET,
                now - 301,
                body.as_bytes(),
            )),
        ),
        (
            "future",
            Some(now + 301),
            Some(klaxon::http::verify::sign(
                support::SECRET,
                now + 301,
                body.as_bytes(),
            )),
        ),
        (
            "garbage signature",
            Some(now),
            Some("v0=nothex".to_string()),
        ),
    ];
    for (name, ts, sig) in cases {
        for path in ["/slack/commands", "/slack/interactions", "/slack/events"] {
            let mut req =
                Request::post(path).header("content-type", "application/x-www-form-urlencoded");
            if let Some(ts) = ts {
                req = req.header("x-slack-request-timestamp", ts.to_string());
            }
            if let Some(sig) = &sig {
                req = req.header("x-slack-signature", sig);
            }
            let (status, _) = app.send(req.body(Body::from(body)).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{name} on {path}");
        }
    }
    // A body changed after signing.
    let sig = klaxon::http::verify::sign(support::SECRET, now, body.as_bytes());
    let tampered = body.replace("Forged", "Tampered");
    let req = Request::post("/slack/commands")
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", sig)
        .body(Body::from(tampered))
        .unwrap();
    assert_eq!(app.send(req).await.0, StatusCode::UNAUTHORIZED);
    assert!(app.store.incident_ids().await.unwrap().is_empty());
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, 0);
}

async fn malformed_bodies_get_400(db: Db) {
    let app = TestApp::start(db).await;
    let form = "application/x-www-form-urlencoded";
    let (status, body) = app
        .post_signed("/slack/commands", form, "command=%2Fincident&text=list")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "missing user_id: {body}");
    assert!(body.contains("user_id"), "{body}");
    let (status, _) = app
        .post_signed("/slack/interactions", form, "payload=%7Bnot-json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post_signed("/slack/events", "application/json", "{\"type\": ")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(app.store.incident_ids().await.unwrap().is_empty());
}

fn mention(event_id: &str, text: &str) -> String {
    json!({
        "type": "event_callback",
        "event_id": event_id,
        "event": { "type": "app_mention", "user": "UALICE", "text": text, "channel": ANNOUNCE, "ts": "1700000000.000100" }
    })
    .to_string()
}

async fn events_url_verification_and_mentions_processed_once(db: Db) {
    let app = TestApp::start(db).await;
    let (status, body) = app
        .post_signed("/slack/events", "application/json", r#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","token":"x"}"#)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    // The same event three times (Slack's retries): one incident, one reply.
    for _ in 0..3 {
        let (status, _) = app
            .post_signed(
                "/slack/events",
                "application/json",
                &mention(
                    "Ev01",
                    &format!("<@{BOT_USER_ID}> declare sev2 Search is down"),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // A help request retried: answered once.
    for _ in 0..2 {
        app.post_signed(
            "/slack/events",
            "application/json",
            &mention("Ev02", &format!("<@{BOT_USER_ID}> help")),
        )
        .await;
    }
    // Events Klaxon does not act on are still acknowledged.
    let other = json!({"type":"event_callback","event_id":"Ev03","event":{"type":"reaction_added","user":"U1"}}).to_string();
    assert_eq!(
        app.post_signed("/slack/events", "application/json", &other)
            .await
            .0,
        StatusCode::OK
    );
    app.deliver().await;
    assert_eq!(app.store.incident_ids().await.unwrap().len(), 1);
    let replies: Vec<Value> = app
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|b| b["thread_ts"] == "1700000000.000100")
        .collect();
    assert_eq!(replies.len(), 2, "{replies:#?}");
    assert!(
        replies[0]["text"]
            .as_str()
            .unwrap()
            .contains("INC-1 declared")
    );
    assert!(
        replies[1]["text"]
            .as_str()
            .unwrap()
            .contains("/incident declare")
    );
}

async fn a_taken_channel_name_gets_a_suffix(db: Db) {
    let app = TestApp::start(db).await;
    app.slack.add_channel(
        "inc-20261123-database-is-down",
        "USOMEONE",
        "our own channel",
    );
    app.slack.add_channel(
        "inc-20261123-database-is-down-2",
        BOT_USER_ID,
        "Klaxon incident INC-99: another",
    );
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    assert_eq!(
        app.slack.channel(&ch).unwrap().name,
        "inc-20261123-database-is-down-3"
    );
    let incident = app.store.incident_by_channel(&ch).await.unwrap().unwrap();
    assert_eq!(
        incident.channel.unwrap().name,
        "inc-20261123-database-is-down-3"
    );
}

async fn a_channel_created_on_an_earlier_attempt_is_adopted(db: Db) {
    let app = TestApp::start(db).await;
    // As if a previous delivery created the channel and set its purpose, then died before
    // recording it.
    let earlier = app.slack.add_channel(
        "inc-20261123-database-is-down",
        BOT_USER_ID,
        "Klaxon incident INC-1: Database is down",
    );
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    assert_eq!(ch, earlier);
    assert!(
        app.slack
            .channel_by_name("inc-20261123-database-is-down-2")
            .is_none()
    );
    assert!(
        app.slack
            .channel(&ch)
            .unwrap()
            .members
            .contains(&"UALICE".to_string())
    );
}

async fn rate_limits_wait_for_retry_after_and_keep_order(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    let before = app.messages_in(&ch).len();
    app.command("UALICE", &ch, "update first").await;
    app.command("UALICE", &ch, "update second").await;
    app.slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    let report = app.deliver().await;
    assert_eq!(
        (report.delivered, report.retried),
        (0, 1),
        "the second update waits behind the first"
    );
    assert_eq!(app.messages_in(&ch).len(), before);
    app.clock.advance(TimeDelta::seconds(6));
    assert_eq!(app.deliver().await.delivered, 0, "Retry-After is 7 s");
    app.clock.advance(TimeDelta::seconds(1));
    assert_eq!(app.deliver().await.delivered, 2);
    let msgs = app.messages_in(&ch);
    assert!(
        msgs[before].contains("first") && msgs[before + 1].contains("second"),
        "{msgs:#?}"
    );
}

async fn a_worker_that_died_mid_delivery_loses_nothing(db: Db) {
    let app = TestApp::start(db).await;
    app.command("UALICE", "CGENERAL01", "declare sev1 Database is down")
        .await;
    // A worker claims the rows and dies before delivering.
    let now = app.clock.now();
    let lease = klaxon::outbox::DeliverySettings::default().lease;
    let claimed = app
        .store
        .claim_lanes(
            klaxon::domain::outbound::LaneClass::Slack,
            "a-worker-that-dies",
            now,
            now + lease,
            10,
        )
        .await
        .unwrap();
    // The channel's lane; the announcement waits for the channel to exist.
    assert_eq!(claimed.len(), 1, "one row per lane at a time");
    assert_eq!(app.deliver().await.delivered, 0, "the lease still holds");
    app.clock.advance(lease);
    assert_eq!(app.deliver().await.delivered, 4);
    assert_eq!(app.slack.calls_to("conversations.create").len(), 1);

    // A 500 is retried with backoff, not lost.
    let ch = app.store.open_incidents().await.unwrap()[0]
        .channel
        .clone()
        .unwrap()
        .id;
    app.command("UALICE", &ch, "update after the outage").await;
    app.slack
        .fail_next("chat.postMessage", Failure::Status(500));
    assert_eq!(app.deliver().await.retried, 1);
    app.clock.advance(TimeDelta::seconds(2));
    assert_eq!(app.deliver().await.delivered, 1);
    assert!(
        app.messages_in(&ch)
            .last()
            .unwrap()
            .contains("after the outage")
    );
}

async fn permanent_errors_are_kept_not_dropped(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.command("UALICE", &ch, "update one").await;
    app.command("UALICE", &ch, "update two").await;
    app.slack
        .fail_next("chat.postMessage", Failure::Error("is_archived"));
    let report = app.deliver().await;
    // Update two, and the notice that update one failed.
    assert_eq!((report.failed, report.delivered), (1, 2));
    let failed = app.store.failed_outbox().await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].1.contains("one") && failed[0].2.contains("is_archived"),
        "{failed:?}"
    );
    let notices = app.messages_in(ANNOUNCE);
    assert!(
        notices
            .last()
            .is_some_and(|n| n.contains("could not deliver a message for INC-1")
                && n.contains("is_archived")),
        "{notices:#?}"
    );
}

async fn the_timeline_is_append_only_and_verifies(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.command("UALICE", &ch, "update investigating the primary")
        .await;
    assert_eq!(klaxon::app::audit_store(&app.store).await.unwrap(), 4);
    assert!(
        app.store
            .execute_raw("update timeline set kind = '{}' where seq = 1")
            .await
            .is_err()
    );
    assert!(app.store.execute_raw("delete from timeline").await.is_err());
    assert_eq!(klaxon::app::audit_store(&app.store).await.unwrap(), 4);
}

async fn health_and_readiness(db: Db) {
    let app = TestApp::start(db).await;
    for path in ["/healthz", "/readyz"] {
        let (status, _) = app
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}
