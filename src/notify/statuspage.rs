//! Atlassian Statuspage REST API (v1): the public status page's incident for a Klaxon
//! incident, created on its first public notice, updated by the next ones, resolved by
//! the all clear, with its component's status set each time.
//!
//! Requests (developer.statuspage.io): `POST /pages/{page_id}/incidents` and
//! `PATCH /pages/{page_id}/incidents/{incident_id}` with
//! `{"incident": {name, status, body, component_ids, components: {id: status}}}`,
//! `Authorization: OAuth <key>`; `GET .../incidents/unresolved` and
//! `GET .../incidents/{incident_id}` to recognise what an interrupted attempt already did.
//!
//! **Never twice for the same update.** Statuspage has no idempotency key, so the
//! caller (`outbox::stakeholders`) stores the incident id once created, and a retry of
//! an attempt that may have gone out looks first: for a create, an unresolved incident
//! whose name carries the Klaxon reference ([`reference`]); for an update, an
//! `incident_updates` entry with the same body.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::NotifyError;
use crate::domain::incident::{IncidentId, Status};
use crate::domain::severity::Severity;

/// `[stakeholders.statuspage]`.
#[derive(Clone)]
pub struct StatuspageSettings {
    /// API base URL (`https://api.statuspage.io/v1`; tests: the stand-in).
    pub api_url: String,
    /// The page id.
    pub page_id: String,
    /// API key (`KLAXON_STATUSPAGE_API_KEY`); never logged.
    pub api_key: SecretString,
    /// The longest one call may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for StatuspageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatuspageSettings")
            .field("api_url", &self.api_url)
            .field("page_id", &self.page_id)
            .field("api_key", &"[redacted]")
            .finish()
    }
}

/// A Statuspage client. Cheap to clone.
#[derive(Clone)]
pub struct Statuspage {
    http: reqwest::Client,
    settings: StatuspageSettings,
}

/// Statuspage's incident status for a Klaxon status.
pub fn incident_status(status: Status) -> &'static str {
    match status {
        Status::Investigating => "investigating",
        Status::Identified => "identified",
        Status::Monitoring => "monitoring",
        Status::Resolved => "resolved",
    }
}

/// The component status shown while an incident of `severity` is open (operational
/// once resolved).
pub fn component_status(severity: Severity, status: Status) -> &'static str {
    match (status, severity) {
        (Status::Resolved, _) => "operational",
        (_, Severity::Sev1) => "major_outage",
        (_, Severity::Sev2) => "partial_outage",
        (_, Severity::Sev3 | Severity::Sev4) => "degraded_performance",
    }
}

/// The reference a Statuspage incident's name ends with, so it can be recognised.
pub fn reference(id: IncidentId) -> String {
    format!("(ref {id})")
}

/// One change to the page's incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageUpdate<'a> {
    /// Incident name (created only; includes [`reference`]).
    pub name: String,
    /// Klaxon status.
    pub status: Status,
    /// Severity (for the component status).
    pub severity: Severity,
    /// The update text.
    pub body: &'a str,
    /// Component id.
    pub component: &'a str,
}

impl PageUpdate<'_> {
    fn json(&self, with_name: bool) -> Value {
        let mut incident = json!({
            "status": incident_status(self.status),
            "body": self.body,
            "component_ids": [self.component],
            "components": { self.component: component_status(self.severity, self.status) },
        });
        if with_name {
            incident["name"] = Value::String(self.name.clone());
        }
        json!({ "incident": incident })
    }
}

impl Statuspage {
    /// A client for `settings`.
    pub fn new(settings: StatuspageSettings) -> Result<Statuspage, NotifyError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| NotifyError::Permanent(format!("Statuspage client: {e}")))?;
        Ok(Statuspage { http, settings })
    }

    /// The page id (stored with the incident id it creates).
    pub fn page_id(&self) -> &str {
        &self.settings.page_id
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/pages/{}/incidents{tail}",
            self.settings.api_url.trim_end_matches('/'),
            self.settings.page_id
        )
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, NotifyError> {
        let auth = format!("OAuth {}", self.settings.api_key.expose_secret());
        let response = request
            .header(reqwest::header::AUTHORIZATION, auth)
            .send()
            .await
            .map_err(|e| NotifyError::Retry(format!("Statuspage unreachable: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| NotifyError::Retry(format!("Statuspage answer cut short: {e}")))?;
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(NotifyError::Retry(format!("Statuspage answered {status}")));
        }
        if !status.is_success() {
            return Err(NotifyError::Permanent(format!(
                "Statuspage refused ({status}): {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        serde_json::from_str(&text)
            .map_err(|e| NotifyError::Retry(format!("Statuspage answered non-JSON: {e}")))
    }

    /// Creates the page's incident; returns its id.
    pub async fn create(&self, update: &PageUpdate<'_>) -> Result<String, NotifyError> {
        let answer = self
            .call(self.http.post(self.url("")).json(&update.json(true)))
            .await?;
        answer["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| NotifyError::Retry("Statuspage answered without an incident id".into()))
    }

    /// Updates incident `id` (a new incident update with `body`, status, component).
    pub async fn update(&self, id: &str, update: &PageUpdate<'_>) -> Result<(), NotifyError> {
        self.call(
            self.http
                .patch(self.url(&format!("/{id}")))
                .json(&update.json(false)),
        )
        .await
        .map(|_| ())
    }

    /// The unresolved incident whose name ends with `reference`, if any.
    pub async fn find_unresolved(&self, reference: &str) -> Result<Option<String>, NotifyError> {
        let answer = self.call(self.http.get(self.url("/unresolved"))).await?;
        Ok(answer.as_array().and_then(|list| {
            list.iter()
                .find(|i| i["name"].as_str().is_some_and(|n| n.ends_with(reference)))
                .and_then(|i| i["id"].as_str().map(str::to_string))
        }))
    }

    /// Whether incident `id` already has an update with exactly `body`.
    pub async fn has_update(&self, id: &str, body: &str) -> Result<bool, NotifyError> {
        let answer = self
            .call(self.http.get(self.url(&format!("/{id}"))))
            .await?;
        Ok(answer["incident_updates"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["body"].as_str() == Some(body))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_the_api_reference() {
        let update = PageUpdate {
            name: "Checkout errors (ref INC-7)".into(),
            status: Status::Identified,
            severity: Severity::Sev1,
            body: "Errors falling",
            component: "cmp1",
        };
        assert_eq!(
            update.json(true),
            json!({"incident": {"name": "Checkout errors (ref INC-7)", "status": "identified", "body": "Errors falling",
                "component_ids": ["cmp1"], "components": {"cmp1": "major_outage"}}})
        );
        assert!(update.json(false)["incident"].get("name").is_none());
        assert_eq!(
            component_status(Severity::Sev3, Status::Resolved),
            "operational"
        );
        assert_eq!(
            component_status(Severity::Sev2, Status::Monitoring),
            "partial_outage"
        );
        assert_eq!(reference(IncidentId(7)), "(ref INC-7)");
    }
}
