//! Issue 10: `GET /metrics` parsed with an independent Prometheus text-format parser
//! (prometheus-parse): incidents by severity and status, outbox depth and oldest age per
//! lane class, Slack calls, errors and 429s by method, HTTP latency histograms,
//! reminders and pages sent, recovery runs by outcome. Both backends.
//!
//! Process counters are shared by the tests of this binary (one registry per process, as
//! in production), so they are checked as increases between two scrapes; the database
//! gauges belong to each test's own store and are checked exactly.

#[path = "support/approvals.rs"]
mod helpers;
mod support;

use axum::body::Body;
use axum::http::Request;
use chrono::TimeDelta;
use helpers::Exec;
use klaxon::commands::render::APPROVE_ACTION;
use prometheus_parse::{Scrape, Value};
use support::slack_emulator::Failure;
use support::{Db, TestApp, start};

both_backends!(metrics_parse_and_count_what_happened);

async fn scrape(app: &TestApp) -> Scrape {
    let (status, body) = app
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// The value of `metric` with exactly these labels (0 when absent).
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .find(|x| {
            x.metric == metric
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is not a single value: {other:?}"),
        })
        .unwrap_or(0.0)
}

async fn metrics_parse_and_count_what_happened(db: Db) {
    let exec = Exec::new("prod");
    let app = helpers::app(db, exec.clone()).await;
    let before = scrape(&app).await;

    // Declared and not yet delivered: its rows wait in the Slack and announce lanes.
    let reply = app
        .command("UALICE", "CGENERAL01", "declare sev1 Payments down")
        .await;
    assert!(reply.contains("declared"), "{reply}");
    app.clock.advance(TimeDelta::seconds(90));
    let waiting = scrape(&app).await;
    assert_eq!(
        value(
            &waiting,
            "klaxon_incidents",
            &[("severity", "sev1"), ("status", "investigating")]
        ),
        1.0
    );
    assert!(value(&waiting, "klaxon_outbox_pending", &[("lane", "slack")]) >= 3.0);
    assert_eq!(
        value(&waiting, "klaxon_outbox_pending", &[("lane", "announce")]),
        1.0
    );
    assert_eq!(
        value(
            &waiting,
            "klaxon_outbox_oldest_pending_age_seconds",
            &[("lane", "slack")]
        ),
        90.0
    );
    assert_eq!(
        value(&waiting, "klaxon_outbox_pending", &[("lane", "page")]),
        0.0
    );

    // One post answered 429, one topic refused: counted by method.
    app.slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    app.slack
        .fail_next("conversations.setTopic", Failure::Error("too_long"));
    app.deliver().await;
    app.clock.advance(TimeDelta::seconds(31));
    app.deliver().await;
    let ch = app.store.open_incidents().await.unwrap()[0]
        .channel
        .clone()
        .unwrap()
        .id;
    app.command("UALICE", &ch, "role ops <@UBOB>").await;
    app.deliver().await;

    // A run approved and executed; the SEV1 ladder pages at 15 minutes, a reminder at 30.
    assert!(
        app.command("UBOB", &ch, helpers::SCALE)
            .await
            .starts_with("Run #1")
    );
    app.deliver().await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    app.deliver().await;
    app.run_until(start() + TimeDelta::minutes(35)).await;
    assert!(!app.pagerduty.events().is_empty());

    let after = scrape(&app).await;
    let grew = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(
        value(&after, "klaxon_outbox_pending", &[("lane", "slack")]),
        0.0
    );
    assert_eq!(
        value(
            &after,
            "klaxon_outbox_oldest_pending_age_seconds",
            &[("lane", "slack")]
        ),
        0.0
    );
    assert_eq!(
        value(&after, "klaxon_recovery_runs", &[("state", "succeeded")]),
        1.0
    );
    assert!(
        grew(
            "klaxon_slack_api_rate_limited_total",
            &[("method", "chat.postMessage")]
        ) >= 1.0
    );
    assert!(
        grew(
            "klaxon_slack_api_errors_total",
            &[("method", "chat.postMessage"), ("error", "ratelimited")]
        ) >= 1.0
    );
    assert!(
        grew(
            "klaxon_slack_api_errors_total",
            &[("method", "conversations.setTopic"), ("error", "too_long")]
        ) >= 1.0
    );
    assert!(
        grew(
            "klaxon_slack_api_calls_total",
            &[("method", "conversations.create")]
        ) >= 1.0
    );
    assert!(grew("klaxon_pages_sent_total", &[("action", "trigger")]) >= 1.0);
    assert!(grew("klaxon_reminders_sent_total", &[]) >= 1.0);

    // Latency histograms by route template, method and status.
    let commands = after
        .samples
        .iter()
        .find(|x| {
            x.metric == "klaxon_http_request_duration_seconds"
                && x.labels.get("route") == Some("/slack/commands")
                && x.labels.get("method") == Some("POST")
                && x.labels.get("status") == Some("200")
        })
        .expect("a latency histogram for /slack/commands");
    let Value::Histogram(buckets) = &commands.value else {
        panic!("not a histogram: {:?}", commands.value);
    };
    let total = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
    // declare, role, run: three commands at least (the other backend's half adds its own).
    assert!(total >= 3.0, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "cumulative buckets"
    );
}
