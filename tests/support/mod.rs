//! Shared test harness: fresh databases on both backends, the Slack emulator, and a
//! `TestApp` that sends signed requests into the real router.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod pagerduty;
pub mod pagerduty_rest;
pub mod slack_emulator;
pub mod smtp;
pub mod socket_server;
pub mod statuspage;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use klaxon::clock::{Clock, ManualClock};
use klaxon::config::Config;
use klaxon::http::verify::sign;
use klaxon::outbox::{OutboxWorker, PassReport};
use klaxon::scheduler::{FireReport, Scheduler};
use klaxon::slack::morphism::MorphismSlack;
use klaxon::store::Store;
use pagerduty::PagerDutyReceiver;
use serde_json::Value;
use slack_emulator::SlackEmulator;
use tower::ServiceExt;

/// The signing secret every test request is signed with.
pub const SECRET: &str = "test-signing-secret";
/// The Slack app id the test config expects interactions to carry.
pub const APP_ID: &str = "AKLAXON";
/// The configured `#incident-response` channel.
pub const ANNOUNCE: &str = "CINCRESP01";
/// Where the manual clock starts: Monday 23 November 2026, 10:00 UTC.
pub const START: &str = "2026-11-23T10:00:00Z";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh schema in `KLAXON_TEST_DATABASE_URL`.
    Postgres,
}

/// Runs an async test body once per backend: `both_backends!(name, scenario_fn)` makes
/// `name::sqlite` and `name::postgres`. The PostgreSQL half runs when
/// `KLAXON_TEST_DATABASE_URL` is set and FAILS if that database cannot be reached.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::support::Db::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    if super::support::postgres_url().is_none() {
                        eprintln!("KLAXON_TEST_DATABASE_URL not set: PostgreSQL half not run");
                        return;
                    }
                    super::$name(super::support::Db::Postgres).await
                }
            }
        )*
    };
}

/// The PostgreSQL URL tests use, if configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("KLAXON_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// A migrated, empty store on `db`. SQLite files live in a temp dir kept for the test's
/// lifetime (leaked: a failed test leaves its database behind for inspection).
pub async fn fresh_store(db: Db) -> Store {
    fresh_store_with_url(db).await.0
}

/// [`fresh_store`] plus the URL that reaches the same database (for a second replica).
pub async fn fresh_store_with_url(db: Db) -> (Store, String) {
    let (store, url) = match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir").keep();
            let url = format!("sqlite://{}", dir.join("klaxon.db").display());
            (Store::connect(&url).await.expect("sqlite"), url)
        }
        Db::Postgres => {
            let base = postgres_url().expect("KLAXON_TEST_DATABASE_URL");
            let admin = Store::connect(&base)
                .await
                .unwrap_or_else(|e| panic!("KLAXON_TEST_DATABASE_URL is set but unreachable: {e}"));
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            admin
                .execute_raw(&format!("create schema {schema}"))
                .await
                .expect("create schema");
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            (Store::connect(&url).await.expect("postgres"), url)
        }
    };
    store.migrate().await.expect("migrations");
    (store, url)
}

/// The 32-character routing key configured for escalation target `target`.
pub fn routing_key(target: &str) -> String {
    format!("{target:x<32}").chars().take(32).collect()
}

/// The instant tests start at.
pub fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(START)
        .unwrap()
        .with_timezone(&Utc)
}

/// A running Klaxon wired to the Slack emulator, on a manual clock.
pub struct TestApp {
    pub router: Router,
    pub worker: OutboxWorker,
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub slack: SlackEmulator,
    pub pagerduty: PagerDutyReceiver,
    pub scheduler: Scheduler,
    pub config: Config,
    /// The engine the HTTP handlers use.
    pub engine: klaxon::engine::Engine,
    /// The handlers' state (Socket Mode drives the same handlers with it).
    pub state: klaxon::http::AppState,
}

/// A test's config: the example file with the emulator's URL and test secrets.
pub fn test_config(api_url: &str, db_url: &str) -> Config {
    test_config_with(api_url, db_url, "http://127.0.0.1:9/v2/enqueue", "UTC")
}

/// [`test_config`] with a PagerDuty receiver (routing keys for every default target) and
/// a team time zone.
pub fn test_config_with(
    api_url: &str,
    db_url: &str,
    pagerduty_url: &str,
    timezone: &str,
) -> Config {
    let api_url = api_url.to_string();
    let db_url = db_url.to_string();
    let pagerduty_url = pagerduty_url.to_string();
    let timezone = timezone.to_string();
    let env = move |name: &str| match name {
        "KLAXON_PAGERDUTY_EVENTS_URL" => Some(pagerduty_url.clone()),
        "KLAXON_TIMEZONE" => Some(timezone.clone()),
        _ if name.starts_with("KLAXON_PAGERDUTY_KEY_") => Some(routing_key(
            &name["KLAXON_PAGERDUTY_KEY_".len()..].to_ascii_lowercase(),
        )),
        "SLACK_SIGNING_SECRET" => Some(SECRET.to_string()),
        "SLACK_BOT_TOKEN" => Some("xoxb-test-token".to_string()),
        "KLAXON_SLACK_API_URL" => Some(api_url.clone()),
        "KLAXON_DATABASE_URL" => Some(db_url.clone()),
        "KLAXON_INCIDENT_RESPONSE_CHANNEL" => Some(ANNOUNCE.to_string()),
        "KLAXON_SLACK_TEAM_ID" => Some(slack_emulator::TEAM_ID.to_string()),
        "KLAXON_SLACK_APP_ID" => Some(APP_ID.to_string()),
        _ => None,
    };
    let mut config = Config::from_toml(include_str!("../../deploy/klaxon.example.toml"), &env)
        .expect("test config");
    // Pacing stays on, with a spacing short enough that a test posting a few messages to
    // one channel does not sleep for seconds, and without the per-minute method tiers
    // (tests declaring dozens of incidents would wait on them in real time). The pacer's
    // own tests cover both at their real values.
    config.delivery.pacing.post_interval = std::time::Duration::from_millis(5);
    config.delivery.pacing.method_tiers = false;
    config
}

impl TestApp {
    pub async fn start(db: Db) -> TestApp {
        Self::start_with(fresh_store(db).await, "UTC", start()).await
    }

    /// A Klaxon on an existing store, in `timezone`, with the clock at `at`.
    pub async fn start_with(store: Store, timezone: &str, at: DateTime<Utc>) -> TestApp {
        Self::start_full(store, timezone, at, None).await
    }

    /// A Klaxon with recovery commands (catalog, executors, dry-run switch).
    pub async fn start_with_recovery(db: Db, recovery: klaxon::outbox::Recovery) -> TestApp {
        Self::start_full(fresh_store(db).await, "UTC", start(), Some(recovery)).await
    }

    /// A Klaxon whose config `configure` adjusts first (targets, policies...).
    pub async fn start_configured(db: Db, configure: impl FnOnce(&mut Config)) -> TestApp {
        Self::start_inner(fresh_store(db).await, "UTC", start(), None, configure).await
    }

    /// A Klaxon with recovery commands whose config `configure` adjusts first.
    pub async fn start_with_recovery_configured(
        db: Db,
        recovery: klaxon::outbox::Recovery,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        Self::start_inner(
            fresh_store(db).await,
            "UTC",
            start(),
            Some(recovery),
            configure,
        )
        .await
    }

    async fn start_full(
        store: Store,
        timezone: &str,
        at: DateTime<Utc>,
        recovery: Option<klaxon::outbox::Recovery>,
    ) -> TestApp {
        Self::start_inner(store, timezone, at, recovery, |_| {}).await
    }

    async fn start_inner(
        store: Store,
        timezone: &str,
        at: DateTime<Utc>,
        recovery: Option<klaxon::outbox::Recovery>,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        let slack = SlackEmulator::start().await;
        let pagerduty = PagerDutyReceiver::start().await;
        let mut config = test_config_with(
            &slack.base_url,
            "sqlite://unused.db",
            &pagerduty.url,
            timezone,
        );
        configure(&mut config);
        let clock = Arc::new(ManualClock::new(at));
        slack.use_clock(clock.clone());
        let client = MorphismSlack::new(&config.slack.api_url, config.slack.bot_token.clone())
            .expect("slack client");
        let services = match recovery {
            Some(recovery) => klaxon::app::wire_with(
                store.clone(),
                &config,
                clock.clone(),
                Arc::new(client),
                recovery,
            ),
            None => klaxon::app::wire(store.clone(), &config, clock.clone(), Arc::new(client)),
        };
        TestApp {
            engine: services.state.engine.clone(),
            state: services.state.clone(),
            router: klaxon::http::app(services.state),
            worker: services.worker,
            scheduler: services.scheduler,
            store,
            clock,
            slack,
            pagerduty,
            config,
        }
    }

    /// Sends `body` to `path` signed with the test secret at the clock's time.
    pub async fn post_signed(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let ts = self.clock.now().timestamp();
        let request = Request::post(path)
            .header("content-type", content_type)
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(SECRET, ts, body.as_bytes()))
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    /// Sends any request into the router.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, String) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).to_string())
    }

    /// `/incident <text>` typed by `user` in `channel`; returns the ephemeral text ("" for
    /// an empty 200).
    pub async fn command(&self, user: &str, channel: &str, text: &str) -> String {
        let body = serde_urlencoded::to_string([
            ("command", "/incident"),
            ("text", text),
            ("user_id", user),
            ("channel_id", channel),
            ("team_id", "TKLAXON"),
            ("trigger_id", "1337.42.abcd"),
            ("response_url", "https://hooks.slack.invalid/commands/1"),
        ])
        .unwrap();
        let (status, body) = self
            .post_signed(
                "/slack/commands",
                "application/x-www-form-urlencoded",
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // A declaration is answered once durable and written out right after: wait for
        // that, as a reader a moment later would.
        self.engine.declarations_written().await;
        if body.is_empty() {
            return body;
        }
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["response_type"], "ephemeral", "{body}");
        json["text"].as_str().unwrap().to_string()
    }

    /// Delivers everything due in the outbox.
    pub async fn deliver(&self) -> PassReport {
        self.worker.deliver_due().await.expect("outbox pass")
    }

    /// Fires every timer due now.
    pub async fn fire(&self) -> FireReport {
        self.scheduler.fire_due().await.expect("scheduler pass")
    }

    /// Simulated time: jumps the clock from timer to timer up to `until`, firing timers
    /// and delivering the outbox at each stop, as the real loops would.
    pub async fn run_until(&self, until: DateTime<Utc>) {
        loop {
            self.fire().await;
            self.deliver().await;
            match self.store.next_timer_due().await.unwrap() {
                Some(next) if next <= until && next > self.clock.now() => self.clock.set(next),
                _ => break,
            }
        }
        self.clock.set(until);
        self.fire().await;
        self.deliver().await;
    }

    /// Declares an incident and delivers its effects; returns the incident channel id.
    pub async fn declare(&self, user: &str, text: &str) -> String {
        let reply = self
            .command(user, "CGENERAL01", &format!("declare {text}"))
            .await;
        assert!(reply.contains("declared"), "{reply}");
        self.deliver().await;
        let open = self.store.open_incidents().await.unwrap();
        open.last()
            .and_then(|i| i.channel.clone())
            .expect("channel opened")
            .id
    }

    /// Presses a button on run `value`'s approval message in `channel` as `user` (a
    /// `block_actions` interaction from this workspace and app, as Slack sends it).
    pub async fn press(
        &self,
        user: &str,
        channel: &str,
        action_id: &str,
        value: &str,
    ) -> StatusCode {
        // Slack sends the ts of the message the button is on: the one Klaxon posted.
        let ts = match value.parse::<i64>() {
            Ok(id) => self
                .store
                .run(id)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.approval_message)
                .map(|(_, ts)| ts),
            Err(_) => None,
        }
        .unwrap_or_default();
        self.press_with(user, channel, action_id, value, |p| {
            p["container"]["message_ts"] = Value::String(ts);
        })
        .await
    }

    /// A `block_actions` press whose payload `edit` changes first (another team, app,
    /// channel or message...).
    pub async fn press_with(
        &self,
        user: &str,
        channel: &str,
        action_id: &str,
        value: &str,
        edit: impl FnOnce(&mut Value),
    ) -> StatusCode {
        let mut payload = serde_json::json!({
            "type": "block_actions",
            "user": { "id": user, "team_id": slack_emulator::TEAM_ID },
            "team": { "id": slack_emulator::TEAM_ID },
            "api_app_id": APP_ID,
            "trigger_id": "1337.43.efgh",
            "channel": { "id": channel },
            "container": { "type": "message", "channel_id": channel },
            "actions": [{ "action_id": action_id, "value": value, "type": "button" }]
        });
        edit(&mut payload);
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        self.post_signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            &body,
        )
        .await
        .0
    }

    /// Ephemeral texts `user` received, in order.
    pub fn ephemerals_for(&self, user: &str) -> Vec<String> {
        self.slack
            .calls_to("chat.postEphemeral")
            .into_iter()
            .filter(|b| b["user"] == user)
            .map(|b| b["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Texts of the messages the emulator received in `channel`, in order.
    pub fn messages_in(&self, channel: &str) -> Vec<String> {
        self.slack
            .calls_to("chat.postMessage")
            .into_iter()
            .filter(|b| b["channel"] == channel)
            .map(|b| format!("{} {}", b["text"].as_str().unwrap_or_default(), b["blocks"]))
            .collect()
    }
}

/// What a posted message shows: the texts of its blocks (sections and their fields), or
/// its `text` when it has no blocks. An announcement digest's `text` is only the start of
/// it (the notification line); its blocks carry every announcement.
pub fn shown_text(post: &serde_json::Value) -> String {
    let blocks = match &post["blocks"] {
        serde_json::Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
        other => other.clone(),
    };
    match blocks.as_array() {
        Some(blocks) if !blocks.is_empty() => blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => post["text"].as_str().unwrap_or_default().to_string(),
    }
}
