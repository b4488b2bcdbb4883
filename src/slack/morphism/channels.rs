//! The channel calls (`conversations.create`, `.list`, `.setPurpose`, `.setTopic`,
//! `.invite`), as inherent methods of the slack-morphism backend; the
//! [`SlackApi`](crate::slack::SlackApi) impl in the parent delegates to them. Opening an
//! incident channel is these calls, so their quirks (paging through the list, Slack's
//! all-or-nothing `already_in_channel`) are kept together.

use serde::Serialize;
use slack_morphism::prelude::*;

use super::Backend;
use crate::slack::{ChannelInfo, SlackError};

/// Channels asked for per `conversations.list` page (Slack's recommended maximum is 200).
const LIST_PAGE_SIZE: u16 = 200;

/// Give up on `conversations.list` after this many pages (200 000 channels): a cursor that
/// never ends must not spin forever.
const LIST_MAX_PAGES: usize = 1_000;

/// `conversations.invite` body with `users` as Slack documents it: comma-separated ids.
#[derive(Serialize)]
struct InviteRequest<'a> {
    channel: &'a str,
    users: String,
}

impl<C> Backend<C>
where
    C: SlackClientHttpConnector + Send + Sync + 'static,
{
    pub(super) async fn create_channel_call(&self, name: &str) -> Result<ChannelInfo, SlackError> {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let request =
            SlackApiConversationsCreateRequest::new(name.to_owned()).with_is_private(false);
        let answer = session
            .conversations_create(&request)
            .await
            .map_err(|e| self.map_error("conversations.create", e))?;
        Ok(channel_info(answer.channel))
    }

    pub(super) async fn find_channel_by_name_call(
        &self,
        name: &str,
    ) -> Result<Option<ChannelInfo>, SlackError> {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let mut cursor: Option<SlackCursorId> = None;
        for _ in 0..LIST_MAX_PAGES {
            let request = SlackApiConversationsListRequest::new()
                .with_types(vec![SlackConversationType::Public])
                .with_exclude_archived(true)
                .with_limit(LIST_PAGE_SIZE)
                .opt_cursor(cursor.take());
            let page = session
                .conversations_list(&request)
                .await
                .map_err(|e| self.map_error("conversations.list", e))?;
            if let Some(found) = page
                .channels
                .into_iter()
                .find(|c| c.name.as_deref() == Some(name))
            {
                return Ok(Some(channel_info(found)));
            }
            match page.response_metadata.and_then(|m| m.next_cursor) {
                Some(next) if !next.0.is_empty() => cursor = Some(next),
                _ => return Ok(None),
            }
        }
        Err(SlackError::Transport(format!(
            "conversations.list: no last page after {LIST_MAX_PAGES} pages"
        )))
    }

    pub(super) async fn set_purpose_call(
        &self,
        channel: &str,
        purpose: &str,
    ) -> Result<(), SlackError> {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let request =
            SlackApiConversationsSetPurposeRequest::new(channel.into(), purpose.to_owned());
        session
            .conversations_set_purpose(&request)
            .await
            .map(drop)
            .map_err(|e| self.map_error("conversations.setPurpose", e))
    }

    pub(super) async fn set_topic_call(
        &self,
        channel: &str,
        topic: &str,
    ) -> Result<(), SlackError> {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let request = SlackApiConversationsSetTopicRequest::new(channel.into(), topic.to_owned());
        session
            .conversations_set_topic(&request)
            .await
            .map(drop)
            .map_err(|e| self.map_error("conversations.setTopic", e))
    }

    /// Slack fails the whole call with `already_in_channel` when a listed user is already a
    /// member; on that answer the users are retried one by one, ignoring the same answer.
    pub(super) async fn invite_call(
        &self,
        channel: &str,
        users: &[String],
    ) -> Result<(), SlackError> {
        let mut unique: Vec<&str> = Vec::with_capacity(users.len());
        for user in users {
            if !unique.contains(&user.as_str()) {
                unique.push(user);
            }
        }
        if unique.is_empty() {
            return Ok(());
        }
        let result = self.invite_once(channel, unique.join(",")).await;
        if !is_already_in_channel(&result) {
            return result;
        }
        if unique.len() > 1 {
            for user in unique {
                let result = self.invite_once(channel, user.to_owned()).await;
                if !is_already_in_channel(&result) {
                    result?;
                }
            }
        }
        Ok(())
    }

    async fn invite_once(&self, channel: &str, users: String) -> Result<(), SlackError> {
        self.post_for_ok(
            "conversations.invite",
            &InviteRequest { channel, users },
            &SLACK_TIER3_METHOD_CONFIG,
        )
        .await
    }
}

fn channel_info(channel: SlackChannelInfo) -> ChannelInfo {
    ChannelInfo {
        id: channel.id.0,
        name: channel.name.unwrap_or_default(),
        creator: channel.creator.map(|u| u.0),
        purpose: channel.purpose.map(|p| p.value).unwrap_or_default(),
    }
}

fn is_already_in_channel(result: &Result<(), SlackError>) -> bool {
    matches!(result, Err(e) if e.code() == Some("already_in_channel"))
}
