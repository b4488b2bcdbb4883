//! The v3 webhook payload: `{"event": {"id", "event_type", "resource_type",
//! "occurred_at", "agent": {user_reference}, "data": ...}}`, parsed into typed events.
//! Unknown event types parse (their data is not read), so they can be acknowledged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A v3 event type Klaxon acts on; anything else is [`EventType::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventType {
    /// `incident.triggered`: declare (or group into a storm's incident).
    Triggered,
    /// `incident.acknowledged`.
    Acknowledged,
    /// `incident.reassigned`.
    Reassigned,
    /// `incident.escalated`.
    Escalated,
    /// `incident.priority_updated` (may change the severity, by config).
    PriorityUpdated,
    /// `incident.annotated` (a note was added in PagerDuty).
    Annotated,
    /// `incident.resolved` (resolves the Klaxon incident when config says so).
    Resolved,
    /// Any other type: acknowledged with 200, logged, ignored.
    Other(String),
}

impl EventType {
    /// From the wire name.
    pub fn parse(name: &str) -> EventType {
        match name {
            "incident.triggered" => EventType::Triggered,
            "incident.acknowledged" => EventType::Acknowledged,
            "incident.reassigned" => EventType::Reassigned,
            "incident.escalated" => EventType::Escalated,
            "incident.priority_updated" => EventType::PriorityUpdated,
            "incident.annotated" => EventType::Annotated,
            "incident.resolved" => EventType::Resolved,
            other => EventType::Other(other.to_string()),
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Triggered => "incident.triggered",
            EventType::Acknowledged => "incident.acknowledged",
            EventType::Reassigned => "incident.reassigned",
            EventType::Escalated => "incident.escalated",
            EventType::PriorityUpdated => "incident.priority_updated",
            EventType::Annotated => "incident.annotated",
            EventType::Resolved => "incident.resolved",
            EventType::Other(name) => name,
        }
    }
}

/// A PagerDuty object reference (`user_reference`, `service_reference`...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// PagerDuty id, e.g. `PXPGF42`.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub summary: Option<String>,
}

impl Reference {
    /// The name to show: the summary, else the id.
    pub fn name(&self) -> &str {
        self.summary.as_deref().unwrap_or(&self.id)
    }
}

/// `priority{summary}` of an incident (`P1`...).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Priority {
    /// `P1`, `P2`...
    #[serde(default)]
    pub summary: Option<String>,
}

/// The incident a v3 incident event carries in `data`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PdIncident {
    /// PagerDuty incident id.
    pub id: String,
    /// Its page in PagerDuty's web app.
    #[serde(default)]
    pub html_url: String,
    /// Incident number in the account.
    #[serde(default)]
    pub number: Option<i64>,
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// `triggered`, `acknowledged`, `resolved`.
    #[serde(default)]
    pub status: Option<String>,
    /// `high` or `low`.
    #[serde(default)]
    pub urgency: Option<String>,
    /// Priority, when the account uses priorities.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// The service.
    #[serde(default)]
    pub service: Option<Reference>,
    /// Assigned users (references only: no email).
    #[serde(default)]
    pub assignees: Vec<Reference>,
}

impl PdIncident {
    /// The priority's name, when there is one.
    pub fn priority_name(&self) -> Option<&str> {
        self.priority.as_ref().and_then(|p| p.summary.as_deref())
    }

    /// The title to show (PagerDuty titles are free text; a missing one is named).
    pub fn display_title(&self) -> String {
        match (&self.title, self.number) {
            (Some(t), _) if !t.trim().is_empty() => t.trim().to_string(),
            (_, Some(n)) => format!("PagerDuty incident #{n}"),
            _ => format!("PagerDuty incident {}", self.id),
        }
    }
}

/// What one webhook delivery says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `event.id`: unique per event; the dedupe key (the signature has no timestamp).
    pub id: String,
    /// `event.event_type`.
    pub event_type: EventType,
    /// `event.occurred_at`.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Who did it (`event.agent`), when a person did.
    pub agent: Option<Reference>,
    /// The PagerDuty incident concerned (`data` or `data.incident`), when known.
    pub incident_id: Option<String>,
    /// The whole incident, for incident-typed data.
    pub incident: Option<PdIncident>,
    /// A note's content (`incident.annotated`).
    pub note: Option<String>,
}

/// Why a delivery could not be read (answered 400; PagerDuty's payloads always parse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a PagerDuty v3 webhook: {0}")]
pub struct ParseError(pub String);

#[derive(Deserialize)]
struct Envelope {
    event: RawEvent,
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    event_type: String,
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(default)]
    agent: Option<Reference>,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct RawNote {
    #[serde(default)]
    content: Option<String>,
    incident: Reference,
}

/// Parses a v3 delivery. Unknown event types parse (their data is not read).
pub fn parse(body: &[u8]) -> Result<WebhookEvent, ParseError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| ParseError(e.to_string()))?;
    let raw = envelope.event;
    if raw.id.trim().is_empty() {
        return Err(ParseError("event.id is empty".into()));
    }
    let event_type = EventType::parse(&raw.event_type);
    let occurred_at = raw
        .occurred_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let mut event = WebhookEvent {
        id: raw.id,
        event_type,
        occurred_at,
        agent: raw.agent,
        incident_id: None,
        incident: None,
        note: None,
    };
    match (&event.event_type, raw.data["type"].as_str()) {
        (EventType::Other(_), _) => {}
        (EventType::Annotated, Some("incident_note")) => {
            let note: RawNote =
                serde_json::from_value(raw.data).map_err(|e| ParseError(e.to_string()))?;
            event.incident_id = Some(note.incident.id);
            event.note = note.content;
        }
        _ => {
            let incident: PdIncident =
                serde_json::from_value(raw.data).map_err(|e| ParseError(e.to_string()))?;
            event.incident_id = Some(incident.id.clone());
            event.incident = Some(incident);
        }
    }
    Ok(event)
}
