//! A local stand-in for PagerDuty's REST API v2: `GET /users/{id}` (answers from the
//! user fixtures, 404 for others), `POST /incidents/{id}/notes`, `PUT /incidents/{id}`.
//! Records every request; refuses one without `Authorization: Token token=<TOKEN>` and
//! the v2 `Accept` header (401), and a write without `From:` (400), as PagerDuty does.
#![allow(
    dead_code,
    reason = "shared by several test binaries that each use part of it"
)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The token Klaxon must send.
pub const TOKEN: &str = "u+pagerduty-test-token";
/// The `From:` Klaxon must send on writes.
pub const FROM: &str = "klaxon-bot@example.com";

/// One request as received.
#[derive(Clone, Debug)]
pub struct RestCall {
    pub method: String,
    pub path: String,
    pub from: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    calls: Vec<RestCall>,
    users: HashMap<String, Value>,
    failures: VecDeque<u16>,
}

type Shared = Arc<Mutex<Inner>>;

/// The stand-in; `url` is what `pagerduty.api_url` should be.
#[derive(Clone)]
pub struct PagerDutyRest {
    pub url: String,
    inner: Shared,
}

fn check(
    inner: &Shared,
    method: &Method,
    path: String,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut inner = inner.lock().unwrap();
    inner.calls.push(RestCall {
        method: method.to_string(),
        path,
        from: header("from"),
        body,
    });
    if let Some(status) = inner.failures.pop_front() {
        return Some((StatusCode::from_u16(status).unwrap(), "failing on purpose").into_response());
    }
    if header("authorization").as_deref() != Some(&format!("Token token={TOKEN}"))
        || header("accept").as_deref() != Some("application/vnd.pagerduty+json;version=2")
    {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"message": "Unauthorized", "code": 2006}})),
            )
                .into_response(),
        );
    }
    if method != Method::GET && header("from").as_deref() != Some(FROM) {
        return Some((StatusCode::BAD_REQUEST, Json(json!({"error": {"message": "Invalid Input Provided", "code": 2001, "errors": ["Requester User Not Found"]}}))).into_response());
    }
    None
}

async fn user(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check(&inner, &method, format!("/users/{id}"), &headers, b"") {
        return r;
    }
    match inner.lock().unwrap().users.get(&id) {
        Some(user) => Json(user.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": "Not Found", "code": 2100}})),
        )
            .into_response(),
    }
}

async fn note(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check(
        &inner,
        &method,
        format!("/incidents/{id}/notes"),
        &headers,
        &body,
    ) {
        return r;
    }
    let content: Value = serde_json::from_slice(&body).unwrap_or_default();
    (StatusCode::CREATED, Json(json!({"note": {"id": "PWL7QXS", "content": content["note"]["content"], "created_at": "2026-11-23T10:00:00Z"}}))).into_response()
}

async fn incident(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check(&inner, &method, format!("/incidents/{id}"), &headers, &body) {
        return r;
    }
    let sent: Value = serde_json::from_slice(&body).unwrap_or_default();
    if sent["incident"]["type"] != "incident_reference" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "Invalid Input Provided", "code": 2001}})),
        )
            .into_response();
    }
    Json(json!({"incident": {"id": id, "type": "incident", "status": sent["incident"]["status"]}}))
        .into_response()
}

impl PagerDutyRest {
    /// Starts it with the user fixtures of `tests/fixtures/pagerduty/user_*.json`.
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        for (id, text) in [
            (
                "PXPGF42",
                include_str!("../fixtures/pagerduty/user_PXPGF42.json"),
            ),
            (
                "PNOBODY",
                include_str!("../fixtures/pagerduty/user_PNOBODY.json"),
            ),
        ] {
            inner
                .lock()
                .unwrap()
                .users
                .insert(id.into(), serde_json::from_str(text).unwrap());
        }
        let app = axum::Router::new()
            .route("/users/{id}", get(user))
            .route("/incidents/{id}/notes", post(note))
            .route("/incidents/{id}", axum::routing::put(incident))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inner }
    }

    /// Every request received, in order.
    pub fn calls(&self) -> Vec<RestCall> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// `METHOD path` of every request.
    pub fn requests(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect()
    }

    /// The next requests answer with these statuses.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().failures.extend(statuses);
    }
}
