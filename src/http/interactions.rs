//! `POST /slack/interactions`: form submissions (declare, resolve).
//!
//! Slack posts `payload=<JSON>`. A `view_submission` is answered with an empty 200 (the
//! form closes) or `response_action: errors` naming the field and the rule it broke.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::incident_commands::roles_of;
use super::{AppState, RequestId, internal_error};
use crate::commands::render::{self as run_render, APPROVE_ACTION, DENY_ACTION};
use crate::domain::approval::{Click, ClickOutcome};
use crate::domain::incident::{Change, DomainError, IncidentId};
use crate::domain::severity::Severity;
use crate::engine::{EngineError, RequestMeta};
use crate::outbox::Outbound;
use crate::slack::render::{DECLARE_CALLBACK, RESOLVE_CALLBACK};

#[derive(Deserialize)]
struct Form {
    payload: String,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: PayloadUser,
    #[serde(default)]
    view: Option<View>,
    #[serde(default)]
    actions: Vec<ActionClick>,
    #[serde(default)]
    channel: Option<PayloadChannel>,
}

#[derive(Deserialize)]
struct ActionClick {
    action_id: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct PayloadChannel {
    id: String,
}

#[derive(Deserialize)]
struct PayloadUser {
    id: String,
}

#[derive(Deserialize)]
struct View {
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    state: ViewState,
}

#[derive(Deserialize)]
struct ViewState {
    values: Value,
}

impl ViewState {
    /// The value of input `block_id` (text input or select), if filled in.
    fn value(&self, block_id: &str) -> Option<String> {
        let input = self.values.get(block_id)?.get("value")?;
        input
            .get("value")
            .and_then(Value::as_str)
            .or_else(|| input.get("selected_option")?.get("value")?.as_str())
            .map(str::to_string)
    }
}

fn field_errors(errors: &[(&str, String)]) -> Response {
    let map: serde_json::Map<String, Value> = errors
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    Json(json!({ "response_action": "errors", "errors": map })).into_response()
}

/// Handles one interaction payload.
pub async fn handle(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Response {
    let payload: Payload = match serde_urlencoded::from_bytes::<Form>(&body)
        .map_err(|e| e.to_string())
        .and_then(|f| serde_json::from_str(&f.payload).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("malformed interaction payload: {e}"),
            )
                .into_response();
        }
    };
    if payload.kind == "block_actions" {
        return button(&state, &request_id, &payload).await;
    }
    let Some(view) = payload.view.filter(|_| payload.kind == "view_submission") else {
        tracing::info!(kind = %payload.kind, "interaction without a handler acknowledged");
        return StatusCode::OK.into_response();
    };
    let meta = RequestMeta::user(&payload.user.id, &request_id);
    let engine = &state.engine;
    let result = match view.callback_id.as_str() {
        DECLARE_CALLBACK => {
            let severity = view
                .state
                .value("severity")
                .as_deref()
                .and_then(Severity::parse);
            let title = view.state.value("title").unwrap_or_default();
            let Some(severity) = severity else {
                return field_errors(&[("severity", "Choose a severity.".into())]);
            };
            engine.declare(&meta, severity, &title).await.map(|_| ())
        }
        RESOLVE_CALLBACK => {
            let Ok(id) = view.private_metadata.parse::<i64>() else {
                return (
                    StatusCode::BAD_REQUEST,
                    "resolve form without an incident number",
                )
                    .into_response();
            };
            let summary = view.state.value("summary").unwrap_or_default();
            engine
                .change(&meta, IncidentId(id), Change::Resolve(summary))
                .await
                .map(|_| ())
        }
        other => {
            tracing::warn!(callback_id = %other, "unknown form submitted");
            return (StatusCode::BAD_REQUEST, format!("unknown form `{other}`")).into_response();
        }
    };
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(EngineError::Refused(DomainError::Invalid { field, rule })) => {
            field_errors(&[(field, rule)])
        }
        Err(EngineError::Refused(refusal)) => {
            let block = if view.callback_id == DECLARE_CALLBACK {
                "title"
            } else {
                "summary"
            };
            field_errors(&[(block, refusal.to_string())])
        }
        Err(e) => {
            let block = if view.callback_id == DECLARE_CALLBACK {
                "title"
            } else {
                "summary"
            };
            field_errors(&[(block, internal_error(&request_id, &e))])
        }
    }
}

/// Approve / Deny on a recovery run. The channel sees approvals and denials; a refused
/// click is explained to the clicker alone (and recorded on the timeline either way).
async fn button(state: &AppState, request_id: &str, payload: &Payload) -> Response {
    let Some(action) = payload.actions.first() else {
        return (StatusCode::BAD_REQUEST, "block_actions without an action").into_response();
    };
    let click = match action.action_id.as_str() {
        APPROVE_ACTION => Click::Approve,
        DENY_ACTION => Click::Deny,
        other => {
            tracing::warn!(action_id = %other, "unknown button");
            return (StatusCode::BAD_REQUEST, format!("unknown button `{other}`")).into_response();
        }
    };
    let Ok(run_id) = action.value.parse::<i64>() else {
        return (StatusCode::BAD_REQUEST, "button without a run number").into_response();
    };
    let user = payload.user.id.clone();
    let result = async {
        let store = state.engine.store();
        let Some(run) = store.run(run_id).await? else {
            return Ok(Some(format!("Run #{run_id} does not exist.")));
        };
        let incident = store
            .incident(run.incident_id)
            .await?
            .ok_or(EngineError::NotFound(run.incident_id))?;
        let (may_approve, policy) = match state.catalog.get(&run.command) {
            Some(spec) => {
                let groups = state.groups.groups_of(&user, &spec.approvers.groups).await;
                (
                    spec.may_approve(&user, &groups, &roles_of(&incident, &user)),
                    spec.approvers.describe(),
                )
            }
            None => (
                false,
                "nobody: the command is no longer in the catalog".to_string(),
            ),
        };
        let meta = RequestMeta::user(&user, request_id);
        let outcome = state
            .engine
            .click_run(
                &meta,
                run_id,
                click,
                may_approve,
                &policy,
                |outcome, run| run_render::click(outcome, run, &user),
            )
            .await?;
        Ok::<_, EngineError>(match outcome {
            ClickOutcome::Refused(reason) => Some(format!("Run #{run_id}: {reason}.")),
            _ => None,
        })
    }
    .await;
    let text = match result {
        Ok(None) => return StatusCode::OK.into_response(),
        Ok(Some(text)) => text,
        Err(e) => internal_error(request_id, &e),
    };
    if let Some(channel) = &payload.channel {
        let out = Outbound::Ephemeral {
            channel: channel.id.clone(),
            user: user.clone(),
            text,
        };
        if let Err(e) = state
            .engine
            .send(
                &RequestMeta::user(&user, request_id),
                &format!("channel:{}", channel.id),
                out,
            )
            .await
        {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                internal_error(request_id, &e),
            )
                .into_response();
        }
    }
    StatusCode::OK.into_response()
}
