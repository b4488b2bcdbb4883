//! `POST /pagerduty/webhook`: PagerDuty webhooks v3 (issue 9).
//!
//! `X-PagerDuty-Signature` is `v1=` + hex HMAC-SHA256 of the raw body with the
//! subscription's secret; during a secret rotation PagerDuty sends several, comma
//! separated, and one match is enough. No timestamp is signed, so the only replay defence
//! is the event id, recorded in the same transaction as the event's effect (a replay is
//! answered 200 and changes nothing). A bad signature is 401 with nothing stored.
//!
//! The handler verifies, parses, and commits through the engine, then answers: every
//! call to Slack or PagerDuty that follows is an outbox row.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::{AppState, RequestId};
use crate::domain::incident::Actor;
use crate::domain::pagerduty::{self, EventType};
use crate::engine::{EngineError, PagerDutyOutcome, RequestMeta};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-pagerduty-signature";

/// Largest body read (PagerDuty's events are a few kilobytes).
const MAX_BODY_BYTES: usize = 512 * 1024;

/// Whether any `v1=` signature in `header` is the HMAC-SHA256 of `body` under any of
/// `secrets` (compared in constant time).
pub fn verify_signature(secrets: &[SecretString], header: &str, body: &[u8]) -> bool {
    let signatures: Vec<Vec<u8>> = header
        .split(',')
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .collect();
    secrets.iter().any(|secret| {
        signatures.iter().any(|sig| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
                .expect("HMAC takes any key length");
            mac.update(body);
            mac.verify_slice(sig).is_ok()
        })
    })
}

/// Signs a body the way PagerDuty does (`v1=<hex>`); for tests and tooling.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The route.
pub async fn webhook(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > MAX_BODY_BYTES {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    }
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if state.pagerduty.webhook_secrets.is_empty() {
        tracing::warn!(
            "PagerDuty webhook refused: no webhook secret configured (KLAXON_PAGERDUTY_WEBHOOK_SECRET)"
        );
        return (StatusCode::UNAUTHORIZED, "invalid signature").into_response();
    }
    if !verify_signature(&state.pagerduty.webhook_secrets, signature, &body) {
        tracing::warn!(%request_id, "PagerDuty webhook refused: signature does not match");
        return (StatusCode::UNAUTHORIZED, "invalid signature").into_response();
    }
    let event = match pagerduty::parse(&body) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(%request_id, error = %e, "PagerDuty webhook unreadable");
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    if let EventType::Other(name) = &event.event_type {
        tracing::info!(%request_id, event_id = %event.id, event_type = %name, "PagerDuty event type not handled; ignored");
    }
    let meta = RequestMeta {
        actor: Actor::Klaxon,
        request_id: request_id.clone(),
        dedupe: Some((pagerduty::SOURCE.into(), event.id.clone())),
    };
    let policy = &state.pagerduty.policy;
    match state.engine.pagerduty_event(&meta, &event, policy).await {
        Ok(outcome) => {
            let what = match &outcome {
                PagerDutyOutcome::Declared(id) => format!("declared {id}"),
                PagerDutyOutcome::Grouped(id) => format!("grouped into {id}"),
                PagerDutyOutcome::Recorded(id) => format!("recorded on {id}"),
                PagerDutyOutcome::Ignored(why) => {
                    tracing::info!(%request_id, event_id = %event.id, event_type = event.event_type.as_str(), why, "PagerDuty event ignored");
                    format!("ignored: {why}")
                }
            };
            (StatusCode::OK, what).into_response()
        }
        Err(EngineError::Duplicate) => {
            tracing::info!(%request_id, event_id = %event.id, "PagerDuty event already processed");
            (StatusCode::OK, "duplicate").into_response()
        }
        // The incident as it stands refuses the change (e.g. it would change nothing):
        // PagerDuty retrying would not help.
        Err(EngineError::Refused(e)) => {
            tracing::info!(%request_id, event_id = %event.id, reason = %e, "PagerDuty event changes nothing");
            (StatusCode::OK, "nothing to change").into_response()
        }
        Err(EngineError::NotFound(id)) => {
            tracing::warn!(%request_id, event_id = %event.id, incident = %id, "PagerDuty event for a missing incident");
            (StatusCode::OK, "ignored").into_response()
        }
        // Store failure or shutting down: 5xx, so PagerDuty delivers it again.
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            super::internal_error(&request_id, &e),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn any_signature_under_any_secret_is_accepted() {
        let body = br#"{"event":{}}"#;
        let old = sign("old", body);
        let new = sign("new", body);
        assert!(verify_signature(
            &secrets(&["new"]),
            &format!("{old},{new}"),
            body
        ));
        assert!(verify_signature(
            &secrets(&["old", "other"]),
            &format!("{old}, {new}"),
            body
        ));
        assert!(!verify_signature(
            &secrets(&["third"]),
            &format!("{old},{new}"),
            body
        ));
        assert!(!verify_signature(
            &secrets(&["new"]),
            &new,
            br#"{"event":{ }}"#
        ));
        assert!(!verify_signature(&secrets(&["new"]), "", body));
        assert!(!verify_signature(
            &secrets(&["new"]),
            &new.replace("v1=", "v0="),
            body
        ));
    }
}
