//! Delivery of one outbox payload through the Slack Web API (or PagerDuty, or the
//! recovery executors), each Slack call paced and under a timeout.

use std::future::Future;

use crate::domain::channel_name;
use crate::domain::incident::{
    Actor, Change, Destination, Effect, Incident, IncidentChannel, IncidentId,
};
use crate::engine::{EngineError, RequestMeta};
use crate::paging::PageEvent;
use crate::slack::{ChannelInfo, SlackError, render};
use crate::store::OutboxRow;

use super::pacing::Grant;
use super::{DeliveryError, Outbound, OutboxWorker};

/// How many `-N` suffixes to try before giving up on a channel name.
const MAX_NAME_SUFFIX: u32 = 20;

impl OutboxWorker {
    /// One Slack Web API call: paced (a short wait is slept through, a longer one defers
    /// the row), under the call timeout, and a 429 pauses `method` (or the channel, for
    /// posts) for everyone in this process.
    pub(super) async fn slack<T>(
        &self,
        method: &'static str,
        channel: Option<&str>,
        call: impl Future<Output = Result<T, SlackError>>,
    ) -> Result<T, DeliveryError> {
        let inline_wait = self.inline_wait.unwrap_or(self.settings.pacing.inline_wait);
        let asked = self.clock.now();
        let slot =
            match self
                .pacer
                .acquire_within(method, channel, self.delivering, asked, inline_wait)
            {
                Grant::Go(wait) if !wait.is_zero() => {
                    tokio::time::sleep(wait).await;
                    asked + chrono::TimeDelta::from_std(wait).unwrap_or_default()
                }
                Grant::Go(_) => asked,
                Grant::Defer(wait) => return Err(DeliveryError::Deferred(wait)),
            };
        let limit = self.settings.call_timeout;
        let answer = tokio::time::timeout(limit, call).await;
        if matches!(answer, Ok(Ok(_))) {
            self.pacer.answered(method, channel, self.clock.now());
        }
        match answer {
            Err(_) => Err(DeliveryError::TimedOut(method, limit)),
            Ok(Err(SlackError::RateLimited { retry_after })) => {
                let wait = retry_after.unwrap_or(super::DEFAULT_RETRY_AFTER);
                let now = self.clock.now();
                let until =
                    now + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::MAX);
                self.pacer.pause(method, channel, until, now);
                Err(SlackError::RateLimited { retry_after }.into())
            }
            Ok(Err(e @ SlackError::Unavailable(_))) => {
                self.pacer.not_taken(method, channel, slot);
                Err(e.into())
            }
            Ok(result) => Ok(result?),
        }
    }

    pub(super) async fn deliver(&self, row: &OutboxRow) -> Result<(), DeliveryError> {
        let outbound: Outbound = serde_json::from_str(&row.payload)
            .map_err(|e| DeliveryError::Permanent(format!("undecodable payload: {e}")))?;
        match outbound {
            Outbound::Incident {
                incident_id,
                effect,
            } => self.deliver_effect(row, incident_id, effect).await,
            Outbound::OpenModal { trigger_id, modal } => {
                let view = render::modal(&modal);
                self.slack(
                    "views.open",
                    None,
                    self.outlets.slack.open_view(&trigger_id, &view),
                )
                .await
            }
            Outbound::PrepareRun { run_id } => self.prepare_run(run_id).await,
            capture @ Outbound::CaptureNote { .. } => self.capture_note(row, capture).await,
            Outbound::ExecuteRun { run_id } => self.execute_run(run_id).await,
            Outbound::DeclareOffer { source, text } => self.deliver_offer(source, text).await,
            Outbound::SourceLink {
                incident_id,
                source,
            } => self.deliver_source_link(incident_id, source).await,
            Outbound::PublishHome { user } => self.publish_home(&user).await,
            Outbound::Ephemeral {
                channel,
                user,
                text,
            } => {
                self.slack(
                    "chat.postEphemeral",
                    Some(&channel),
                    self.outlets.slack.post_ephemeral(&channel, &user, &text),
                )
                .await
            }
            Outbound::PagerDutyUsers { incident_id, users } => {
                self.pagerduty_users(row, incident_id, users).await
            }
            Outbound::InviteResponders {
                incident_id,
                responders,
            } => self.invite_responders(incident_id, responders).await,
            Outbound::PagerDutyNote {
                incident_id,
                pd_incident,
            } => self.pagerduty_note(incident_id, &pd_incident).await,
            Outbound::PagerDutyResolve {
                incident_id,
                pd_incident,
            } => self.pagerduty_resolve(incident_id, &pd_incident).await,
            Outbound::Reply {
                channel,
                thread_ts,
                text,
            } => {
                let blocks = serde_json::json!([{ "type": "section", "text": { "type": "mrkdwn", "text": text } }]);
                self.post_once(&channel, &text, &blocks, thread_ts.as_deref())
                    .await?;
                Ok(())
            }
        }
    }

    /// The incident `id`: the first look takes the copy read right after this row's
    /// claim (milliseconds old, as a read at the start of the delivery would be); later
    /// looks read the store, since the delivery itself may have changed it.
    pub(super) async fn incident(&self, id: IncidentId) -> Result<Incident, DeliveryError> {
        let prefetched = self
            .prefetched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take_if(|incident| incident.id == id);
        if let Some(incident) = prefetched {
            return Ok(incident);
        }
        self.engine
            .store()
            .incident(id)
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))?
            .ok_or_else(|| DeliveryError::Permanent(format!("{id} does not exist")))
    }

    pub(super) fn channel_of(incident: &Incident) -> Result<&IncidentChannel, DeliveryError> {
        // The channel's own lane opens it before anything else in that lane, so a later row
        // that finds no channel means opening it failed for good (and was reported): this
        // row fails at once instead of blocking the lane through every retry.
        incident.channel.as_ref().ok_or_else(|| {
            DeliveryError::Dependency(format!(
                "{} has no channel: opening it failed (see #incident-response)",
                incident.id
            ))
        })
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
                self.slack(
                    "conversations.setTopic",
                    Some(&channel.id),
                    self.outlets.slack.set_topic(&channel.id, &topic),
                )
                .await
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
                // Unique to this installation (see `installation_dedup_key`).
                let dedup_key = crate::domain::pagerduty::installation_dedup_key(
                    self.install_id().await?,
                    &dedup_key,
                );
                let event = PageEvent {
                    action,
                    dedup_key: &dedup_key,
                    summary: &summary,
                    severity: &severity,
                };
                Ok(self.outlets.pagerduty.send(key, &event).await?)
            }
            Effect::UploadPostmortem { postmortem_id } => {
                self.upload_postmortem(id, postmortem_id).await
            }
            Effect::Stakeholder { group, to, notice } => {
                self.deliver_stakeholder(row, &group, &to, &notice).await
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
                // failure finds its post in the channels that already got it.
                for channel in &config.slack_channels {
                    self.post_once(channel, &text, &blocks, None).await?;
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
                self.post_once(&channel_id, &text, &blocks, None).await?;
                Ok(())
            }
        }
    }

    async fn set_purpose(&self, channel: &str, purpose: &str) -> Result<(), DeliveryError> {
        self.slack(
            "conversations.setPurpose",
            Some(channel),
            self.outlets.slack.set_purpose(channel, purpose),
        )
        .await
    }

    async fn bot_user_id(&self) -> Result<&str, DeliveryError> {
        self.bot_user_id
            .get_or_try_init(|| self.slack("auth.test", None, self.outlets.slack.bot_user_id()))
            .await
            .map(String::as_str)
    }

    pub(super) async fn invite(
        &self,
        channel: &str,
        users: &[String],
    ) -> Result<(), DeliveryError> {
        let bot = self.bot_user_id().await?;
        let users: Vec<String> = users
            .iter()
            .filter(|u| u.as_str() != bot)
            .cloned()
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        self.slack(
            "conversations.invite",
            Some(channel),
            self.outlets.slack.invite(channel, &users),
        )
        .await
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
            let created = self
                .slack(
                    "conversations.create",
                    None,
                    self.outlets.slack.create_channel(&name),
                )
                .await;
            match created {
                Ok(channel) => {
                    self.set_purpose(&channel.id, purpose).await?;
                    return Ok(channel);
                }
                Err(DeliveryError::Slack(SlackError::Api { code })) if code == "name_taken" => {
                    // An empty purpose is a channel whose purpose call never happened (a
                    // crash right after creation); only the bot creates such channels.
                    let found = self
                        .slack(
                            "conversations.list",
                            None,
                            self.outlets.slack.find_channel_by_name(&name),
                        )
                        .await?;
                    if let Some(existing) = found
                        && existing.creator.as_deref() == Some(bot.as_str())
                        && (existing.purpose.starts_with(&marker) || existing.purpose.is_empty())
                    {
                        tracing::info!(incident = %incident.id, channel = %existing.id, "adopting the channel created on an earlier attempt");
                        if existing.purpose.is_empty() {
                            self.set_purpose(&existing.id, purpose).await?;
                        }
                        return Ok(existing);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(DeliveryError::Permanent(format!(
            "every name from {planned} to {planned}-{MAX_NAME_SUFFIX} is taken"
        )))
    }

    /// Says in `#incident-response` that a row failed for good, so a failure that holds
    /// up an incident (its channel could not be opened, a page was rejected) is seen by
    /// people and not only in the logs. Notices have a lane of their own and a failed
    /// notice is not itself noticed.
    pub(super) async fn tell_failure(&self, row: &OutboxRow, error: &str) {
        if row.ordering_key == NOTICE_KEY || self.outlets.announce_channel.is_empty() {
            return;
        }
        let what = match serde_json::from_str::<Outbound>(&row.payload) {
            Ok(Outbound::Incident {
                incident_id,
                effect,
            }) => format!("{} for {incident_id}", effect_name(&effect)),
            Ok(Outbound::PrepareRun { run_id }) => format!("the preview of run #{run_id}"),
            Ok(Outbound::ExecuteRun { run_id }) => format!("the execution of run #{run_id}"),
            Ok(Outbound::OpenModal { .. }) => "a form".to_string(),
            Ok(Outbound::DeclareOffer { .. }) => "a declare offer".to_string(),
            Ok(Outbound::SourceLink { incident_id, .. }) => {
                format!("the link to the message {incident_id} was declared from")
            }
            Ok(Outbound::PublishHome { .. }) => "an App Home tab".to_string(),
            Ok(Outbound::CaptureNote { incident_id, .. }) => {
                format!("a message marked for the timeline of {incident_id}")
            }
            Ok(Outbound::Ephemeral { .. } | Outbound::Reply { .. }) => "a reply".to_string(),
            Ok(Outbound::PagerDutyUsers { incident_id, .. }) => {
                format!("the PagerDuty user look-up of {incident_id}")
            }
            Ok(Outbound::InviteResponders { incident_id, .. }) => {
                format!("the PagerDuty responders of {incident_id}")
            }
            Ok(Outbound::PagerDutyNote {
                incident_id,
                pd_incident,
            }) => format!("the note on PagerDuty incident {pd_incident} for {incident_id}"),
            Ok(Outbound::PagerDutyResolve {
                incident_id,
                pd_incident,
            }) => format!("the resolve of PagerDuty incident {pd_incident} for {incident_id}"),
            Err(_) => "an unreadable outbox row".to_string(),
        };
        let blocked = if matches!(
            serde_json::from_str::<Outbound>(&row.payload),
            Ok(Outbound::Incident {
                effect: Effect::OpenIncidentChannel { .. },
                ..
            })
        ) {
            " Messages meant for that channel will not be posted; the incident's announcements and pages still go out."
        } else {
            ""
        };
        let text = format!(
            ":warning: Klaxon could not deliver {what} (outbox row {}): {error}.{blocked}",
            row.id
        );
        let meta = RequestMeta {
            actor: Actor::Klaxon,
            request_id: format!("outbox-{}", row.id),
            dedupe: None,
        };
        let notice = Outbound::Reply {
            channel: self.outlets.announce_channel.clone(),
            thread_ts: None,
            text,
        };
        if let Err(e) = self.engine.send(&meta, NOTICE_KEY, notice).await {
            tracing::error!(outbox_id = row.id, error = %e, "could not queue the delivery-failure notice");
        }
    }
}

/// The lane of delivery-failure notices.
const NOTICE_KEY: &str = "notice";

/// What an effect does, in words.
fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::OpenIncidentChannel { .. } => "the incident channel",
        Effect::SetTopic { .. } => "the channel topic",
        Effect::Invite { .. } => "an invitation",
        Effect::Post { .. } => "a message",
        Effect::Page { .. } => "a PagerDuty page",
        Effect::NotifyTarget { .. } => "an escalation notice",
        Effect::UploadPostmortem { .. } => "the post-mortem draft",
        Effect::Stakeholder { .. } => "a stakeholder notice",
    }
}
