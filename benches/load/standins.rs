//! Lean Slack Web API and PagerDuty Events API v2 stand-ins for the load bench: one axum
//! server on `127.0.0.1:0`, answers in the shapes slack-morphism deserializes, counters per
//! method in atomics, and a compact record of what the pacing and duplicate checks need
//! (per channel: arrival time and a hash of each `chat.postMessage` text). Unlike
//! `tests/support/slack_emulator.rs` it keeps no message bodies and looks channels up by
//! hash map, so 10,000+ channels and 100,000+ posts cost little.
//!
//! Switches: [`SlackStandin::set_down`] answers every Slack call with HTTP 503 (refused
//! calls are counted, not recorded); [`SlackStandin::set_latency`] delays every answer;
//! [`SlackStandin::set_views_fast`] exempts `views.open` from both (a form that opens while
//! the rest of Slack is down or slow).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde::Deserialize;

/// The bot's own user id (`auth.test`); Klaxon never invites it.
pub const BOT_USER_ID: &str = "UKLAXONBOT";

/// The Web API methods counted one by one; anything else counts as `other`.
pub const METHODS: [&str; 13] = [
    "auth.test",
    "conversations.create",
    "conversations.setPurpose",
    "conversations.setTopic",
    "conversations.invite",
    "conversations.list",
    "conversations.info",
    "chat.postMessage",
    "chat.postEphemeral",
    "views.open",
    "usergroups.users.list",
    "conversations.history",
    "other",
];
const VIEWS_OPEN: usize = 9;

fn method_index(method: &str) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1)
}

/// Milliseconds since the Unix epoch (the unit Klaxon's tables use).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One `chat.postMessage` as recorded.
#[derive(Clone, Copy, Debug)]
pub struct Post {
    /// Arrival time, epoch ms.
    pub at_ms: i64,
    /// Hash of the text (two equal hashes in one channel = a duplicate post).
    pub hash: u64,
    /// Whether the text is a status reminder ("No status update ...").
    pub reminder: bool,
}

struct Channel {
    id: String,
    name: String,
    purpose: String,
    created: i64,
}

#[derive(Default)]
struct Record {
    by_name: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    channels: Vec<Channel>,
    posts: HashMap<String, Vec<Post>>,
    /// Per channel, `(ts, metadata)` of the posts that carried metadata.
    tagged: HashMap<String, Vec<(String, serde_json::Value)>>,
    views: Vec<(i64, String)>,
    name_taken: u64,
}

#[derive(Default)]
struct Inner {
    down: AtomicBool,
    latency_ms: AtomicU64,
    views_fast: AtomicBool,
    ok: [AtomicU64; METHODS.len()],
    refused: [AtomicU64; METHODS.len()],
    /// The last message ts handed out, in microseconds since the epoch.
    last_ts_micros: AtomicU64,
    views_counter: AtomicU64,
    pd_ok: AtomicU64,
    record: Mutex<Record>,
}

impl Inner {
    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message ts as Slack makes them: the post's time in seconds since the epoch with
    /// microseconds, unique and increasing (Klaxon's look-back after a crash searches
    /// the history from its own clock's time, so a ts from another era is never found).
    fn next_ts(&self) -> String {
        let now = chrono::Utc::now();
        let now_micros =
            now.timestamp() as u64 * 1_000_000 + u64::from(now.timestamp_subsec_micros());
        let previous = self
            .last_ts_micros
            .fetch_update(Relaxed, Relaxed, |last| Some(now_micros.max(last + 1)))
            .unwrap_or_default();
        let micros = now_micros.max(previous + 1);
        format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }
}

/// Counters at one instant.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Successful calls per method (index as in [`METHODS`]).
    pub ok: [u64; METHODS.len()],
    /// Calls answered 503 per method.
    pub refused: [u64; METHODS.len()],
    /// PagerDuty events accepted.
    pub pd_ok: u64,
}

impl Counts {
    /// Successful Slack calls of every method.
    pub fn total_ok(&self) -> u64 {
        self.ok.iter().sum()
    }
    /// Refused Slack calls of every method.
    pub fn total_refused(&self) -> u64 {
        self.refused.iter().sum()
    }
    /// `self - earlier`, method by method.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut d = Counts::default();
        for i in 0..METHODS.len() {
            d.ok[i] = self.ok[i] - earlier.ok[i];
            d.refused[i] = self.refused[i] - earlier.refused[i];
        }
        d.pd_ok = self.pd_ok - earlier.pd_ok;
        d
    }
    /// `method=n` for every method with calls, successful ones.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = METHODS
            .iter()
            .zip(self.ok.iter().zip(self.refused.iter()))
            .filter(|(_, (ok, refused))| **ok + **refused > 0)
            .map(|(m, (ok, refused))| {
                if *refused > 0 {
                    format!("{m}={ok} (+{refused} refused)")
                } else {
                    format!("{m}={ok}")
                }
            })
            .collect();
        let mut s = if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        };
        if self.pd_ok > 0 {
            s.push_str(&format!(", pagerduty={}", self.pd_ok));
        }
        s
    }
}

/// The stand-ins' routes over `inner`.
fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/{method}", any(slack))
        .route("/v2/enqueue", post(pagerduty))
        .with_state(inner)
}

/// The running stand-ins (Slack under `/api`, PagerDuty at `/v2/enqueue`).
#[derive(Clone)]
pub struct SlackStandin {
    /// Slack Web API base URL for `slack.api_url`.
    pub base_url: String,
    /// PagerDuty Events API v2 URL for `pagerduty.events_url`.
    pub pagerduty_url: String,
    inner: Arc<Inner>,
}

impl SlackStandin {
    /// Binds `127.0.0.1:0` and serves on a spawned task.
    pub async fn start() -> SlackStandin {
        let inner = Arc::new(Inner::default());
        let app = router(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-ins");
        let addr = listener.local_addr().expect("stand-in address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("stand-ins") });
        Self::at(addr, inner)
    }

    /// [`SlackStandin::start`] on a thread of its own at background priority (`nice`
    /// +10), for the scenarios that measure the server's answers to requests rather than
    /// its deliveries (`declare`). The stand-in plays Slack, whose CPU is not on the
    /// server's machine: answering the calls the declarations cause (thousands per
    /// second once the outbox keeps up) must not take the CPU from the requests being
    /// measured, which the floor, causing no calls, never has to share.
    pub fn start_aside() -> SlackStandin {
        let inner = Arc::new(Inner::default());
        let (sender, address) = std::sync::mpsc::channel();
        let state = inner.clone();
        std::thread::Builder::new()
            .name("slack-standin".into())
            .spawn(move || {
                klaxon::background::lower_this_thread(klaxon::background::BACKGROUND_NICE);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("stand-in runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind the stand-ins");
                    sender
                        .send(listener.local_addr().expect("stand-in address"))
                        .expect("address sent");
                    axum::serve(listener, router(state))
                        .await
                        .expect("stand-ins")
                })
            })
            .expect("stand-in thread");
        let addr = address.recv().expect("stand-in started");
        Self::at(addr, inner)
    }

    fn at(addr: std::net::SocketAddr, inner: Arc<Inner>) -> SlackStandin {
        SlackStandin {
            base_url: format!("http://{addr}/api"),
            pagerduty_url: format!("http://{addr}/v2/enqueue"),
            inner,
        }
    }

    /// Slack answers 503 to everything (`true`) or normally (`false`).
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Relaxed);
    }
    /// Every Slack answer waits this long (0 = at once).
    pub fn set_latency(&self, latency: Duration) {
        self.inner
            .latency_ms
            .store(latency.as_millis() as u64, Relaxed);
    }
    /// `views.open` is answered at once even while Slack is down or slow.
    pub fn set_views_fast(&self, fast: bool) {
        self.inner.views_fast.store(fast, Relaxed);
    }

    /// Counters now.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for i in 0..METHODS.len() {
            c.ok[i] = self.inner.ok[i].load(Relaxed);
            c.refused[i] = self.inner.refused[i].load(Relaxed);
        }
        c.pd_ok = self.inner.pd_ok.load(Relaxed);
        c
    }

    /// Every channel's posts (arrival order), cloned.
    pub fn posts(&self) -> HashMap<String, Vec<Post>> {
        self.inner.record().posts.clone()
    }

    /// `conversations.create` calls answered `name_taken` (a repeated channel creation).
    pub fn name_taken(&self) -> u64 {
        self.inner.record().name_taken
    }

    /// When the `views.open` for `trigger_id` arrived, epoch ms.
    pub fn view_opened_at(&self, trigger_id: &str) -> Option<i64> {
        self.inner
            .record()
            .views
            .iter()
            .find(|(_, t)| t == trigger_id)
            .map(|(at, _)| *at)
    }
}

#[derive(Deserialize, Default)]
struct Args<'a> {
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    purpose: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cursor: Option<Cow<'a, str>>,
    #[serde(default)]
    limit: Option<serde_json::Value>,
    #[serde(borrow, default)]
    trigger_id: Option<Cow<'a, str>>,
    #[serde(default)]
    view: Option<serde_json::Value>,
    /// `chat.postMessage`: Klaxon tags each post with its outbox row.
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    /// `conversations.history`.
    #[serde(borrow, default)]
    oldest: Option<Cow<'a, str>>,
    #[serde(default)]
    include_all_metadata: Option<serde_json::Value>,
}

fn ok_json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn slack_error(code: &str) -> Response {
    ok_json(format!(r#"{{"ok":false,"error":"{code}"}}"#))
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

fn channel_json(c: &Channel) -> String {
    let name = json_str(&c.name);
    format!(
        r#"{{"id":"{id}","name":{name},"name_normalized":{name},"created":{created},"creator":"{BOT_USER_ID}","is_channel":true,"is_group":false,"is_im":false,"is_mpim":false,"is_private":false,"is_archived":false,"is_general":false,"is_shared":false,"is_org_shared":false,"is_member":true,"num_members":2,"previous_names":[],"topic":{{"value":"","creator":"{BOT_USER_ID}","last_set":{created}}},"purpose":{{"value":{purpose},"creator":"{BOT_USER_ID}","last_set":{created}}}}}"#,
        id = c.id,
        created = c.created,
        purpose = json_str(&c.purpose),
    )
}

async fn slack(
    State(s): State<Arc<Inner>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let m = method_index(&method);
    let exempt = m == VIEWS_OPEN && s.views_fast.load(Relaxed);
    if !exempt && s.down.load(Relaxed) {
        s.refused[m].fetch_add(1, Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "slack stand-in is down").into_response();
    }
    let arrived = now_ms();
    let latency = if exempt {
        0
    } else {
        s.latency_ms.load(Relaxed)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let args: Args<'_> = if body.is_empty() {
        query
            .as_deref()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default()
    } else if json {
        serde_json::from_slice(&body).unwrap_or_default()
    } else {
        serde_urlencoded::from_bytes(&body).unwrap_or_default()
    };
    let response = answer(&s, &method, args, arrived);
    s.ok[m].fetch_add(1, Relaxed);
    response
}

fn answer(s: &Inner, method: &str, args: Args<'_>, arrived: i64) -> Response {
    match method {
        "auth.test" => ok_json(format!(
            r#"{{"ok":true,"url":"https://klaxon-bench.slack.com/","team":"Klaxon Bench","user":"klaxon","team_id":"TKLAXON","user_id":"{BOT_USER_ID}","bot_id":"BKLAXONBOT","is_enterprise_install":false}}"#
        )),
        "conversations.create" => {
            let name = args.name.unwrap_or_default().into_owned();
            let mut r = s.record();
            if r.by_name.contains_key(&name) {
                r.name_taken += 1;
                return slack_error("name_taken");
            }
            let index = r.channels.len();
            let channel = Channel {
                id: format!("C{:09}", index + 1),
                name: name.clone(),
                purpose: String::new(),
                created: arrived / 1000,
            };
            let body = format!(r#"{{"ok":true,"channel":{}}}"#, channel_json(&channel));
            r.by_name.insert(name, index);
            r.by_id.insert(channel.id.clone(), index);
            r.channels.push(channel);
            ok_json(body)
        }
        "conversations.setPurpose" => {
            let channel = args.channel.unwrap_or_default();
            let purpose = args.purpose.unwrap_or_default().into_owned();
            let mut r = s.record();
            if let Some(&i) = r.by_id.get(channel.as_ref()) {
                r.channels[i].purpose = purpose;
            }
            ok_json(r#"{"ok":true}"#.to_string())
        }
        "conversations.setTopic" => ok_json(r#"{"ok":true}"#.to_string()),
        "conversations.invite" | "conversations.info" => {
            let channel = args.channel.unwrap_or_default();
            let r = s.record();
            match r.by_id.get(channel.as_ref()) {
                Some(&i) => ok_json(format!(
                    r#"{{"ok":true,"channel":{}}}"#,
                    channel_json(&r.channels[i])
                )),
                None => slack_error("channel_not_found"),
            }
        }
        "conversations.list" => {
            let limit = args
                .limit
                .and_then(|l| match l {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => s.parse().ok(),
                    _ => None,
                })
                .filter(|l| *l > 0)
                .unwrap_or(100)
                .min(1000) as usize;
            let offset = args
                .cursor
                .and_then(|c| c.strip_prefix("offset:").and_then(|n| n.parse().ok()))
                .unwrap_or(0usize);
            let r = s.record();
            let page: Vec<String> = r
                .channels
                .iter()
                .skip(offset)
                .take(limit)
                .map(channel_json)
                .collect();
            let next = if offset + limit < r.channels.len() {
                format!("offset:{}", offset + limit)
            } else {
                String::new()
            };
            ok_json(format!(
                r#"{{"ok":true,"channels":[{}],"response_metadata":{{"next_cursor":"{next}"}}}}"#,
                page.join(",")
            ))
        }
        "chat.postMessage" => {
            let channel = args.channel.unwrap_or_default().into_owned();
            let text = args.text.unwrap_or_default();
            let mut hasher = DefaultHasher::new();
            text.hash(&mut hasher);
            let post = Post {
                at_ms: arrived,
                hash: hasher.finish(),
                reminder: text.contains("No status update"),
            };
            let ts = s.next_ts();
            let body = format!(
                r#"{{"ok":true,"channel":{ch},"ts":"{ts}","message":{{"type":"message","ts":"{ts}","user":"{BOT_USER_ID}","bot_id":"BKLAXONBOT","text":""}}}}"#,
                ch = json_str(&channel)
            );
            let metadata = match args.metadata {
                Some(serde_json::Value::String(text)) => serde_json::from_str(&text).ok(),
                other => other,
            };
            let mut record = s.record();
            if let Some(metadata) = metadata {
                // Kept for `conversations.history`, which Klaxon reads after a crash to
                // find a post that may already have gone out.
                record
                    .tagged
                    .entry(channel.clone())
                    .or_default()
                    .push((ts.clone(), metadata));
            }
            record.posts.entry(channel).or_default().push(post);
            ok_json(body)
        }
        "chat.postEphemeral" => ok_json(format!(r#"{{"ok":true,"message_ts":"{}"}}"#, s.next_ts())),
        "views.open" => {
            let trigger = args.trigger_id.unwrap_or_default().into_owned();
            let view = match args.view {
                Some(serde_json::Value::String(text)) => serde_json::from_str(&text).ok(),
                other => other,
            };
            let Some(serde_json::Value::Object(mut view)) = view else {
                return slack_error("invalid_arguments");
            };
            let id = format!("V{:09}", s.views_counter.fetch_add(1, Relaxed) + 1);
            for (k, v) in [
                ("id", id.as_str()),
                ("team_id", "TKLAXON"),
                ("app_id", "AKLAXON"),
                ("bot_id", "BKLAXONBOT"),
                ("hash", "1.bench"),
                ("root_view_id", id.as_str()),
            ] {
                view.insert(k.into(), serde_json::Value::String(v.into()));
            }
            view.insert("state".into(), serde_json::json!({"values": {}}));
            s.record().views.push((arrived, trigger));
            ok_json(serde_json::json!({"ok": true, "view": view}).to_string())
        }
        "usergroups.users.list" => ok_json(r#"{"ok":true,"users":[]}"#.to_string()),
        // Newest first, the tagged posts after `oldest` (what Klaxon's look-back reads).
        "conversations.history" => {
            let channel = args.channel.unwrap_or_default();
            let oldest: f64 = args.oldest.and_then(|o| o.parse().ok()).unwrap_or_default();
            let with_metadata = matches!(
                args.include_all_metadata,
                Some(serde_json::Value::Bool(true))
            ) || matches!(&args.include_all_metadata, Some(serde_json::Value::String(v)) if v == "true");
            let limit = args
                .limit
                .and_then(|l| l.as_u64().or_else(|| l.as_str()?.parse().ok()))
                .unwrap_or(100) as usize;
            let record = s.record();
            let messages: Vec<serde_json::Value> = record
                .tagged
                .get(channel.as_ref())
                .into_iter()
                .flatten()
                .rev()
                .filter(|(ts, _)| ts.parse::<f64>().unwrap_or_default() >= oldest)
                .take(limit)
                .map(|(ts, metadata)| {
                    let mut m = serde_json::json!({"type": "message", "ts": ts, "text": ""});
                    if with_metadata {
                        m["metadata"] = metadata.clone();
                    }
                    m
                })
                .collect();
            ok_json(
                serde_json::json!({"ok": true, "messages": messages, "has_more": false})
                    .to_string(),
            )
        }
        _ => slack_error("unknown_method"),
    }
}

async fn pagerduty(State(s): State<Arc<Inner>>, _body: Bytes) -> Response {
    s.pd_ok.fetch_add(1, Relaxed);
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"success","message":"Event processed"}"#,
    )
        .into_response()
}
