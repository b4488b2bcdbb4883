//! Delivery of issue 11's rows: the declare offer under a message, the links between a
//! declared incident and its message, and App Home publishes.

use crate::domain::declare_offer::SourceMessage;
use crate::domain::declare_offer::offer_for;
use crate::domain::incident::IncidentId;
use crate::listen::home;
use crate::slack::render::offer::offer_message;

use super::{DeliveryError, OutboxWorker};

impl OutboxWorker {
    /// Fetches the message's text when the event did not carry it, then posts the offer
    /// in the message's thread. A message deleted meanwhile gets no offer (nothing to
    /// declare from), which is logged, not retried.
    pub(super) async fn deliver_offer(
        &self,
        source: SourceMessage,
        text: Option<String>,
    ) -> Result<(), DeliveryError> {
        let text = match text {
            Some(text) => text,
            None => {
                let fetched = self
                    .slack(
                        "conversations.history",
                        None,
                        self.outlets.slack.message(&source.channel, &source.ts),
                    )
                    .await?;
                let Some((text, _author)) = fetched else {
                    tracing::info!(channel = %source.channel, ts = %source.ts, "message reacted to is gone; no declare offer");
                    return Ok(());
                };
                text
            }
        };
        let thread = source.ts.clone();
        let channel = source.channel.clone();
        let offer = offer_for(source, &text);
        let (text, blocks) = offer_message(&offer);
        self.slack(
            "chat.postMessage",
            Some(&channel),
            self.outlets
                .slack
                .post_message(&channel, &text, &blocks, Some(&thread)),
        )
        .await?;
        Ok(())
    }

    /// Posts the message's link in the incident channel and the channel's in the
    /// message's thread. (A retry after the first post succeeded may repeat it.)
    pub(super) async fn deliver_source_link(
        &self,
        id: IncidentId,
        source: SourceMessage,
    ) -> Result<(), DeliveryError> {
        let incident = self
            .engine
            .store()
            .incident(id)
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))?
            .ok_or_else(|| DeliveryError::Permanent(format!("{id} does not exist")))?;
        let Some(channel) = incident.channel.as_ref() else {
            return Err(DeliveryError::Dependency(format!(
                "{id} has no channel: opening it failed (see #incident-response)"
            )));
        };
        let here = format!(
            "Declared from <{}|this message> in <#{}>.",
            source.permalink(),
            source.channel
        );
        let blocks =
            serde_json::json!([{ "type": "section", "text": { "type": "mrkdwn", "text": here } }]);
        self.slack(
            "chat.postMessage",
            Some(&channel.id),
            self.outlets
                .slack
                .post_message(&channel.id, &here, &blocks, None),
        )
        .await?;
        let there = format!("Declared as {id}: <#{}>", channel.id);
        let blocks =
            serde_json::json!([{ "type": "section", "text": { "type": "mrkdwn", "text": there } }]);
        self.slack(
            "chat.postMessage",
            Some(&source.channel),
            self.outlets
                .slack
                .post_message(&source.channel, &there, &blocks, Some(&source.ts)),
        )
        .await?;
        Ok(())
    }

    /// Renders `user`'s Home tab as it is now and publishes it.
    pub(super) async fn publish_home(&self, user: &str) -> Result<(), DeliveryError> {
        let view = home::render(&self.engine, user)
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))?;
        self.slack(
            "views.publish",
            None,
            self.outlets.slack.publish_home(user, &view),
        )
        .await
    }
}
