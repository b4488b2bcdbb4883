//! `[recovery]`: how approved recovery commands run: live or dry-run, where the catalog
//! is, the AWS region and Kubernetes client, the SDK call timeout, one executor target per
//! environment (parsed in `access`) and the TOTP step-up key.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Env, EnvironmentConfig, access, err};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RecoverySection {
    execution: Option<String>,
    catalog_dir: Option<PathBuf>,
    aws_region: Option<String>,
    aws_endpoint_url: Option<String>,
    kubernetes: Option<bool>,
    call_timeout: Option<String>,
    #[serde(default)]
    environments: std::collections::BTreeMap<String, access::EnvironmentSection>,
}

/// How recovery commands run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// The kill switch: `execution = "dry-run"` stops every run at its preview.
    pub dry_run: bool,
    /// Folder of approved command files.
    pub catalog_dir: PathBuf,
    /// AWS region for RDS.
    pub aws_region: String,
    /// RDS endpoint override (tests: moto).
    pub aws_endpoint_url: Option<String>,
    /// Whether to build a Kubernetes client (kubeconfig or in-cluster).
    pub kubernetes: bool,
    /// How long one SDK call (RDS, Kubernetes) may take before it counts as a transport
    /// error (`outcome_unknown` for a mutating call).
    pub call_timeout: std::time::Duration,
    /// One executor target per value of a command's `environment` parameter.
    pub environments: std::collections::BTreeMap<String, EnvironmentConfig>,
    /// Key sealing TOTP step-up secrets (`KLAXON_TOTP_KEY`); without it, commands with
    /// `step_up = "totp"` cannot be approved.
    pub totp_key: Option<crate::totp::TotpKey>,
}

/// The `[recovery]` section with its environment overrides and defaults.
pub(super) fn recovery_config(
    section: RecoverySection,
    env: Env<'_>,
) -> Result<RecoveryConfig, ConfigError> {
    let execution = env("KLAXON_EXECUTION")
        .or(section.execution)
        .unwrap_or_else(|| "live".into());
    let dry_run = match execution.as_str() {
        "live" => false,
        "dry-run" => true,
        other => {
            return Err(err(
                "recovery.execution",
                format!("`{other}` is not \"live\" or \"dry-run\""),
            ));
        }
    };
    let recovery = RecoveryConfig {
        dry_run,
        catalog_dir: env("KLAXON_CATALOG_DIR")
            .map(PathBuf::from)
            .or(section.catalog_dir)
            .unwrap_or_else(|| PathBuf::from("commands")),
        aws_region: env("AWS_REGION")
            .or(section.aws_region)
            .unwrap_or_else(|| "us-east-1".into()),
        aws_endpoint_url: env("KLAXON_AWS_ENDPOINT_URL").or(section.aws_endpoint_url),
        kubernetes: section.kubernetes.unwrap_or(true),
        call_timeout: access::call_timeout(section.call_timeout)?,
        environments: std::collections::BTreeMap::new(),
        totp_key: access::totp_key(env)?,
    };
    let recovery = RecoveryConfig {
        environments: access::environments(section.environments, &recovery.aws_region)?,
        ..recovery
    };
    Ok(recovery)
}
