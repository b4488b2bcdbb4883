//! Delivery of one outbox payload through the Slack Web API.

use crate::domain::channel_name;
use crate::domain::incident::{
    Actor, Change, Destination, Effect, Incident, IncidentChannel, IncidentId,
};
use crate::engine::{EngineError, RequestMeta};
use crate::paging::PageEvent;
use crate::slack::{ChannelInfo, SlackError, render};
use crate::store::OutboxRow;

use super::{DeliveryError, Outbound, OutboxWorker};

/// How many `-N` suffixes to try before giving up on a channel name.
const MAX_NAME_SUFFIX: u32 = 20;

impl OutboxWorker {
    pub(super) async fn deliver(&self, row: &OutboxRow) -> Result<(), DeliveryError> {
        let outbound: Outbound = serde_json::from_str(&row.payload)
            .map_err(|e| DeliveryError::Permanent(format!("undecodable payload: {e}")))?;
        match outbound {
            Outbound::Incident {
                incident_id,
                effect,
            } => self.deliver_effect(row, incident_id, effect).await,
            Outbound::OpenModal { trigger_id, modal } => Ok(self
                .outlets
                .slack
                .open_view(&trigger_id, &render::modal(&modal))
                .await?),
            Outbound::PrepareRun { run_id } => self.prepare_run(run_id).await,
            Outbound::ExecuteRun { run_id } => self.execute_run(run_id).await,
            Outbound::Ephemeral {
                channel,
                user,
                text,
            } => Ok(self
                .outlets
                .slack
                .post_ephemeral(&channel, &user, &text)
                .await?),
            Outbound::Reply {
                channel,
                thread_ts,
                text,
            } => {
                let blocks = serde_json::json!([{ "type": "section", "text": { "type": "mrkdwn", "text": text } }]);
                self.outlets
                    .slack
                    .post_message(&channel, &text, &blocks, thread_ts.as_deref())
                    .await?;
                Ok(())
            }
        }
    }

    async fn incident(&self, id: IncidentId) -> Result<Incident, DeliveryError> {
        self.engine
            .store()
            .incident(id)
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))?
            .ok_or_else(|| DeliveryError::Permanent(format!("{id} does not exist")))
    }

    fn channel_of(incident: &Incident) -> Result<&IncidentChannel, DeliveryError> {
        // Rows of one incident are delivered in order, so the channel exists unless opening
        // it failed; then this row waits (and fails after MAX_ATTEMPTS) rather than vanish.
        incident
            .channel
            .as_ref()
            .ok_or_else(|| DeliveryError::Internal(format!("{} has no channel yet", incident.id)))
    }

    async fn deliver_effect(
        &self,
        row: &OutboxRow,
        id: IncidentId,
        effect: Effect,
    ) -> Result<(), DeliveryError> {
        let incident = self.incident(id).await?;
        match effect {
            Effect::OpenIncidentChannel {
                name,
                purpose,
                invite,
            } => {
                if incident.channel.is_some() {
                    // Delivered before, and recorded: a repeat after a crash.
                    return Ok(());
                }
                let channel = self.open_channel(&incident, &name, &purpose).await?;
                self.invite(&channel.id, &invite).await?;
                let meta = RequestMeta {
                    actor: Actor::Klaxon,
                    request_id: format!("outbox-{}", row.id),
                    dedupe: None,
                };
                let opened = IncidentChannel {
                    id: channel.id,
                    name: channel.name,
                };
                match self
                    .engine
                    .change(&meta, id, Change::ChannelOpened(opened))
                    .await
                {
                    Ok(_) | Err(EngineError::Refused(_)) => Ok(()),
                    Err(e) => Err(DeliveryError::Internal(e.to_string())),
                }
            }
            Effect::SetTopic { topic } => {
                let channel = Self::channel_of(&incident)?;
                Ok(self.outlets.slack.set_topic(&channel.id, &topic).await?)
            }
            Effect::Invite { users } => {
                let channel = Self::channel_of(&incident)?;
                self.invite(&channel.id, &users).await
            }
            Effect::Page {
                action,
                target,
                dedup_key,
                summary,
                severity,
            } => {
                let Some(key) = self
                    .outlets
                    .targets
                    .get(&target)
                    .and_then(|t| t.routing_key.as_ref())
                else {
                    tracing::info!(incident = %id, %target, "escalation target has no PagerDuty routing key; not paged");
                    return Ok(());
                };
                let event = PageEvent {
                    action,
                    dedup_key: &dedup_key,
                    summary: &summary,
                    severity: &severity,
                };
                Ok(self.outlets.pagerduty.send(key, &event).await?)
            }
            Effect::NotifyTarget { target, message } => {
                let Some(config) = self.outlets.targets.get(&target) else {
                    // Config validation ties ladders to targets; a row queued before the
                    // target was removed from the config has nowhere to go.
                    tracing::warn!(incident = %id, %target, "escalation target no longer configured; nobody notified");
                    return Ok(());
                };
                let incident_channel = incident.channel.as_ref().map(|c| c.id.as_str());
                let (text, blocks) = render::message(&message, incident_channel);
                let groups: String = config
                    .slack_usergroups
                    .iter()
                    .map(|g| format!("<!subteam^{g}> "))
                    .collect();
                let text = format!("{groups}{text}");
                let mut blocks = blocks;
                if !groups.is_empty()
                    && let Some(list) = blocks.as_array_mut()
                {
                    list.insert(0, serde_json::json!({ "type": "section", "text": { "type": "mrkdwn", "text": groups.trim_end() } }));
                }
                // One row posts to every channel of the target; a retry after a partial
                // failure may repeat a post in the channels that already got it.
                for channel in &config.slack_channels {
                    self.outlets
                        .slack
                        .post_message(channel, &text, &blocks, None)
                        .await?;
                }
                Ok(())
            }
            Effect::Post {
                destination,
                message,
            } => {
                let channel_id = match destination {
                    Destination::IncidentChannel => Self::channel_of(&incident)?.id.clone(),
                    Destination::Announcements => self.outlets.announce_channel.clone(),
                };
                let incident_channel = incident.channel.as_ref().map(|c| c.id.as_str());
                let (text, blocks) = render::message(&message, incident_channel);
                self.outlets
                    .slack
                    .post_message(&channel_id, &text, &blocks, None)
                    .await?;
                Ok(())
            }
        }
    }

    async fn bot_user_id(&self) -> Result<&str, DeliveryError> {
        Ok(self
            .bot_user_id
            .get_or_try_init(|| self.outlets.slack.bot_user_id())
            .await?
            .as_str())
    }

    async fn invite(&self, channel: &str, users: &[String]) -> Result<(), DeliveryError> {
        let bot = self.bot_user_id().await?;
        let users: Vec<String> = users
            .iter()
            .filter(|u| u.as_str() != bot)
            .cloned()
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Ok(self.outlets.slack.invite(channel, &users).await?)
    }

    /// Creates the incident channel, trying `-2`, `-3`... when the name is taken, but
    /// adopting a channel that Klaxon itself created for this incident on an earlier try
    /// (creator is the bot and the purpose names the incident): a retry after a crash
    /// between Slack's answer and our commit must not open a second channel.
    async fn open_channel(
        &self,
        incident: &Incident,
        planned: &str,
        purpose: &str,
    ) -> Result<ChannelInfo, DeliveryError> {
        let bot = self.bot_user_id().await?.to_string();
        let marker = format!("Klaxon incident {}:", incident.id);
        for n in 1..=MAX_NAME_SUFFIX {
            let name = if n == 1 {
                planned.to_string()
            } else {
                channel_name::with_suffix(planned, n)
            };
            match self.outlets.slack.create_channel(&name).await {
                Ok(channel) => {
                    self.outlets.slack.set_purpose(&channel.id, purpose).await?;
                    return Ok(channel);
                }
                Err(SlackError::Api { code }) if code == "name_taken" => {
                    // An empty purpose is a channel whose purpose call never happened (a
                    // crash right after creation); only the bot creates such channels.
                    if let Some(existing) = self.outlets.slack.find_channel_by_name(&name).await?
                        && existing.creator.as_deref() == Some(bot.as_str())
                        && (existing.purpose.starts_with(&marker) || existing.purpose.is_empty())
                    {
                        tracing::info!(incident = %incident.id, channel = %existing.id, "adopting the channel created on an earlier attempt");
                        if existing.purpose.is_empty() {
                            self.outlets
                                .slack
                                .set_purpose(&existing.id, purpose)
                                .await?;
                        }
                        return Ok(existing);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(DeliveryError::Permanent(format!(
            "every name from {planned} to {planned}-{MAX_NAME_SUFFIX} is taken"
        )))
    }
}
