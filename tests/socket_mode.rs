//! Issue 11: Socket Mode against a local WebSocket server speaking Slack's envelope
//! protocol (`hello`, `events_api`, `slash_commands`, `interactive`, acks by
//! `envelope_id`, `disconnect`). Envelopes run through the same handlers as HTTP and are
//! acknowledged only after their commit; a connection dropped before the ack gets the
//! envelope redelivered and applied once; one dropped after the ack loses nothing.
//! SQLite and PostgreSQL.

mod support;

use std::time::Duration;

use klaxon::http::socket::{SocketMode, SocketSettings};
use serde_json::{Value, json};
use support::socket_server::SocketServer;
use support::{ANNOUNCE, APP_ID, Db, TestApp, slack_emulator::TEAM_ID};
use tokio::sync::watch;

both_backends!(
    envelopes_run_through_the_http_handlers_and_are_acked_after_commit,
    a_socket_dropped_before_the_ack_gets_the_envelope_again_applied_once,
    disconnect_and_a_failing_connections_open_make_the_client_reconnect,
    a_silent_connection_is_replaced,
);

fn client(app: &TestApp) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    client_with_idle(app, Duration::from_secs(60))
}

fn client_with_idle(
    app: &TestApp,
    idle_timeout: Duration,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let settings = SocketSettings {
        api_url: app.slack.base_url.clone(),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        idle_timeout,
    };
    let socket = SocketMode::new(
        app.state.clone(),
        "xapp-1-test".to_string().into(),
        settings,
    );
    let (stop, rx) = watch::channel(false);
    (stop, tokio::spawn(socket.run(rx)))
}

fn declare(text: &str) -> Value {
    json!({
        "token": "x", "team_id": TEAM_ID, "team_domain": "t", "channel_id": "CGENERAL01",
        "channel_name": "general", "user_id": "UBOB", "user_name": "bob", "command": "/incident",
        "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false",
        "response_url": "https://hooks.slack.invalid/1", "trigger_id": "1.2.3"
    })
}

fn reaction_event(event_id: &str, ts: &str) -> Value {
    json!({
        "token": "x", "team_id": TEAM_ID, "api_app_id": APP_ID, "type": "event_callback",
        "event_id": event_id, "event_time": 1_700_000_000,
        "event": { "type": "reaction_added", "user": "UCAROL", "reaction": "rotating_light",
                   "item": { "type": "message", "channel": ANNOUNCE, "ts": ts } }
    })
}

/// Offer posts in #incident-response threads.
fn offer_posts(app: &TestApp) -> usize {
    app.slack
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| c["channel"] == ANNOUNCE && c["thread_ts"].is_string())
        .count()
}

/// Incidents whose declaration is committed. A slash command is answered once its
/// declaration is durable and written out right after (see engine::intake): completing
/// every stored declaration now, as a restarted process would, shows what was committed
/// at the ack whether or not the write-out has run yet.
async fn durable_declarations(app: &TestApp) -> usize {
    let far = chrono::Utc::now() + chrono::TimeDelta::days(3650);
    app.engine.complete_declarations(far).await.unwrap();
    app.store.open_incidents().await.unwrap().len()
}

async fn envelopes_run_through_the_http_handlers_and_are_acked_after_commit(db: Db) {
    let app = TestApp::start(db).await;
    let mut server = SocketServer::start().await;
    app.slack.set_socket_url(&server.url);
    let (stop, task) = client(&app);
    let mut conn = server.accept().await;

    // A slash command: the ack carries the ephemeral answer, and the incident is
    // committed by the time the ack arrives.
    conn.envelope("slash_commands", "env-1", declare("declare sev2 Slow API"))
        .await;
    let ack = conn.ack().await.expect("ack");
    assert_eq!(ack["envelope_id"], "env-1");
    assert_eq!(ack["payload"]["response_type"], "ephemeral");
    assert!(
        ack["payload"]["text"]
            .as_str()
            .unwrap()
            .contains("declared"),
        "{ack}"
    );
    assert_eq!(durable_declarations(&app).await, 1, "durable when acked");

    // An Events API reaction: acked once the offer row is committed.
    let ts = app
        .slack
        .add_message(ANNOUNCE, "UPOSTER", "SEV1 db down", None);
    conn.envelope("events_api", "env-2", reaction_event("Ev1", &ts))
        .await;
    let ack = conn.ack().await.expect("ack");
    assert_eq!(ack, json!({ "envelope_id": "env-2" }));
    app.deliver().await;
    assert_eq!(offer_posts(&app), 1);

    // A form with a bad field: the ack carries the field error, as the HTTP answer would.
    let bad = json!({
        "type": "view_submission", "team": { "id": TEAM_ID }, "api_app_id": APP_ID,
        "user": { "id": "UBOB" },
        "view": { "callback_id": "klaxon_declare", "private_metadata": "CGENERAL01",
                  "state": { "values": {
                      "severity": { "value": { "selected_option": { "value": "sev2" } } },
                      "title": { "value": { "value": "  " } } } } }
    });
    conn.envelope("interactive", "env-3", bad).await;
    let ack = conn.ack().await.expect("ack");
    assert_eq!(ack["envelope_id"], "env-3");
    assert_eq!(ack["payload"]["response_action"], "errors");
    assert!(ack["payload"]["errors"]["title"].is_string(), "{ack}");

    // An unknown button is refused by the handler (400) and acknowledged without a
    // payload: redelivering it could never succeed.
    let unknown = json!({
        "type": "block_actions", "team": { "id": TEAM_ID }, "api_app_id": APP_ID,
        "user": { "id": "UBOB" }, "actions": [{ "action_id": "nope", "value": "1" }]
    });
    conn.envelope("interactive", "env-4", unknown).await;
    assert_eq!(
        conn.ack().await.expect("ack"),
        json!({ "envelope_id": "env-4" })
    );

    // The app token authenticated apps.connections.open; no signature was involved.
    let opens: Vec<_> = app
        .slack
        .calls()
        .into_iter()
        .filter(|c| c.method == "apps.connections.open")
        .collect();
    assert_eq!(opens.len(), 1);
    assert_eq!(opens[0].bearer_token.as_deref(), Some("xapp-1-test"));

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

async fn a_socket_dropped_before_the_ack_gets_the_envelope_again_applied_once(db: Db) {
    let app = TestApp::start(db).await;
    let mut server = SocketServer::start().await;
    app.slack.set_socket_url(&server.url);
    let (stop, _task) = client(&app);
    let ts = app
        .slack
        .add_message(ANNOUNCE, "UPOSTER", "SEV1 db down", None);

    // Dropped before the ack: Slack redelivers on the next connection.
    let mut conn = server.accept().await;
    conn.envelope("events_api", "env-1", reaction_event("Ev1", &ts))
        .await;
    conn.drop_now();
    let mut conn = server.accept().await;
    conn.envelope("events_api", "env-1", reaction_event("Ev1", &ts))
        .await;
    assert_eq!(
        conn.ack().await.expect("ack"),
        json!({ "envelope_id": "env-1" })
    );
    app.deliver().await;
    assert_eq!(offer_posts(&app), 1, "applied once");

    // Dropped after the ack: what was acknowledged is committed; nothing is redelivered.
    conn.envelope(
        "slash_commands",
        "env-2",
        declare("declare sev3 Cache cold"),
    )
    .await;
    let ack = conn.ack().await.expect("ack");
    assert!(
        ack["payload"]["text"]
            .as_str()
            .unwrap()
            .contains("declared")
    );
    conn.drop_now();
    let mut conn = server.accept().await;
    assert_eq!(durable_declarations(&app).await, 1, "durable when acked");
    // The new connection serves as the old one did.
    conn.envelope("slash_commands", "env-3", declare("list"))
        .await;
    let ack = conn.ack().await.expect("ack");
    assert!(
        ack["payload"]["text"]
            .as_str()
            .unwrap()
            .contains("Cache cold"),
        "{ack}"
    );
    stop.send(true).unwrap();
}

async fn disconnect_and_a_failing_connections_open_make_the_client_reconnect(db: Db) {
    let app = TestApp::start(db).await;
    let mut server = SocketServer::start().await;
    let (stop, task) = client(&app);
    // No URL yet: apps.connections.open fails and the client backs off and retries.
    let failed_opens = || {
        app.slack
            .calls()
            .iter()
            .filter(|c| c.method == "apps.connections.open" && c.failed)
            .count()
    };
    while failed_opens() < 3 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.slack.set_socket_url(&server.url);
    let mut conn = server.accept().await;
    conn.disconnect("refresh_requested").await;
    let mut conn2 = server.accept().await;
    assert!(conn.ack().await.is_none(), "the old connection was closed");
    conn2
        .envelope("slash_commands", "env-9", declare("help"))
        .await;
    let ack = conn2.ack().await.expect("ack on the new connection");
    assert_eq!(ack["envelope_id"], "env-9");
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

async fn a_silent_connection_is_replaced(db: Db) {
    let app = TestApp::start(db).await;
    let mut server = SocketServer::start().await;
    app.slack.set_socket_url(&server.url);
    let (stop, _task) = client_with_idle(&app, Duration::from_millis(200));
    // Slack goes quiet (no pings, no envelopes): the client gives up on the connection
    // and opens another, which works.
    let mut silent = server.accept().await;
    let mut conn = server.accept().await;
    assert!(
        silent.ack().await.is_none(),
        "the silent connection was closed"
    );
    conn.envelope("slash_commands", "env-1", declare("help"))
        .await;
    assert_eq!(conn.ack().await.expect("ack")["envelope_id"], "env-1");
    stop.send(true).unwrap();
}
