//! `[intake]`: how Klaxon listens in `#incident-response` (issue 11): the reaction that
//! offers to declare an incident from a message, the alerting bots whose messages get the
//! same offer without one, and the Socket Mode app token (`SLACK_APP_TOKEN`).

use regex::Regex;
use secrecy::SecretString;
use serde::Deserialize;

use super::{ConfigError, Env, err};

/// `[intake]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct IntakeSection {
    declare_reaction: Option<String>,
    #[serde(default)]
    alert_bots: Vec<String>,
    #[serde(default)]
    alert_patterns: Vec<String>,
    app_token_file: Option<std::path::PathBuf>,
    home_refresh: Option<String>,
}

/// What Klaxon listens for.
#[derive(Clone, Debug)]
pub struct IntakeConfig {
    /// Reaction name without colons (default `rotating_light`) that, on a message in
    /// `#incident-response`, makes Klaxon offer to declare an incident from it.
    pub declare_reaction: String,
    /// Bot ids (`B...`) or bot user ids (`U...`) of alerting integrations whose messages
    /// in `#incident-response` get the offer without a reaction.
    pub alert_bots: Vec<String>,
    /// The offer is made only for alert messages matching one of these (case-insensitive);
    /// empty: every message of an alert bot.
    pub alert_patterns: Vec<Regex>,
    /// `xapp-...`: when set, `serve` connects through Socket Mode (no public URL needed).
    pub app_token: Option<SecretString>,
    /// How often the App Home refresher looks for changes to republish.
    pub home_refresh: std::time::Duration,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            declare_reaction: "rotating_light".into(),
            alert_bots: Vec::new(),
            alert_patterns: Vec::new(),
            app_token: None,
            home_refresh: std::time::Duration::from_secs(15),
        }
    }
}

impl IntakeConfig {
    /// For `Config::describe` (no secrets).
    pub fn describe(&self) -> String {
        let transport = if self.app_token.is_some() {
            "socket-mode"
        } else {
            "http"
        };
        format!(
            "transport={transport} declare_reaction=:{}: alert_bots={}",
            self.declare_reaction,
            self.alert_bots.len()
        )
    }

    /// Whether a message from an alert bot should get the offer.
    pub fn alert_matches(&self, text: &str) -> bool {
        self.alert_patterns.is_empty() || self.alert_patterns.iter().any(|p| p.is_match(text))
    }
}

/// Validates `[intake]` and reads `SLACK_APP_TOKEN` (or `SLACK_APP_TOKEN_FILE`,
/// `intake.app_token_file`).
pub(super) fn intake(section: IntakeSection, env: Env<'_>) -> Result<IntakeConfig, ConfigError> {
    let mut config = IntakeConfig::default();
    if let Some(name) = section.declare_reaction {
        let name = name.trim().trim_matches(':').to_string();
        let ok = !name.is_empty()
            && name.len() <= 100
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-+'".contains(c));
        if !ok {
            return Err(err(
                "intake.declare_reaction",
                format!(
                    "`{name}` is not an emoji name like \"rotating_light\" (lower-case letters, digits, _ - +)"
                ),
            ));
        }
        config.declare_reaction = name;
    }
    for bot in &section.alert_bots {
        let ok = bot.len() >= 3
            && (bot.starts_with('B') || bot.starts_with('U') || bot.starts_with('W'))
            && bot
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !ok {
            return Err(err(
                "intake.alert_bots",
                format!("`{bot}` is not a Slack bot id (B...) or bot user id (U...)"),
            ));
        }
    }
    config.alert_bots = section.alert_bots;
    for (i, pattern) in section.alert_patterns.iter().enumerate() {
        let regex = regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                err(
                    format!("intake.alert_patterns[{i}]"),
                    format!("not a regular expression: {e}"),
                )
            })?;
        config.alert_patterns.push(regex);
    }
    if let Some(every) = section.home_refresh {
        let d = super::duration("intake.home_refresh", &every)?
            .to_std()
            .map_err(|_| err("intake.home_refresh", "must be longer than zero"))?;
        if d < std::time::Duration::from_secs(1) {
            return Err(err("intake.home_refresh", "must be at least 1s"));
        }
        config.home_refresh = d;
    }
    let token = match super::secret_from(
        env,
        "SLACK_APP_TOKEN",
        section.app_token_file.as_deref(),
        "intake.app_token_file",
    ) {
        Ok(token) => Some(token),
        Err(e) if e.problem.starts_with("not set") => None,
        Err(e) => return Err(e),
    };
    if let Some(token) = token {
        if !token.starts_with("xapp-") {
            return Err(err(
                "SLACK_APP_TOKEN",
                "does not look like an app-level token (expected xapp-..., with the connections:write scope)",
            ));
        }
        config.app_token = Some(SecretString::from(token));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: Env<'_>) -> Result<IntakeConfig, ConfigError> {
        intake(toml::from_str(text).unwrap(), env)
    }

    #[test]
    fn defaults_and_each_rule() {
        let none = |_: &str| None;
        let c = parse("", &none).unwrap();
        assert_eq!(c.declare_reaction, "rotating_light");
        assert!(c.app_token.is_none());
        assert!(c.alert_matches("anything"));
        let c = parse(
            "declare_reaction = \":fire:\"\nalert_bots = [\"B0ALERTS\"]\nalert_patterns = [\"^\\\\[FIRING\"]",
            &none,
        )
        .unwrap();
        assert_eq!(c.declare_reaction, "fire");
        assert!(c.alert_matches("[firing:1] HighErrorRate"));
        assert!(!c.alert_matches("[RESOLVED] HighErrorRate"));
        let e = parse("declare_reaction = \"Rotating Light\"", &none).unwrap_err();
        assert_eq!(e.key, "intake.declare_reaction");
        let e = parse("alert_bots = [\"alertmanager\"]", &none).unwrap_err();
        assert_eq!(e.key, "intake.alert_bots");
        let e = parse("alert_patterns = [\"(\"]", &none).unwrap_err();
        assert_eq!(e.key, "intake.alert_patterns[0]");
        let bad_token = |n: &str| (n == "SLACK_APP_TOKEN").then(|| "xoxb-nope".to_string());
        assert_eq!(parse("", &bad_token).unwrap_err().key, "SLACK_APP_TOKEN");
        let token = |n: &str| (n == "SLACK_APP_TOKEN").then(|| "xapp-1-A-1-abc".to_string());
        assert!(parse("", &token).unwrap().app_token.is_some());
    }

    #[test]
    fn socket_mode_needs_no_signing_secret() {
        let text = "[slack]\nincident_response_channel = \"C0123ABCDE\"\n";
        let socket = |n: &str| match n {
            "SLACK_APP_TOKEN" => Some("xapp-1-A-1-abc".to_string()),
            "SLACK_BOT_TOKEN" => Some("xoxb-1".to_string()),
            _ => None,
        };
        let config = super::super::Config::from_toml(text, &socket).unwrap();
        assert!(config.has_secrets());
        assert!(config.slack.signing_secrets.is_empty());
        assert!(config.describe().contains("transport=socket-mode"));
        let http = |n: &str| (n == "SLACK_BOT_TOKEN").then(|| "xoxb-1".to_string());
        let e = super::super::Config::from_toml(text, &http).unwrap_err();
        assert_eq!(e.key, "SLACK_SIGNING_SECRET");
    }
}
