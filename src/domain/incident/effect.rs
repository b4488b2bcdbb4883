//! What a decision sends: [`Effect`]s, written to the outbox in the same transaction as
//! the change that caused them, with where a post goes ([`Destination`]) and how a page
//! is keyed and graded for PagerDuty.

use serde::{Deserialize, Serialize};

use crate::domain::message::Message;
use crate::domain::severity::Severity;

use super::*;

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Destination {
    /// The incident's own channel (looked up at delivery).
    IncidentChannel,
    /// The announcement channel (`#incident-response`), as configured at delivery.
    Announcements,
}

/// PagerDuty Events API v2 `event_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageAction {
    /// Open (or re-notify) the alert.
    Trigger,
    /// Close it.
    Resolve,
}

/// Something to do outside Klaxon, written to the outbox in the same transaction as the
/// change that caused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Create the incident channel (adopting one Klaxon itself created on an earlier try),
    /// set its purpose, invite people, then record `ChannelOpened`.
    OpenIncidentChannel {
        /// Planned name.
        name: String,
        /// Channel purpose; names the incident so a retry can recognise the channel.
        purpose: String,
        /// Users to invite.
        invite: Vec<String>,
    },
    /// Set the incident channel's topic.
    SetTopic {
        /// Topic text (plain, no spans: Slack topics do not render rich text reliably).
        topic: String,
    },
    /// Invite users into the incident channel.
    Invite {
        /// User ids.
        users: Vec<String>,
    },
    /// Post a message.
    Post {
        /// Where.
        destination: Destination,
        /// What.
        message: Message,
    },
    /// Page an escalation target through PagerDuty (its routing key comes from config at
    /// delivery; a target without one is skipped).
    Page {
        /// Trigger or resolve.
        action: PageAction,
        /// Escalation target name.
        target: String,
        /// Unique per incident and step; PagerDuty dedupes retries on it.
        dedup_key: String,
        /// Alert summary (<= 1024 chars).
        summary: String,
        /// `critical`, `error`, `warning` or `info`.
        severity: String,
    },
    /// Tell an escalation target's Slack channels and user groups (from config).
    NotifyTarget {
        /// Target name.
        target: String,
        /// What to post.
        message: Message,
    },
    /// Upload a stored post-mortem draft to the incident channel (Slack's external
    /// upload flow; see `outbox::upload`).
    UploadPostmortem {
        /// Stored draft id.
        postmortem_id: i64,
    },
    /// Send a stakeholder group's notice to one of its destinations (email, Statuspage,
    /// a Slack channel); lane `stakeholder:<group>:<via>:N`.
    Stakeholder {
        /// Group name.
        group: String,
        /// Destination.
        to: crate::domain::stakeholders::Recipient,
        /// What, rendered for this group.
        notice: crate::domain::stakeholders::Notice,
    },
}

/// PagerDuty dedup key of an escalation target's page for one incident.
pub fn dedup_key(id: IncidentId, target: &str) -> String {
    format!("klaxon-{}-{target}", id.0)
}

/// PagerDuty payload severity for an incident severity.
pub fn page_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Sev1 => "critical",
        Severity::Sev2 => "error",
        Severity::Sev3 => "warning",
        Severity::Sev4 => "info",
    }
}
