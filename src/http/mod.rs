//! The HTTP surface: Slack's three endpoints behind signature verification, plus health.
//!
//! `app(state)` builds the whole router so tests drive it with `oneshot` and `serve` binds
//! it to a socket (axum's `examples/testing`).
//!
//! Inbound transports both live here: the HTTP endpoints and [`socket`] (Socket Mode),
//! which feeds Slack's envelopes into the same handlers. Handlers hand events they do not
//! own to `crate::listen` (declare offers, App Home), which never imports `http` back.

pub mod commands;
pub mod events;
pub mod incident_commands;
pub mod interactions;
mod metrics_route;
pub mod pagerduty;
pub mod record_commands;
pub mod socket;
mod step_up;
mod timeline_events;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Router, middleware};
use secrecy::SecretString;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::clock::Clock;
use crate::engine::Engine;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Applies changes.
    pub engine: Engine,
    /// Accepted Slack signing secrets.
    pub signing_secrets: Arc<Vec<SecretString>>,
    /// The clock (for the signature's time window).
    pub clock: Arc<dyn Clock>,
    /// Approved recovery commands.
    pub catalog: Arc<crate::commands::catalog::Catalog>,
    /// Slack user-group membership, for command policies that name groups.
    pub groups: crate::slack::groups::GroupDirectory,
    /// Which workspace and app interactions must come from; who administers incidents.
    pub identity: Arc<Identity>,
    /// The Slack Web API, for the one call made on the request path: opening a form
    /// (`views.open`), whose trigger id expires 3 s after the command.
    pub slack: Arc<dyn crate::slack::SlackApi>,
    /// What Klaxon listens for in `#incident-response` (`[intake]`).
    pub intake: Arc<crate::config::IntakeConfig>,
    /// The `#incident-response` channel id.
    pub announce_channel: Arc<str>,
    /// Reactions that add a message of an incident channel to its timeline.
    pub note_reactions: Arc<Vec<String>>,
    /// PagerDuty in: webhook secrets and how events map (`[pagerduty]`).
    pub pagerduty: Arc<crate::config::PagerDutyConfig>,
}

/// The app's identity (`slack.team_id`, `slack.app_id`) and the incident admins
/// (`roles.incident_admins`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Workspace id interactions must carry in `team.id`.
    pub team_id: Option<String>,
    /// App id interactions must carry in `api_app_id`.
    pub app_id: Option<String>,
    /// User groups whose members may hand over any incident role.
    pub incident_admins: Vec<String>,
    /// Key sealing TOTP step-up secrets.
    pub totp_key: Option<crate::totp::TotpKey>,
}

impl Identity {
    /// From the validated config.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            team_id: config.slack.team_id.clone(),
            app_id: config.slack.app_id.clone(),
            incident_admins: config.roles.incident_admins.clone(),
            totp_key: config.recovery.totp_key.clone(),
        }
    }

    /// `serve` and `check` refuse to run without the team and app ids: without them a
    /// click from another workspace or app could not be told apart.
    pub fn require(&self) -> Result<(), crate::config::ConfigError> {
        let missing = |key: &str, var: &str, what: &str| crate::config::ConfigError {
            key: key.into(),
            problem: format!(
                "missing: the {what} (Slack app > Basic Information); approval clicks are checked against it. Env: {var}"
            ),
        };
        if self.team_id.is_none() {
            return Err(missing(
                "slack.team_id",
                "KLAXON_SLACK_TEAM_ID",
                "workspace id T...",
            ));
        }
        if self.app_id.is_none() {
            return Err(missing(
                "slack.app_id",
                "KLAXON_SLACK_APP_ID",
                "app id A...",
            ));
        }
        Ok(())
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id set by `SetRequestIdLayer` (a UUID), for spans, the timeline and the
/// "ref" users quote when something went wrong.
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        Ok(RequestId(id.to_string()))
    }
}

/// Logs an internal error and returns the text users see instead: never the error itself.
pub fn internal_error(request_id: &str, error: &dyn std::error::Error) -> String {
    tracing::error!(%request_id, error = %error, "request failed");
    format!(
        "Something went wrong inside Klaxon (ref {request_id}). Nothing was changed; please try again."
    )
}

/// The full router.
pub fn app(state: AppState) -> Router {
    let slack = Router::new()
        .route("/slack/commands", post(commands::handle))
        .route("/slack/interactions", post(interactions::handle))
        .route("/slack/events", post(events::handle))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            verify::require_slack_signature,
        ));
    Router::new()
        .merge(slack)
        .route("/pagerduty/webhook", post(pagerduty::webhook))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route::metrics))
        .route_layer(middleware::from_fn(metrics_route::record_latency))
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                    let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    // Only method, path and id: payloads and headers may carry tokens.
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(10)))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

/// Ready when the database answers.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.engine.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database unreachable".to_string(),
            )
        }
    }
}
