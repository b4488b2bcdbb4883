//! Benchmark: time from a signed `/incident declare` request to its HTTP response.
//!
//! Runs the real router (signature check, parsing, engine, one committed transaction
//! with events and outbox rows) in-process, on a fresh SQLite file and, when
//! `KLAXON_TEST_DATABASE_URL` is set, on PostgreSQL. Slack is not on this path: the
//! outbox delivers later. Prints median, p90, p99 and max over N requests.
//!
//! `cargo bench --bench declare_latency [-- N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use klaxon::clock::SystemClock;
use klaxon::config::Config;
use klaxon::http::verify::sign;
use klaxon::slack::morphism::MorphismSlack;
use klaxon::store::Store;
use tower::ServiceExt;

const SECRET: &str = "bench-secret";

fn config(db_url: &str) -> Config {
    let db_url = db_url.to_string();
    let env = move |name: &str| match name {
        "SLACK_SIGNING_SECRET" => Some(SECRET.to_string()),
        "SLACK_BOT_TOKEN" => Some("xoxb-bench".to_string()),
        "KLAXON_SLACK_API_URL" => Some("http://127.0.0.1:9/api".to_string()),
        "KLAXON_DATABASE_URL" => Some(db_url.clone()),
        "KLAXON_INCIDENT_RESPONSE_CHANNEL" => Some("CBENCH0001".to_string()),
        _ => None,
    };
    Config::from_toml(include_str!("../deploy/klaxon.example.toml"), &env).expect("bench config")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn run(label: &str, store: Store, n: usize) {
    let config = config("sqlite://unused.db");
    let slack =
        MorphismSlack::new(&config.slack.api_url, config.slack.bot_token.clone()).expect("client");
    let services = klaxon::app::wire(store, &config, Arc::new(SystemClock), Arc::new(slack));
    let app = klaxon::http::app(services.state);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let body = format!(
            "command=%2Fincident&text=declare+sev1+Database+is+down+{i}&user_id=UBENCH&channel_id=CGENERAL&trigger_id=t"
        );
        let ts = chrono::Utc::now().timestamp();
        let request = Request::post("/slack/commands")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(SECRET, ts, body.as_bytes()))
            .body(Body::from(body))
            .unwrap();
        let started = Instant::now();
        let response = app.clone().oneshot(request).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(response.status(), StatusCode::OK);
        if i >= 20 {
            // The first 20 warm the pool and caches.
            samples.push(elapsed);
        }
    }
    samples.sort();
    println!(
        "{label}: declare -> HTTP response over {n} requests: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await
    .expect("sqlite");
    sqlite.migrate().await.expect("migrate");
    run("sqlite", sqlite, n).await;
    if let Ok(url) = std::env::var("KLAXON_TEST_DATABASE_URL") {
        let admin = Store::connect(&url).await.expect("postgres reachable");
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_raw(&format!("create schema {schema}"))
            .await
            .expect("schema");
        let sep = if url.contains('?') { '&' } else { '?' };
        let pg = Store::connect(&format!("{url}{sep}options=-c%20search_path%3D{schema}"))
            .await
            .expect("postgres");
        pg.migrate().await.expect("migrate");
        run("postgres", pg, n).await;
        admin
            .execute_raw(&format!("drop schema {schema} cascade"))
            .await
            .expect("drop schema");
    }
}
