//! Stakeholder communication (issue 9), decided purely: which groups hear about an
//! incident, what each is told, in whose time zone, and what an external group may see.
//!
//! The seed runbooks ask for status "every 30 minutes for Severity 1, hourly for
//! Severity 2" to internal stakeholders, status-page updates for customers, an all-clear
//! after recovery and, for security incidents, a regulatory notification within 24 hours.
//! This module turns an incident change into one [`Effect::Stakeholder`] per group and
//! destination; the engine stores them as outbox rows in the same transaction as the
//! change, and `outbox::stakeholders` delivers them (email, Statuspage, Slack).
//!
//! **Redaction is decided here, once.** An external group's notice is built only from
//! [`external_text`] of what was written: no people, no commands, no channel names. The
//! same function produces the preview the commander sees, so the preview is exactly
//! what goes out.
//!
//! This file holds what the policy and a notice are; `notices` decides, for each kind of
//! change, which groups hear and what each is told; `redaction` is [`external_text`].

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::incident::{IncidentId, Status};
use super::severity::Severity;

mod notices;
mod redaction;

pub use notices::{
    UpdateMode, on_cadence, on_declare, on_resolve, on_update, preview, refuse_preview, timers,
    update_groups, update_mode,
};
pub use redaction::external_text;

/// Whether a group is inside the company (sees everything) or outside (customers,
/// status page: sees only the redacted view).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Employees: the full text.
    Internal,
    /// Customers, partners, regulators: [`external_text`] only.
    External,
}

/// Which status updates a group receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateFilter {
    /// Every `/incident update`.
    All,
    /// Only `/incident update --public ...`.
    Public,
}

/// One stakeholder group, as configured (`[stakeholders.groups.<name>]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Name (lane keys, Message-IDs, the timeline).
    pub name: String,
    /// Internal or external.
    pub audience: Audience,
    /// The least severe severity the group hears about (`sev2`: sev1 and sev2).
    pub threshold: Severity,
    /// How often the group must hear something while the incident is open, per
    /// severity; a severity without an entry has no cadence.
    pub every: BTreeMap<Severity, TimeDelta>,
    /// The zone every time the group is shown is written in.
    pub tz: Tz,
    /// Which updates it receives.
    pub updates: UpdateFilter,
    /// Slack channel ids.
    pub slack_channels: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// Statuspage component id, when the group is the public status page.
    pub statuspage_component: Option<String>,
}

impl Group {
    /// Whether an incident of `severity` concerns the group.
    pub fn concerns(&self, severity: Severity) -> bool {
        severity <= self.threshold
    }

    /// Every destination of the group.
    pub fn recipients(&self) -> Vec<Recipient> {
        let slack = self
            .slack_channels
            .iter()
            .map(|c| Recipient::Slack { channel: c.clone() });
        let email = self
            .emails
            .iter()
            .map(|a| Recipient::Email { to: a.clone() });
        let page = self
            .statuspage_component
            .iter()
            .map(|c| Recipient::StatusPage {
                component: c.clone(),
            });
        slack.chain(email).chain(page).collect()
    }
}

/// Stakeholder rules (`[stakeholders]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StakeholderPolicy {
    /// The groups, in configuration order.
    pub groups: Vec<Group>,
    /// How long an external group's update waits after its preview is posted in the
    /// incident channel.
    pub preview_delay: TimeDelta,
    /// Words that make a declared incident a security incident (case-insensitive, in
    /// the title).
    pub security_keywords: Vec<String>,
    /// How long after declaration compliance/legal must be notified.
    pub regulatory_within: TimeDelta,
    /// How often the regulatory reminder repeats until acknowledged.
    pub regulatory_every: TimeDelta,
}

impl Default for StakeholderPolicy {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            preview_delay: TimeDelta::minutes(2),
            security_keywords: Vec::new(),
            regulatory_within: TimeDelta::hours(24),
            regulatory_every: TimeDelta::hours(1),
        }
    }
}

/// Where one notice goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Recipient {
    /// A Slack channel.
    Slack {
        /// Channel id.
        channel: String,
    },
    /// An email address.
    Email {
        /// Address.
        to: String,
    },
    /// The Statuspage incident for this Klaxon incident, and a component on it.
    StatusPage {
        /// Component id.
        component: String,
    },
}

impl Recipient {
    /// The lane family: each kind of destination has a lane of its own per group, so a
    /// mail server that is down never holds back the status page.
    pub fn via(&self) -> &'static str {
        match self {
            Recipient::Slack { .. } => "slack",
            Recipient::Email { .. } => "email",
            Recipient::StatusPage { .. } => "statuspage",
        }
    }
}

/// What a notice is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The incident was declared (internal groups).
    Declared,
    /// A status update.
    Update,
    /// The group's cadence passed with no update: "still investigating".
    StillInvestigating,
    /// Resolved: the all clear.
    AllClear,
}

/// One message to one group, as rendered at decision time (so a retry sends the same
/// words, in the same zone, whatever the config says by then).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Unique per incident and group: with the recipient, the identity of the message
    /// (email Message-ID, the Statuspage update it becomes).
    pub key: String,
    /// What it is about.
    pub kind: NoticeKind,
    /// Incident number.
    pub incident: IncidentId,
    /// Whether this is the redacted view.
    pub external: bool,
    /// Subject line (email) / incident name (Statuspage).
    pub subject: String,
    /// The message.
    pub body: String,
    /// Severity and status when written.
    pub severity: Severity,
    /// Status when written.
    pub status: Status,
    /// When it was written, in the group's zone (`Mon 23 Nov 2026 05:00 EST`).
    pub written_at: String,
    /// The promised next update, in the group's zone (`05:30 EST`).
    pub next_update_by: Option<String>,
}

impl Notice {
    /// Whether people wrote its words (an update, a resolution summary): for an
    /// external group those are previewed to the commander before they go out.
    pub fn is_previewed(&self) -> bool {
        matches!(self.kind, NoticeKind::Update | NoticeKind::AllClear)
    }
}

/// `HH:MM ZONE` in `tz`.
pub fn local_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%H:%M %Z").to_string()
}

pub(super) fn local_stamp(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%a %-d %b %Y %H:%M %Z")
        .to_string()
}

#[cfg(test)]
mod tests;
