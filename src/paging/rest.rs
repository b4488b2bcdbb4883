//! PagerDuty REST API v2 (issue 9): what the outbox needs to link an incident both ways.
//!
//! - `GET /users/{id}`: a webhook names assignees by reference only; the user's `email`
//!   finds them in Slack. Answers are cached (people do not change address mid-incident,
//!   and a storm names the same on-call person hundreds of times).
//! - `POST /incidents/{id}/notes` (`{"note": {"content"}}`): the link to Klaxon.
//! - `PUT /incidents/{id}` (`{"incident": {"type": "incident_reference", "status":
//!   "resolved"}}`): resolving in Klaxon resolves the PagerDuty side.
//!
//! Every request carries `Authorization: Token token=...` and `Accept:
//! application/vnd.pagerduty+json;version=2`; writes carry `From:` (the email of a
//! PagerDuty user the token acts as). Errors are [`PageError`]s: 429 and 5xx retry, other
//! 4xx do not. The client has a timeout; the token never appears in errors or logs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::PageError;

/// How long a user's answer is reused.
pub const USER_CACHE_TTL: TimeDelta = TimeDelta::hours(1);

/// The part of a PagerDuty user Klaxon reads.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PdUser {
    /// User id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Login email.
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Deserialize)]
struct UserAnswer {
    user: PdUser,
}

/// A user's answer (`None`: PagerDuty has no such user) and when it was fetched.
type CachedUser = (Option<PdUser>, DateTime<Utc>);

/// A REST API v2 client.
pub struct PagerDutyRest {
    http: reqwest::Client,
    api_url: String,
    token: SecretString,
    from: Option<String>,
    cache: Mutex<HashMap<String, CachedUser>>,
}

impl std::fmt::Debug for PagerDutyRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyRest")
            .field("api_url", &self.api_url)
            .field("token", &"[redacted]")
            .field("from", &self.from)
            .finish()
    }
}

impl PagerDutyRest {
    /// A client for `api_url` (`https://api.pagerduty.com`) acting with `token`; writes
    /// are sent `From:` `from`. Every call is bounded by `timeout`.
    pub fn new(
        api_url: &str,
        token: SecretString,
        from: Option<String>,
        timeout: Duration,
    ) -> Self {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("reqwest client builds with static settings");
        Self {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
            token,
            from: from.filter(|f| !f.is_empty()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether writes (notes, resolves) can be sent: they need a `From:` email.
    pub fn can_write(&self) -> bool {
        self.from.is_some()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .header(
                "Authorization",
                format!("Token token={}", self.token.expose_secret()),
            )
            .header("Accept", "application/vnd.pagerduty+json;version=2");
        if let Some(from) = &self.from {
            request = request.header("From", from);
        }
        request
    }

    /// `GET /users/{id}`; `None` when PagerDuty has no such user (404). Cached for
    /// [`USER_CACHE_TTL`] from `now`, misses included.
    pub async fn user(&self, id: &str, now: DateTime<Utc>) -> Result<Option<PdUser>, PageError> {
        if let Some((user, at)) = self.cache.lock().expect("cache lock").get(id)
            && now - *at < USER_CACHE_TTL
        {
            return Ok(user.clone());
        }
        let path = format!("/users/{}", segment(id));
        let response = send(self.request(reqwest::Method::GET, &path)).await?;
        let user = if response.status().as_u16() == 404 {
            None
        } else {
            let response = super::check(response).await?;
            let answer: UserAnswer = response.json().await.map_err(|e| {
                PageError::Transport(format!("unreadable user: {}", e.without_url()))
            })?;
            Some(answer.user)
        };
        self.cache
            .lock()
            .expect("cache lock")
            .insert(id.to_string(), (user.clone(), now));
        Ok(user)
    }

    /// `POST /incidents/{id}/notes`.
    pub async fn add_note(&self, incident: &str, content: &str) -> Result<(), PageError> {
        let path = format!("/incidents/{}/notes", segment(incident));
        let content: String = content.chars().take(25_000).collect();
        let request = self
            .request(reqwest::Method::POST, &path)
            .json(&json!({ "note": { "content": content } }));
        super::check(send(request).await?).await.map(|_| ())
    }

    /// `PUT /incidents/{id}` with status `resolved`. An incident PagerDuty already
    /// resolved is not an error.
    pub async fn resolve(&self, incident: &str) -> Result<(), PageError> {
        let path = format!("/incidents/{}", segment(incident));
        let request = self
            .request(reqwest::Method::PUT, &path)
            .json(&json!({ "incident": { "type": "incident_reference", "status": "resolved" } }));
        match super::check(send(request).await?).await {
            Ok(_) => Ok(()),
            Err(PageError::Rejected { body, .. })
                if body.to_ascii_lowercase().contains("already resolved") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A path segment: PagerDuty ids are alphanumeric; anything else is percent-encoded so
/// a crafted id cannot change the path.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, PageError> {
    request
        .send()
        .await
        // Without the URL: it is harmless, but keep errors short; headers never appear.
        .map_err(|e| PageError::Transport(e.without_url().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(segment("PXPGF42"), "PXPGF42");
        assert_eq!(segment("../x?y"), "%2E%2E%2Fx%3Fy");
    }
}
