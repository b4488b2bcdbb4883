//! The recovery command catalog: loads `commands/*.toml` (one approved command per file),
//! validates every file strictly and describes the result for people (`klaxon commands
//! list|show`).
//!
//! This module owns the file format and its rules; it never runs anything. Request-time
//! checks of parameter values live in [`super::params`].
//!
//! File format (every key except `name`, `summary`, `action` and `risk` is optional):
//!
//! ```toml
//! name = "k8s-scale"                # must equal the file stem
//! summary = "Scale a deployment"
//! action = "k8s-scale"              # an Action, kebab-case
//! risk = "high"                     # low | medium | high
//! approvals = 1                     # approvers besides the requester; 0 only if read-only
//! expires_in = "15m"                # humantime, at most 24h
//! step_up = "totp"                  # optional: approvers confirm with a TOTP code
//!
//! [requesters]                      # empty: anyone in the incident channel
//! roles = ["commander", "ops"]
//!
//! [approvers]                       # must name someone when approvals > 0
//! roles = ["commander"]
//! groups = ["S0123ABCD"]
//!
//! [params.environment]              # needed by any param with `allowed`
//! type = "enum"
//! values = ["prod", "staging"]
//!
//! [params.namespace]
//! type = "string"                   # string | integer | enum | timestamp
//! pattern = "[a-z0-9-]{1,63}"       # anchored by the loader: ^(?:...)$
//! allowed = { prod = ["payments"], staging = ["payments"] }
//! ```
//!
//! Errors name the file, the key and the rule, one per line, and every error of every
//! file is reported (a file whose TOML does not parse reports that one error, with its line).
//!
//! The files of this module: here the catalog's types (what a validated command is);
//! `load` reads and checks a file's command keys, `declared_params` its `[params.*]`
//! tables, and `describe` says it all in words for the CLI.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::Action;
use crate::domain::incident::Role;

mod declared_params;
mod describe;
mod load;

pub use load::{load_dir, load_file, parse};

/// Expiry of a request when the file does not set `expires_in`.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Longest allowed `expires_in`.
pub const MAX_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// Most approvals a command may require (more is almost certainly a typo).
pub const MAX_APPROVALS: u32 = 5;
/// Name of the parameter that selects the environment for `allowed` lists.
pub const ENVIRONMENT: &str = "environment";

/// How dangerous a command is; shown to requesters and approvers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads, or changes something easily undone.
    Low,
    /// Changes state; recoverable.
    Medium,
    /// Can stop a service or lose data.
    High,
}

impl Risk {
    /// Lowercase name as written in catalog files.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who may request or approve: any listed Slack user, member of a listed user group, or
/// holder of a listed incident role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Slack user ids (`U...` / `W...`).
    #[serde(default)]
    pub users: Vec<String>,
    /// Slack user group ids (`S...`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Incident roles.
    #[serde(default)]
    pub roles: Vec<Role>,
}

impl Policy {
    /// Whether the policy names nobody.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.roles.is_empty()
    }

    /// Whether someone with this id, these user groups and these incident roles is named.
    pub fn matches(&self, user: &str, user_groups: &[String], user_roles: &[Role]) -> bool {
        self.users.iter().any(|u| u == user)
            || self.groups.iter().any(|g| user_groups.contains(g))
            || self.roles.iter().any(|r| user_roles.contains(r))
    }
}

/// A string parameter's regular expression, kept as written and compiled anchored.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source` wrapped in `^(?:...)$`, so it must match the whole value.
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        let regex = Regex::new(&format!("^(?:{source})$"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The pattern as written in the file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The anchored pattern actually matched.
    pub fn anchored(&self) -> &str {
        self.regex.as_str()
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A parameter's type and its type-specific rule.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// Text that must match `pattern` (whole value).
    String {
        /// The anchored pattern.
        pattern: Pattern,
    },
    /// A decimal integer within the optional bounds (inclusive).
    Integer {
        /// Smallest accepted value.
        min: Option<i64>,
        /// Largest accepted value.
        max: Option<i64>,
    },
    /// One of a fixed list of words.
    Enum {
        /// The accepted words.
        values: Vec<String>,
    },
    /// An RFC 3339 instant, or `latest` when allowed.
    Timestamp {
        /// Whether the word `latest` is accepted.
        allow_latest: bool,
    },
}

impl ParamKind {
    /// The type name as written in catalog files.
    pub fn type_name(&self) -> &'static str {
        match self {
            ParamKind::String { .. } => "string",
            ParamKind::Integer { .. } => "integer",
            ParamKind::Enum { .. } => "enum",
            ParamKind::Timestamp { .. } => "timestamp",
        }
    }

    /// The rule in words, e.g. `matches ^(?:[a-z]+)$` or `0 to 50`.
    pub fn rule(&self) -> String {
        match self {
            ParamKind::String { pattern } => format!("matches {}", pattern.anchored()),
            ParamKind::Integer { min, max } => match (min, max) {
                (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
                (Some(lo), None) => format!(">= {lo}"),
                (None, Some(hi)) => format!("<= {hi}"),
                (None, None) => "any integer".to_string(),
            },
            ParamKind::Enum { values } => format!("one of {}", values.join(", ")),
            ParamKind::Timestamp { allow_latest: true } => {
                "RFC 3339 time (e.g. 2025-01-06T10:30:00Z) or `latest`".to_string()
            }
            ParamKind::Timestamp {
                allow_latest: false,
            } => "RFC 3339 time (e.g. 2025-01-06T10:30:00Z)".to_string(),
        }
    }
}

/// One declared parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Type and rule.
    pub kind: ParamKind,
    /// Whether requests must give it.
    pub required: bool,
    /// Help text.
    pub description: Option<String>,
    /// Allowed values per environment (keyed by the `environment` parameter's value).
    /// Empty: no restriction. Otherwise an environment without an entry allows nothing.
    pub allowed: BTreeMap<String, Vec<String>>,
}

/// A validated, approved command.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandSpec {
    /// Name (the file stem).
    pub name: String,
    /// One-line summary.
    pub summary: String,
    /// What it runs.
    pub action: Action,
    /// How dangerous it is.
    pub risk: Risk,
    /// Distinct approvers needed besides the requester.
    pub approvals: u32,
    /// How long a request stays approvable.
    pub expires_in: Duration,
    /// Who may request (empty: anyone in the incident channel).
    pub requesters: Policy,
    /// Who may approve.
    pub approvers: Policy,
    /// Declared parameters by name.
    pub params: BTreeMap<String, ParamSpec>,
    /// `step_up = "totp"`: each approver confirms with a TOTP code.
    pub step_up: bool,
}

impl CommandSpec {
    /// Whether this person may request the command.
    pub fn may_request(&self, user: &str, groups: &[String], roles: &[Role]) -> bool {
        self.requesters.is_empty() || self.requesters.matches(user, groups, roles)
    }

    /// Whether this person may approve the command (the requester never counts; callers
    /// check that).
    pub fn may_approve(&self, user: &str, groups: &[String], roles: &[Role]) -> bool {
        self.approvers.matches(user, groups, roles)
    }

    /// Parameter names in the order people read them: the action's, then `environment`.
    pub fn param_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .action
            .params()
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| self.params.contains_key(*n))
            .collect();
        if self.params.contains_key(ENVIRONMENT) {
            names.push(ENVIRONMENT);
        }
        names
    }
}

/// Every approved command, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// Commands by name.
    pub commands: BTreeMap<String, CommandSpec>,
}

impl Catalog {
    /// The command called `name`.
    pub fn get(&self, name: &str) -> Option<&CommandSpec> {
        self.commands.get(name)
    }

    /// Every command, by name.
    pub fn iter(&self) -> impl Iterator<Item = &CommandSpec> {
        self.commands.values()
    }
}

/// One problem in one catalog file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogError {
    /// The file (or directory) concerned.
    pub file: PathBuf,
    /// Line, for TOML syntax and type errors.
    pub line: Option<usize>,
    /// Dotted key, e.g. `params.replicas.max`; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub rule: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.rule)
    }
}

impl std::error::Error for CatalogError {}

/// Every problem found while loading a catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogErrors(pub Vec<CatalogError>);

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for CatalogErrors {}

#[cfg(test)]
mod tests;
