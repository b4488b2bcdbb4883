//! Configuration: one TOML file (see `deploy/klaxon.example.toml`, documented key by key)
//! plus environment overrides, validated once at start-up.
//!
//! Secrets (`SLACK_SIGNING_SECRET`, `SLACK_BOT_TOKEN`) come from the environment or from a
//! file path, live in `secrecy` types and never appear in `Debug` output or logs.
//!
//! Config sits low in the house: it imports `domain` and the leaf clients whose settings
//! it fills (`notify`, `paging`, `totp`), never a module that runs things. Settings that
//! `outbox`, `commands` or `http` read (e.g. [`DeliverySettings`]) are defined here and
//! imported by them, so nothing that reads config is imported back by it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::calendar::BusinessCalendar;
use crate::domain::escalation::EscalationPolicy;
use crate::domain::severity::SeverityPolicies;
use crate::paging::Target;

mod access;
mod delivery;
mod escalation;
mod intake;
mod pagerduty;
mod recovery;
mod severity;
mod stakeholders;
mod team;
mod timeline;
pub use access::{DEFAULT_CALL_TIMEOUT, EnvironmentConfig, RolesConfig};
pub use delivery::{DeliverySettings, PaceSettings, RetentionConfig};
pub use escalation::routing_key_var;
pub use intake::IntakeConfig;
pub use pagerduty::PagerDutyConfig;
pub use recovery::RecoveryConfig;
pub use stakeholders::StakeholdersConfig;
pub use timeline::TimelineConfig;

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    /// Dotted key (`slack.incident_response_channel`) or environment variable name.
    pub key: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The file as written (every section optional except `[slack]`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    database: DatabaseSection,
    #[serde(default)]
    slack: SlackSection,
    #[serde(default)]
    team: team::TeamSection,
    #[serde(default)]
    severity: std::collections::BTreeMap<String, severity::SeveritySection>,
    #[serde(default)]
    pagerduty: pagerduty::PagerDutySection,
    #[serde(default)]
    recovery: recovery::RecoverySection,
    #[serde(default)]
    escalation: escalation::EscalationSection,
    #[serde(default)]
    roles: access::RolesSection,
    #[serde(default)]
    delivery: delivery::DeliverySection,
    #[serde(default)]
    retention: delivery::RetentionSection,
    #[serde(default)]
    intake: intake::IntakeSection,
    #[serde(default)]
    timeline: timeline::TimelineSection,
    #[serde(default)]
    stakeholders: stakeholders::StakeholdersSection,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SlackSection {
    api_url: Option<String>,
    incident_response_channel: Option<String>,
    signing_secret_file: Option<PathBuf>,
    bot_token_file: Option<PathBuf>,
    team_id: Option<String>,
    app_id: Option<String>,
}

/// Slack settings.
#[derive(Clone)]
pub struct SlackConfig {
    /// Web API base URL (`https://slack.com/api`; tests use the emulator's).
    pub api_url: String,
    /// Channel id of `#incident-response`, where declarations are announced.
    pub incident_response_channel: String,
    /// Accepted signing secrets (several during rotation).
    pub signing_secrets: Vec<SecretString>,
    /// Bot token (`xoxb-...`).
    pub bot_token: SecretString,
    /// The workspace (`T...`) interactions must come from; `serve` requires it.
    pub team_id: Option<String>,
    /// The Slack app (`A...`) interactions must be addressed to; `serve` requires it.
    pub app_id: Option<String>,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("api_url", &self.api_url)
            .field("incident_response_channel", &self.incident_response_channel)
            .field(
                "signing_secrets",
                &format!("[{} redacted]", self.signing_secrets.len()),
            )
            .field("bot_token", &"[redacted]")
            .field("team_id", &self.team_id)
            .field("app_id", &self.app_id)
            .finish()
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Database URL (`sqlite://klaxon.db` by default).
    pub database_url: String,
    /// Slack.
    pub slack: SlackConfig,
    /// Team calendar and time zone.
    pub calendar: BusinessCalendar,
    /// Severity policies.
    pub severities: SeverityPolicies,
    /// Escalation ladders per severity.
    pub escalation: EscalationPolicy,
    /// Escalation targets by name.
    pub targets: std::collections::BTreeMap<String, Target>,
    /// PagerDuty Events API v2 URL.
    pub pagerduty_events_url: String,
    /// PagerDuty in: webhooks, REST API, mapping (`[pagerduty]`).
    pub pagerduty: PagerDutyConfig,
    /// Recovery commands.
    pub recovery: RecoveryConfig,
    /// How the outbox delivers.
    pub delivery: DeliverySettings,
    /// What is pruned, when.
    pub retention: RetentionConfig,
    /// Incident role administration.
    pub roles: RolesConfig,
    /// What Klaxon listens for in `#incident-response`, and Socket Mode.
    pub intake: IntakeConfig,
    /// Which reactions add a message to the timeline.
    pub timeline: TimelineConfig,
    /// Stakeholder groups, email, status page, the security rule.
    pub stakeholders: StakeholdersConfig,
}

/// Reads an environment variable; injected so tests need not touch the process env.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn duration(key: &str, text: &str) -> Result<TimeDelta, ConfigError> {
    let d = humantime::parse_duration(text).map_err(|e| {
        err(
            key,
            format!("`{text}` is not a duration like \"15m\" or \"4h\" ({e})"),
        )
    })?;
    let d = TimeDelta::from_std(d).map_err(|_| err(key, "duration is too large"))?;
    if d <= TimeDelta::zero() {
        return Err(err(key, "must be longer than zero"));
    }
    Ok(d)
}

fn secret_from(
    env: Env<'_>,
    var: &str,
    file_from_config: Option<&Path>,
    config_key: &str,
) -> Result<String, ConfigError> {
    if let Some(value) = env(var) {
        return Ok(value);
    }
    let file_var = format!("{var}_FILE");
    let (path, key) = match (env(&file_var), file_from_config) {
        (Some(p), _) => (PathBuf::from(p), file_var),
        (None, Some(p)) => (p.to_path_buf(), config_key.to_string()),
        (None, None) => {
            return Err(err(
                var,
                format!(
                    "not set: export {var}, or {var}_FILE / `{config_key}` naming a file that holds it"
                ),
            ));
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(&key, format!("cannot read {}: {e}", path.display())))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(err(&key, format!("{} is empty", path.display())));
    }
    Ok(text)
}

fn channel_id(key: &str, value: &str) -> Result<String, ConfigError> {
    let ok = value.len() >= 9
        && (value.starts_with('C') || value.starts_with('G'))
        && value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if ok {
        Ok(value.to_string())
    } else {
        Err(err(
            key,
            format!(
                "`{value}` is not a channel id; use the id (like C0123ABCD) from the channel's details, not its name"
            ),
        ))
    }
}

impl Config {
    /// Loads `path` (or defaults when `None`), applies environment overrides and validates
    /// everything, secrets included.
    pub fn load(path: Option<&Path>, env: Env<'_>) -> Result<Config, ConfigError> {
        Self::load_with(path, env, true)
    }

    /// Like [`Config::load`], but the Slack secrets may be missing (then empty; checked
    /// when present): for verbs that only read the config or catalog (`check`,
    /// `commands list|show`), so reviewing the catalog needs no production secrets.
    pub fn load_without_secrets(path: Option<&Path>, env: Env<'_>) -> Result<Config, ConfigError> {
        Self::load_with(path, env, false)
    }

    /// Whether the Slack secrets are present (always after [`Config::load`]).
    pub fn has_secrets(&self) -> bool {
        (!self.slack.signing_secrets.is_empty() || self.intake.app_token.is_some())
            && !expose(&self.slack.bot_token).is_empty()
    }

    fn load_with(
        path: Option<&Path>,
        env: Env<'_>,
        require_secrets: bool,
    ) -> Result<Config, ConfigError> {
        let file: FileConfig = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err("--config", format!("cannot read {}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| {
                    let key = e.span().map_or("(file)".to_string(), |s| {
                        let line = text[..s.start].matches('\n').count() + 1;
                        format!("{}:{line}", path.display())
                    });
                    err(key, e.message().to_string())
                })?
            }
            None => FileConfig::default(),
        };
        Self::from_file(file, env, require_secrets)
    }

    /// Parses TOML text (used by tests and `klaxon check`).
    pub fn from_toml(text: &str, env: Env<'_>) -> Result<Config, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| err("(file)", e.message().to_string()))?;
        Self::from_file(file, env, true)
    }

    fn from_file(
        mut file: FileConfig,
        env: Env<'_>,
        require_secrets: bool,
    ) -> Result<Config, ConfigError> {
        let listen_text = env("KLAXON_LISTEN")
            .or(file.server.listen)
            .unwrap_or_else(|| "127.0.0.1:3000".into());
        let listen = listen_text.parse().map_err(|_| {
            err(
                "server.listen",
                format!("`{listen_text}` is not an address like 127.0.0.1:3000"),
            )
        })?;

        let database_url = env("KLAXON_DATABASE_URL")
            .or(file.database.url)
            .unwrap_or_else(|| "sqlite://klaxon.db".into());
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            return Err(err(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }

        let api_url = env("KLAXON_SLACK_API_URL")
            .or(file.slack.api_url)
            .unwrap_or_else(|| "https://slack.com/api".into())
            .trim_end_matches('/')
            .to_string();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(err(
                "slack.api_url",
                format!("`{api_url}` is not an http(s) URL"),
            ));
        }
        let channel = env("KLAXON_INCIDENT_RESPONSE_CHANNEL")
            .or(file.slack.incident_response_channel)
            .ok_or_else(|| {
                err(
                    "slack.incident_response_channel",
                    "missing: the id of #incident-response, where declarations are announced",
                )
            })?;
        let incident_response_channel = channel_id("slack.incident_response_channel", &channel)?;

        let (team_id, app_id) = access::slack_ids(env, file.slack.team_id, file.slack.app_id)?;
        // Socket Mode (an app token) needs no signing secret: Slack calls no URL of ours.
        let intake = intake::intake(file.intake, env)?;
        let socket_mode = intake.app_token.is_some();
        let secrets = secret_from(
            env,
            "SLACK_SIGNING_SECRET",
            file.slack.signing_secret_file.as_deref(),
            "slack.signing_secret_file",
        );
        let bot_token = secret_from(
            env,
            "SLACK_BOT_TOKEN",
            file.slack.bot_token_file.as_deref(),
            "slack.bot_token_file",
        );
        // Without `require_secrets` an unset secret is allowed (a set but broken one is not).
        let unset = |r: &Result<String, ConfigError>| {
            !require_secrets && matches!(r, Err(e) if e.problem.starts_with("not set"))
        };
        let secrets = if unset(&secrets)
            || (socket_mode && matches!(&secrets, Err(e) if e.problem.starts_with("not set")))
        {
            String::new()
        } else {
            secrets?
        };
        let bot_token = if unset(&bot_token) {
            String::new()
        } else {
            bot_token?
        };
        // Several comma-separated secrets are accepted while rotating.
        let signing_secrets: Vec<SecretString> = secrets
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_string()))
            .collect();
        if signing_secrets.is_empty() && require_secrets && !socket_mode {
            return Err(err("SLACK_SIGNING_SECRET", "is empty"));
        }
        let token_ok = bot_token.starts_with("xox") || (bot_token.is_empty() && !require_secrets);
        if !token_ok {
            return Err(err(
                "SLACK_BOT_TOKEN",
                "does not look like a Slack token (expected xoxb-...)",
            ));
        }

        let calendar = team::calendar(file.team, env)?;
        let severities = severity::severities(file.severity)?;

        let (escalation, targets) = escalation::escalation_config(file.escalation, env)?;
        let pagerduty_events_url = env("KLAXON_PAGERDUTY_EVENTS_URL")
            .or(file.pagerduty.events_url.take())
            .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into());
        if !(pagerduty_events_url.starts_with("https://")
            || pagerduty_events_url.starts_with("http://"))
        {
            return Err(err(
                "pagerduty.events_url",
                format!("`{pagerduty_events_url}` is not an http(s) URL"),
            ));
        }

        let pagerduty = pagerduty::pagerduty(file.pagerduty, env)?;

        let recovery = recovery::recovery_config(file.recovery, env)?;
        let roles = access::roles(file.roles)?;

        let delivery = delivery::delivery_config(file.delivery)?;
        let retention = delivery::retention_config(file.retention)?;
        let timeline = timeline::timeline_config(file.timeline)?;
        let stakeholders =
            stakeholders::stakeholders_config(file.stakeholders, env, require_secrets)?;

        Ok(Config {
            stakeholders,
            intake,
            timeline,
            delivery,
            retention,
            recovery,
            roles,
            escalation,
            targets,
            pagerduty_events_url,
            pagerduty,
            listen,
            database_url,
            slack: SlackConfig {
                api_url,
                incident_response_channel,
                signing_secrets,
                bot_token: bot_token.into(),
                team_id,
                app_id,
            },
            calendar,
            severities,
        })
    }

    /// A one-line description safe to log.
    pub fn describe(&self) -> String {
        format!(
            "listen={} database={} slack_api={} announce={} tz={} signing_secrets={} {}",
            self.listen,
            redact_url(&self.database_url),
            self.slack.api_url,
            self.slack.incident_response_channel,
            self.calendar.tz,
            self.slack.signing_secrets.len(),
            self.intake.describe()
        ) + " "
            + &self.pagerduty.describe()
    }
}

/// Hides the password in a database URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Exposes a secret's text; the one place that does, so it is easy to audit.
pub fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::severity::{RespondWithin, Severity};

    fn env_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const SECRETS: &[(&str, &str)] = &[
        ("SLACK_SIGNING_SECRET", "s1,s2"),
        ("SLACK_BOT_TOKEN", "xoxb-test"),
    ];

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../deploy/klaxon.example.toml");
        let config = Config::from_toml(text, &env_with(SECRETS)).unwrap();
        assert_eq!(config.slack.signing_secrets.len(), 2);
        assert_eq!(config.calendar.tz, chrono_tz::Europe::London);
        assert!(
            !format!("{config:?}").contains("xoxb-test"),
            "secrets must not reach Debug"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml(
            "[slack]\nincident_response_channel = \"#incident-response\"",
            &env_with(SECRETS),
        )
        .unwrap_err();
        assert_eq!(e.key, "slack.incident_response_channel");
        let base = "[slack]\nincident_response_channel = \"C0123ABCDE\"\n";
        let e = Config::from_toml(
            &format!("{base}[team]\ntimezone = \"Mars/Olympus\""),
            &env_with(SECRETS),
        )
        .unwrap_err();
        assert_eq!(e.key, "team.timezone");
        let e = Config::from_toml(
            &format!("{base}[severity.sev1]\nrto = \"soon\""),
            &env_with(SECRETS),
        )
        .unwrap_err();
        assert_eq!(e.key, "severity.sev1.rto");
        let e = Config::from_toml(base, &env_with(&[])).unwrap_err();
        assert_eq!(e.key, "SLACK_SIGNING_SECRET");
        let e = Config::from_toml(&format!("{base}[slack.extra]"), &env_with(SECRETS)).unwrap_err();
        assert!(e.problem.contains("unknown field"), "{e}");
    }

    #[test]
    fn severity_overrides_apply() {
        let text = "[slack]\nincident_response_channel = \"C0123ABCDE\"\n[severity.sev2]\nstatus_every = \"45m\"\n[severity.sev4]\nrespond_within = \"1d\"";
        let c = Config::from_toml(text, &env_with(SECRETS)).unwrap();
        assert_eq!(
            c.severities.get(Severity::Sev2).status_every,
            Some(TimeDelta::minutes(45))
        );
        assert_eq!(
            c.severities.get(Severity::Sev4).respond_within,
            RespondWithin::After(TimeDelta::days(1))
        );
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://klaxon:hunter2@db:5432/k"),
            "postgres://klaxon:***@db:5432/k"
        );
        assert_eq!(redact_url("sqlite://klaxon.db"), "sqlite://klaxon.db");
    }
}
