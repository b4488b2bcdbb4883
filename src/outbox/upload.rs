//! Uploading a post-mortem draft with Slack's external upload flow (`files.upload` is
//! retired): `files.getUploadURLExternal` -> POST the bytes to the returned URL ->
//! `files.completeUploadExternal`, which shares the file in the incident channel.
//!
//! Each step's result is stored on the draft's row before the next step, so a retry
//! (after a timeout, a 5xx or a crash) resumes where the last attempt stopped: it does not
//! reserve a second file, and a draft already shared is not shared again. The one repeat
//! left is a crash between Slack's answer to the final call and our record of it.

use crate::domain::incident::IncidentId;
use crate::domain::postmortem;
use crate::slack::SlackError;

use super::{DeliveryError, OutboxWorker};

impl OutboxWorker {
    /// Delivers `Effect::UploadPostmortem`.
    pub(super) async fn upload_postmortem(
        &self,
        incident_id: IncidentId,
        postmortem_id: i64,
    ) -> Result<(), DeliveryError> {
        let store = self.engine.store();
        let internal = |e: crate::store::StoreError| DeliveryError::Internal(e.to_string());
        let draft = store
            .postmortem(postmortem_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                DeliveryError::Permanent(format!(
                    "post-mortem draft {postmortem_id} does not exist"
                ))
            })?;
        if draft.shared {
            return Ok(());
        }
        let incident = self.incident(incident_id).await?;
        let channel = Self::channel_of(&incident)?.id.clone();
        let bytes = draft.markdown.as_bytes();
        let (file_id, url) = match &draft.upload {
            Some((file, url)) => (file.clone(), url.clone()),
            None => {
                let filename = postmortem::file_name(&incident, draft.version);
                let reserved = self
                    .slack(
                        "files.getUploadURLExternal",
                        None,
                        self.outlets.slack.upload_url(&filename, bytes.len()),
                    )
                    .await?;
                store
                    .postmortem_upload_started(
                        postmortem_id,
                        &reserved.file_id,
                        &reserved.upload_url,
                    )
                    .await
                    .map_err(internal)?;
                (reserved.file_id, reserved.upload_url)
            }
        };
        if !draft.bytes_sent {
            let sent = self
                .slack(
                    "files.upload_url",
                    None,
                    self.outlets.slack.upload_bytes(&url, bytes),
                )
                .await;
            match sent {
                Ok(()) => {}
                // The URL is no longer accepted (they expire): reserve a new file next try.
                Err(DeliveryError::Slack(SlackError::Transport(text)))
                    if text.starts_with("upload refused") =>
                {
                    store
                        .postmortem_upload_reset(postmortem_id)
                        .await
                        .map_err(internal)?;
                    return Err(DeliveryError::Internal(text));
                }
                Err(e) => return Err(e),
            }
            store
                .postmortem_bytes_sent(postmortem_id, self.clock.now())
                .await
                .map_err(internal)?;
        }
        let title = postmortem::title(&incident);
        let comment = format!(
            ":page_facing_up: Post-mortem draft {} of {}, written from the timeline. Fill in impact, root cause and lessons; `/incident postmortem` writes a fresh draft.",
            draft.version, incident.id
        );
        self.slack(
            "files.completeUploadExternal",
            Some(&channel),
            self.outlets
                .slack
                .complete_upload(&file_id, &title, &channel, &comment),
        )
        .await?;
        store
            .postmortem_shared(postmortem_id, self.clock.now())
            .await
            .map_err(internal)?;
        Ok(())
    }
}

impl OutboxWorker {
    /// Delivers `Outbound::CaptureNote`: reads the marked message and records it.
    pub(super) async fn capture_note(
        &self,
        row: &crate::store::OutboxRow,
        capture: super::Outbound,
    ) -> Result<(), DeliveryError> {
        let super::Outbound::CaptureNote {
            incident_id,
            channel,
            ts,
            by,
            emoji,
            author,
        } = capture
        else {
            return Err(DeliveryError::Permanent("not a note capture".into()));
        };
        let found = self
            .slack(
                "conversations.history",
                Some(&channel),
                self.outlets.slack.message(&channel, &ts),
            )
            .await?;
        let Some((text, user)) = found else {
            return Err(DeliveryError::Permanent(format!(
                "message {ts} is not in the channel history (a thread reply, or deleted)"
            )));
        };
        let meta = crate::engine::RequestMeta {
            actor: crate::domain::incident::Actor::User(by),
            request_id: format!("outbox-{}", row.id),
            dedupe: None,
        };
        let note = crate::engine::Addition::Note {
            text,
            source: crate::domain::record::NoteSource::Reaction {
                emoji,
                author: user.or(author),
                ts,
            },
        };
        match self.engine.add_to_record(&meta, incident_id, note).await {
            Ok(_) => Ok(()),
            Err(crate::engine::EngineError::Refused(refusal)) => {
                tracing::info!(incident = %incident_id, %refusal, "marked message not added");
                Ok(())
            }
            Err(e) => Err(DeliveryError::Internal(e.to_string())),
        }
    }
}
