//! A local PagerDuty Events API v2 receiver: records every event, answers 202 like
//! PagerDuty, and can be told to fail the next requests.
#![allow(
    dead_code,
    reason = "shared by several test binaries that each use part of it"
)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    events: Vec<Value>,
    failures: VecDeque<u16>,
}

/// The receiver; `url` is what Klaxon's `pagerduty.events_url` should be.
#[derive(Clone)]
pub struct PagerDutyReceiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

async fn enqueue(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let mut inner = inner.lock().unwrap();
    if let Some(status) = inner.failures.pop_front() {
        let mut response =
            (StatusCode::from_u16(status).unwrap(), "failing on purpose").into_response();
        if status == 429 {
            response
                .headers_mut()
                .insert("retry-after", "3".parse().unwrap());
        }
        return response;
    }
    let ok = body["routing_key"].as_str().is_some_and(|k| k.len() == 32)
        && matches!(
            body["event_action"].as_str(),
            Some("trigger" | "acknowledge" | "resolve")
        )
        && body["dedup_key"]
            .as_str()
            .is_some_and(|k| !k.is_empty() && k.len() <= 255)
        && (body["event_action"] != "trigger"
            || (body["payload"]["summary"]
                .as_str()
                .is_some_and(|s| s.len() <= 1024)
                && body["payload"]["source"].is_string()
                && matches!(
                    body["payload"]["severity"].as_str(),
                    Some("critical" | "error" | "warning" | "info")
                )));
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "invalid event", "message": "Event object is invalid"})),
        )
            .into_response();
    }
    let dedup = body["dedup_key"].clone();
    inner.events.push(body);
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup})),
    )
        .into_response()
}

impl PagerDutyReceiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/v2/enqueue", post(enqueue))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v2/enqueue", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inner }
    }

    /// Every accepted event, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.inner.lock().unwrap().events.clone()
    }

    /// `(event_action, dedup_key)` of every accepted event.
    pub fn actions(&self) -> Vec<(String, String)> {
        self.events()
            .iter()
            .map(|e| {
                (
                    e["event_action"].as_str().unwrap().to_string(),
                    e["dedup_key"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The next requests answer with these statuses, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().failures.extend(statuses);
    }
}
