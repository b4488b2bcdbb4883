//! The "Declare incident" offer under a message in `#incident-response`.
//!
//! 1. [`record`]: the reaction or alert event is recorded (its `event_id`, and the message
//!    itself, so a second reaction does not make a second offer) with one outbox row,
//!    `DeclareOffer`, in one transaction.
//! 2. The outbox fetches the message's text when the event did not carry it
//!    (`conversations.history`) and posts the offer (`slack::render::offer::offer_message`)
//!    in its thread.
//! 3. The button opens the declare form ([`open_form`]: `views.open`, from the click
//!    handler, inside the trigger's 3 s), prefilled; the form's metadata names the message.
//! 4. On submission the incident is declared and [`link`] queues `SourceLink` on the
//!    incident's lane: the incident channel gets the message's link, the message's
//!    thread gets the channel's.
//!
//! The views themselves are in `slack::render::offer`; what the form is prefilled with is
//! decided in `domain::declare_offer`.

use crate::domain::declare_offer::{Offer, SourceMessage};
use crate::domain::incident::IncidentId;
use crate::domain::outbound::{Modal, Outbound, incident_key, offer_key};
use crate::engine::{Engine, EngineError, RequestMeta};
use crate::slack::SlackApi;

/// Dedupe source for "this message already has an offer".
const OFFER_SOURCE: &str = "declare-offer";

/// Records event `event_id` and, unless message `source` already has one, queues its
/// offer, in one transaction.
pub async fn record(
    engine: &Engine,
    event_id: &str,
    source: SourceMessage,
    text: Option<String>,
) -> Result<(), EngineError> {
    let now = engine.now();
    let mut tx = engine.store().begin().await?;
    if !tx.record_inbound(super::SOURCE, event_id, now).await? {
        return Err(EngineError::Duplicate);
    }
    if tx
        .record_inbound(OFFER_SOURCE, &source.offer_key(), now)
        .await?
    {
        let row = Outbound::DeclareOffer {
            source: source.clone(),
            text,
        };
        tx.enqueue(&offer_key(&source), None, &row.to_json(), now)
            .await?;
    } else {
        tracing::debug!(channel = %source.channel, ts = %source.ts, "message already has a declare offer");
    }
    let committed = tx.commit().await?;
    engine.woke(committed);
    Ok(())
}

/// The button was pressed: open the prefilled form. Answers what to tell the clicker
/// when it cannot open (a stale trigger, a mangled button).
pub async fn open_form(
    slack: &dyn SlackApi,
    value: &str,
    trigger_id: Option<&str>,
) -> Option<String> {
    let Ok(offer) = serde_json::from_str::<Offer>(value) else {
        return Some("That button does not describe a message; react to the message again.".into());
    };
    let Some(trigger) = trigger_id.filter(|t| !t.is_empty()) else {
        return Some(
            "Slack sent no trigger id, so the form cannot open; use `/incident declare`.".into(),
        );
    };
    let view = crate::slack::render::modal(&Modal::DeclareFrom { offer });
    match slack.open_view(trigger, &view).await {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not open the declare form from an offer");
            Some(format!(
                "Slack would not open the form ({e}); try again, or use `/incident declare`."
            ))
        }
    }
}

/// Queues the links between incident `id` and the message it was declared from.
pub async fn link(
    engine: &Engine,
    meta: &RequestMeta,
    id: IncidentId,
    source: SourceMessage,
) -> Result<(), EngineError> {
    let row = Outbound::SourceLink {
        incident_id: id,
        source,
    };
    engine.send(meta, &incident_key(id), row).await
}
