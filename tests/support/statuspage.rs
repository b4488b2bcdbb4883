//! A local stand-in for Atlassian Statuspage's REST API (v1), for the stakeholder tests.
//!
//! It checks every request against the shapes in Statuspage's API reference and answers
//! 422 (recording why) to anything else:
//! - `Authorization: OAuth <key>`;
//! - `POST /v1/pages/{page_id}/incidents` with `{"incident": {name, status, body,
//!   component_ids, components}}`; `PATCH /v1/pages/{page_id}/incidents/{incident_id}`
//!   with the same minus the required name;
//! - `status` one of investigating, identified, monitoring, resolved; component statuses
//!   one of operational, degraded_performance, partial_outage, major_outage, and every
//!   component in `components` also in `component_ids`;
//! - `GET .../incidents/unresolved` and `GET .../incidents/{incident_id}` (with
//!   `incident_updates`, newest first, as Statuspage answers).
//!
//! It can be down (503 to everything) or lose answers (apply a change, then answer 503
//! as if the connection dropped), to show that a retry neither loses nor repeats.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The API key the stand-in accepts.
pub const API_KEY: &str = "statuspage-test-key";
/// The page id it serves.
pub const PAGE_ID: &str = "kctbh9vrtdwd";

const STATUSES: [&str; 4] = ["investigating", "identified", "monitoring", "resolved"];
const COMPONENT_STATUSES: [&str; 4] = [
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
];

#[derive(Default)]
struct Inner {
    /// Incidents by id, in creation order of ids.
    incidents: BTreeMap<String, Value>,
    /// Component statuses by component id.
    components: BTreeMap<String, String>,
    /// `(method, path)` of every request that reached it.
    requests: Vec<(String, String)>,
    /// Why requests were refused.
    refused: Vec<String>,
    down: bool,
    lose_answers: usize,
    next_id: u32,
}

type Shared = Arc<Mutex<Inner>>;

/// The stand-in; `api_url` is what `[stakeholders.statuspage] api_url` should be.
#[derive(Clone)]
pub struct StatuspageStandIn {
    pub api_url: String,
    inner: Shared,
}

fn check(
    headers: &HeaderMap,
    page: &str,
    body: Option<&Value>,
    create: bool,
) -> Result<(), String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("OAuth {API_KEY}") {
        return Err(format!("Authorization must be `OAuth <key>`, got `{auth}`"));
    }
    if page != PAGE_ID {
        return Err(format!("unknown page `{page}`"));
    }
    let Some(body) = body else { return Ok(()) };
    let incident = body
        .get("incident")
        .and_then(Value::as_object)
        .ok_or("the body must be {\"incident\": {...}}")?;
    for key in incident.keys() {
        if ![
            "name",
            "status",
            "body",
            "component_ids",
            "components",
            "impact_override",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("unexpected field incident.{key}"));
        }
    }
    let named = incident
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if create && !named {
        return Err("incident.name is required to create an incident".into());
    }
    match incident.get("status").and_then(Value::as_str) {
        Some(s) if STATUSES.contains(&s) => {}
        other => {
            return Err(format!(
                "incident.status {other:?} is not a realtime incident status"
            ));
        }
    }
    if !incident.get("body").is_some_and(Value::is_string) {
        return Err("incident.body must be a string".into());
    }
    let ids: Vec<&str> = incident
        .get("component_ids")
        .and_then(Value::as_array)
        .ok_or("incident.component_ids must be an array")?
        .iter()
        .map(|v| v.as_str().ok_or("component_ids are strings"))
        .collect::<Result<_, _>>()?;
    if let Some(components) = incident.get("components") {
        let components = components
            .as_object()
            .ok_or("incident.components must be an object")?;
        for (id, status) in components {
            if !ids.contains(&id.as_str()) {
                return Err(format!("component {id} is not in component_ids"));
            }
            if !status
                .as_str()
                .is_some_and(|s| COMPONENT_STATUSES.contains(&s))
            {
                return Err(format!("component status {status} is not valid"));
            }
        }
    }
    Ok(())
}

fn refuse(inner: &mut Inner, why: String) -> Response {
    inner.refused.push(why.clone());
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": why })),
    )
        .into_response()
}

/// Applies status, body and components of `change` to `incident`, adding an update.
fn apply(inner: &mut Inner, id: &str, change: &Value) {
    let c = &change["incident"];
    for (component, status) in c["components"].as_object().into_iter().flatten() {
        inner
            .components
            .insert(component.clone(), status.as_str().unwrap().to_string());
    }
    let incident = inner.incidents.get_mut(id).unwrap();
    incident["status"] = c["status"].clone();
    if c["status"] == "resolved" {
        incident["resolved_at"] = json!("2026-11-23T12:00:00Z");
    }
    let updates = incident["incident_updates"].as_array_mut().unwrap();
    let n = updates.len();
    updates.insert(
        0,
        json!({ "id": format!("{id}-u{n}"), "status": c["status"], "body": c["body"] }),
    );
}

/// After a change: the answer, or a lost one.
fn answer(inner: &mut Inner, ok: Response) -> Response {
    if inner.lose_answers > 0 {
        inner.lose_answers -= 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "connection lost (on purpose)",
        )
            .into_response();
    }
    ok
}

async fn create(
    State(inner): State<Shared>,
    Path(page): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = inner.lock().unwrap();
    inner
        .requests
        .push(("POST".into(), format!("/v1/pages/{page}/incidents")));
    if inner.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    if let Err(why) = check(&headers, &page, Some(&body), true) {
        return refuse(&mut inner, why);
    }
    inner.next_id += 1;
    let id = format!("sp{}", inner.next_id);
    let incident = json!({
        "id": id,
        "name": body["incident"]["name"],
        "status": "investigating",
        "incident_updates": [],
        "components": body["incident"]["component_ids"],
    });
    inner.incidents.insert(id.clone(), incident);
    apply(&mut inner, &id, &body);
    let ok = (StatusCode::CREATED, Json(inner.incidents[&id].clone())).into_response();
    answer(&mut inner, ok)
}

async fn update(
    State(inner): State<Shared>,
    Path((page, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = inner.lock().unwrap();
    inner
        .requests
        .push(("PATCH".into(), format!("/v1/pages/{page}/incidents/{id}")));
    if inner.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    if let Err(why) = check(&headers, &page, Some(&body), false) {
        return refuse(&mut inner, why);
    }
    if !inner.incidents.contains_key(&id) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response();
    }
    apply(&mut inner, &id, &body);
    let ok = Json(inner.incidents[&id].clone()).into_response();
    answer(&mut inner, ok)
}

async fn unresolved(
    State(inner): State<Shared>,
    Path(page): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.requests.push((
        "GET".into(),
        format!("/v1/pages/{page}/incidents/unresolved"),
    ));
    if inner.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    if let Err(why) = check(&headers, &page, None, false) {
        return refuse(&mut inner, why);
    }
    let list: Vec<Value> = inner
        .incidents
        .values()
        .filter(|i| i["status"] != "resolved")
        .cloned()
        .collect();
    Json(list).into_response()
}

async fn one(
    State(inner): State<Shared>,
    Path((page, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut inner = inner.lock().unwrap();
    inner
        .requests
        .push(("GET".into(), format!("/v1/pages/{page}/incidents/{id}")));
    if inner.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    if let Err(why) = check(&headers, &page, None, false) {
        return refuse(&mut inner, why);
    }
    match inner.incidents.get(&id) {
        Some(i) => Json(i.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response(),
    }
}

impl StatuspageStandIn {
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/v1/pages/{page}/incidents", post(create))
            .route("/v1/pages/{page}/incidents/unresolved", get(unresolved))
            .route("/v1/pages/{page}/incidents/{id}", get(one).patch(update))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { api_url, inner }
    }

    /// Every incident, in id order.
    pub fn incidents(&self) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .incidents
            .values()
            .cloned()
            .collect()
    }

    /// A component's status, if ever set.
    pub fn component(&self, id: &str) -> Option<String> {
        self.inner.lock().unwrap().components.get(id).cloned()
    }

    /// `(method, path)` of every request.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Why requests were refused (empty when every request had the documented shape).
    pub fn refused(&self) -> Vec<String> {
        self.inner.lock().unwrap().refused.clone()
    }

    /// Down (503 to everything) or up.
    pub fn set_down(&self, down: bool) {
        self.inner.lock().unwrap().down = down;
    }

    /// The next `n` changes are applied but answered 503 (a lost answer).
    pub fn lose_next_answers(&self, n: usize) {
        self.inner.lock().unwrap().lose_answers = n;
    }
}
