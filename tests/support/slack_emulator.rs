//! An in-process emulator of the Slack Web API methods Klaxon calls, for integration tests
//! and benchmarks: a real axum HTTP server on `127.0.0.1` (random port) that records every
//! call, keeps channels and messages, and answers in the shapes slack-morphism deserializes.
//!
//! Routes: `GET|POST /api/{method}`. Arguments are read from the query string and from a
//! JSON or `application/x-www-form-urlencoded` body (body wins), and recorded as one JSON
//! object. A call without an `Authorization` header is answered `not_authed`; the token
//! value itself is not checked, only recorded.
//!
//! Simplifications (documented, deliberate): membership is not checked before posting or
//! setting a purpose; `conversations.invite` fails with `already_in_channel` only when *all*
//! given users are already members (otherwise it adds the new ones and succeeds), and with
//! `cant_invite_self` when the list holds [`BOT_USER_ID`]; there is no archiving.
#![allow(
    dead_code,
    reason = "shared by several test binaries that each use part of it"
)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};

/// The user id `auth.test` reports for the bot.
pub const BOT_USER_ID: &str = "UKLAXONBOT";
/// The bot id `auth.test` reports.
pub const BOT_ID: &str = "BKLAXONBOT";
/// The workspace id of the emulated team.
pub const TEAM_ID: &str = "TKLAXON";

/// One call received by the emulator.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// Web API method, e.g. `chat.postMessage`.
    pub method: String,
    /// Query and body arguments as one JSON object.
    pub body: Value,
    /// The `Authorization` header without its `Bearer ` prefix, when sent.
    pub bearer_token: Option<String>,
    /// Whether the answer was not `ok: true` (injected failure or Slack error).
    pub failed: bool,
}

/// A failure to answer the next call to a method with, queued by [`SlackEmulator::fail_next`].
#[derive(Clone, Debug)]
pub enum Failure {
    /// HTTP 200 `{"ok": false, "error": code}`.
    Error(&'static str),
    /// HTTP 429 with `Retry-After: retry_after_secs` and `{"ok":false,"error":"ratelimited"}`.
    RateLimited {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// This HTTP status (e.g. 500) with a plain text body.
    Status(u16),
    /// Answer normally, but only after this long (a slow or hung Slack).
    Delay(std::time::Duration),
    /// Carry the call out (a post is posted), then answer with this HTTP status: the
    /// answer was lost on its way back.
    AnswerLost(u16),
    /// Carry the call out, then hold the answer this long (a caller killed meanwhile never
    /// learns the call succeeded).
    AnswerAfter(std::time::Duration),
}

/// A channel as the emulator stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct EmulatedChannel {
    /// Channel id, e.g. `C0000001`.
    pub id: String,
    /// Channel name without `#`.
    pub name: String,
    /// User id of the creator (empty for channels auto-created by a post).
    pub creator: String,
    /// Current purpose.
    pub purpose: String,
    /// Current topic.
    pub topic: String,
    /// Member user ids in the order they joined.
    pub members: Vec<String>,
    /// Messages posted with `chat.postMessage`, oldest first.
    pub messages: Vec<Value>,
    /// Whether it was created with `is_private: true`.
    pub is_private: bool,
    /// Creation time, Unix seconds.
    pub created: u64,
}

#[derive(Default)]
struct Inner {
    calls: Vec<RecordedCall>,
    failures: HashMap<String, VecDeque<Failure>>,
    /// Applied to every call while set (an outage or a rate-limit storm).
    outage: Option<Failure>,
    channels: Vec<EmulatedChannel>,
    channel_counter: u64,
    ts_counter: u64,
    view_counter: u64,
    usergroups: HashMap<String, Vec<String>>,
    users: HashMap<String, Value>,
    /// email -> user id, for `users.lookupByEmail`.
    emails: HashMap<String, String>,
    /// What `apps.connections.open` answers (the Socket Mode WebSocket URL).
    socket_url: Option<String>,
    /// Home tabs published with `views.publish`, by user.
    homes: HashMap<String, Value>,
    /// Files reserved with `files.getUploadURLExternal`, in order.
    files: Vec<EmulatedFile>,
    /// `http://127.0.0.1:PORT`, for the upload URLs handed out.
    origin: String,
    /// Where message timestamps come from when set (see [`SlackEmulator::use_clock`]).
    clock: Option<Arc<dyn klaxon::clock::Clock>>,
    last_ts_micros: u64,
}

/// A file reserved through the external upload flow.
#[derive(Clone, Debug, PartialEq)]
pub struct EmulatedFile {
    /// File id, e.g. `F0000001`.
    pub id: String,
    /// The name given to `files.getUploadURLExternal`.
    pub filename: String,
    /// The length announced.
    pub length: usize,
    /// The bytes POSTed to the upload URL (the last POST), if any.
    pub bytes: Option<Vec<u8>>,
    /// How many times bytes were POSTed.
    pub posts: usize,
    /// Channels it was shared in by `files.completeUploadExternal`, with the title and
    /// comment of each completion.
    pub shares: Vec<(String, String, String)>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running emulator; the server lives as long as the tokio runtime that started it.
pub struct SlackEmulator {
    /// Base URL to give the client, e.g. `http://127.0.0.1:PORT/api`.
    pub base_url: String,
    state: Shared,
}

impl SlackEmulator {
    /// Binds `127.0.0.1:0` and serves the emulator on a spawned tokio task.
    pub async fn start() -> SlackEmulator {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/api/{method}", any(handle))
            .route("/upload/{file_id}", axum::routing::post(upload))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Slack emulator");
        let addr = listener.local_addr().expect("emulator address");
        lock(&state).origin = format!("http://{addr}");
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("Slack emulator server");
        });
        SlackEmulator {
            base_url: format!("http://{addr}/api"),
            state,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.state)
    }

    /// Stamps messages with `clock`'s time (unique, increasing), as Slack stamps them with
    /// its own, so `oldest` in `conversations.history` means what it means in Slack.
    /// Without a clock, timestamps count up from 2023-11-14.
    pub fn use_clock(&self, clock: Arc<dyn klaxon::clock::Clock>) {
        self.lock().clock = Some(clock);
    }

    /// Every call in arrival order, failed ones included.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// Argument objects of the successful calls to `method`, in arrival order.
    pub fn calls_to(&self, method: &str) -> Vec<Value> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method && !c.failed)
            .map(|c| c.body.clone())
            .collect()
    }

    /// Answers every call with `failure` until called again with `None` (Slack down, or a
    /// storm of 429s).
    pub fn set_outage(&self, failure: Option<Failure>) {
        self.lock().outage = failure;
    }

    /// Makes the next call to `method` fail with `failure`; several are used in FIFO order.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.lock()
            .failures
            .entry(method.to_owned())
            .or_default()
            .push_back(failure);
    }

    /// Defines user group `group` with these members (for `usergroups.users.list`).
    pub fn set_usergroup(&self, group: &str, members: &[&str]) {
        self.lock().usergroups.insert(
            group.to_owned(),
            members.iter().map(|m| m.to_string()).collect(),
        );
    }

    /// Sets what `users.info` answers for `user` (merged over a regular member of
    /// [`TEAM_ID`]), e.g. `json!({"is_restricted": true})` or `json!({"team_id": "TOTHER"})`.
    pub fn set_user(&self, user: &str, fields: Value) {
        self.lock().users.insert(user.to_owned(), fields);
    }

    /// Makes `users.lookupByEmail` find `user` by `email` (others: `users_not_found`).
    pub fn set_email(&self, email: &str, user: &str) {
        self.lock().emails.insert(email.to_owned(), user.to_owned());
    }

    /// Sets the URL `apps.connections.open` answers (a local Socket Mode server).
    pub fn set_socket_url(&self, url: &str) {
        self.lock().socket_url = Some(url.to_owned());
    }

    /// The Home tab last published for `user`.
    pub fn home_of(&self, user: &str) -> Option<Value> {
        self.lock().homes.get(user).cloned()
    }

    /// Stores a message posted by someone else (a person `U...` or an alerting bot
    /// `B...`) in `channel`, creating the channel if needed; returns its ts. Read back by
    /// `conversations.history` / `conversations.replies`.
    pub fn add_message(
        &self,
        channel: &str,
        author: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> String {
        let mut inner = self.lock();
        let ts = inner.next_ts();
        let mut message = json!({ "type": "message", "ts": ts, "text": text });
        if author.starts_with('B') {
            message["bot_id"] = Value::String(author.to_owned());
            message["subtype"] = Value::String("bot_message".into());
        } else {
            message["user"] = Value::String(author.to_owned());
        }
        if let Some(t) = thread_ts {
            message["thread_ts"] = Value::String(t.to_owned());
        }
        match inner.channels.iter_mut().find(|c| c.id == channel) {
            Some(c) => c.messages.push(message),
            None => inner.channels.push(EmulatedChannel {
                id: channel.to_owned(),
                name: channel.to_lowercase(),
                creator: String::new(),
                purpose: String::new(),
                topic: String::new(),
                members: Vec::new(),
                messages: vec![message],
                is_private: false,
                created: now_secs(),
            }),
        }
        ts
    }

    /// Adds a pre-existing public channel (its creator is its only member); returns its id.
    pub fn add_channel(&self, name: &str, creator: &str, purpose: &str) -> String {
        let mut inner = self.lock();
        let id = inner.next_channel_id();
        inner.channels.push(EmulatedChannel {
            id: id.clone(),
            name: name.to_owned(),
            creator: creator.to_owned(),
            purpose: purpose.to_owned(),
            topic: String::new(),
            members: vec![creator.to_owned()],
            messages: Vec::new(),
            is_private: false,
            created: now_secs(),
        });
        id
    }

    /// Files reserved through the external upload flow, in order.
    pub fn files(&self) -> Vec<EmulatedFile> {
        self.lock().files.clone()
    }

    /// A message a person wrote in `channel` (for pins and reactions); returns its ts.
    pub fn add_user_message(&self, channel: &str, user: &str, text: &str) -> String {
        let mut inner = self.lock();
        let ts = inner.next_ts();
        let message = json!({"type": "message", "user": user, "text": text, "ts": ts});
        inner
            .channels
            .iter_mut()
            .find(|c| c.id == channel)
            .expect("add_user_message: no such channel")
            .messages
            .push(message);
        ts
    }

    /// The channel with this id.
    pub fn channel(&self, id: &str) -> Option<EmulatedChannel> {
        self.lock().channels.iter().find(|c| c.id == id).cloned()
    }

    /// The channel with this name (without `#`).
    pub fn channel_by_name(&self, name: &str) -> Option<EmulatedChannel> {
        self.lock()
            .channels
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }

    /// Waits (polling every 10 ms, up to 10 s) until `method` got `n` successful calls and
    /// returns their arguments; panics with every call seen when that does not happen.
    pub async fn wait_for_calls(&self, method: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.calls_to(method);
            if seen.len() >= n {
                return seen;
            }
            if Instant::now() >= deadline {
                let all: Vec<String> = self
                    .calls()
                    .iter()
                    .map(|c| format!("{} failed={} {}", c.method, c.failed, c.body))
                    .collect();
                panic!(
                    "expected {n} successful {method} calls within 10 s, saw {}; all calls:\n{}",
                    seen.len(),
                    all.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, Inner> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(
    State(state): State<Shared>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer_token = headers.get(header::AUTHORIZATION).map(|v| {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        v.strip_prefix("Bearer ").map(str::to_owned).unwrap_or(v)
    });
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let args = parse_args(query.as_deref(), &content_type, &body);

    let failure = {
        let mut inner = lock(&state);
        match inner.outage.clone() {
            Some(outage) => Some(outage),
            None => inner
                .failures
                .get_mut(&method)
                .and_then(VecDeque::pop_front),
        }
    };
    let failure = match failure {
        Some(Failure::Delay(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(lost @ (Failure::AnswerLost(_) | Failure::AnswerAfter(_))) => {
            return apply_then_lose(&state, &method, args, bearer_token, lost).await;
        }
        other => other,
    };
    let mut inner = lock(&state);
    let (args, result) = match args {
        Err(recorded) => (recorded, Err("invalid_json")),
        Ok(args) => {
            let result = if failure.is_some() {
                Err("injected")
            } else if bearer_token.is_none() {
                Err("not_authed")
            } else {
                inner.dispatch(&method, &args)
            };
            (Value::Object(args), result)
        }
    };
    inner.calls.push(RecordedCall {
        method,
        body: args,
        bearer_token,
        failed: result.is_err(),
    });
    drop(inner);

    match (failure, result) {
        (Some(Failure::Error(code)), _) => slack_error(code),
        (Some(Failure::RateLimited { retry_after_secs }), _) => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        (Some(Failure::Delay(_) | Failure::AnswerLost(_) | Failure::AnswerAfter(_)), _) => {
            unreachable!("answered above")
        }
        (Some(Failure::Status(status)), _) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("emulated HTTP {status}")).into_response()
        }
        (None, Ok(mut answer)) => {
            answer.insert("ok".into(), Value::Bool(true));
            axum::Json(Value::Object(answer)).into_response()
        }
        (None, Err(code)) => slack_error(code),
    }
}

/// The upload URL: takes the raw bytes of a reserved file, answers `OK - <length>` in
/// text as Slack does. Unknown file ids get 404.
async fn upload(State(state): State<Shared>, Path(file_id): Path<String>, body: Bytes) -> Response {
    let mut inner = lock(&state);
    let failure = inner
        .failures
        .get_mut("upload")
        .and_then(VecDeque::pop_front);
    if let Some(Failure::Status(status)) = failure {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "emulated upload failure").into_response();
    }
    let Some(file) = inner.files.iter_mut().find(|f| f.id == file_id) else {
        return (StatusCode::NOT_FOUND, "no such upload").into_response();
    };
    file.bytes = Some(body.to_vec());
    file.posts += 1;
    (StatusCode::OK, format!("OK - {}", body.len())).into_response()
}

fn slack_error(code: &str) -> Response {
    axum::Json(json!({"ok": false, "error": code})).into_response()
}

/// Query-string and body arguments as one object; `Err` holds what to record for a body
/// that is neither JSON nor a form.
fn parse_args(
    query: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Result<Map<String, Value>, Value> {
    let mut args = Map::new();
    if let Some(query) = query {
        for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
        {
            args.insert(k, Value::String(v));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(args);
    }
    let form = || serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).ok();
    let parsed: Option<Map<String, Value>> = if content_type.starts_with("application/json") {
        serde_json::from_slice::<Map<String, Value>>(body).ok()
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        form().map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        })
    } else {
        serde_json::from_slice::<Map<String, Value>>(body)
            .ok()
            .or_else(|| {
                form().map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect()
                })
            })
    };
    match parsed {
        Some(body_args) => {
            args.extend(body_args);
            Ok(args)
        }
        None => Err(json!({"_raw": String::from_utf8_lossy(body)})),
    }
}

/// A string argument (numbers and booleans are accepted as their text).
fn arg(args: &Map<String, Value>, key: &str) -> Option<String> {
    match args.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn bool_arg(args: &Map<String, Value>, key: &str) -> bool {
    arg(args, key).is_some_and(|v| v == "true" || v == "1")
}

/// A JSON argument that form-encoded callers send as a JSON string (`blocks`, `view`).
fn json_arg(args: &Map<String, Value>, key: &str) -> Option<Value> {
    match args.get(key)? {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null => None,
        other => Some(other.clone()),
    }
}

/// `users` as a comma-separated string or a JSON array.
fn list_arg(args: &Map<String, Value>, key: &str) -> Vec<String> {
    match args.get(key) {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn channel_json(c: &EmulatedChannel) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "name_normalized": c.name,
        "created": c.created,
        "creator": if c.creator.is_empty() { Value::Null } else { Value::String(c.creator.clone()) },
        "is_channel": true,
        "is_group": false,
        "is_im": false,
        "is_mpim": false,
        "is_private": c.is_private,
        "is_archived": false,
        "is_general": false,
        "is_shared": false,
        "is_org_shared": false,
        "is_member": c.members.iter().any(|m| m == BOT_USER_ID),
        "num_members": c.members.len(),
        "previous_names": [],
        "topic": {"value": c.topic, "creator": c.creator, "last_set": c.created},
        "purpose": {"value": c.purpose, "creator": c.creator, "last_set": c.created},
    })
}

type Answer = Result<Map<String, Value>, &'static str>;

fn answer(value: Value) -> Answer {
    match value {
        Value::Object(map) => Ok(map),
        _ => Ok(Map::new()),
    }
}

impl Inner {
    fn next_channel_id(&mut self) -> String {
        self.channel_counter += 1;
        format!("C{:07}", self.channel_counter)
    }

    fn next_ts(&mut self) -> String {
        if let Some(clock) = &self.clock {
            let now = klaxon::clock::Clock::now(&**clock);
            let micros =
                (now.timestamp() as u64) * 1_000_000 + u64::from(now.timestamp_subsec_micros());
            self.last_ts_micros = micros.max(self.last_ts_micros + 1);
            return format!(
                "{}.{:06}",
                self.last_ts_micros / 1_000_000,
                self.last_ts_micros % 1_000_000
            );
        }
        self.ts_counter += 1;
        let micros = self.ts_counter * 100;
        format!(
            "{}.{:06}",
            1_700_000_000 + micros / 1_000_000,
            micros % 1_000_000
        )
    }

    fn channel_mut(
        &mut self,
        args: &Map<String, Value>,
    ) -> Result<&mut EmulatedChannel, &'static str> {
        let id = arg(args, "channel").ok_or("channel_not_found")?;
        self.channels
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or("channel_not_found")
    }

    fn dispatch(&mut self, method: &str, args: &Map<String, Value>) -> Answer {
        match method {
            "auth.test" => answer(json!({
                "url": "https://klaxon-emulated.slack.com/",
                "team": "Klaxon Emulated",
                "user": "klaxon",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": false,
            })),
            "conversations.create" => self.create(args),
            "conversations.setPurpose" => {
                let purpose = arg(args, "purpose").unwrap_or_default();
                let channel = self.channel_mut(args)?;
                channel.purpose = purpose.clone();
                answer(json!({"purpose": purpose, "channel": channel_json(channel)}))
            }
            "conversations.setTopic" => {
                let topic = arg(args, "topic").unwrap_or_default();
                let channel = self.channel_mut(args)?;
                channel.topic = topic.clone();
                answer(json!({"topic": topic, "channel": channel_json(channel)}))
            }
            "conversations.invite" => {
                let users = list_arg(args, "users");
                let channel = self.channel_mut(args)?;
                if users.is_empty() {
                    return Err("no_user");
                }
                if users.iter().any(|u| u == BOT_USER_ID) {
                    return Err("cant_invite_self");
                }
                if users.iter().all(|u| channel.members.contains(u)) {
                    return Err("already_in_channel");
                }
                for user in users {
                    if !channel.members.contains(&user) {
                        channel.members.push(user);
                    }
                }
                answer(json!({"channel": channel_json(channel)}))
            }
            "conversations.list" => self.list(args),
            "usergroups.users.list" => {
                let group = arg(args, "usergroup").ok_or("no_such_subteam")?;
                let users = self
                    .usergroups
                    .get(&group)
                    .ok_or("no_such_subteam")?
                    .clone();
                answer(json!({"users": users}))
            }
            "conversations.info" => {
                let channel = self.channel_mut(args)?;
                answer(json!({"channel": channel_json(channel)}))
            }
            "chat.postMessage" => self.post_message(args),
            "conversations.history" => self.history(args),
            "conversations.replies" => self.replies(args),
            "users.lookupByEmail" => {
                let email = arg(args, "email").ok_or("users_not_found")?;
                let id = self.emails.get(&email).cloned().ok_or("users_not_found")?;
                answer(json!({"user": {"id": id, "team_id": TEAM_ID, "profile": {"email": email}}}))
            }
            // Unknown users are regular members of the emulated team; `set_user` changes that.
            "users.info" => {
                let id = arg(args, "user").ok_or("user_not_found")?;
                let mut user = json!({
                    "id": id, "team_id": TEAM_ID, "name": id.to_lowercase(), "deleted": false,
                    "is_bot": false, "is_app_user": false, "is_restricted": false,
                    "is_ultra_restricted": false,
                });
                if let Some(Value::Object(fields)) = self.users.get(&id) {
                    for (k, v) in fields {
                        user[k] = v.clone();
                    }
                }
                answer(json!({"user": user}))
            }
            // Replaces the text and blocks of a message this emulator stored.
            "chat.update" => {
                let ts = arg(args, "ts").ok_or("message_not_found")?;
                let text = arg(args, "text").unwrap_or_default();
                let blocks = json_arg(args, "blocks");
                let channel = self.channel_mut(args)?;
                let message = channel
                    .messages
                    .iter_mut()
                    .find(|m| m["ts"] == ts.as_str())
                    .ok_or("message_not_found")?;
                message["text"] = Value::String(text);
                message["blocks"] = blocks.unwrap_or_else(|| json!([]));
                let id = channel.id.clone();
                answer(json!({"channel": id, "ts": ts, "text": message["text"].clone()}))
            }
            "chat.postEphemeral" => {
                arg(args, "channel").ok_or("channel_not_found")?;
                arg(args, "user").ok_or("user_not_in_channel")?;
                let ts = self.next_ts();
                answer(json!({"message_ts": ts}))
            }
            "views.open" | "views.update" | "views.push" => self.view(method, args),
            "views.publish" => {
                let user = arg(args, "user_id").ok_or("invalid_arguments")?;
                let view = json_arg(args, "view").ok_or("invalid_arguments")?;
                if view["type"] != "home" {
                    return Err("invalid_arguments");
                }
                self.homes.insert(user, view.clone());
                answer(json!({"view": view}))
            }
            "apps.connections.open" => match &self.socket_url {
                Some(url) => answer(json!({"url": url})),
                None => Err("invalid_auth"),
            },
            "files.getUploadURLExternal" => {
                let filename = arg(args, "filename").ok_or("invalid_arguments")?;
                let length: usize = arg(args, "length")
                    .and_then(|l| l.parse().ok())
                    .ok_or("invalid_arguments")?;
                let id = format!("F{:07}", self.files.len() + 1);
                let upload_url = format!("{}/upload/{id}", self.origin);
                self.files.push(EmulatedFile {
                    id: id.clone(),
                    filename,
                    length,
                    bytes: None,
                    posts: 0,
                    shares: Vec::new(),
                });
                answer(json!({"upload_url": upload_url, "file_id": id}))
            }
            // Only files whose bytes arrived, with the announced length, can be completed.
            "files.completeUploadExternal" => {
                let files = json_arg(args, "files").ok_or("invalid_arguments")?;
                let channel = arg(args, "channel_id").unwrap_or_default();
                if !channel.is_empty() && !self.channels.iter().any(|c| c.id == channel) {
                    return Err("channel_not_found");
                }
                let comment = arg(args, "initial_comment").unwrap_or_default();
                let mut done = Vec::new();
                for f in files.as_array().ok_or("invalid_arguments")? {
                    let id = f["id"].as_str().ok_or("invalid_arguments")?;
                    let title = f["title"].as_str().unwrap_or_default().to_string();
                    let file = self
                        .files
                        .iter_mut()
                        .find(|x| x.id == id)
                        .ok_or("file_not_found")?;
                    match &file.bytes {
                        Some(b) if b.len() == file.length => {}
                        _ => return Err("file_upload_size_mismatch"),
                    }
                    if !channel.is_empty() {
                        file.shares
                            .push((channel.clone(), title.clone(), comment.clone()));
                    }
                    done.push(json!({"id": id, "title": title}));
                }
                answer(json!({"files": done}))
            }
            _ => Err("unknown_method"),
        }
    }

    fn create(&mut self, args: &Map<String, Value>) -> Answer {
        let name = arg(args, "name").unwrap_or_default();
        if name.is_empty() {
            return Err("invalid_name_required");
        }
        if name.chars().count() > 80 {
            return Err("invalid_name_maxlength");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err("invalid_name_specials");
        }
        if self.channels.iter().any(|c| c.name == name) {
            return Err("name_taken");
        }
        let id = self.next_channel_id();
        let channel = EmulatedChannel {
            id,
            name,
            creator: BOT_USER_ID.to_owned(),
            purpose: String::new(),
            topic: String::new(),
            members: vec![BOT_USER_ID.to_owned()],
            messages: Vec::new(),
            is_private: bool_arg(args, "is_private"),
            created: now_secs(),
        };
        let json = channel_json(&channel);
        self.channels.push(channel);
        answer(json!({"channel": json}))
    }

    /// Pages of at most `limit` (default 100, max 1000) channels; the cursor is an offset.
    fn list(&mut self, args: &Map<String, Value>) -> Answer {
        let limit = match arg(args, "limit") {
            Some(l) => l.parse::<usize>().map_err(|_| "invalid_limit")?,
            None => 100,
        };
        let limit = if limit == 0 { 100 } else { limit.min(1000) };
        let offset = match arg(args, "cursor").filter(|c| !c.is_empty()) {
            Some(c) => c
                .strip_prefix("offset:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or("invalid_cursor")?,
            None => 0,
        };
        let types = arg(args, "types").unwrap_or_else(|| "public_channel".into());
        let public = types.split(',').any(|t| t.trim() == "public_channel");
        let private = types.split(',').any(|t| t.trim() == "private_channel");
        let matching: Vec<&EmulatedChannel> = self
            .channels
            .iter()
            .filter(|c| if c.is_private { private } else { public })
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|c| channel_json(c))
            .collect();
        let next = if offset + limit < matching.len() {
            format!("offset:{}", offset + limit)
        } else {
            String::new()
        };
        answer(json!({"channels": page, "response_metadata": {"next_cursor": next}}))
    }

    fn post_message(&mut self, args: &Map<String, Value>) -> Answer {
        let target = arg(args, "channel")
            .filter(|c| !c.is_empty())
            .ok_or("channel_not_found")?;
        let text = arg(args, "text");
        let blocks = json_arg(args, "blocks");
        if text.as_deref().unwrap_or("").is_empty()
            && blocks
                .as_ref()
                .is_none_or(|b| b.as_array().is_none_or(Vec::is_empty))
        {
            return Err("no_text");
        }
        let thread_ts = arg(args, "thread_ts");
        let ts = self.next_ts();
        let by_name = target.strip_prefix('#').unwrap_or(&target).to_owned();
        let index = match self
            .channels
            .iter()
            .position(|c| c.id == target || c.name == by_name)
        {
            Some(index) => index,
            None => {
                self.channels.push(EmulatedChannel {
                    id: target.clone(),
                    name: target.to_lowercase(),
                    creator: String::new(),
                    purpose: String::new(),
                    topic: String::new(),
                    members: Vec::new(),
                    messages: Vec::new(),
                    is_private: false,
                    created: now_secs(),
                });
                self.channels.len() - 1
            }
        };
        let channel = &mut self.channels[index];
        let mut message = json!({
            "type": "message",
            "ts": ts,
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": text.unwrap_or_default(),
        });
        if let Some(blocks) = blocks {
            message["blocks"] = blocks;
        }
        if let Some(thread_ts) = thread_ts {
            message["thread_ts"] = Value::String(thread_ts);
        }
        if let Some(metadata) = json_arg(args, "metadata") {
            message["metadata"] = metadata;
        }
        channel.messages.push(message.clone());
        answer(json!({"channel": channel.id, "ts": ts, "message": message}))
    }

    fn view(&mut self, method: &str, args: &Map<String, Value>) -> Answer {
        if method != "views.update" && arg(args, "trigger_id").is_none_or(|t| t.is_empty()) {
            return Err("invalid_trigger_id");
        }
        let Some(Value::Object(mut view)) = json_arg(args, "view") else {
            return Err("invalid_arguments");
        };
        let id = match arg(args, "view_id").filter(|_| method == "views.update") {
            Some(id) => id,
            None => {
                self.view_counter += 1;
                format!("V{:07}", self.view_counter)
            }
        };
        view.insert("id".into(), Value::String(id.clone()));
        view.insert("team_id".into(), Value::String(TEAM_ID.into()));
        view.insert("app_id".into(), Value::String("AKLAXON".into()));
        view.insert("bot_id".into(), Value::String(BOT_ID.into()));
        view.insert("hash".into(), Value::String(format!("{}.{id}", now_secs())));
        view.insert("root_view_id".into(), Value::String(id));
        view.insert("state".into(), json!({"values": {}}));
        answer(json!({"view": view}))
    }
}

include!("slack_history.rs");
