//! `[pagerduty]`: the Events API URL Klaxon pages through, and PagerDuty in (issue 9):
//! webhook secrets, the REST API token, and how PagerDuty incidents map to Klaxon ones
//! (severities, services -> team and stakeholder groups, users -> Slack, storm window,
//! which side resolves which).
//!
//! Secrets come from the environment or files only (`KLAXON_PAGERDUTY_WEBHOOK_SECRET`,
//! comma-separated while rotating, or `..._FILE` / `pagerduty.webhook_secret_file`;
//! `KLAXON_PAGERDUTY_API_TOKEN` or `..._FILE` / `pagerduty.api_token_file`), never the
//! TOML itself, and live in `SecretString`s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeDelta;
use secrecy::SecretString;
use serde::Deserialize;

use super::{ConfigError, Env, duration, err};
use crate::domain::pagerduty::{PagerDutyPolicy, ServiceRoute, UserMapping};
use crate::domain::severity::Severity;

/// `[pagerduty]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct PagerDutySection {
    pub(super) events_url: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    api_url: Option<String>,
    api_token_file: Option<PathBuf>,
    from_email: Option<String>,
    api_timeout: Option<String>,
    default_severity: Option<String>,
    storm_window: Option<String>,
    priority_changes_severity: Option<bool>,
    resolve_from_pagerduty: Option<bool>,
    resolve_in_pagerduty: Option<bool>,
    priorities: Option<BTreeMap<String, String>>,
    urgencies: Option<BTreeMap<String, String>>,
    #[serde(default)]
    services: BTreeMap<String, ServiceSection>,
    #[serde(default)]
    users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    team: Option<String>,
    #[serde(default)]
    stakeholder_groups: Vec<String>,
}

/// PagerDuty in, validated.
#[derive(Clone)]
pub struct PagerDutyConfig {
    /// Webhook v3 signing secrets (several while rotating); none: the route refuses all.
    pub webhook_secrets: Vec<SecretString>,
    /// REST API base URL.
    pub api_url: String,
    /// REST API token; without it users are not looked up and no notes or resolves go
    /// to PagerDuty.
    pub api_token: Option<SecretString>,
    /// The PagerDuty user's email REST writes are sent `From:`.
    pub from_email: Option<String>,
    /// The longest one REST call may take.
    pub api_timeout: Duration,
    /// Whether resolving in Klaxon resolves the linked PagerDuty incidents.
    pub resolve_in_pagerduty: bool,
    /// How events become decisions.
    pub policy: PagerDutyPolicy,
}

impl Default for PagerDutyConfig {
    fn default() -> Self {
        Self {
            webhook_secrets: Vec::new(),
            api_url: "https://api.pagerduty.com".into(),
            api_token: None,
            from_email: None,
            api_timeout: Duration::from_secs(10),
            resolve_in_pagerduty: true,
            policy: PagerDutyPolicy::default(),
        }
    }
}

impl std::fmt::Debug for PagerDutyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyConfig")
            .field(
                "webhook_secrets",
                &format!("[{} redacted]", self.webhook_secrets.len()),
            )
            .field("api_url", &self.api_url)
            .field("api_token", &self.api_token.as_ref().map(|_| "[redacted]"))
            .field("from_email", &self.from_email)
            .field("api_timeout", &self.api_timeout)
            .field("resolve_in_pagerduty", &self.resolve_in_pagerduty)
            .field("policy", &self.policy)
            .finish()
    }
}

impl PagerDutyConfig {
    /// For `Config::describe` (no secrets).
    pub fn describe(&self) -> String {
        format!(
            "pagerduty_webhook_secrets={} pagerduty_rest={}",
            self.webhook_secrets.len(),
            if self.api_token.is_some() {
                "on"
            } else {
                "off"
            }
        )
    }
}

/// An optional secret: `var`, else the file `var_FILE` or `file_key` names.
fn optional_secret(
    env: Env<'_>,
    var: &str,
    file: Option<&Path>,
    file_key: &str,
) -> Result<Option<String>, ConfigError> {
    if let Some(value) = env(var) {
        return Ok(Some(value));
    }
    let file_var = format!("{var}_FILE");
    let (path, key) = match (env(&file_var), file) {
        (Some(p), _) => (PathBuf::from(p), file_var),
        (None, Some(p)) => (p.to_path_buf(), file_key.to_string()),
        (None, None) => return Ok(None),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(&key, format!("cannot read {}: {e}", path.display())))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(err(&key, format!("{} is empty", path.display())));
    }
    Ok(Some(text))
}

fn severity(key: &str, text: &str) -> Result<Severity, ConfigError> {
    Severity::parse(text).ok_or_else(|| {
        err(
            key,
            format!("`{text}` is not a severity (SEV1, SEV2, SEV3 or SEV4)"),
        )
    })
}

fn pagerduty_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.chars().all(|c| c.is_ascii_alphanumeric())
}

fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(err(key, format!("`{url}` is not an http(s) URL")))
    }
}

/// Validates `[pagerduty]` (less `events_url`, which config.rs reads) and its secrets.
pub(super) fn pagerduty(
    section: PagerDutySection,
    env: Env<'_>,
) -> Result<PagerDutyConfig, ConfigError> {
    let mut config = PagerDutyConfig::default();
    let secrets = optional_secret(
        env,
        "KLAXON_PAGERDUTY_WEBHOOK_SECRET",
        section.webhook_secret_file.as_deref(),
        "pagerduty.webhook_secret_file",
    )?;
    config.webhook_secrets = secrets
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(s.to_string()))
        .collect();
    if let Some(url) = env("KLAXON_PAGERDUTY_API_URL").or(section.api_url) {
        http_url("pagerduty.api_url", &url)?;
        config.api_url = url.trim_end_matches('/').to_string();
    }
    config.api_token = optional_secret(
        env,
        "KLAXON_PAGERDUTY_API_TOKEN",
        section.api_token_file.as_deref(),
        "pagerduty.api_token_file",
    )?
    .map(SecretString::from);
    if let Some(email) = section.from_email {
        if !email.contains('@') || email.contains(char::is_whitespace) {
            return Err(err(
                "pagerduty.from_email",
                format!("`{email}` is not an email address"),
            ));
        }
        config.from_email = Some(email);
    }
    if config.api_token.is_some() && config.from_email.is_none() {
        return Err(err(
            "pagerduty.from_email",
            "missing: with a REST API token, notes and resolves need the email of the PagerDuty user they are sent as (`From:` header)",
        ));
    }
    if let Some(t) = section.api_timeout {
        config.api_timeout = duration("pagerduty.api_timeout", &t)?
            .to_std()
            .map_err(|_| err("pagerduty.api_timeout", "must be longer than zero"))?;
    }
    let policy = &mut config.policy;
    policy.rest_api = config.api_token.is_some();
    if let Some(s) = section.default_severity {
        policy.default_severity = severity("pagerduty.default_severity", &s)?;
    }
    if let Some(w) = section.storm_window {
        policy.storm_window = if w == "off" {
            TimeDelta::zero()
        } else {
            duration("pagerduty.storm_window", &w)?
        };
    }
    if let Some(b) = section.priority_changes_severity {
        policy.priority_changes_severity = b;
    }
    if let Some(b) = section.resolve_from_pagerduty {
        policy.resolve_from_pagerduty = b;
    }
    if let Some(b) = section.resolve_in_pagerduty {
        config.resolve_in_pagerduty = b;
    }
    if let Some(map) = section.priorities {
        policy.by_priority = map
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    severity(&format!("pagerduty.priorities.{k}"), &v)?,
                ))
            })
            .collect::<Result<_, ConfigError>>()?;
    }
    if let Some(map) = section.urgencies {
        policy.by_urgency = BTreeMap::new();
        for (k, v) in map {
            let key = format!("pagerduty.urgencies.{k}");
            if k != "high" && k != "low" {
                return Err(err(key, "PagerDuty urgencies are `high` and `low`"));
            }
            policy.by_urgency.insert(k, severity(&key, &v)?);
        }
    }
    for (id, service) in section.services {
        let key = format!("pagerduty.services.{id}");
        if !pagerduty_id(&id) {
            return Err(err(
                key,
                "not a PagerDuty service id (letters and digits, like PIJ90N7: Service > Settings, or the end of its URL)",
            ));
        }
        if service.team.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(err(format!("{key}.team"), "must not be empty"));
        }
        if service
            .stakeholder_groups
            .iter()
            .any(|g| g.trim().is_empty())
        {
            return Err(err(
                format!("{key}.stakeholder_groups"),
                "names must not be empty",
            ));
        }
        policy.services.insert(
            id,
            ServiceRoute {
                team: service.team,
                stakeholder_groups: service.stakeholder_groups,
            },
        );
    }
    for (id, who) in section.users {
        let key = format!("pagerduty.users.{id}");
        if !pagerduty_id(&id) {
            return Err(err(
                key,
                "not a PagerDuty user id (letters and digits, like PXPGF42)",
            ));
        }
        let slack_id = who.len() >= 3
            && (who.starts_with('U') || who.starts_with('W'))
            && who
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        let mapping = if slack_id {
            UserMapping::Slack(who)
        } else if who.contains('@') && !who.contains(char::is_whitespace) {
            UserMapping::Email(who)
        } else {
            return Err(err(
                key,
                format!("`{who}` is neither a Slack user id (U...) nor an email address"),
            ));
        };
        policy.users.insert(id, mapping);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PagerDutyConfig, ConfigError> {
        pagerduty(toml::from_str(text).unwrap(), env)
    }

    #[test]
    fn secrets_rotate_and_mappings_parse() {
        let env = |name: &str| match name {
            "KLAXON_PAGERDUTY_WEBHOOK_SECRET" => Some("old, new".to_string()),
            "KLAXON_PAGERDUTY_API_TOKEN" => Some("u+token".to_string()),
            _ => None,
        };
        let config = parse(
            r#"
            from_email = "klaxon@example.com"
            storm_window = "2m"
            priorities = { P1 = "SEV1", P2 = "sev2" }
            [services.PIJ90N7]
            team = "mail"
            stakeholder_groups = ["customers"]
            [users]
            PXPGF42 = "U0AAA1111"
            PB = "b@example.com"
            "#,
            &env,
        )
        .unwrap();
        assert_eq!(config.webhook_secrets.len(), 2);
        assert!(config.policy.rest_api);
        assert_eq!(config.policy.storm_window, TimeDelta::minutes(2));
        assert_eq!(config.policy.by_priority["P2"], Severity::Sev2);
        assert_eq!(
            config.policy.users["PB"],
            UserMapping::Email("b@example.com".into())
        );
        assert!(!format!("{config:?}").contains("u+token"));
    }

    #[test]
    fn errors_name_the_key_and_the_rule() {
        let none = |_: &str| None;
        let e = parse("priorities = { P1 = \"urgent\" }", &none).unwrap_err();
        assert_eq!(e.key, "pagerduty.priorities.P1");
        let e = parse("urgencies = { medium = \"SEV2\" }", &none).unwrap_err();
        assert_eq!(e.key, "pagerduty.urgencies.medium");
        let e = parse("[services.\"not an id\"]\nteam = \"x\"", &none).unwrap_err();
        assert_eq!(e.key, "pagerduty.services.not an id");
        let e = parse("[users]\nPX = \"bob\"", &none).unwrap_err();
        assert_eq!(e.key, "pagerduty.users.PX");
        let e = parse("storm_window = \"soon\"", &none).unwrap_err();
        assert_eq!(e.key, "pagerduty.storm_window");
        let token = |n: &str| (n == "KLAXON_PAGERDUTY_API_TOKEN").then(|| "t".to_string());
        let e = parse("", &token).unwrap_err();
        assert_eq!(e.key, "pagerduty.from_email");
    }
}
