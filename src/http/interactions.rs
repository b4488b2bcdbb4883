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

use super::{AppState, RequestId, internal_error};
use crate::commands::render::{self as run_render, APPROVE_ACTION, DENY_ACTION};
use crate::domain::access::UserKind;
use crate::domain::approval::{Click, ClickOutcome, Refusal};
use crate::domain::incident::{Change, DomainError, IncidentId};
use crate::domain::outbound::Outbound;
use crate::domain::severity::Severity;
use crate::engine::{ClickContext, EngineError, RequestMeta};
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
    #[serde(default)]
    team: Option<PayloadTeam>,
    #[serde(default)]
    api_app_id: Option<String>,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    message: Option<PayloadMessage>,
    #[serde(default)]
    trigger_id: Option<String>,
}

#[derive(Deserialize)]
struct PayloadTeam {
    id: String,
}

/// Where a clicked button lives (`block_actions`: `container.message_ts`).
#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    message_ts: Option<String>,
}

#[derive(Deserialize)]
struct PayloadMessage {
    #[serde(default)]
    ts: Option<String>,
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
    // The step-up form approves a run: it must prove where it comes from, like a click.
    let strict = payload
        .view
        .as_ref()
        .is_some_and(|v| v.callback_id == super::step_up::CALLBACK);
    if let Some(reason) = foreign(&state, &payload, strict) {
        tracing::warn!(kind = %payload.kind, %reason, "refused an interaction from another workspace or app");
        return (StatusCode::FORBIDDEN, reason).into_response();
    }
    let Some(view) = payload.view.filter(|_| payload.kind == "view_submission") else {
        tracing::info!(kind = %payload.kind, "interaction without a handler acknowledged");
        return StatusCode::OK.into_response();
    };
    if view.callback_id == super::step_up::CALLBACK {
        let code = view.state.value("code").unwrap_or_default();
        return super::step_up::submit(
            &state,
            &request_id,
            &payload.user.id,
            &view.private_metadata,
            &code,
        )
        .await;
    }
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
            match engine.declare(&meta, severity, &title).await {
                Ok(outcome) => {
                    if let Some(source) =
                        crate::slack::render::offer::source_of_form(&view.private_metadata)
                    {
                        // The incident stands either way: an error here must not make the
                        // form say "try again" (a second incident). Only the link is lost.
                        let id = outcome.incident.id;
                        if let Err(e) =
                            crate::listen::offer::link(&state.engine, &meta, id, source).await
                        {
                            tracing::error!(%request_id, incident = %id, error = %e, "declared, but the link to the source message could not be queued");
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
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

/// Why an interaction is not for this app, if it is not: its `team.id` or `api_app_id`
/// differs from the configured one. With `strict`, an unconfigured id refuses too (run
/// buttons must prove where they come from; forms only change what their sender could
/// change with a slash command).
fn foreign(state: &AppState, payload: &Payload, strict: bool) -> Option<String> {
    let identity = &state.identity;
    let team = payload.team.as_ref().map(|t| t.id.as_str());
    match identity.team_id.as_deref() {
        Some(ours) if team != Some(ours) => {
            return Some(format!(
                "this click came from workspace {} and Klaxon serves {ours}",
                team.unwrap_or("(none)")
            ));
        }
        None if strict => {
            return Some(
                "Klaxon has no `slack.team_id` configured, so it accepts no approvals".into(),
            );
        }
        _ => {}
    }
    let app = payload.api_app_id.as_deref();
    match identity.app_id.as_deref() {
        Some(ours) if app != Some(ours) => Some(format!(
            "this click was addressed to app {} and Klaxon is {ours}",
            app.unwrap_or("(none)")
        )),
        None if strict => {
            Some("Klaxon has no `slack.app_id` configured, so it accepts no approvals".into())
        }
        _ => None,
    }
}

/// Checks that a click comes from the run's own approval message in its incident's
/// channel.
fn wrong_place(
    payload: &Payload,
    run: &crate::store::RunRow,
    channel: Option<&str>,
) -> Option<String> {
    let from = payload.channel.as_ref().map(|c| c.id.as_str());
    if from.is_none() || from != channel {
        return Some(format!(
            "run #{} can only be approved from its approval message in its incident's channel",
            run.id
        ));
    }
    let ts = payload
        .container
        .as_ref()
        .and_then(|c| c.message_ts.as_deref())
        .or_else(|| payload.message.as_ref().and_then(|m| m.ts.as_deref()));
    match &run.approval_message {
        Some((_, ours)) if ts == Some(ours.as_str()) => None,
        _ => Some(format!(
            "this button is not on run #{}'s approval message; use the one Klaxon posted for it",
            run.id
        )),
    }
}

/// Approve / Deny on a recovery run. Checks, in order: the payload is for this workspace
/// and app, the run exists, the click comes from its approval message in its channel, and
/// the clicker is a full member (`users.info`: not a guest, external or bot); then the
/// engine decides against the approvers frozen at request time. The channel sees approvals
/// and denials; a refused click is explained to the clicker alone and recorded on the
/// timeline either way.
async fn button(state: &AppState, request_id: &str, payload: &Payload) -> Response {
    let Some(action) = payload.actions.first() else {
        return (StatusCode::BAD_REQUEST, "block_actions without an action").into_response();
    };
    if action.action_id == crate::slack::render::offer::DECLARE_OFFER_ACTION {
        return declare_offer(state, request_id, payload, &action.value).await;
    }
    let click = match action.action_id.as_str() {
        APPROVE_ACTION => Click::Approve,
        DENY_ACTION => Click::Deny,
        other => {
            tracing::warn!(action_id = %other, "unknown button");
            return (StatusCode::BAD_REQUEST, format!("unknown button `{other}`")).into_response();
        }
    };
    let user = payload.user.id.clone();
    let result = async {
        let Ok(run_id) = action.value.parse::<i64>() else {
            return Ok(Some("That button does not name a run.".to_string()));
        };
        let store = state.engine.store();
        let Some(run) = store.run(run_id).await? else {
            return Ok(Some(format!("Run #{run_id} does not exist.")));
        };
        let incident = store
            .incident(run.incident_id)
            .await?
            .ok_or(EngineError::NotFound(run.incident_id))?;
        let mut refused = foreign(state, payload, true)
            .or_else(|| {
                wrong_place(
                    payload,
                    &run,
                    incident.channel.as_ref().map(|c| c.id.as_str()),
                )
            })
            .map(Refusal::WrongPlace);
        let mut member = false;
        if refused.is_none() {
            let kind = state
                .groups
                .user_kind(&user, state.identity.team_id.as_deref())
                .await;
            member = kind == Some(UserKind::Regular);
            // The requester may always withdraw; anyone else must be a full member.
            let withdrawing = click == Click::Deny && user == run.requester;
            if !(member || withdrawing) {
                let what = kind.map_or("an account Slack could not verify", UserKind::describe);
                refused = Some(Refusal::Account(what.to_string()));
            }
        }
        // A command with TOTP step-up approves through the code modal instead.
        let step_up = state.catalog.get(&run.command).is_some_and(|s| s.step_up);
        if refused.is_none() && click == Click::Approve && step_up {
            let channel = payload
                .channel
                .as_ref()
                .map(|c| c.id.as_str())
                .unwrap_or_default();
            let ts = run
                .approval_message
                .as_ref()
                .map(|(_, ts)| ts.as_str())
                .unwrap_or_default();
            match super::step_up::ask(
                state,
                &user,
                &run,
                payload.trigger_id.as_deref(),
                channel,
                ts,
            )
            .await
            {
                Ok(()) => return Ok(None),
                Err(refusal) => refused = Some(refusal),
            }
        }
        let policy = match state.catalog.get(&run.command) {
            Some(spec) => spec.approvers.describe(),
            None => "nobody: the command is no longer in the catalog".to_string(),
        };
        let meta = RequestMeta::user(&user, request_id);
        let ctx = ClickContext {
            member,
            policy,
            refused,
        };
        let outcome = state
            .engine
            .click_run(&meta, run_id, click, ctx, |outcome, run| {
                run_render::click(outcome, run, &user)
            })
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

/// The "Declare incident" button under a message in `#incident-response`: opens the
/// prefilled form (forms change nothing until submitted, so the loose workspace/app
/// check of forms applies). A form that cannot open is explained to the clicker.
async fn declare_offer(
    state: &AppState,
    request_id: &str,
    payload: &Payload,
    value: &str,
) -> Response {
    if let Some(reason) = foreign(state, payload, false) {
        return (StatusCode::FORBIDDEN, reason).into_response();
    }
    let Some(text) =
        crate::listen::offer::open_form(&*state.slack, value, payload.trigger_id.as_deref()).await
    else {
        return StatusCode::OK.into_response();
    };
    let Some(channel) = &payload.channel else {
        return StatusCode::OK.into_response();
    };
    let user = payload.user.id.clone();
    let out = Outbound::Ephemeral {
        channel: channel.id.clone(),
        user: user.clone(),
        text,
    };
    let meta = RequestMeta::user(&user, request_id);
    match state
        .engine
        .send(&meta, &format!("channel:{}", channel.id), out)
        .await
    {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            internal_error(request_id, &e),
        )
            .into_response(),
    }
}
