//! Stakeholder notices out of Slack (issue 9): email over SMTP ([`email`]) and the
//! public status page through Atlassian Statuspage's REST API ([`statuspage`]).
//!
//! Both are called only by the outbox worker (`outbox::stakeholders`), one notice per
//! row, under a timeout; what they answer decides whether the row is retried (a server
//! that is down or slow) or failed for good (a configuration the server refuses).

pub mod email;
pub mod statuspage;

pub use email::{EmailSettings, Mailer, SmtpTls};
pub use statuspage::{Statuspage, StatuspageSettings};

/// Why a notice did not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Down, slow, 4xx-transient SMTP, HTTP 5xx or 429: try again later.
    #[error("{0}")]
    Retry(String),
    /// Refused for good (a bad address, a rejected key, a malformed request).
    #[error("{0}")]
    Permanent(String),
}

impl NotifyError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, NotifyError::Permanent(_))
    }
}

/// The configured stakeholder channels (each optional: a group may only use Slack).
#[derive(Clone, Default)]
pub struct Notifier {
    /// SMTP, when `[stakeholders.email]` is configured.
    pub mailer: Option<Mailer>,
    /// Statuspage, when `[stakeholders.statuspage]` is configured.
    pub statuspage: Option<Statuspage>,
}

/// Escapes text for HTML.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<b>\"R&D\"</b> it's"),
            "&lt;b&gt;&quot;R&amp;D&quot;&lt;/b&gt; it&#39;s"
        );
    }
}
