//! What an incident is: its number, status, roles, channel, last update and the people
//! and duties recorded on it, plus who can act on it ([`Actor`]). Data only, with the few
//! questions every caller asks (`is_open`, `commander`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::severity::Severity;

/// Incident number, shown as `INC-12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub i64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INC-{}", self.0)
    }
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Looking for the cause.
    Investigating,
    /// Cause known, fix in progress.
    Identified,
    /// Fix applied, watching.
    Monitoring,
    /// Over.
    Resolved,
}

impl Status {
    /// Statuses a person can set with `/incident status` (resolving has its own command).
    pub const SETTABLE: [Status; 3] = [
        Status::Investigating,
        Status::Identified,
        Status::Monitoring,
    ];

    /// Lowercase name as typed in commands.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Investigating => "investigating",
            Status::Identified => "identified",
            Status::Monitoring => "monitoring",
            Status::Resolved => "resolved",
        }
    }

    /// Parses a settable status.
    pub fn parse_settable(text: &str) -> Option<Status> {
        let lower = text.trim().to_ascii_lowercase();
        Status::SETTABLE.into_iter().find(|s| s.as_str() == lower)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_str();
        write!(f, "{}{}", s[..1].to_ascii_uppercase(), &s[1..])
    }
}

/// A role someone holds in an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Incident commander: owns the incident until handing over.
    Commander,
    /// Communications lead: stakeholders and status page.
    Comms,
    /// Operations lead: hands on the systems.
    Ops,
    /// Keeps notes for the post-mortem.
    Scribe,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 4] = [Role::Commander, Role::Comms, Role::Ops, Role::Scribe];

    /// Lowercase name as typed in commands.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Commander => "commander",
            Role::Comms => "comms",
            Role::Ops => "ops",
            Role::Scribe => "scribe",
        }
    }

    /// Parses a role name; `ic` is accepted for the commander.
    pub fn parse(text: &str) -> Option<Role> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "ic" {
            return Some(Role::Commander);
        }
        Role::ALL.into_iter().find(|r| r.as_str() == lower)
    }

    /// Human title, e.g. "incident commander".
    pub fn title(self) -> &'static str {
        match self {
            Role::Commander => "incident commander",
            Role::Comms => "comms lead",
            Role::Ops => "ops lead",
            Role::Scribe => "scribe",
        }
    }
}

/// The Slack channel opened for an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentChannel {
    /// Channel id.
    pub id: String,
    /// Channel name (may carry a `-2` suffix when the planned name was taken).
    pub name: String,
}

/// The last status update someone posted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// When it was posted.
    pub at: DateTime<Utc>,
    /// Who posted it.
    pub by: String,
    /// What it said.
    pub text: String,
}

/// The current state of one incident (the projection of its timeline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Number.
    pub id: IncidentId,
    /// One-line title.
    pub title: String,
    /// Current severity.
    pub severity: Severity,
    /// Current status.
    pub status: Status,
    /// When it was declared.
    pub declared_at: DateTime<Utc>,
    /// Who declared it.
    pub declared_by: String,
    /// The channel name Klaxon planned (`inc-YYYYMMDD-short-title`).
    pub planned_channel_name: String,
    /// The channel once Slack created it.
    pub channel: Option<IncidentChannel>,
    /// Who holds which role.
    pub roles: BTreeMap<Role, String>,
    /// Last status update.
    pub last_update: Option<StatusUpdate>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The one-line resolution summary.
    pub resolution: Option<String>,
    /// When the last status reminder went out.
    #[serde(default)]
    pub last_reminder_at: Option<DateTime<Utc>>,
    /// Keys of the once-only timers that fired (escalation steps, RTO checkpoints...), so
    /// rescheduling after a severity change never pages the same target twice.
    #[serde(default)]
    pub fired_timers: BTreeSet<String>,
    /// A security incident: compliance/legal must be notified (see
    /// [`crate::domain::stakeholders`]); reminded until someone acknowledges it.
    #[serde(default)]
    pub security: bool,
    /// Who acknowledged the regulatory notification, and when.
    #[serde(default)]
    pub regulatory_ack: Option<Acknowledgement>,
    /// When the last regulatory reminder went out.
    #[serde(default)]
    pub regulatory_reminded_at: Option<DateTime<Utc>>,
    /// When each stakeholder group was last told anything (its cadence restarts then).
    #[serde(default)]
    pub stakeholders_told: BTreeMap<String, DateTime<Utc>>,
}

/// Someone confirmed a duty was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl Incident {
    /// Whether the incident is still open.
    pub fn is_open(&self) -> bool {
        self.status != Status::Resolved
    }

    /// The incident commander, if anyone holds the role.
    pub fn commander(&self) -> Option<&str> {
        self.roles.get(&Role::Commander).map(String::as_str)
    }
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A Slack user id.
    User(String),
    /// Klaxon itself (the outbox reporting a channel, a timer...).
    Klaxon,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => f.write_str(id),
            Actor::Klaxon => f.write_str("klaxon"),
        }
    }
}
