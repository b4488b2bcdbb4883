//! `[escalation]`: the ladder of targets each severity escalates through, and the targets
//! themselves (Slack channels and user groups to tell, a PagerDuty routing key from the
//! environment or a file). Every ladder step must name a defined target.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use super::{ConfigError, Env, channel_id, duration, err};
use crate::domain::escalation::{EscalationPolicy, Step};
use crate::domain::severity::Severity;
use crate::paging::Target;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct EscalationSection {
    #[serde(default)]
    ladders: std::collections::BTreeMap<String, Vec<StepSection>>,
    #[serde(default)]
    targets: std::collections::BTreeMap<String, TargetSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StepSection {
    after: String,
    target: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetSection {
    #[serde(default)]
    slack_channels: Vec<String>,
    #[serde(default)]
    slack_usergroups: Vec<String>,
    pagerduty_routing_key_file: Option<PathBuf>,
}

/// The environment variable holding a target's PagerDuty routing key.
pub fn routing_key_var(target: &str) -> String {
    format!(
        "KLAXON_PAGERDUTY_KEY_{}",
        target.to_ascii_uppercase().replace('-', "_")
    )
}

pub(super) fn escalation_config(
    section: EscalationSection,
    env: Env<'_>,
) -> Result<(EscalationPolicy, std::collections::BTreeMap<String, Target>), ConfigError> {
    let mut policy = EscalationPolicy::default();
    let mut sections = section.targets;
    // The default ladders' targets exist even when not configured (they then page nobody
    // and post nowhere but the incident channel).
    for name in EscalationPolicy::default().targets() {
        sections.entry(name.to_string()).or_default();
    }
    let mut targets = std::collections::BTreeMap::new();
    for (name, t) in sections {
        let key = |k: &str| format!("escalation.targets.{name}.{k}");
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(err(
                format!("escalation.targets.{name}"),
                "target names are lowercase letters, digits, - and _",
            ));
        }
        for (i, c) in t.slack_channels.iter().enumerate() {
            channel_id(&key(&format!("slack_channels[{i}]")), c)?;
        }
        for (i, g) in t.slack_usergroups.iter().enumerate() {
            if !(g.starts_with('S')
                && g.len() >= 3
                && g.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
            {
                return Err(err(
                    key(&format!("slack_usergroups[{i}]")),
                    format!("`{g}` is not a user group id like S0123ABCD"),
                ));
            }
        }
        let var = routing_key_var(&name);
        let routing_key = match (env(&var), &t.pagerduty_routing_key_file) {
            (Some(k), _) => Some(k),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        err(
                            key("pagerduty_routing_key_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let target = Target {
            routing_key: routing_key
                .filter(|k| !k.is_empty())
                .map(SecretString::from),
            slack_channels: t.slack_channels,
            slack_usergroups: t.slack_usergroups,
        };
        targets.insert(name, target);
    }
    for (sev_name, steps) in section.ladders {
        let severity = match Severity::parse(&sev_name) {
            Some(s) if sev_name.starts_with("sev") => s,
            _ => {
                return Err(err(
                    format!("escalation.ladders.{sev_name}"),
                    "unknown severity; use sev1..sev4",
                ));
            }
        };
        let mut ladder = Vec::new();
        for (i, step) in steps.into_iter().enumerate() {
            let key = format!("escalation.ladders.{sev_name}[{i}]");
            if !targets.contains_key(&step.target) {
                return Err(err(
                    format!("{key}.target"),
                    format!(
                        "`{}` is not defined under [escalation.targets]",
                        step.target
                    ),
                ));
            }
            ladder.push(Step {
                target: step.target,
                after: duration(&format!("{key}.after"), &step.after)?,
            });
        }
        policy.set_ladder(severity, ladder);
    }
    Ok((policy, targets))
}
