//! TOTP step-up on Approve (commands with `step_up = "totp"`): the Approve button opens a
//! modal asking for the approver's current code (`views.open` from the handler: a form
//! changes no state), and the approval happens only when the submitted code checks out.
//! The modal's private metadata carries the run, channel and message the button was on,
//! and every check of a plain click is made again on submission. A wrong, reused or
//! unenrolled code is refused on the code field and recorded on the timeline.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AppState, internal_error};
use crate::commands::render as run_render;
use crate::domain::access::UserKind;
use crate::domain::approval::{Click, ClickOutcome, Refusal};
use crate::engine::{ClickContext, EngineError, RequestMeta};
use crate::store::RunRow;
use crate::totp;

/// `callback_id` of the code modal.
pub const CALLBACK: &str = "klaxon_run_totp";

/// Where the Approve button was, carried through the modal.
#[derive(Serialize, Deserialize)]
struct Origin {
    run: i64,
    channel: String,
    ts: String,
}

fn code_error(text: &str) -> Response {
    Json(json!({ "response_action": "errors", "errors": { "code": text } })).into_response()
}

/// Opens the code modal for `user` approving `run`, or says why it cannot be used.
pub async fn ask(
    state: &AppState,
    user: &str,
    run: &RunRow,
    trigger_id: Option<&str>,
    channel: &str,
    ts: &str,
) -> Result<(), Refusal> {
    if state.identity.totp_key.is_none() {
        return Err(Refusal::StepUp(
            "this command needs a TOTP code, and Klaxon has no KLAXON_TOTP_KEY configured".into(),
        ));
    }
    match state.engine.store().totp_of(user).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(Refusal::StepUp(format!(
                "this command needs a TOTP code and you are not enrolled; an admin enrols you with `klaxon totp enrol {user}`"
            )));
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read TOTP enrolment");
            return Err(Refusal::StepUp(
                "your TOTP enrolment could not be read; try again".into(),
            ));
        }
    }
    let Some(trigger_id) = trigger_id else {
        return Err(Refusal::StepUp(
            "the click carried no trigger id to open the code form".into(),
        ));
    };
    let origin = Origin {
        run: run.id,
        channel: channel.to_string(),
        ts: ts.to_string(),
    };
    let view = json!({
        "type": "modal",
        "callback_id": CALLBACK,
        "private_metadata": serde_json::to_string(&origin).expect("origin serializes"),
        "title": { "type": "plain_text", "text": "Confirm approval" },
        "submit": { "type": "plain_text", "text": "Approve" },
        "close": { "type": "plain_text", "text": "Cancel" },
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn",
              "text": format!("Approving run #{} `{}` needs the 6-digit code from your authenticator app.", run.id, run.command) } },
            { "type": "input", "block_id": "code", "label": { "type": "plain_text", "text": "TOTP code" },
              "element": { "type": "plain_text_input", "action_id": "value", "min_length": 6, "max_length": 8 } }
        ]
    });
    state
        .groups
        .slack()
        .open_view(trigger_id, &view)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot open the TOTP form");
            Refusal::StepUp("the code form could not be opened; press Approve again".into())
        })
}

/// The code modal was submitted: check everything again, then the code, then approve.
pub async fn submit(
    state: &AppState,
    request_id: &str,
    user: &str,
    metadata: &str,
    code: &str,
) -> Response {
    match check_and_click(state, request_id, user, metadata, code).await {
        Ok(None) => StatusCode::OK.into_response(),
        Ok(Some(text)) => code_error(&text),
        Err(e) => code_error(&internal_error(request_id, &e)),
    }
}

async fn check_and_click(
    state: &AppState,
    request_id: &str,
    user: &str,
    metadata: &str,
    code: &str,
) -> Result<Option<String>, EngineError> {
    let Ok(origin) = serde_json::from_str::<Origin>(metadata) else {
        return Ok(Some("This form does not name a run.".into()));
    };
    let store = state.engine.store();
    let Some(run) = store.run(origin.run).await? else {
        return Ok(Some(format!("Run #{} does not exist.", origin.run)));
    };
    let incident = store
        .incident(run.incident_id)
        .await?
        .ok_or(EngineError::NotFound(run.incident_id))?;
    let mut refused = None;
    let in_channel =
        incident.channel.as_ref().map(|c| c.id.as_str()) == Some(origin.channel.as_str());
    let on_message =
        run.approval_message.as_ref().map(|(_, ts)| ts.as_str()) == Some(origin.ts.as_str());
    if !(in_channel && on_message) {
        refused = Some(Refusal::WrongPlace(format!(
            "this form is not for run #{}'s approval message",
            run.id
        )));
    }
    if refused.is_none() {
        let kind = state
            .groups
            .user_kind(user, state.identity.team_id.as_deref())
            .await;
        if kind != Some(UserKind::Regular) {
            let what = kind.map_or("an account Slack could not verify", UserKind::describe);
            refused = Some(Refusal::Account(what.to_string()));
        }
    }
    if refused.is_none() && !code_ok(state, user, code).await? {
        refused = Some(Refusal::StepUp(
            "that TOTP code is wrong or was already used; enter the current code".into(),
        ));
    }
    let policy = state
        .catalog
        .get(&run.command)
        .map(|s| s.approvers.describe())
        .unwrap_or_else(|| "nobody: the command is no longer in the catalog".to_string());
    let ctx = ClickContext {
        member: true,
        policy,
        refused,
    };
    let meta = RequestMeta::user(user, request_id);
    let outcome = state
        .engine
        .click_run(&meta, run.id, Click::Approve, ctx, |outcome, run| {
            run_render::click(outcome, run, user)
        })
        .await?;
    Ok(match outcome {
        ClickOutcome::Refused(reason) => Some(format!("Run #{}: {reason}.", run.id)),
        _ => None,
    })
}

/// Whether `code` is `user`'s current code, accepting each time step once.
async fn code_ok(state: &AppState, user: &str, code: &str) -> Result<bool, EngineError> {
    let Some(key) = &state.identity.totp_key else {
        return Ok(false);
    };
    let store = state.engine.store();
    let Some(sealed) = store.totp_of(user).await? else {
        return Ok(false);
    };
    let secret = match totp::open(key, user, &sealed) {
        Ok(secret) => secret,
        Err(e) => {
            tracing::error!(%user, error = %e, "cannot open a TOTP secret");
            return Ok(false);
        }
    };
    let now = u64::try_from(state.clock.now().timestamp()).unwrap_or(0);
    match totp::check(&secret, user, code, now) {
        Some(step) => Ok(store.use_totp_step(user, step).await?),
        None => Ok(false),
    }
}
