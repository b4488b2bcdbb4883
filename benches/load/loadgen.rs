//! The load generator: signed slash commands over TCP through a pooled hyper client,
//! open loop (a fixed offered rate; latency measured from each request's *scheduled* send
//! time, so a slow server cannot hide its queue: no coordinated omission) or closed loop
//! (N clients, each sending its next request when the previous one is answered).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

/// The signing secret the server, the floor and the generator share.
pub const SECRET: &str = "load-bench-signing-secret";

/// What Klaxon answers when the engine failed: a 200 that is really an error.
const INTERNAL_ERROR_MARK: &[u8] = b"Something went wrong inside Klaxon";

/// The cumulative buckets of histogram `metric` in a `/metrics` page (parsed with
/// prometheus-parse), summed over the series whose label `label.0` is `label.1`:
/// `(upper bound in seconds, count)`, ascending.
pub fn histogram(page: &str, metric: &str, label: (&str, &str)) -> Vec<(f64, u64)> {
    let scrape = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string())))
        .expect("the server's /metrics is Prometheus text");
    let mut buckets: std::collections::BTreeMap<u64, (f64, u64)> = Default::default();
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
    {
        if let prometheus_parse::Value::Histogram(counts) = &sample.value {
            for c in counts {
                buckets
                    .entry(c.less_than.to_bits())
                    .or_insert((c.less_than, 0))
                    .1 += c.count as u64;
            }
        }
    }
    let mut v: Vec<(f64, u64)> = buckets.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// A `/slack/commands` client for one server.
#[derive(Clone)]
pub struct SlashClient {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    url: String,
}

/// One slash command to send.
#[derive(Clone, Debug)]
pub struct Command {
    /// Slack user id.
    pub user: String,
    /// Channel id it was typed in.
    pub channel: String,
    /// Text after `/incident`.
    pub text: String,
    /// Slack's trigger id (lets the app open a form).
    pub trigger_id: String,
}

impl Command {
    /// `/incident <text>` by `UBENCH` in `#general`.
    pub fn incident(text: impl Into<String>, trigger_id: impl Into<String>) -> Command {
        Command {
            user: "UBENCH".into(),
            channel: "CGENERAL01".into(),
            text: text.into(),
            trigger_id: trigger_id.into(),
        }
    }
}

/// The form body Slack sends for a slash command (fields as in Slack's documentation).
pub fn slash_body(c: &Command) -> String {
    serde_urlencoded::to_string([
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "TKLAXON"),
        ("team_domain", "klaxon-bench"),
        ("channel_id", c.channel.as_str()),
        ("channel_name", "general"),
        ("user_id", c.user.as_str()),
        ("user_name", "bench"),
        ("command", "/incident"),
        ("text", c.text.as_str()),
        ("api_app_id", "AKLAXON"),
        ("is_enterprise_install", "false"),
        (
            "response_url",
            "https://hooks.slack.invalid/commands/TKLAXON/1/bench",
        ),
        ("trigger_id", c.trigger_id.as_str()),
    ])
    .expect("form encodes")
}

/// One answered (or failed) request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Index of the request in its run.
    pub index: usize,
    /// Latency in microseconds (open loop: from the scheduled time).
    pub latency_us: u64,
    /// HTTP status (0: connection error; 299: a 200 carrying Klaxon's internal-error text).
    pub status: u16,
    /// When it completed, from the start of the run, microseconds.
    pub done_us: u64,
}

/// The outcome of one run.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Every request, completion order.
    pub samples: Vec<Sample>,
    /// Wall time from the first scheduled send to the last completion.
    pub wall: Duration,
    /// First failures, for the report (status and body).
    pub failures: Vec<String>,
}

impl RunResult {
    /// Requests not answered 2xx (or answered with Klaxon's internal-error text).
    pub fn errors(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| !(200..299).contains(&s.status))
            .count()
    }
    /// Completed requests per second over the run.
    pub fn throughput(&self) -> f64 {
        self.samples.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    /// Latency statistics over the samples with `index` in `range` (all when `None`).
    pub fn stats(&self, range: Option<std::ops::Range<usize>>) -> Stats {
        let mut v: Vec<u64> = self
            .samples
            .iter()
            .filter(|s| range.as_ref().is_none_or(|r| r.contains(&s.index)))
            .map(|s| s.latency_us)
            .collect();
        Stats::of(&mut v)
    }
    /// Panics with the first failures when any request failed: the bench must not print
    /// figures for a server that refused work.
    pub fn fail_loudly(&self, what: &str) {
        let errors = self.errors();
        if errors > 0 {
            panic!(
                "{what}: {errors} of {} requests were not answered 2xx (or carried Klaxon's internal-error text); first: {:#?}",
                self.samples.len(),
                self.failures
            );
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    /// Nearest-rank percentiles of `v` (microseconds), sorted in place.
    pub fn of(v: &mut [u64]) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_unstable();
        let p = |q: f64| {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1e3
        };
        Stats {
            p50: p(0.50),
            p90: p(0.90),
            p99: p(0.99),
            max: v[v.len() - 1] as f64 / 1e3,
        }
    }
    /// Percentiles of millisecond values (may be negative).
    pub fn of_ms(v: &mut [i64]) -> (usize, i64, i64, i64, i64) {
        if v.is_empty() {
            return (0, 0, 0, 0, 0);
        }
        v.sort_unstable();
        let p = |q: f64| {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        };
        (v.len(), p(0.5), p(0.99), v[v.len() - 1], v[0])
    }
}

impl SlashClient {
    /// A client for the server at `addr` (`127.0.0.1:PORT`).
    pub fn new(addr: std::net::SocketAddr) -> SlashClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        SlashClient {
            http,
            url: format!("http://{addr}/slack/commands"),
        }
    }

    /// Sends `command` signed at the current time; `(status, body)`, status 0 on a
    /// connection error, 299 for a 200 carrying Klaxon's internal-error text.
    pub async fn send(&self, command: &Command) -> (u16, Bytes) {
        let body = slash_body(command);
        let ts = chrono::Utc::now().timestamp();
        let signature = klaxon::http::verify::sign(SECRET, ts, body.as_bytes());
        let request = Request::post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", signature)
            .body(Full::new(Bytes::from(body)))
            .expect("request builds");
        match self.http.request(request).await {
            Err(e) => (0, Bytes::from(format!("connection error: {e}"))),
            Ok(response) => {
                let status = response.status();
                match response.into_body().collect().await {
                    Err(e) => (0, Bytes::from(format!("body error: {e}"))),
                    Ok(b) => {
                        let bytes = b.to_bytes();
                        let internal = status == StatusCode::OK
                            && bytes
                                .windows(INTERNAL_ERROR_MARK.len())
                                .any(|w| w == INTERNAL_ERROR_MARK);
                        (if internal { 299 } else { status.as_u16() }, bytes)
                    }
                }
            }
        }
    }

    /// The server's `/metrics` page; panics if it cannot be read (the figures printed
    /// from it would be missing without a word).
    pub async fn metrics(&self) -> String {
        let url = self.url.replace("/slack/commands", "/metrics");
        let request = Request::get(&url)
            .body(Full::new(Bytes::new()))
            .expect("request builds");
        let response = self.http.request(request).await.expect("GET /metrics");
        assert!(
            response.status().is_success(),
            "GET /metrics: {}",
            response.status()
        );
        let body = response.into_body().collect().await.expect("/metrics body");
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    }

    /// Sends one command and panics unless it is answered 2xx; returns the body.
    pub async fn must(&self, command: &Command) -> Bytes {
        let (status, body) = self.send(command).await;
        if !(200..299).contains(&status) {
            panic!(
                "{:?} answered {status}: {}",
                command.text,
                String::from_utf8_lossy(&body)
            );
        }
        body
    }
}

#[derive(Default)]
struct Collector {
    samples: Vec<Sample>,
    failures: Vec<String>,
}

fn record(c: &Mutex<Collector>, sample: Sample, body: &Bytes) {
    let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
    if !(200..299).contains(&sample.status) && c.failures.len() < 5 {
        c.failures.push(format!(
            "#{} status {}: {}",
            sample.index,
            sample.status,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    c.samples.push(sample);
}

fn finish(c: Arc<Mutex<Collector>>, start: Instant) -> RunResult {
    let c = Arc::try_unwrap(c)
        .ok()
        .expect("all requests finished")
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let last = c.samples.iter().map(|s| s.done_us).max().unwrap_or(0);
    let _ = start;
    RunResult {
        samples: c.samples,
        wall: Duration::from_micros(last),
        failures: c.failures,
    }
}

/// Open loop: request `i` is due at `start + i / rate`; at most `max_in_flight` requests
/// are outstanding (a request waiting for a slot still counts its latency from its
/// scheduled time). `make(i)` builds request `i`.
pub async fn open_loop(
    client: &SlashClient,
    rate: f64,
    count: usize,
    max_in_flight: usize,
    make: impl Fn(usize) -> Command,
) -> RunResult {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let collector = Arc::new(Mutex::new(Collector {
        samples: Vec::with_capacity(count),
        failures: Vec::new(),
    }));
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = slots.clone().acquire_owned().await.expect("semaphore open");
        let command = make(i);
        let client = client.clone();
        let collector = collector.clone();
        tasks.spawn(async move {
            let (status, body) = client.send(&command).await;
            let now = Instant::now();
            drop(permit);
            let sample = Sample {
                index: i,
                latency_us: now.duration_since(scheduled).as_micros() as u64,
                status,
                done_us: now.duration_since(start).as_micros() as u64,
            };
            record(&collector, sample, &body);
        });
        // Reap finished tasks now and then so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    finish(collector, start)
}

/// Closed loop: `clients` concurrent senders share `count` requests (or stop at
/// `deadline`, when given); latency from each request's own send.
pub async fn closed_loop(
    client: &SlashClient,
    clients: usize,
    count: usize,
    deadline: Option<Duration>,
    make: impl Fn(usize) -> Command + Send + Sync + 'static,
) -> RunResult {
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let collector = Arc::new(Mutex::new(Collector {
        samples: Vec::with_capacity(count.min(1_000_000)),
        failures: Vec::new(),
    }));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, make, next, collector) = (
            client.clone(),
            make.clone(),
            next.clone(),
            collector.clone(),
        );
        tasks.spawn(async move {
            loop {
                if deadline.is_some_and(|d| start.elapsed() >= d) {
                    return;
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let command = make(i);
                let sent = Instant::now();
                let (status, body) = client.send(&command).await;
                let now = Instant::now();
                let sample = Sample {
                    index: i,
                    latency_us: now.duration_since(sent).as_micros() as u64,
                    status,
                    done_us: now.duration_since(start).as_micros() as u64,
                };
                record(&collector, sample, &body);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    finish(collector, start)
}
