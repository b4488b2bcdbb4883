//! `[severity.sevN]`: overrides of each severity's meaning, response deadline, RTO, RPO
//! and status-update cadence, over the built-in policies.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, duration, err};
use crate::domain::severity::{RespondWithin, Severity, SeverityPolicies};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SeveritySection {
    meaning: Option<String>,
    respond_within: Option<String>,
    rto: Option<String>,
    rpo: Option<String>,
    status_every: Option<String>,
}

/// The `[severity.*]` tables over [`SeverityPolicies::default`].
pub(super) fn severities(
    sections: BTreeMap<String, SeveritySection>,
) -> Result<SeverityPolicies, ConfigError> {
    let mut severities = SeverityPolicies::default();
    for (name, section) in sections {
        let severity = match Severity::parse(&name) {
            Some(s) if name.starts_with("sev") => s,
            _ => {
                return Err(err(
                    format!("severity.{name}"),
                    "unknown severity; use sev1, sev2, sev3 or sev4",
                ));
            }
        };
        let key = |k: &str| format!("severity.{name}.{k}");
        let policy = severities.get_mut(severity);
        if let Some(m) = section.meaning {
            policy.meaning = m;
        }
        if let Some(r) = section.respond_within {
            policy.respond_within = if r == "next-business-day" {
                RespondWithin::NextBusinessDay
            } else {
                RespondWithin::After(duration(&key("respond_within"), &r)?)
            };
        }
        if let Some(r) = section.rto {
            policy.rto = duration(&key("rto"), &r)?;
        }
        if let Some(r) = section.rpo {
            policy.rpo = duration(&key("rpo"), &r)?;
        }
        if let Some(r) = section.status_every {
            policy.status_every = if r == "never" {
                None
            } else {
                Some(duration(&key("status_every"), &r)?)
            };
        }
    }
    Ok(severities)
}
