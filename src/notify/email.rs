//! Stakeholder email through SMTP (lettre): STARTTLS to a real relay, or plain SMTP to
//! a relay on this host (and the tests' aiosmtpd).
//!
//! **Sent once per update and recipient.** Every message carries a Message-ID derived
//! from (incident, group, notice, recipient) only, so the same notice retried after a
//! failure is the same message to the receiving side, and the outbox settles its row
//! once. SMTP has no way to ask "did you already take this?": a crash after the server
//! accepted the message and before the row was marked can repeat it, with the same
//! Message-ID (which mail clients collapse).

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{NotifyError, html_escape};
use crate::domain::stakeholders::Notice;

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS, required (port 587).
    StartTls,
    /// No TLS: only for a relay on this host (checked by `klaxon check`).
    Plain,
}

/// `[stakeholders.email]`.
#[derive(Clone)]
pub struct EmailSettings {
    /// SMTP host.
    pub host: String,
    /// SMTP port.
    pub port: u16,
    /// STARTTLS or plain.
    pub tls: SmtpTls,
    /// Login, when the relay wants one.
    pub username: Option<String>,
    /// Password (`KLAXON_SMTP_PASSWORD`); never logged.
    pub password: Option<SecretString>,
    /// The From mailbox (`Klaxon <klaxon@example.com>`).
    pub from: Mailbox,
    /// The longest one SMTP conversation may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from.to_string())
            .finish()
    }
}

/// Sends stakeholder email. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl Mailer {
    /// A mailer for `settings` (no connection is made until the first send).
    pub fn new(settings: &EmailSettings) -> Result<Mailer, NotifyError> {
        let builder = match settings.tls {
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(
                &settings.host,
            )
            .map_err(|e| NotifyError::Permanent(format!("SMTP relay {}: {e}", settings.host)))?,
            SmtpTls::Plain => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Mailer {
            transport: builder.build(),
            from: settings.from.clone(),
            timeout: settings.timeout,
        })
    }

    /// Sends `notice` of `group` to `to`, dated `now`.
    pub async fn send(
        &self,
        group: &str,
        to: &str,
        notice: &Notice,
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        let message = compose(&self.from, group, to, notice, now)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(NotifyError::Retry(format!(
                "the SMTP server did not answer within {:?}",
                self.timeout
            ))),
            Ok(Ok(_)) => Ok(()),
            // 5xx: the server refuses this message for good (unknown mailbox, policy).
            Ok(Err(e)) if e.is_permanent() => {
                Err(NotifyError::Permanent(format!("SMTP refused: {e}")))
            }
            // 4xx, connection refused, TLS, timeouts: the server may take it later.
            Ok(Err(e)) => Err(NotifyError::Retry(format!("SMTP: {e}"))),
        }
    }
}

/// The Message-ID of `notice` to `to`: the same for every attempt.
pub fn message_id(from: &Mailbox, group: &str, to: &str, notice: &Notice) -> String {
    let digest = Sha256::digest(to.to_ascii_lowercase().as_bytes());
    format!(
        "<klaxon.{}.{group}.{}.{}@{}>",
        notice.incident.0,
        notice.key,
        &hex::encode(digest)[..12],
        from.email.domain()
    )
}

/// The message: text and HTML alternatives, with the group's local times.
pub fn compose(
    from: &Mailbox,
    group: &str,
    to: &str,
    notice: &Notice,
    now: DateTime<Utc>,
) -> Result<Message, NotifyError> {
    let to: Mailbox = to
        .parse()
        .map_err(|e| NotifyError::Permanent(format!("`{to}` is not an email address: {e}")))?;
    let mut text = format!(
        "{}\n\n{}\n\nSeverity: {}   Status: {}\nWritten: {}\n",
        notice.subject, notice.body, notice.severity, notice.status, notice.written_at
    );
    if let Some(next) = &notice.next_update_by {
        text.push_str(&format!("Next update by: {next}\n"));
    }
    let mut html = format!(
        "<html><body><h2>{}</h2><p>{}</p><p><b>Severity:</b> {} &nbsp; <b>Status:</b> {}<br><b>Written:</b> {}",
        html_escape(&notice.subject),
        html_escape(&notice.body),
        notice.severity,
        notice.status,
        html_escape(&notice.written_at)
    );
    if let Some(next) = &notice.next_update_by {
        html.push_str(&format!("<br><b>Next update by:</b> {}", html_escape(next)));
    }
    html.push_str("</p></body></html>");
    Message::builder()
        .from(from.clone())
        .to(to.clone())
        .subject(notice.subject.clone())
        .message_id(Some(message_id(from, group, to.email.as_ref(), notice)))
        .date(SystemTime::from(now))
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| NotifyError::Permanent(format!("cannot build the message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::{IncidentId, Status};
    use crate::domain::severity::Severity;
    use crate::domain::stakeholders::NoticeKind;

    fn notice() -> Notice {
        Notice {
            key: "update-1".into(),
            kind: NoticeKind::Update,
            incident: IncidentId(7),
            external: true,
            subject: "[SEV1] INC-7 update: Checkout <down>".into(),
            body: "Errors falling".into(),
            severity: Severity::Sev1,
            status: Status::Identified,
            written_at: "Mon 23 Nov 2026 05:20 EST".into(),
            next_update_by: Some("05:50 EST".into()),
        }
    }

    #[test]
    fn message_ids_are_stable_per_notice_and_recipient() {
        let from: Mailbox = "Klaxon <klaxon@example.com>".parse().unwrap();
        let a = message_id(&from, "customers", "a@x.com", &notice());
        assert_eq!(a, message_id(&from, "customers", "A@x.com", &notice()));
        assert_ne!(a, message_id(&from, "customers", "b@x.com", &notice()));
        assert!(a.starts_with("<klaxon.7.customers.update-1.") && a.ends_with("@example.com>"));
    }

    #[test]
    fn the_message_has_both_parts_and_escapes_html() {
        let from: Mailbox = "Klaxon <klaxon@example.com>".parse().unwrap();
        let m = compose(
            &from,
            "customers",
            "a@x.com",
            &notice(),
            DateTime::UNIX_EPOCH,
        )
        .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("Next update by: 05:50 EST"), "{raw}");
        assert!(raw.contains("Checkout &lt;down&gt;"), "{raw}");
        assert!(
            compose(
                &from,
                "c",
                "not an address",
                &notice(),
                DateTime::UNIX_EPOCH
            )
            .is_err()
        );
    }
}
