//! `/metrics`: Prometheus text exposition, built with the `prometheus` crate.
//!
//! Two kinds of numbers:
//! - **Counters and histograms of this process** (Slack calls and their errors and 429s
//!   by method, HTTP latency, reminders and pages sent), registered once in [`process`]
//!   and counted where things happen. They restart at zero with the process, which
//!   Prometheus' `rate()` expects.
//! - **Gauges read from the database at scrape time** (incidents by severity and status,
//!   outbox depth and oldest age per lane class, recovery runs by outcome): the shared
//!   truth, the same whichever replica is scraped.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::store::{Store, StoreError};

/// The process's own counters.
pub struct ProcessMetrics {
    registry: Registry,
    /// Slack Web API calls by method.
    pub slack_calls: IntCounterVec,
    /// Slack Web API calls that failed, by method and error (Slack's code, `ratelimited`
    /// or `transport`).
    pub slack_errors: IntCounterVec,
    /// Slack answers HTTP 429, by method.
    pub slack_rate_limited: IntCounterVec,
    /// HTTP request latency by route, method and status.
    pub http_latency: HistogramVec,
    /// Status reminders posted (timers that fired).
    pub reminders_sent: IntCounter,
    /// PagerDuty events accepted, by action (`trigger`, `resolve`).
    pub pages_sent: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

static PROCESS: LazyLock<ProcessMetrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let http_latency = HistogramVec::new(
        HistogramOpts::new(
            "klaxon_http_request_duration_seconds",
            "Time to answer an HTTP request, by route, method and status.",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["route", "method", "status"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(http_latency.clone()))
        .expect("registered once");
    // The SQLite writer's turns are timed where they are handed out (the store).
    let writer = crate::store::writer_times();
    for h in [&writer.wait, &writer.hold] {
        registry
            .register(Box::new(h.clone()))
            .expect("registered once");
    }
    ProcessMetrics {
        slack_calls: counter(
            &registry,
            "klaxon_slack_api_calls_total",
            "Slack Web API calls made, by method.",
            &["method"],
        ),
        slack_errors: counter(
            &registry,
            "klaxon_slack_api_errors_total",
            "Slack Web API calls that failed, by method and error.",
            &["method", "error"],
        ),
        slack_rate_limited: counter(
            &registry,
            "klaxon_slack_api_rate_limited_total",
            "Slack Web API answers HTTP 429 (rate limited), by method.",
            &["method"],
        ),
        reminders_sent: {
            let c = IntCounter::new(
                "klaxon_reminders_sent_total",
                "Status update reminders posted.",
            )
            .expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        },
        pages_sent: counter(
            &registry,
            "klaxon_pages_sent_total",
            "PagerDuty events accepted, by action.",
            &["action"],
        ),
        http_latency,
        registry,
    }
});

/// The process's counters.
pub fn process() -> &'static ProcessMetrics {
    &PROCESS
}

/// The whole exposition: the process's counters plus gauges read from `store` now.
pub async fn render(store: &Store, now: DateTime<Utc>) -> Result<String, StoreError> {
    let scrape = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        scrape
            .register(Box::new(g.clone()))
            .expect("registered once");
        g
    };
    let incidents = gauge(
        "klaxon_incidents",
        "Incidents by severity and status.",
        &["severity", "status"],
    );
    for (severity, status, n) in store.incident_counts().await? {
        incidents
            .with_label_values(&[&severity.to_ascii_lowercase(), &status])
            .set(n);
    }
    let depth = gauge(
        "klaxon_outbox_pending",
        "Outbox rows waiting to be delivered, by lane class.",
        &["lane"],
    );
    let oldest = gauge(
        "klaxon_outbox_oldest_pending_age_seconds",
        "Age of the oldest outbox row waiting, by lane class.",
        &["lane"],
    );
    for class in crate::domain::outbound::LaneClass::ALL {
        depth.with_label_values(&[class.as_str()]).set(0);
        oldest.with_label_values(&[class.as_str()]).set(0);
    }
    for lane in store.outbox_depth().await? {
        depth.with_label_values(&[&lane.class]).set(lane.pending);
        if let Some(t) = lane.oldest {
            oldest
                .with_label_values(&[&lane.class])
                .set((now - t).num_seconds().max(0));
        }
    }
    let runs = gauge(
        "klaxon_recovery_runs",
        "Recovery command runs by state (succeeded, failed, outcome_unknown, denied...).",
        &["state"],
    );
    for (state, n) in store.run_counts().await? {
        runs.with_label_values(&[&state]).set(n);
    }
    let mut families = PROCESS.registry.gather();
    families.extend(scrape.gather());
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut buffer)
        .expect("text encoding cannot fail on valid families");
    Ok(String::from_utf8(buffer).expect("the text format is UTF-8"))
}

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
