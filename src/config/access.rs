//! The config sections issue 8 added: who administers incidents (`[roles]`), which Slack
//! app and workspace interactions must come from (`slack.team_id`, `slack.app_id`), and
//! one executor target per environment (`[recovery.environments.NAME]`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Env, err};

/// `[roles]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RolesSection {
    #[serde(default)]
    incident_admins: Vec<String>,
}

/// `[recovery.environments.NAME]` as written.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct EnvironmentSection {
    aws_region: Option<String>,
    aws_profile: Option<String>,
    aws_role_arn: Option<String>,
    aws_endpoint_url: Option<String>,
    kube_context: Option<String>,
    kubeconfig: Option<std::path::PathBuf>,
}

/// Who may override incident roles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolesConfig {
    /// Slack user groups (`S...`) whose members may hand over command (and any role) of
    /// any incident. Empty (the default): only the current commander hands over command.
    pub incident_admins: Vec<String>,
}

/// Where one environment's recovery commands act.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvironmentConfig {
    /// AWS region of its RDS resources.
    pub aws_region: String,
    /// Named AWS profile to take credentials from (else the default chain).
    pub aws_profile: Option<String>,
    /// Role to assume (STS AssumeRole) on top of those credentials.
    pub aws_role_arn: Option<String>,
    /// RDS endpoint override (tests: moto).
    pub aws_endpoint_url: Option<String>,
    /// kubeconfig context of its cluster; `None`: no Kubernetes commands there.
    pub kube_context: Option<String>,
    /// kubeconfig file (else `$KUBECONFIG` / `~/.kube/config`).
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl EnvironmentConfig {
    /// The AWS account id in the role ARN, when one is configured.
    pub fn aws_account(&self) -> Option<&str> {
        self.aws_role_arn
            .as_deref()
            .and_then(|arn| arn.split(':').nth(4))
            .filter(|a| !a.is_empty())
    }

    /// What people see in a preview: the account and region, and the cluster context.
    pub fn describe_aws(&self) -> String {
        let who = match (self.aws_account(), &self.aws_profile) {
            (Some(account), _) => format!("AWS account {account}"),
            (None, Some(profile)) => format!("AWS profile {profile}"),
            (None, None) => "AWS default credentials".to_string(),
        };
        let endpoint = self
            .aws_endpoint_url
            .as_deref()
            .map(|u| format!(" via {u}"))
            .unwrap_or_default();
        format!("{who}, region {}{endpoint}", self.aws_region)
    }

    /// The Kubernetes side of the preview.
    pub fn describe_kube(&self) -> String {
        match &self.kube_context {
            Some(c) => format!("Kubernetes context {c}"),
            None => "no Kubernetes cluster configured".to_string(),
        }
    }
}

fn group_id(key: &str, g: &str) -> Result<(), ConfigError> {
    let ok = g.starts_with('S')
        && g.len() >= 3
        && g.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(err(
            key,
            format!("`{g}` is not a user group id like S0123ABCD"),
        ))
    }
}

pub(super) fn roles(section: RolesSection) -> Result<RolesConfig, ConfigError> {
    for (i, g) in section.incident_admins.iter().enumerate() {
        group_id(&format!("roles.incident_admins[{i}]"), g)?;
    }
    Ok(RolesConfig {
        incident_admins: section.incident_admins,
    })
}

/// `slack.team_id` / `slack.app_id` with their env overrides, checked for shape.
pub(super) fn slack_ids(
    env: Env<'_>,
    team: Option<String>,
    app: Option<String>,
) -> Result<(Option<String>, Option<String>), ConfigError> {
    let team = env("KLAXON_SLACK_TEAM_ID").or(team);
    let app = env("KLAXON_SLACK_APP_ID").or(app);
    let shaped = |key: &str, v: &Option<String>, first: &[char], example: &str| match v {
        Some(v)
            if !(v.starts_with(first)
                && v.len() >= 3
                && v.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())) =>
        {
            Err(err(
                key,
                format!("`{v}` is not an id like {example} (Slack app > Basic Information)"),
            ))
        }
        _ => Ok(()),
    };
    // A workspace is T...; an Enterprise Grid org-wide install reports an E... id.
    shaped("slack.team_id", &team, &['T', 'E'], "T0123ABCD")?;
    shaped("slack.app_id", &app, &['A'], "A0123ABCD")?;
    Ok((team, app))
}

pub(super) fn environments(
    sections: BTreeMap<String, EnvironmentSection>,
    default_region: &str,
) -> Result<BTreeMap<String, EnvironmentConfig>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, s) in sections {
        let key = |k: &str| format!("recovery.environments.{name}.{k}");
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            || name.is_empty()
        {
            return Err(err(
                format!("recovery.environments.{name}"),
                "environment names are lowercase letters, digits, - and _ (as in the catalog's `environment` values)",
            ));
        }
        if let Some(arn) = &s.aws_role_arn
            && !(arn.starts_with("arn:aws")
                && arn.split(':').count() == 6
                && arn.contains(":role/"))
        {
            return Err(err(
                key("aws_role_arn"),
                format!("`{arn}` is not a role ARN like arn:aws:iam::123456789012:role/klaxon"),
            ));
        }
        if let Some(url) = &s.aws_endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(err(
                key("aws_endpoint_url"),
                format!("`{url}` is not an http(s) URL"),
            ));
        }
        out.insert(
            name,
            EnvironmentConfig {
                aws_region: s.aws_region.unwrap_or_else(|| default_region.to_string()),
                aws_profile: s.aws_profile,
                aws_role_arn: s.aws_role_arn,
                aws_endpoint_url: s.aws_endpoint_url,
                kube_context: s.kube_context,
                kubeconfig: s.kubeconfig,
            },
        );
    }
    Ok(out)
}

/// `recovery.call_timeout`: how long one SDK call may take.
pub(super) fn call_timeout(text: Option<String>) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(DEFAULT_CALL_TIMEOUT);
    };
    let d = humantime::parse_duration(&text).map_err(|e| {
        err(
            "recovery.call_timeout",
            format!("`{text}` is not a duration like \"60s\" ({e})"),
        )
    })?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(15 * 60) {
        return Err(err("recovery.call_timeout", "must be between 1s and 15m"));
    }
    Ok(d)
}

/// `KLAXON_TOTP_KEY` (environment only: it is a secret): the key sealing TOTP secrets.
pub(super) fn totp_key(env: Env<'_>) -> Result<Option<crate::totp::TotpKey>, ConfigError> {
    env("KLAXON_TOTP_KEY")
        .map(|k| crate::totp::TotpKey::from_hex(&k).map_err(|e| err("KLAXON_TOTP_KEY", e)))
        .transpose()
}

/// Default for `recovery.call_timeout`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn load(extra: &str, env: &[(&str, &str)]) -> Result<Config, super::ConfigError> {
        let vars: Vec<(String, String)> =
            [("SLACK_SIGNING_SECRET", "s"), ("SLACK_BOT_TOKEN", "xoxb-t")]
                .iter()
                .chain(env)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let lookup = move |name: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Config::from_toml(
            &format!("[slack]\nincident_response_channel = \"C0123ABCDE\"\n{extra}"),
            &lookup,
        )
    }

    #[test]
    fn environments_admins_ids_and_timeouts_load_and_name_their_keys() {
        let c = load(
            "team_id = \"T01\"\napp_id = \"A01\"\n[roles]\nincident_admins = [\"SADMIN\"]\n\
             [recovery]\ncall_timeout = \"20s\"\n\
             [recovery.environments.prod]\naws_role_arn = \"arn:aws:iam::123456789012:role/k\"\nkube_context = \"prod-ctx\"\n",
            &[("KLAXON_SLACK_APP_ID", "A02")],
        )
        .unwrap();
        assert_eq!(c.slack.team_id.as_deref(), Some("T01"));
        assert_eq!(c.slack.app_id.as_deref(), Some("A02"), "env overrides");
        assert_eq!(c.roles.incident_admins, ["SADMIN"]);
        assert_eq!(c.recovery.call_timeout, std::time::Duration::from_secs(20));
        let prod = &c.recovery.environments["prod"];
        assert_eq!(
            prod.aws_region, "us-east-1",
            "defaults to recovery.aws_region"
        );
        assert_eq!(
            prod.describe_aws(),
            "AWS account 123456789012, region us-east-1"
        );
        assert_eq!(prod.describe_kube(), "Kubernetes context prod-ctx");

        let key = |extra: &str| load(extra, &[]).unwrap_err().key;
        assert_eq!(
            key("[recovery.environments.prod]\naws_role_arn = \"admin\"\n"),
            "recovery.environments.prod.aws_role_arn"
        );
        assert_eq!(
            key("[roles]\nincident_admins = [\"ops\"]\n"),
            "roles.incident_admins[0]"
        );
        assert_eq!(key("team_id = \"acme\"\n"), "slack.team_id");
        assert_eq!(
            key("[recovery]\ncall_timeout = \"0s\"\n"),
            "recovery.call_timeout"
        );
        assert_eq!(
            key("[recovery.environments.Prod]\n"),
            "recovery.environments.Prod"
        );
    }
}
