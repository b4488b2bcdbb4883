//! Slack request signing: <https://api.slack.com/authentication/verifying-requests-from-slack>.
//!
//! `X-Slack-Signature` is `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}` with the
//! signing secret. Requests whose `X-Slack-Request-Timestamp` is more than five minutes
//! from now are refused, so a captured request cannot be replayed later.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::AppState;

/// How far a request's timestamp may be from now, in seconds.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Largest request body Klaxon reads (Slack's payloads are far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header is missing or unreadable.
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    /// The timestamp is not an integer or is too far from now.
    #[error("request timestamp is outside the allowed 5-minute window")]
    Stale,
    /// No configured secret produces this signature.
    #[error("signature does not match")]
    BadSignature,
}

/// Checks a request against every configured secret (several during rotation).
pub fn verify(
    secrets: &[SecretString],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Stale)?;
    // Checked: `now - ts` overflows for a timestamp near i64::MIN (or MAX), and a wrapped
    // difference must never land inside the window.
    let skew = now
        .timestamp()
        .checked_sub(ts)
        .and_then(i64::checked_abs)
        .ok_or(VerifyError::Stale)?;
    if skew > MAX_SKEW_SECS {
        return Err(VerifyError::Stale);
    }
    let expected = signature
        .strip_prefix("v0=")
        .and_then(|hex_sig| hex::decode(hex_sig).ok())
        .ok_or(VerifyError::BadSignature)?;
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"v0:");
        mac.update(timestamp.trim().as_bytes());
        mac.update(b":");
        mac.update(body);
        // verify_slice compares in constant time.
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::BadSignature)
}

/// Signs a body the way Slack does; used by tests, benchmarks and `klaxon` tooling.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Middleware for the `/slack/*` routes: reads the raw body, verifies it, and only then
/// lets the handler parse it. A refused request gets 401 and nothing is stored.
pub async fn require_slack_signature(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &'static str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(VerifyError::MissingHeader(name))
    };
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let checked = header("x-slack-request-timestamp").and_then(|ts| {
        let sig = header("x-slack-signature")?;
        verify(&state.signing_secrets, &ts, &sig, &bytes, state.clock.now())
    });
    if let Err(e) = checked {
        tracing::warn!(path = %parts.uri.path(), reason = %e, "refused unsigned or stale Slack request");
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from Slack's guide, kept in `shared/test-vectors/slack-signing.txt`.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn slacks_published_example_verifies_at_its_own_time() {
        for now in [1531420618, 1531420618 - 300, 1531420618 + 300] {
            assert_eq!(
                verify(
                    &secrets(&[SECRET]),
                    TIMESTAMP,
                    SIGNATURE,
                    BODY.as_bytes(),
                    at(now)
                ),
                Ok(())
            );
        }
        assert_eq!(sign(SECRET, 1531420618, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn slacks_published_example_is_stale_today() {
        assert_eq!(
            verify(
                &secrets(&[SECRET]),
                TIMESTAMP,
                SIGNATURE,
                BODY.as_bytes(),
                Utc::now()
            ),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(
                &secrets(&[SECRET]),
                TIMESTAMP,
                SIGNATURE,
                BODY.as_bytes(),
                at(1531420618 + 301)
            ),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn a_changed_body_or_wrong_secret_is_refused() {
        let now = at(1531420618);
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            verify(
                &secrets(&[SECRET]),
                TIMESTAMP,
                SIGNATURE,
                tampered.as_bytes(),
                now
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(
                &secrets(&["other"]),
                TIMESTAMP,
                SIGNATURE,
                BODY.as_bytes(),
                now
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(
                &secrets(&[SECRET]),
                TIMESTAMP,
                "v0=zz",
                BODY.as_bytes(),
                now
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&secrets(&[SECRET]), "soon", SIGNATURE, BODY.as_bytes(), now),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_stale_not_wrapped() {
        let now = at(1531420618);
        // now - 2^63 fits in an i64, but now minus it does not: it used to wrap to
        // i64::MIN, whose wrapping abs() is negative, and pass the window.
        let far_past = (i128::from(now.timestamp()) - (1i128 << 63)) as i64;
        for ts in [far_past, i64::MIN, i64::MIN + 1, i64::MAX, -1] {
            let signed = sign(SECRET, ts, BODY.as_bytes());
            assert_eq!(
                verify(
                    &secrets(&[SECRET]),
                    &ts.to_string(),
                    &signed,
                    BODY.as_bytes(),
                    now
                ),
                Err(VerifyError::Stale),
                "timestamp {ts}"
            );
        }
    }

    #[test]
    fn any_secret_in_rotation_is_accepted() {
        assert_eq!(
            verify(
                &secrets(&["old", SECRET]),
                TIMESTAMP,
                SIGNATURE,
                BODY.as_bytes(),
                at(1531420618)
            ),
            Ok(())
        );
    }
}
