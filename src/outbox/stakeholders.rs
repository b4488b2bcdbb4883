//! Delivery of stakeholder notices (`Effect::Stakeholder`, lanes
//! `stakeholder:<group>:<via>:N`): email through [`crate::notify::Mailer`], the status
//! page through [`crate::notify::Statuspage`], stakeholder Slack channels through the
//! same once-only post as every other message.
//!
//! Retries: an SMTP or Statuspage failure that may pass (connection refused, timeout,
//! 4xx SMTP, 5xx/429 HTTP) backs off and is retried without limit (see
//! `MAX_ATTEMPTS`); a refusal (bad address, rejected key) fails the row, which is kept
//! and said in `#incident-response`.

use crate::domain::stakeholders::{Notice, NoticeKind, Recipient};
use crate::notify::statuspage::{PageUpdate, reference};
use crate::store::OutboxRow;

use super::{DeliveryError, OutboxWorker};

impl OutboxWorker {
    pub(super) async fn deliver_stakeholder(
        &self,
        row: &OutboxRow,
        group: &str,
        to: &Recipient,
        notice: &Notice,
    ) -> Result<(), DeliveryError> {
        match to {
            Recipient::Email { to } => {
                let mailer = self.outlets.notify.mailer.as_ref().ok_or_else(|| {
                    DeliveryError::Permanent(
                        "no [stakeholders.email] is configured to send email with".into(),
                    )
                })?;
                self.trace.may_have_sent();
                Ok(mailer.send(group, to, notice, self.clock.now()).await?)
            }
            Recipient::StatusPage { component } => self.statuspage(row, notice, component).await,
            Recipient::Slack { channel } => {
                let mut text = format!("*{}*\n{}", notice.subject, notice.body);
                if let Some(next) = &notice.next_update_by {
                    text.push_str(&format!("\nNext update by {next}."));
                }
                let blocks = serde_json::json!([{ "type": "section", "text": { "type": "mrkdwn", "text": text } }]);
                self.post_once(channel, &text, &blocks, None).await?;
                Ok(())
            }
        }
    }

    /// One notice on the status page: the page's incident is created by the first,
    /// updated by the next ones, resolved by the all clear; the component follows.
    async fn statuspage(
        &self,
        row: &OutboxRow,
        notice: &Notice,
        component: &str,
    ) -> Result<(), DeliveryError> {
        let page = self.outlets.notify.statuspage.as_ref().ok_or_else(|| {
            DeliveryError::Permanent(
                "no [stakeholders.statuspage] is configured to update the status page with".into(),
            )
        })?;
        let store = self.engine.store();
        let internal = |e: crate::store::StoreError| DeliveryError::Internal(e.to_string());
        // An earlier attempt of this row may have reached Statuspage before we heard back.
        let retried = row.attempt_started_at_ms.is_some();
        let mut known = store
            .statuspage_incident(notice.incident, page.page_id())
            .await
            .map_err(internal)?;
        let marker = reference(notice.incident);
        if known.is_none() && retried {
            known = page.find_unresolved(&marker).await?;
            if let Some(id) = &known {
                store
                    .save_statuspage_incident(notice.incident, page.page_id(), id, self.clock.now())
                    .await
                    .map_err(internal)?;
            }
        }
        let update = PageUpdate {
            name: format!(
                "{} {marker}",
                notice
                    .subject
                    .split_once(": ")
                    .map_or(notice.subject.as_str(), |(_, title)| title)
            ),
            status: notice.status,
            severity: notice.severity,
            body: &notice.body,
            component,
        };
        match known {
            None if notice.kind == NoticeKind::AllClear => {
                // Nothing was ever published: there is nothing to resolve.
                Ok(())
            }
            None => {
                self.trace.may_have_sent();
                let id = page.create(&update).await?;
                store
                    .save_statuspage_incident(
                        notice.incident,
                        page.page_id(),
                        &id,
                        self.clock.now(),
                    )
                    .await
                    .map_err(internal)
            }
            Some(id) => {
                if retried && page.has_update(&id, &notice.body).await? {
                    return Ok(());
                }
                self.trace.may_have_sent();
                Ok(page.update(&id, &update).await?)
            }
        }
    }
}
