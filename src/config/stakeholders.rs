//! `[stakeholders]`: who hears about incidents outside the incident channel (groups with
//! a severity threshold, a cadence per severity, a time zone, destinations, internal or
//! external), the SMTP relay and the Statuspage page they are reached through, and the
//! security rule. See README "Stakeholder communication" for a worked example.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;
use chrono_tz::Tz;
use secrecy::SecretString;
use serde::Deserialize;

use super::{ConfigError, Env, channel_id, duration, err, secret_from};
use crate::domain::severity::Severity;
use crate::domain::stakeholders::{Audience, Group, StakeholderPolicy, UpdateFilter};
use crate::notify::{EmailSettings, SmtpTls, StatuspageSettings};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct StakeholdersSection {
    preview_delay: Option<String>,
    #[serde(default)]
    security_keywords: Vec<String>,
    regulatory_within: Option<String>,
    regulatory_every: Option<String>,
    email: Option<EmailSection>,
    statuspage: Option<StatuspageSection>,
    #[serde(default)]
    groups: BTreeMap<String, GroupSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailSection {
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    from: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatuspageSection {
    api_url: Option<String>,
    page_id: String,
    api_key_file: Option<PathBuf>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSection {
    audience: String,
    threshold: String,
    #[serde(default)]
    every: BTreeMap<String, String>,
    timezone: Option<String>,
    updates: Option<String>,
    #[serde(default)]
    slack_channels: Vec<String>,
    #[serde(default)]
    emails: Vec<String>,
    statuspage_component: Option<String>,
}

/// Stakeholder settings: the pure policy plus how to reach email and the status page.
#[derive(Clone, Debug, Default)]
pub struct StakeholdersConfig {
    /// Groups, cadences, the security rule.
    pub policy: StakeholderPolicy,
    /// SMTP relay, when configured.
    pub email: Option<EmailSettings>,
    /// Statuspage, when configured.
    pub statuspage: Option<StatuspageSettings>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

fn timeout(key: &str, text: Option<String>) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => duration(key, &t)?
            .to_std()
            .map_err(|_| err(key, "must be positive")),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `[stakeholders]` section, validated. Secrets (`KLAXON_SMTP_PASSWORD`,
/// `KLAXON_STATUSPAGE_API_KEY`, or `*_FILE` / the `*_file` keys) are required only when
/// `require_secrets` (not for `klaxon check`).
pub(super) fn stakeholders_config(
    section: StakeholdersSection,
    env: Env<'_>,
    require_secrets: bool,
) -> Result<StakeholdersConfig, ConfigError> {
    let mut policy = StakeholderPolicy::default();
    let positive = |key: &str, text: Option<String>, default: TimeDelta| match text {
        None => Ok(default),
        Some(t) => duration(key, &t),
    };
    policy.preview_delay = positive(
        "stakeholders.preview_delay",
        section.preview_delay,
        policy.preview_delay,
    )?;
    policy.regulatory_within = positive(
        "stakeholders.regulatory_within",
        section.regulatory_within,
        policy.regulatory_within,
    )?;
    policy.regulatory_every = positive(
        "stakeholders.regulatory_every",
        section.regulatory_every,
        policy.regulatory_every,
    )?;
    for (i, k) in section.security_keywords.iter().enumerate() {
        if k.trim().is_empty() {
            return Err(err(
                format!("stakeholders.security_keywords[{i}]"),
                "must not be empty",
            ));
        }
    }
    policy.security_keywords = section.security_keywords;

    let secret = |var: &str, file: Option<&std::path::Path>, key: &str| match secret_from(
        env, var, file, key,
    ) {
        Ok(s) => Ok(Some(SecretString::from(s))),
        Err(e) if !require_secrets && e.problem.starts_with("not set") => Ok(None),
        Err(e) => Err(e),
    };

    let email = match section.email {
        None => None,
        Some(e) => {
            let tls = match e.tls.as_deref().unwrap_or("starttls") {
                "starttls" => SmtpTls::StartTls,
                "plain" => SmtpTls::Plain,
                other => {
                    return Err(err(
                        "stakeholders.email.tls",
                        format!("`{other}` is not \"starttls\" or \"plain\""),
                    ));
                }
            };
            if e.host.trim().is_empty() {
                return Err(err("stakeholders.email.host", "must not be empty"));
            }
            if tls == SmtpTls::Plain && e.username.is_some() && !is_loopback(&e.host) {
                return Err(err(
                    "stakeholders.email.tls",
                    "\"plain\" would send the SMTP password unencrypted; use \"starttls\", or plain only to a relay on this host",
                ));
            }
            let from = e.from.parse().map_err(|_| {
                err(
                    "stakeholders.email.from",
                    format!(
                        "`{}` is not a mailbox like \"Klaxon <klaxon@example.com>\"",
                        e.from
                    ),
                )
            })?;
            let password = match &e.username {
                Some(_) => secret(
                    "KLAXON_SMTP_PASSWORD",
                    e.password_file.as_deref(),
                    "stakeholders.email.password_file",
                )?,
                None => None,
            };
            Some(EmailSettings {
                port: e.port.unwrap_or(match tls {
                    SmtpTls::StartTls => 587,
                    SmtpTls::Plain => 25,
                }),
                host: e.host,
                tls,
                username: e.username,
                password,
                from,
                timeout: timeout("stakeholders.email.timeout", e.timeout)?,
            })
        }
    };

    let statuspage = match section.statuspage {
        None => None,
        Some(s) => {
            let api_url = s
                .api_url
                .unwrap_or_else(|| "https://api.statuspage.io/v1".into());
            if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
                return Err(err(
                    "stakeholders.statuspage.api_url",
                    format!("`{api_url}` is not an http(s) URL"),
                ));
            }
            if s.page_id.is_empty() || !s.page_id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(err(
                    "stakeholders.statuspage.page_id",
                    format!(
                        "`{}` is not a Statuspage page id (letters and digits)",
                        s.page_id
                    ),
                ));
            }
            let api_key = secret(
                "KLAXON_STATUSPAGE_API_KEY",
                s.api_key_file.as_deref(),
                "stakeholders.statuspage.api_key_file",
            )?
            .unwrap_or_else(|| SecretString::from(String::new()));
            Some(StatuspageSettings {
                api_url,
                page_id: s.page_id,
                api_key,
                timeout: timeout("stakeholders.statuspage.timeout", s.timeout)?,
            })
        }
    };

    let mut page_groups = Vec::new();
    for (name, g) in section.groups {
        let key = |k: &str| format!("stakeholders.groups.{name}.{k}");
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(err(
                format!("stakeholders.groups.{name}"),
                "group names are lowercase letters, digits, - and _",
            ));
        }
        let audience = match g.audience.as_str() {
            "internal" => Audience::Internal,
            "external" => Audience::External,
            other => {
                return Err(err(
                    key("audience"),
                    format!("`{other}` is not \"internal\" or \"external\""),
                ));
            }
        };
        let threshold = Severity::parse(&g.threshold).ok_or_else(|| {
            err(
                key("threshold"),
                format!("`{}` is not sev1, sev2, sev3 or sev4", g.threshold),
            )
        })?;
        let mut every = BTreeMap::new();
        for (sev, text) in g.every {
            let severity = Severity::parse(&sev).ok_or_else(|| {
                err(
                    key("every"),
                    format!("`{sev}` is not sev1, sev2, sev3 or sev4"),
                )
            })?;
            every.insert(severity, duration(&key(&format!("every.{sev}")), &text)?);
        }
        let tz: Tz = match &g.timezone {
            None => chrono_tz::UTC,
            Some(t) => t.parse().map_err(|_| {
                err(
                    key("timezone"),
                    format!("`{t}` is not an IANA time zone like Europe/London"),
                )
            })?,
        };
        let updates = match g.updates.as_deref() {
            None if audience == Audience::External => UpdateFilter::Public,
            None | Some("all") => UpdateFilter::All,
            Some("public") => UpdateFilter::Public,
            Some(other) => {
                return Err(err(
                    key("updates"),
                    format!("`{other}` is not \"all\" or \"public\""),
                ));
            }
        };
        let mut slack_channels = Vec::new();
        for (i, c) in g.slack_channels.iter().enumerate() {
            slack_channels.push(channel_id(&key(&format!("slack_channels[{i}]")), c)?);
        }
        for (i, a) in g.emails.iter().enumerate() {
            if a.parse::<lettre::Address>().is_err() {
                return Err(err(
                    key(&format!("emails[{i}]")),
                    format!("`{a}` is not an email address"),
                ));
            }
        }
        if !g.emails.is_empty() && email.is_none() {
            return Err(err(
                key("emails"),
                "needs [stakeholders.email] (the SMTP relay to send through)",
            ));
        }
        if g.statuspage_component.is_some() {
            if statuspage.is_none() {
                return Err(err(
                    key("statuspage_component"),
                    "needs [stakeholders.statuspage] (the page and its API key)",
                ));
            }
            if audience == Audience::Internal {
                return Err(err(
                    key("statuspage_component"),
                    "a status page is public: the group must be `audience = \"external\"`",
                ));
            }
            page_groups.push(name.clone());
        }
        if g.slack_channels.is_empty() && g.emails.is_empty() && g.statuspage_component.is_none() {
            return Err(err(
                format!("stakeholders.groups.{name}"),
                "has no destination: give slack_channels, emails or statuspage_component",
            ));
        }
        policy.groups.push(Group {
            name,
            audience,
            threshold,
            every,
            tz,
            updates,
            slack_channels,
            emails: g.emails,
            statuspage_component: g.statuspage_component,
        });
    }
    if page_groups.len() > 1 {
        return Err(err(
            format!(
                "stakeholders.groups.{}.statuspage_component",
                page_groups[1]
            ),
            format!(
                "only one group may own the status page (also set in `{}`)",
                page_groups[0]
            ),
        ));
    }
    Ok(StakeholdersConfig {
        policy,
        email,
        statuspage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented `[stakeholders]` example in deploy/klaxon.example.toml, uncommented.
    pub(crate) fn example() -> String {
        let file = include_str!("../../deploy/klaxon.example.toml");
        let start = file
            .find("# [stakeholders]")
            .expect("the example documents [stakeholders]");
        let end = file[start..]
            .find("# end of [stakeholders]")
            .map_or(file.len(), |e| start + e);
        file[start..end]
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .unwrap_or(l.strip_prefix('#').unwrap_or(l))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn parse(text: &str, env: Env<'_>) -> Result<StakeholdersConfig, ConfigError> {
        #[derive(Deserialize)]
        struct File {
            stakeholders: StakeholdersSection,
        }
        let file: File = toml::from_str(text).map_err(|e| err("(file)", e.to_string()))?;
        stakeholders_config(file.stakeholders, env, true)
    }

    fn secrets(name: &str) -> Option<String> {
        match name {
            "KLAXON_SMTP_PASSWORD" => Some("smtp-pass".into()),
            "KLAXON_STATUSPAGE_API_KEY" => Some("sp-key".into()),
            _ => None,
        }
    }

    #[test]
    fn the_documented_example_loads() {
        let config = parse(&example(), &secrets).unwrap();
        let names: Vec<&str> = config
            .policy
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, vec!["customers", "engineering"]);
        let customers = &config.policy.groups[0];
        assert_eq!(customers.audience, Audience::External);
        assert_eq!(customers.updates, UpdateFilter::Public);
        assert_eq!(customers.every[&Severity::Sev1], TimeDelta::minutes(15));
        assert_eq!(config.email.as_ref().unwrap().port, 587);
        assert!(!format!("{config:?}").contains("smtp-pass"));
        assert!(!format!("{config:?}").contains("sp-key"));
    }

    #[test]
    fn the_readme_worked_example_loads() {
        let readme = include_str!("../../README.md");
        let section = readme
            .find("## Stakeholder communication")
            .expect("README has the stakeholder section");
        let start = section
            + readme[section..]
                .find("**Worked example.**")
                .expect("README has the worked example");
        let block = &readme[start..];
        let toml_start = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let toml_end = toml_start + block[toml_start..].find("```").expect("closed");
        let config = parse(&block[toml_start..toml_end], &secrets).unwrap();
        assert_eq!(config.policy.groups.len(), 2);
        assert_eq!(
            config.statuspage.unwrap().api_url,
            "https://api.statuspage.io/v1"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_rule() {
        let cases = [
            (
                "audience = \"everyone\"",
                "stakeholders.groups.ops.audience",
            ),
            ("threshold = \"sev9\"", "stakeholders.groups.ops.threshold"),
            (
                "timezone = \"Mars/Olympus\"",
                "stakeholders.groups.ops.timezone",
            ),
            ("emails = [\"nobody\"]", "stakeholders.groups.ops.emails[0]"),
            (
                "slack_channels = [\"#ops\"]",
                "stakeholders.groups.ops.slack_channels[0]",
            ),
            (
                "every = { sev1 = \"soon\" }",
                "stakeholders.groups.ops.every.sev1",
            ),
            (
                "statuspage_component = \"abc\"",
                "stakeholders.groups.ops.statuspage_component",
            ),
        ];
        for (line, key) in cases {
            let mut fields = BTreeMap::from([
                ("audience", "audience = \"internal\"".to_string()),
                ("threshold", "threshold = \"sev2\"".to_string()),
                (
                    "slack_channels",
                    "slack_channels = [\"C0123OPS01\"]".to_string(),
                ),
            ]);
            let field = line.split(' ').next().unwrap();
            fields.insert(field, line.to_string());
            let text = format!(
                "[stakeholders.groups.ops]\n{}\n",
                fields.values().cloned().collect::<Vec<_>>().join("\n")
            );
            let e = parse(&text, &secrets).unwrap_err();
            assert_eq!(e.key, key, "{line}: {e}");
        }
        let none = parse(
            "[stakeholders.groups.ops]\naudience = \"internal\"\nthreshold = \"sev1\"\n",
            &secrets,
        )
        .unwrap_err();
        assert!(none.problem.contains("no destination"), "{none}");
        let plain = parse(
            "[stakeholders.email]\nhost = \"smtp.example.com\"\ntls = \"plain\"\nfrom = \"k@example.com\"\nusername = \"k\"\n",
            &secrets,
        )
        .unwrap_err();
        assert_eq!(plain.key, "stakeholders.email.tls");
        let no_key =
            parse("[stakeholders.statuspage]\npage_id = \"abc\"\n", &|_| None).unwrap_err();
        assert_eq!(no_key.key, "KLAXON_STATUSPAGE_API_KEY");
    }
}
