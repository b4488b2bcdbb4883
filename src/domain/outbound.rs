//! What Klaxon sends out, as stored in the outbox, and which delivery lane each row
//! belongs to.
//!
//! The engine writes these payloads and the outbox worker reads them; keeping the model
//! here (pure serde types, no I/O) lets both use it without importing each other.
//!
//! **Lanes.** Rows with the same ordering key form a lane: delivered one at a time, in id
//! order. Different lanes are delivered concurrently. The keys are chosen so that what
//! must be ordered shares a lane and what must not wait does not:
//! - `incident:N`: the incident channel: create it, then topic, invites, posts, in order;
//! - `announce:N`: the incident's posts in `#incident-response` (never held back by a
//!   channel creation that keeps failing);
//! - `notify:N`: escalation notices to the targets' own channels;
//! - `page:N`: PagerDuty pages (never behind Slack);
//! - `run:N`: a recovery run's preview and execution;
//! - anything else (replies, ephemerals) has a key of its own.

use serde::{Deserialize, Serialize};

use super::incident::{Destination, Effect, IncidentId};

/// A form Klaxon opens in Slack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "modal", rename_all = "snake_case")]
pub enum Modal {
    /// Declare an incident (severity + title). `channel` is where it was asked for.
    Declare {
        /// Channel the command came from.
        channel: String,
    },
    /// Ask for the resolution summary of an incident.
    Resolve {
        /// The incident.
        incident_id: IncidentId,
    },
    /// Declare an incident from a message in `#incident-response`, prefilled from it.
    DeclareFrom {
        /// The message and the prefill.
        offer: super::declare_offer::Offer,
    },
}

/// One outbox row's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outbound {
    /// An effect of an incident change.
    Incident {
        /// The incident.
        incident_id: IncidentId,
        /// What to do.
        effect: Effect,
    },
    /// Open a form (`views.open`). Forms are now opened inline by the HTTP handler (the
    /// trigger id expires 3 s after the command); rows of this kind written by older
    /// versions are still delivered.
    OpenModal {
        /// Slack's trigger id.
        trigger_id: String,
        /// Which form.
        modal: Modal,
    },
    /// Compute a recovery run's preview, then ask for approval (or run it at once when it
    /// needs none, or stop in dry-run mode).
    PrepareRun {
        /// Run number.
        run_id: i64,
    },
    /// Execute an approved run, once.
    ExecuteRun {
        /// Run number.
        run_id: i64,
    },
    /// A message only `user` sees (`chat.postEphemeral`), e.g. why a click was refused.
    Ephemeral {
        /// Channel id.
        channel: String,
        /// User id.
        user: String,
        /// Text (Slack mrkdwn).
        text: String,
    },
    /// Offer to declare an incident from message `source` in `#incident-response`: a
    /// "Declare incident" button in its thread, prefilled from its text (`text` when the
    /// event carried it, else fetched with `conversations.history`).
    DeclareOffer {
        /// The message.
        source: super::declare_offer::SourceMessage,
        /// Its text, when known (alert bots' `message` events carry it).
        text: Option<String>,
    },
    /// Links a declared incident and the message it was declared from: a post in the
    /// incident channel pointing at the message, a reply in the message's thread pointing
    /// at the incident. On the incident's lane, so its channel exists first.
    SourceLink {
        /// The incident.
        incident_id: IncidentId,
        /// The message.
        source: super::declare_offer::SourceMessage,
    },
    /// Publishes `user`'s App Home tab (`views.publish`) as it is when delivered.
    PublishHome {
        /// Slack user id.
        user: String,
    },
    /// Fetch a message someone marked with a note reaction and add it to the incident's
    /// timeline (a `reaction_added` event does not carry the text).
    CaptureNote {
        /// The incident.
        incident_id: IncidentId,
        /// Channel id.
        channel: String,
        /// The message's ts.
        ts: String,
        /// Who reacted.
        by: String,
        /// The emoji.
        emoji: String,
        /// Who wrote the message, as the event said.
        author: Option<String>,
    },
    /// Look the assignees of a PagerDuty trigger up in PagerDuty's REST API (`GET
    /// /users/{id}`, cached) for their emails, then hand them to the incident's channel
    /// lane as [`Outbound::InviteResponders`]. On `page:N:rest`: never behind Slack.
    PagerDutyUsers {
        /// The incident.
        incident_id: IncidentId,
        /// The PagerDuty users (references: id and name).
        users: Vec<super::pagerduty::Reference>,
    },
    /// Find PagerDuty responders in Slack (`users.lookupByEmail`), invite those found and
    /// list the others in the incident channel (never dropped). On `incident:N`, after the
    /// channel is opened.
    InviteResponders {
        /// The incident.
        incident_id: IncidentId,
        /// Who, with their emails when known.
        responders: Vec<super::pagerduty::Responder>,
    },
    /// A note on a PagerDuty incident (REST `POST /incidents/{id}/notes`) linking it to
    /// the Klaxon incident. On `page:N:rest`; skipped without a REST token.
    PagerDutyNote {
        /// The Klaxon incident.
        incident_id: IncidentId,
        /// The PagerDuty incident id.
        pd_incident: String,
    },
    /// Resolve a PagerDuty incident (REST `PUT /incidents/{id}`) because its Klaxon
    /// incident was resolved in Klaxon. On `page:N:rest`; skipped without a REST token or
    /// when `pagerduty.resolve_in_pagerduty` is off.
    PagerDutyResolve {
        /// The Klaxon incident.
        incident_id: IncidentId,
        /// The PagerDuty incident id.
        pd_incident: String,
    },
    /// A plain-text reply in a channel or thread (answers to @mentions, delivery notices).
    Reply {
        /// Channel id.
        channel: String,
        /// Thread to answer in.
        thread_ts: Option<String>,
        /// Text (Slack mrkdwn).
        text: String,
    },
}

impl Outbound {
    /// The stored JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("outbound payloads serialize")
    }
}

/// The lane of an incident's own channel.
pub fn incident_key(id: IncidentId) -> String {
    format!("incident:{}", id.0)
}

/// The lane of an incident's PagerDuty REST calls (user look-ups, notes, resolves): of the
/// page class, so they never wait behind Slack, but apart from the Events API pages, so a
/// REST call that keeps failing never holds a page back.
pub fn pagerduty_rest_key(id: IncidentId) -> String {
    format!("page:{}:rest", id.0)
}

/// The lane of an incident's announcements in `#incident-response`.
pub fn announce_key(id: IncidentId) -> String {
    format!("announce:{}", id.0)
}

/// The lane of the declare offer under one message.
pub fn offer_key(source: &super::declare_offer::SourceMessage) -> String {
    format!("offer:{}", source.offer_key())
}

/// The lane of one user's App Home: a publish in it renders the tab as it is then, so
/// one pending row stands for any number of changes (coalesced).
pub fn home_key(user: &str) -> String {
    format!("home:{user}")
}

/// The lane of a recovery run's jobs.
pub fn run_key(run_id: i64) -> String {
    format!("run:{run_id}")
}

/// The lane of an incident effect (see the module doc).
pub fn effect_key(id: IncidentId, effect: &Effect) -> String {
    match effect {
        Effect::Page { .. } => format!("page:{}", id.0),
        Effect::NotifyTarget { .. } => format!("notify:{}", id.0),
        Effect::Stakeholder { group, to, .. } => stakeholder_key(id, group, to),
        Effect::Post {
            destination: Destination::Announcements,
            ..
        } => announce_key(id),
        _ => incident_key(id),
    }
}

/// The lane of a stakeholder group's destinations of one kind for one incident: a mail
/// server that is down holds back only that group's email, never the status page or
/// another group (ordered within: an update never overtakes the previous one).
pub fn stakeholder_key(id: IncidentId, group: &str, to: &super::stakeholders::Recipient) -> String {
    format!("stakeholder:{group}:{}:{}", to.via(), id.0)
}

/// Which pool of delivery slots a lane draws from. Each class has its own slots, so a
/// slow Slack never holds back a page and a long execution never holds back a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LaneClass {
    /// Slack Web API calls.
    Slack,
    /// Announcements in `#incident-response` (`announce:N` lanes): one channel that takes
    /// one post per second, so its lanes are delivered together, one digest at a time
    /// (`outbox::digest`), instead of taking Slack slots that could only wait their turn.
    Announce,
    /// PagerDuty Events API.
    Page,
    /// Recovery command previews and executions (AWS, Kubernetes).
    Run,
    /// Stakeholder notices (email, Statuspage, stakeholder Slack channels): never
    /// behind the incident's own Slack traffic, and retried until delivered.
    Stakeholder,
}

impl LaneClass {
    /// Every class.
    pub const ALL: [LaneClass; 5] = [
        LaneClass::Slack,
        LaneClass::Announce,
        LaneClass::Page,
        LaneClass::Run,
        LaneClass::Stakeholder,
    ];

    /// The class of a lane, from its key.
    pub fn of(ordering_key: &str) -> LaneClass {
        if ordering_key.starts_with("page:") {
            LaneClass::Page
        } else if ordering_key.starts_with("run:") {
            LaneClass::Run
        } else if ordering_key.starts_with("announce:") {
            LaneClass::Announce
        } else if ordering_key.starts_with("stakeholder:") {
            LaneClass::Stakeholder
        } else {
            LaneClass::Slack
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LaneClass::Slack => "slack",
            LaneClass::Announce => "announce",
            LaneClass::Page => "page",
            LaneClass::Run => "run",
            LaneClass::Stakeholder => "stakeholder",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::PageAction;
    use crate::domain::message::Message;

    #[test]
    fn pages_announcements_and_notices_have_lanes_of_their_own() {
        let id = IncidentId(7);
        let page = Effect::Page {
            action: PageAction::Trigger,
            target: "team".into(),
            dedup_key: "k".into(),
            summary: "s".into(),
            severity: "critical".into(),
        };
        let announce = Effect::Post {
            destination: Destination::Announcements,
            message: Message::paragraph(vec![]),
        };
        let post = Effect::Post {
            destination: Destination::IncidentChannel,
            message: Message::paragraph(vec![]),
        };
        let topic = Effect::SetTopic { topic: "t".into() };
        assert_eq!(effect_key(id, &page), "page:7");
        assert_eq!(effect_key(id, &announce), "announce:7");
        assert_eq!(effect_key(id, &post), "incident:7");
        assert_eq!(effect_key(id, &topic), "incident:7");
        assert_eq!(LaneClass::of("page:7"), LaneClass::Page);
        assert_eq!(LaneClass::of(&pagerduty_rest_key(id)), LaneClass::Page);
        assert_eq!(LaneClass::of(&run_key(3)), LaneClass::Run);
        assert_eq!(LaneClass::of("announce:7"), LaneClass::Announce);
        assert_eq!(LaneClass::of("modal:abc"), LaneClass::Slack);
        let mail = Effect::Stakeholder {
            group: "customers".into(),
            to: crate::domain::stakeholders::Recipient::Email {
                to: "a@example.com".into(),
            },
            notice: crate::domain::stakeholders::Notice {
                key: "update-1".into(),
                kind: crate::domain::stakeholders::NoticeKind::Update,
                incident: id,
                external: true,
                subject: "s".into(),
                body: "b".into(),
                severity: crate::domain::severity::Severity::Sev1,
                status: crate::domain::incident::Status::Investigating,
                written_at: "w".into(),
                next_update_by: None,
            },
        };
        assert_eq!(effect_key(id, &mail), "stakeholder:customers:email:7");
        assert_eq!(
            LaneClass::of("stakeholder:customers:email:7"),
            LaneClass::Stakeholder
        );
    }

    #[test]
    fn payloads_round_trip() {
        let o = Outbound::OpenModal {
            trigger_id: "t".into(),
            modal: Modal::Resolve {
                incident_id: IncidentId(3),
            },
        };
        assert_eq!(serde_json::from_str::<Outbound>(&o.to_json()).unwrap(), o);
    }
}
