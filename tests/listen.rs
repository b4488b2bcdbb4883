//! Issue 11: Klaxon listens in #incident-response. A reaction or an alert bot's message
//! gets a "Declare incident" offer in its thread (signed Events API requests, retried and
//! repeated: one offer), the button opens the prefilled form, the declared incident links
//! back to the message; the App Home tab lists open incidents and the runs waiting for
//! the viewer, and is republished when they change (coalesced). SQLite and PostgreSQL.

#[path = "support/approvals.rs"]
mod helpers;
mod support;

use axum::http::StatusCode;
use klaxon::domain::declare_offer::Offer;
use klaxon::domain::severity::Severity;
use klaxon::engine::{Engine, PolicySet, Wakers};
use klaxon::listen::home::HomeRefresher;
use klaxon::slack::render::offer::DECLARE_OFFER_ACTION;
use serde_json::{Value, json};
use support::{ANNOUNCE, APP_ID, Db, TestApp, slack_emulator::TEAM_ID};

both_backends!(
    a_reaction_offers_to_declare_once_and_the_incident_links_back,
    other_reactions_and_channels_are_only_recorded,
    alert_bot_messages_matching_a_pattern_get_the_offer,
    app_home_lists_incidents_and_runs_awaiting_the_viewer_and_refreshes,
);

/// Posts a signed `event_callback`; `retry` adds Slack's retry headers.
async fn event(app: &TestApp, event_id: &str, event: Value) -> StatusCode {
    let body = json!({
        "token": "x", "team_id": TEAM_ID, "api_app_id": APP_ID, "type": "event_callback",
        "event_id": event_id, "event_time": 1_700_000_000, "event": event
    })
    .to_string();
    app.post_signed("/slack/events", "application/json", &body)
        .await
        .0
}

fn reaction(user: &str, name: &str, channel: &str, ts: &str) -> Value {
    json!({
        "type": "reaction_added", "user": user, "reaction": name,
        "item": { "type": "message", "channel": channel, "ts": ts },
        "item_user": "UPOSTER", "event_ts": "1700000001.000100"
    })
}

/// The offers Klaxon posted in #incident-response threads: (thread_ts, offer).
fn offers(app: &TestApp) -> Vec<(String, Offer)> {
    app.slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c["channel"] == ANNOUNCE)
        .filter_map(|c| {
            let blocks: Value = match &c["blocks"] {
                Value::String(s) => serde_json::from_str(s).ok()?,
                other => other.clone(),
            };
            let button = blocks.as_array()?.iter().find_map(|b| {
                b["elements"]
                    .as_array()?
                    .iter()
                    .find(|e| e["action_id"] == DECLARE_OFFER_ACTION)
                    .cloned()
            })?;
            let offer = serde_json::from_str(button["value"].as_str()?).ok()?;
            Some((c["thread_ts"].as_str()?.to_string(), offer))
        })
        .collect()
}

async fn a_reaction_offers_to_declare_once_and_the_incident_links_back(db: Db) {
    let app = TestApp::start(db).await;
    let ts = app.slack.add_message(
        ANNOUNCE,
        "UPOSTER",
        ":fire: *SEV1*: checkout is down for all users\nstack trace below",
        None,
    );
    let r = reaction("UCAROL", "rotating_light", ANNOUNCE, &ts);
    assert_eq!(event(&app, "Ev1", r.clone()).await, StatusCode::OK);
    // Slack's retry of the same event, and a second person reacting the same way.
    assert_eq!(event(&app, "Ev1", r).await, StatusCode::OK);
    let again = reaction("UDAN", "rotating_light", ANNOUNCE, &ts);
    assert_eq!(event(&app, "Ev2", again).await, StatusCode::OK);
    app.deliver().await;

    assert_eq!(app.slack.calls_to("conversations.history").len(), 1);
    let offers = offers(&app);
    assert_eq!(offers.len(), 1, "one offer per message");
    let (thread, offer) = &offers[0];
    assert_eq!(thread, &ts, "answered in the message's thread");
    assert_eq!(offer.prefill.severity, Severity::Sev1);
    assert_eq!(offer.prefill.title, "SEV1: checkout is down for all users");
    assert_eq!(offer.source.ts, ts);

    // The button opens the prefilled form.
    let value = serde_json::to_string(offer).unwrap();
    let status = app
        .press_with("UCAROL", ANNOUNCE, DECLARE_OFFER_ACTION, &value, |_| {})
        .await;
    assert_eq!(status, StatusCode::OK);
    let views = app.slack.calls_to("views.open");
    assert_eq!(views.len(), 1);
    let view: Value = match &views[0]["view"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(),
    };
    assert_eq!(view["callback_id"], "klaxon_declare");
    let blocks = view["blocks"].as_array().unwrap();
    let select = blocks.iter().find(|b| b["block_id"] == "severity").unwrap();
    assert_eq!(select["element"]["initial_option"]["value"], "sev1");
    let title = blocks.iter().find(|b| b["block_id"] == "title").unwrap();
    assert_eq!(
        title["element"]["initial_value"],
        "SEV1: checkout is down for all users"
    );

    // Submitting it declares, and the incident and the message point at each other.
    let payload = json!({
        "type": "view_submission", "team": { "id": TEAM_ID }, "api_app_id": APP_ID,
        "user": { "id": "UCAROL" },
        "view": { "callback_id": "klaxon_declare", "private_metadata": view["private_metadata"],
                  "state": { "values": {
                      "severity": { "value": { "selected_option": { "value": "sev2" } } },
                      "title": { "value": { "value": "Checkout down" } } } } }
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let (status, text) = app
        .post_signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    app.deliver().await;
    let open = app.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].severity, Severity::Sev2, "the person chose");
    let channel = open[0].channel.clone().expect("channel opened").id;
    let link = format!(
        "https://slack.com/archives/{ANNOUNCE}/p{}",
        ts.replace('.', "")
    );
    assert!(
        app.messages_in(&channel).iter().any(|m| m.contains(&link)),
        "the incident channel links to the message: {:?}",
        app.messages_in(&channel)
    );
    let replies: Vec<Value> = app
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c["channel"] == ANNOUNCE && c["thread_ts"] == ts.as_str())
        .collect();
    assert!(
        replies.iter().any(|c| c["text"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("<#{channel}>"))),
        "the message's thread links to the incident: {replies:?}"
    );
}

async fn other_reactions_and_channels_are_only_recorded(db: Db) {
    let app = TestApp::start(db).await;
    let ts = app
        .slack
        .add_message(ANNOUNCE, "UPOSTER", "db is down", None);
    let elsewhere = app
        .slack
        .add_message("CGENERAL01", "UPOSTER", "db is down", None);
    for (id, r) in [
        ("Ev1", reaction("UCAROL", "eyes", ANNOUNCE, &ts)),
        (
            "Ev2",
            reaction("UCAROL", "rotating_light", "CGENERAL01", &elsewhere),
        ),
    ] {
        assert_eq!(event(&app, id, r).await, StatusCode::OK);
    }
    app.deliver().await;
    assert!(offers(&app).is_empty());
    assert!(app.slack.calls_to("conversations.history").is_empty());
    // A reply in a thread is found through conversations.replies.
    let reply = app
        .slack
        .add_message(ANNOUNCE, "UPOSTER", "P2 api errors", Some(&ts));
    let r = reaction("UCAROL", "rotating_light", ANNOUNCE, &reply);
    assert_eq!(event(&app, "Ev3", r).await, StatusCode::OK);
    app.deliver().await;
    let offers = offers(&app);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].1.prefill.severity, Severity::Sev2);
    assert_eq!(offers[0].1.prefill.title, "P2 api errors");
    // A reaction to a message that no longer exists makes no offer and no failure.
    let r = reaction("UCAROL", "rotating_light", ANNOUNCE, "1600000000.000100");
    assert_eq!(event(&app, "Ev4", r).await, StatusCode::OK);
    let report = app.deliver().await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(self::offers(&app).len(), 1);
}

async fn alert_bot_messages_matching_a_pattern_get_the_offer(db: Db) {
    let app = TestApp::start_configured(db, |c| {
        c.intake.alert_bots = vec!["B0ALERTS".into()];
        c.intake.alert_patterns = vec![regex::Regex::new("(?i)^\\[FIRING").unwrap()];
    })
    .await;
    let alert = |ts: &str, bot: &str, text: &str| {
        json!({ "type": "message", "subtype": "bot_message", "bot_id": bot, "channel": ANNOUNCE,
                "ts": ts, "text": text, "event_ts": ts, "channel_type": "channel" })
    };
    let firing = alert(
        "1700000100.000100",
        "B0ALERTS",
        "[FIRING:1] HighErrorRate critical on payments",
    );
    assert_eq!(event(&app, "EvA", firing.clone()).await, StatusCode::OK);
    assert_eq!(event(&app, "EvA", firing).await, StatusCode::OK, "retry");
    let resolved = alert("1700000200.000100", "B0ALERTS", "[RESOLVED] HighErrorRate");
    assert_eq!(event(&app, "EvB", resolved).await, StatusCode::OK);
    let other_bot = alert("1700000300.000100", "B0OTHER", "[FIRING:1] Disk");
    assert_eq!(event(&app, "EvC", other_bot).await, StatusCode::OK);
    let mut edited = alert("1700000400.000100", "B0ALERTS", "[FIRING:2] edited");
    edited["subtype"] = json!("message_changed");
    assert_eq!(event(&app, "EvD", edited).await, StatusCode::OK);
    // Attachments-only alerts are read from their attachment.
    let mut attached = alert("1700000500.000100", "B0ALERTS", "");
    attached["attachments"] = json!([{ "title": "[FIRING:1] SEV2 Latency high", "fallback": "x" }]);
    assert_eq!(event(&app, "EvE", attached).await, StatusCode::OK);
    app.deliver().await;

    assert!(
        app.slack.calls_to("conversations.history").is_empty(),
        "the event carried the text"
    );
    let offers = offers(&app);
    assert_eq!(offers.len(), 2, "{offers:?}");
    assert_eq!(offers[0].0, "1700000100.000100");
    assert_eq!(offers[0].1.prefill.severity, Severity::Sev1);
    assert_eq!(
        offers[0].1.prefill.title,
        "[FIRING:1] HighErrorRate critical on payments"
    );
    assert_eq!(offers[1].0, "1700000500.000100");
    assert_eq!(offers[1].1.prefill.severity, Severity::Sev2);
}

fn engine(app: &TestApp) -> Engine {
    let policy = PolicySet {
        severities: app.config.severities.clone(),
        calendar: app.config.calendar.clone(),
        escalation: app.config.escalation.clone(),
        stakeholders: app.config.stakeholders.policy.clone(),
    };
    Engine::new(
        app.store.clone(),
        app.clock.clone(),
        policy,
        Wakers::default(),
    )
}

fn home_text(app: &TestApp, user: &str) -> String {
    app.slack
        .home_of(user)
        .map(|v| v["blocks"].to_string())
        .unwrap_or_default()
}

async fn app_home_lists_incidents_and_runs_awaiting_the_viewer_and_refreshes(db: Db) {
    let exec = helpers::Exec::new("kube");
    let app = helpers::app(db, exec).await;
    let mut refresher = HomeRefresher::new(
        engine(&app),
        app.clock.clone(),
        std::time::Duration::from_secs(15),
    );
    assert_eq!(refresher.check().await.unwrap(), 0, "first look only notes");
    let opened =
        json!({ "type": "app_home_opened", "user": "UALICE", "channel": "D1", "tab": "home" });
    assert_eq!(event(&app, "EvH1", opened.clone()).await, StatusCode::OK);
    assert_eq!(event(&app, "EvH1", opened.clone()).await, StatusCode::OK);
    app.deliver().await;
    assert_eq!(app.slack.calls_to("views.publish").len(), 1, "deduplicated");
    assert!(home_text(&app, "UALICE").contains("No open incidents"));

    let ch = helpers::incident(&app).await;
    app.clock.advance(chrono::TimeDelta::minutes(20));
    helpers::requested(&app, &ch).await;
    assert_eq!(refresher.check().await.unwrap(), 1, "one recent viewer");
    assert_eq!(
        refresher.check().await.unwrap(),
        0,
        "nothing changed since the last look"
    );
    app.deliver().await;
    let home = home_text(&app, "UALICE");
    assert!(home.contains("SEV1 INC-1"), "{home}");
    assert!(home.contains("Payments down"), "{home}");
    assert!(home.contains("commander <@UALICE>"), "{home}");
    assert!(home.contains("age 20m"), "{home}");
    assert!(home.contains("next reminder in 10m"), "{home}");
    assert!(home.contains("RTO 3h 40m left"), "{home}");
    assert!(home.contains("*Run #1* `k8s-scale`"), "{home}");
    assert!(home.contains("requested by <@UBOB>"), "{home}");

    // Two changes before delivery: one publish (coalesced), showing both.
    app.command("UALICE", &ch, "sev 2").await;
    assert_eq!(refresher.check().await.unwrap(), 1);
    app.command("UALICE", &ch, "status identified").await;
    assert_eq!(
        refresher.check().await.unwrap(),
        0,
        "a publish is already waiting"
    );
    let before = app.slack.calls_to("views.publish").len();
    app.deliver().await;
    assert_eq!(app.slack.calls_to("views.publish").len(), before + 1);
    let home = home_text(&app, "UALICE");
    assert!(home.contains("SEV2 INC-1"), "{home}");
    assert!(home.contains("identified"), "{home}");

    // BOB requested the run: it does not wait for him.
    let bob = json!({ "type": "app_home_opened", "user": "UBOB", "tab": "home" });
    assert_eq!(event(&app, "EvH2", bob).await, StatusCode::OK);
    app.deliver().await;
    let home = home_text(&app, "UBOB");
    assert!(home.contains("Nothing waits for you"), "{home}");
    // The Messages tab is not the Home tab.
    let messages = json!({ "type": "app_home_opened", "user": "UCAROL", "tab": "messages" });
    assert_eq!(event(&app, "EvH3", messages).await, StatusCode::OK);
    app.deliver().await;
    assert!(app.slack.home_of("UCAROL").is_none());
}
