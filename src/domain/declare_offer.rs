//! Declaring from a message (issue 11): what the "Declare incident" offer under a message
//! in `#incident-response` is prefilled with, and where the declared incident links back.
//!
//! Pure: the text comes in (fetched by the outbox, or carried by an alert bot's `message`
//! event), a title and a severity guess go out. The guess only prefills the form; the
//! person who presses the button chooses.

use serde::{Deserialize, Serialize};

use super::incident::MAX_TITLE_CHARS;
use super::severity::Severity;

/// The message an offer is about, carried in the button's value and the form's
/// `private_metadata` so the declared incident can link back to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMessage {
    /// Channel id (`#incident-response`).
    pub channel: String,
    /// The message's `ts`.
    pub ts: String,
}

impl SourceMessage {
    /// Slack's archive link to the message (redirects into the workspace).
    pub fn permalink(&self) -> String {
        format!(
            "https://slack.com/archives/{}/p{}",
            self.channel,
            self.ts.replace('.', "")
        )
    }

    /// The inbound-event key that makes one offer per message, however many people react.
    pub fn offer_key(&self) -> String {
        format!("{}:{}", self.channel, self.ts)
    }
}

/// What the declare form opens with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefill {
    /// Guessed severity.
    pub severity: Severity,
    /// The message's first line, without Slack markup, at most [`MAX_TITLE_CHARS`].
    pub title: String,
}

/// The button value / form metadata: the source message and the prefill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Where it came from.
    pub source: SourceMessage,
    /// What the form starts with.
    pub prefill: Prefill,
}

/// Prefill for a message's text.
pub fn prefill(text: &str) -> Prefill {
    Prefill {
        severity: guess_severity(text),
        title: title_from(text),
    }
}

/// The offer for a message, prefilled from its text.
pub fn offer_for(source: SourceMessage, text: &str) -> Offer {
    Offer {
        source,
        prefill: prefill(text),
    }
}

/// The first non-empty line, with Slack markup (`<url|label>`, `<@U1>`, `<!here>`,
/// `*bold*`, `:emoji:`) reduced to plain words, cut at a word before
/// [`MAX_TITLE_CHARS`]. Empty when nothing readable is left (the form then asks).
pub fn title_from(text: &str) -> String {
    let line = text
        .lines()
        .map(plain)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if line.chars().count() <= MAX_TITLE_CHARS {
        return line;
    }
    let cut: String = line.chars().take(MAX_TITLE_CHARS - 1).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > MAX_TITLE_CHARS / 2 => cut[..i].to_string(),
        _ => cut,
    };
    format!("{}…", cut.trim_end())
}

/// One line of mrkdwn as plain words.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &rest[start + 1..start + end];
        let shown = match inner.split_once('|') {
            Some((_, label)) => label.to_string(),
            None if inner.starts_with('!') => String::new(),
            None if inner.starts_with('@') || inner.starts_with('#') => inner.to_string(),
            None => inner.to_string(),
        };
        out.push_str(&shown);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    // :emoji: names go; markup characters go; whitespace collapses.
    let mut words = Vec::new();
    for word in out.split_whitespace() {
        let is_emoji = word.len() > 2
            && word.starts_with(':')
            && word.ends_with(':')
            && word[1..word.len() - 1]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-+'".contains(c));
        if is_emoji {
            continue;
        }
        let cleaned: String = word
            .chars()
            .filter(|c| !"*_~`".contains(*c) && !c.is_control())
            .collect();
        if !cleaned.is_empty() {
            words.push(cleaned);
        }
    }
    words
        .join(" ")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// The severity a message suggests: an explicit `SEV1`..`SEV4` / `P1`..`P4` wins; else
/// words (outage, critical, down → SEV1; major, degraded, errors → SEV2; cosmetic, low,
/// info → SEV4 unless minor, warning or slow also appear); else SEV3, the form's
/// starting point.
pub fn guess_severity(text: &str) -> Severity {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        let explicit = match *w {
            "sev" | "severity" | "p" => words.get(i + 1).and_then(|n| level(n)),
            _ => w
                .strip_prefix("sev")
                .or_else(|| w.strip_prefix('p'))
                .and_then(level),
        };
        if let Some(s) = explicit {
            return s;
        }
    }
    let has = |list: &[&str]| words.iter().any(|w| list.contains(w));
    if has(&[
        "outage",
        "critical",
        "down",
        "emergency",
        "unavailable",
        "unreachable",
        "p0",
        "sev0",
        "breach",
    ]) {
        Severity::Sev1
    } else if has(&[
        "major",
        "degraded",
        "degradation",
        "error",
        "errors",
        "failing",
        "failed",
        "high",
        "5xx",
    ]) {
        Severity::Sev2
    } else if has(&["cosmetic", "informational", "info", "low", "typo"])
        && !has(&["minor", "warning", "warn", "slow", "latency", "elevated"])
    {
        // Minimal impact, unless something also says it is a (minor) problem.
        Severity::Sev4
    } else {
        Severity::Sev3
    }
}

fn level(digits: &str) -> Option<Severity> {
    match digits {
        "1" => Some(Severity::Sev1),
        "2" => Some(Severity::Sev2),
        "3" => Some(Severity::Sev3),
        "4" => Some(Severity::Sev4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_levels_win_over_words() {
        assert_eq!(guess_severity("SEV1: checkout down"), Severity::Sev1);
        assert_eq!(guess_severity("[P3] minor outage"), Severity::Sev3);
        assert_eq!(guess_severity("sev 2 - payments"), Severity::Sev2);
        assert_eq!(guess_severity("Severity: 4"), Severity::Sev4);
        assert_eq!(guess_severity("CRITICAL: db primary"), Severity::Sev1);
        assert_eq!(
            guess_severity("Total outage of the EU region"),
            Severity::Sev1
        );
        assert_eq!(guess_severity("API degraded, 5xx up"), Severity::Sev2);
        assert_eq!(guess_severity("warning: disk 80%"), Severity::Sev3);
        assert_eq!(guess_severity("something looks off"), Severity::Sev3);
        assert_eq!(guess_severity("cosmetic: logo misaligned"), Severity::Sev4);
        assert_eq!(guess_severity("low disk warning"), Severity::Sev3);
        // Words that merely contain a level are not one.
        assert_eq!(guess_severity("api42 p99 latency"), Severity::Sev3);
        assert_eq!(guess_severity("sev12 upgrade"), Severity::Sev3);
    }

    #[test]
    fn the_title_is_the_first_line_as_plain_words() {
        assert_eq!(
            title_from(
                "\n:rotating_light: *[FIRING:1] HighErrorRate* <https://grafana/x|dashboard> for <@U123>\nsecond line"
            ),
            "[FIRING:1] HighErrorRate dashboard for @U123"
        );
        assert_eq!(title_from("<!here> db &amp; cache down"), "db & cache down");
        assert_eq!(title_from(":fire: :fire:"), "");
        let long = "word ".repeat(60);
        let t = title_from(&long);
        assert!(t.chars().count() <= MAX_TITLE_CHARS, "{t}");
        assert!(t.ends_with("word…"), "{t}");
    }

    #[test]
    fn the_link_back_is_slacks_archive_url() {
        let s = SourceMessage {
            channel: "C1".into(),
            ts: "1700000000.000100".into(),
        };
        assert_eq!(
            s.permalink(),
            "https://slack.com/archives/C1/p1700000000000100"
        );
        assert_eq!(s.offer_key(), "C1:1700000000.000100");
    }
}
