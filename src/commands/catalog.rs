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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::Action;
use super::params::check_token;
use crate::domain::incident::Role;

/// Expiry of a request when the file does not set `expires_in`.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Longest allowed `expires_in`.
pub const MAX_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// Most approvals a command may require (more is almost certainly a typo).
pub const MAX_APPROVALS: u32 = 5;
/// Name of the parameter that selects the environment for `allowed` lists.
pub const ENVIRONMENT: &str = "environment";

static NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9-]{1,40}$").expect("valid regex"));
static USER_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[UW][A-Z0-9]{2,20}$").expect("valid regex"));
static GROUP_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^S[A-Z0-9]{2,20}$").expect("valid regex"));

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

    /// Human description, e.g. `roles commander; groups S0123ABCD`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.roles.is_empty() {
            let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
            parts.push(format!("roles {}", roles.join(", ")));
        }
        if !self.groups.is_empty() {
            parts.push(format!("groups {}", self.groups.join(", ")));
        }
        if !self.users.is_empty() {
            parts.push(format!("users {}", self.users.join(", ")));
        }
        parts.join("; ")
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

    /// One line for `klaxon commands list`.
    pub fn list_line(&self) -> String {
        format!(
            "{:<24} {:<6} {:<11}  {}",
            self.name,
            self.risk,
            approvals_text(self.approvals),
            self.summary
        )
    }

    /// Multi-line description for `klaxon commands show NAME`.
    pub fn describe(&self) -> String {
        let mut out = vec![format!("{}: {}", self.name, self.summary)];
        out.push(format!("  action:     {}", self.action));
        out.push(format!("  risk:       {}", self.risk));
        out.push(format!("  approvals:  {}", self.approvals_line()));
        out.push(format!(
            "  expires:    {} after the request",
            humantime::format_duration(self.expires_in)
        ));
        out.push(format!("  requesters: {}", self.requesters_text()));
        out.push(format!("  approvers:  {}", self.approvers_text()));
        if self.step_up {
            out.push("  step-up:    each approver confirms with a TOTP code".to_string());
        }
        out.push("  params:".to_string());
        for name in self.param_names() {
            out.extend(self.describe_param(name, &self.params[name]));
        }
        out.join("\n")
    }

    fn approvals_line(&self) -> String {
        match self.approvals {
            0 => "none (read-only: runs on request)".to_string(),
            n => format!("{} besides the requester", approvals_text(n)),
        }
    }

    fn requesters_text(&self) -> String {
        if self.requesters.is_empty() {
            "anyone in the incident channel".to_string()
        } else {
            self.requesters.describe()
        }
    }

    fn approvers_text(&self) -> String {
        if self.approvers.is_empty() {
            "nobody (runs without approval)".to_string()
        } else {
            self.approvers.describe()
        }
    }

    fn describe_param(&self, name: &str, spec: &ParamSpec) -> Vec<String> {
        let need = if spec.required {
            "required"
        } else {
            "optional"
        };
        let mut line = format!(
            "    {name} ({}, {need}): {}",
            spec.kind.type_name(),
            spec.kind.rule()
        );
        if let Some(d) = &spec.description {
            line.push_str(&format!(" -- {d}"));
        }
        let mut lines = vec![line];
        for (env, values) in &spec.allowed {
            lines.push(format!("      allowed in {env}: {}", values.join(", ")));
        }
        lines
    }
}

fn approvals_text(n: u32) -> String {
    match n {
        0 => "no approval".to_string(),
        1 => "1 approval".to_string(),
        n => format!("{n} approvals"),
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

    /// Multi-line description of one command, for `klaxon commands show NAME`.
    pub fn describe(&self, name: &str) -> Option<String> {
        self.get(name).map(CommandSpec::describe)
    }

    /// One line per command (name, risk, approvals, summary), for `klaxon commands list`.
    pub fn list_lines(&self) -> Vec<String> {
        self.iter().map(CommandSpec::list_line).collect()
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

/// Loads every `*.toml` file in `dir` (other files and subdirectories are ignored) and
/// returns the catalog, or every error found in every file.
pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogErrors> {
    let files = toml_files(dir).map_err(|e| CatalogErrors(vec![e]))?;
    let mut catalog = Catalog::default();
    let mut errors = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(spec) => {
                catalog.commands.insert(spec.name.clone(), spec);
            }
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(catalog)
    } else {
        Err(CatalogErrors(errors))
    }
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    let read_err = |e: std::io::Error| CatalogError {
        file: dir.to_path_buf(),
        line: None,
        key: String::new(),
        rule: format!("cannot read the catalog directory: {e}"),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads and validates one catalog file.
pub fn load_file(path: &Path) -> Result<CommandSpec, Vec<CatalogError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![CatalogError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            rule: format!("cannot read: {e}"),
        }]
    })?;
    parse(path, &text)
}

/// Validates the text of a catalog file; `path` names it in errors and its stem must equal
/// the command's `name`.
pub fn parse(path: &Path, text: &str) -> Result<CommandSpec, Vec<CatalogError>> {
    let mut errs = Errors::new(path);
    let raw: RawCommand = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            errs.push_toml(text, &e);
            return Err(errs.list);
        }
    };
    let spec = build(&mut errs, raw);
    if errs.list.is_empty() {
        Ok(spec)
    } else {
        Err(errs.list)
    }
}

/// Collects errors for one file.
struct Errors {
    file: PathBuf,
    list: Vec<CatalogError>,
}

impl Errors {
    fn new(file: &Path) -> Errors {
        Errors {
            file: file.to_path_buf(),
            list: Vec::new(),
        }
    }

    fn push(&mut self, key: impl Into<String>, rule: impl Into<String>) {
        self.list.push(CatalogError {
            file: self.file.clone(),
            line: None,
            key: key.into(),
            rule: rule.into(),
        });
    }

    /// A TOML syntax or type error: its line, its key when toml knows it, and its message.
    fn push_toml(&mut self, text: &str, e: &toml::de::Error) {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        // toml prints the dotted key (`in \`params.x\``) only when it has no input to
        // quote; that is the one public way to get at it.
        let mut bare = e.clone();
        bare.set_input(None);
        let shown = bare.to_string();
        let key = shown
            .lines()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
            .unwrap_or_default()
            .to_string();
        let rule = e.message().lines().next().unwrap_or("invalid TOML").trim();
        self.list.push(CatalogError {
            file: self.file.clone(),
            line,
            key,
            rule: rule.to_string(),
        });
    }
}

/// A catalog file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    name: String,
    summary: String,
    action: Action,
    risk: Risk,
    approvals: Option<u32>,
    expires_in: Option<String>,
    #[serde(default)]
    requesters: Policy,
    #[serde(default)]
    approvers: Policy,
    #[serde(default)]
    params: BTreeMap<String, RawParam>,
    step_up: Option<String>,
}

/// A `[params.<name>]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    kind: TypeName,
    required: Option<bool>,
    description: Option<String>,
    pattern: Option<String>,
    values: Option<Vec<String>>,
    min: Option<i64>,
    max: Option<i64>,
    allow_latest: Option<bool>,
    allowed: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TypeName {
    String,
    Integer,
    Enum,
    Timestamp,
}

impl TypeName {
    fn as_str(self) -> &'static str {
        match self {
            TypeName::String => "string",
            TypeName::Integer => "integer",
            TypeName::Enum => "enum",
            TypeName::Timestamp => "timestamp",
        }
    }
}

fn build(errs: &mut Errors, raw: RawCommand) -> CommandSpec {
    check_name(errs, &raw.name);
    if raw.summary.trim().is_empty() || raw.summary.contains('\n') {
        errs.push("summary", "must be one non-empty line");
    }
    let approvals = raw.approvals.unwrap_or(1);
    check_approvals(errs, raw.action, approvals);
    let expires_in = expiry(errs, raw.expires_in.as_deref());
    check_policy(errs, "requesters", &raw.requesters);
    check_policy(errs, "approvers", &raw.approvers);
    if approvals > 0 && raw.approvers.is_empty() {
        errs.push(
            "approvers",
            "must name at least one user, group or role when approvals > 0",
        );
    }
    let params = build_params(errs, raw.action, raw.params);
    let step_up = match raw.step_up.as_deref() {
        None => false,
        Some("totp") => true,
        Some(other) => {
            errs.push(
                "step_up",
                format!("`{other}` is not a step-up method; the only one is \"totp\""),
            );
            false
        }
    };
    CommandSpec {
        step_up,
        name: raw.name,
        summary: raw.summary.trim().to_string(),
        action: raw.action,
        risk: raw.risk,
        approvals,
        expires_in,
        requesters: raw.requesters,
        approvers: raw.approvers,
        params,
    }
}

fn check_name(errs: &mut Errors, name: &str) {
    if !NAME_RE.is_match(name) {
        errs.push("name", format!("`{name}` must match {}", NAME_RE.as_str()));
    }
    let stem = errs.file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != name {
        let rule = format!("must equal the file name without `.toml` (`{stem}`)");
        errs.push("name", rule);
    }
}

fn check_approvals(errs: &mut Errors, action: Action, approvals: u32) {
    if approvals == 0 && !action.is_read_only() {
        let rule = format!("0 is only allowed for read-only actions ({action} changes state)");
        errs.push("approvals", rule);
    }
    if approvals > MAX_APPROVALS {
        errs.push("approvals", format!("must be <= {MAX_APPROVALS}"));
    }
}

fn expiry(errs: &mut Errors, text: Option<&str>) -> Duration {
    let Some(text) = text else {
        return DEFAULT_EXPIRY;
    };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => errs.push("expires_in", "must be longer than zero"),
        Ok(d) if d > MAX_EXPIRY => errs.push("expires_in", "must be at most 24h"),
        Ok(d) => return d,
        Err(e) => errs.push(
            "expires_in",
            format!("`{text}` is not a duration like \"15m\" or \"1h\" ({e})"),
        ),
    }
    DEFAULT_EXPIRY
}

fn check_policy(errs: &mut Errors, key: &str, policy: &Policy) {
    for (i, user) in policy.users.iter().enumerate() {
        if !USER_RE.is_match(user) {
            let rule = format!("`{user}` is not a Slack user id (like U0123ABCD)");
            errs.push(format!("{key}.users[{i}]"), rule);
        }
    }
    for (i, group) in policy.groups.iter().enumerate() {
        if !GROUP_RE.is_match(group) {
            let rule = format!("`{group}` is not a Slack user group id (like S0123ABCD)");
            errs.push(format!("{key}.groups[{i}]"), rule);
        }
    }
}

/// The value type an executor reads for a parameter name (see [`super::Params`]).
fn expected_type(name: &str) -> &'static [TypeName] {
    match name {
        "replicas" => &[TypeName::Integer],
        "restore_time" => &[TypeName::Timestamp],
        ENVIRONMENT => &[TypeName::Enum],
        _ => &[TypeName::String, TypeName::Enum],
    }
}

fn build_params(
    errs: &mut Errors,
    action: Action,
    raw: BTreeMap<String, RawParam>,
) -> BTreeMap<String, ParamSpec> {
    check_param_names(errs, action, &raw);
    let env_values = environment_values(&raw);
    let env_required = raw.get(ENVIRONMENT).map(|p| p.required);
    let uses_allowed = raw.values().any(|p| p.allowed.is_some());
    let mut params = BTreeMap::new();
    for (name, p) in raw {
        if !is_known(action, &name) {
            continue; // reported by check_param_names
        }
        if let Some(spec) = build_param(errs, action, &name, p, env_values.as_deref()) {
            params.insert(name, spec);
        }
    }
    if uses_allowed {
        check_environment(errs, env_required);
    }
    params
}

/// Whether `name` is a parameter of `action` or the environment.
fn is_known(action: Action, name: &str) -> bool {
    name == ENVIRONMENT || action.params().iter().any(|(n, _)| *n == name)
}

fn check_param_names(errs: &mut Errors, action: Action, raw: &BTreeMap<String, RawParam>) {
    let known: Vec<&str> = action.params().iter().map(|(n, _)| *n).collect();
    for name in raw.keys() {
        if !is_known(action, name) {
            let rule = format!(
                "unknown parameter for action {action} (known: {}, {ENVIRONMENT})",
                known.join(", ")
            );
            errs.push(format!("params.{name}"), rule);
        }
    }
    for (name, required) in action.params() {
        if *required && !raw.contains_key(*name) {
            let rule = format!("must be declared: action {action} requires it");
            errs.push(format!("params.{name}"), rule);
        }
    }
}

fn environment_values(raw: &BTreeMap<String, RawParam>) -> Option<Vec<String>> {
    raw.get(ENVIRONMENT)
        .filter(|p| p.kind == TypeName::Enum)
        .and_then(|p| p.values.clone())
        .filter(|v| !v.is_empty())
}

/// `declared`: `None` when there is no `environment` param, else its `required` key.
fn check_environment(errs: &mut Errors, declared: Option<Option<bool>>) {
    let key = format!("params.{ENVIRONMENT}");
    match declared {
        None => errs.push(
            key,
            "must be declared (an enum) because a parameter has `allowed` values",
        ),
        Some(Some(false)) => errs.push(
            format!("{key}.required"),
            "must be true because a parameter has `allowed` values",
        ),
        Some(_) => {}
    }
}

fn build_param(
    errs: &mut Errors,
    action: Action,
    name: &str,
    p: RawParam,
    env_values: Option<&[String]>,
) -> Option<ParamSpec> {
    let key = format!("params.{name}");
    let expected = expected_type(name);
    if !expected.contains(&p.kind) {
        let names: Vec<String> = expected
            .iter()
            .map(|t| format!("\"{}\"", t.as_str()))
            .collect();
        let rule = format!("must be {} for this parameter", names.join(" or "));
        errs.push(format!("{key}.type"), rule);
    }
    let required = resolve_required(errs, action, name, &key, p.required);
    check_type_keys(errs, &key, &p);
    let kind = build_kind(errs, &key, &p)?;
    let allowed = build_allowed(errs, &key, &kind, p.allowed, env_values);
    let description = p.description.map(|d| d.trim().to_string());
    Some(ParamSpec {
        kind,
        required,
        description,
        allowed,
    })
}

fn resolve_required(
    errs: &mut Errors,
    action: Action,
    name: &str,
    key: &str,
    given: Option<bool>,
) -> bool {
    let by_action = action
        .params()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r);
    let default = by_action.unwrap_or(name == ENVIRONMENT);
    if given == Some(false) && by_action == Some(true) {
        let rule = format!("must be true: action {action} requires `{name}`");
        errs.push(format!("{key}.required"), rule);
    }
    given.unwrap_or(default)
}

/// Refuses keys that belong to another type (a `pattern` on an integer is a mistake).
fn check_type_keys(errs: &mut Errors, key: &str, p: &RawParam) {
    let present = [
        ("pattern", p.pattern.is_some(), TypeName::String),
        ("values", p.values.is_some(), TypeName::Enum),
        ("min", p.min.is_some(), TypeName::Integer),
        ("max", p.max.is_some(), TypeName::Integer),
        (
            "allow_latest",
            p.allow_latest.is_some(),
            TypeName::Timestamp,
        ),
    ];
    for (field, is_set, owner) in present {
        if is_set && p.kind != owner {
            let rule = format!("only allowed for type \"{}\"", owner.as_str());
            errs.push(format!("{key}.{field}"), rule);
        }
    }
    let allowed_ok = matches!(p.kind, TypeName::String | TypeName::Enum);
    if p.allowed.is_some() && !allowed_ok {
        errs.push(
            format!("{key}.allowed"),
            "only allowed for type \"string\" or \"enum\"",
        );
    }
}

fn build_kind(errs: &mut Errors, key: &str, p: &RawParam) -> Option<ParamKind> {
    match p.kind {
        TypeName::String => string_kind(errs, key, p.pattern.as_deref()),
        TypeName::Integer => integer_kind(errs, key, p.min, p.max),
        TypeName::Enum => enum_kind(errs, key, p.values.as_deref()),
        TypeName::Timestamp => Some(ParamKind::Timestamp {
            allow_latest: p.allow_latest.unwrap_or(false),
        }),
    }
}

fn string_kind(errs: &mut Errors, key: &str, pattern: Option<&str>) -> Option<ParamKind> {
    let Some(source) = pattern else {
        errs.push(format!("{key}.pattern"), "required for type \"string\"");
        return None;
    };
    match Pattern::new(source) {
        Ok(pattern) => Some(ParamKind::String { pattern }),
        Err(e) => {
            let detail = e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            errs.push(format!("{key}.pattern"), format!("invalid regex: {detail}"));
            None
        }
    }
}

fn integer_kind(
    errs: &mut Errors,
    key: &str,
    min: Option<i64>,
    max: Option<i64>,
) -> Option<ParamKind> {
    if let (Some(lo), Some(hi)) = (min, max)
        && hi < lo
    {
        errs.push(format!("{key}.max"), format!("must be >= min ({lo})"));
        return None;
    }
    Some(ParamKind::Integer { min, max })
}

fn enum_kind(errs: &mut Errors, key: &str, values: Option<&[String]>) -> Option<ParamKind> {
    let values = match values {
        Some(v) if !v.is_empty() => v,
        _ => {
            errs.push(format!("{key}.values"), "must list at least one value");
            return None;
        }
    };
    let mut seen = BTreeSet::new();
    let mut ok = true;
    for (i, value) in values.iter().enumerate() {
        if let Err(rule) = check_token(value, None) {
            errs.push(format!("{key}.values[{i}]"), rule);
            ok = false;
        } else if !seen.insert(value.as_str()) {
            errs.push(
                format!("{key}.values[{i}]"),
                format!("`{value}` is listed twice"),
            );
            ok = false;
        }
    }
    ok.then(|| ParamKind::Enum {
        values: values.to_vec(),
    })
}

fn build_allowed(
    errs: &mut Errors,
    key: &str,
    kind: &ParamKind,
    allowed: Option<BTreeMap<String, Vec<String>>>,
    env_values: Option<&[String]>,
) -> BTreeMap<String, Vec<String>> {
    let Some(allowed) = allowed else {
        return BTreeMap::new();
    };
    let key = format!("{key}.allowed");
    if allowed.is_empty() {
        errs.push(&key, "must list at least one environment");
    }
    for (env, values) in &allowed {
        let env_key = format!("{key}.{env}");
        if let Some(envs) = env_values
            && !envs.contains(env)
        {
            let rule = format!(
                "unknown environment (environment values: {})",
                envs.join(", ")
            );
            errs.push(&env_key, rule);
        }
        check_allowed_values(errs, &env_key, kind, values);
    }
    allowed
}

fn check_allowed_values(errs: &mut Errors, key: &str, kind: &ParamKind, values: &[String]) {
    if values.is_empty() {
        errs.push(key, "must list at least one value");
    }
    for (i, value) in values.iter().enumerate() {
        if let Err(rule) = value_fits(kind, value) {
            errs.push(format!("{key}[{i}]"), rule);
        }
    }
}

/// Whether a value written in the catalog (an allowed value) passes its parameter's rule.
fn value_fits(kind: &ParamKind, value: &str) -> Result<(), String> {
    match kind {
        ParamKind::String { pattern } => {
            check_token(value, Some(pattern))?;
            if pattern.is_match(value) {
                Ok(())
            } else {
                Err(format!("`{value}` does not match {}", pattern.anchored()))
            }
        }
        ParamKind::Enum { values } if !values.iter().any(|v| v == value) => {
            Err(format!("`{value}` is not one of: {}", values.join(", ")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/commands"))
    }

    const MINIMAL: &str = r#"
name = "k8s-scale"
summary = "Scale a deployment"
action = "k8s-scale"
risk = "high"

[approvers]
roles = ["commander"]

[params.environment]
type = "enum"
values = ["prod", "staging"]

[params.namespace]
type = "string"
pattern = "[a-z0-9-]{1,63}"
allowed = { prod = ["payments"], staging = ["payments"] }

[params.deployment]
type = "string"
pattern = "[a-z0-9-]{1,63}"

[params.replicas]
type = "integer"
min = 0
max = 50
"#;

    /// Parses `text` as `commands/<stem>.toml` and returns the error lines.
    fn errors_of(stem: &str, text: &str) -> Vec<String> {
        let path = PathBuf::from(format!("commands/{stem}.toml"));
        match parse(&path, text) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    /// `MINIMAL` with `from` replaced by `to` (which must occur).
    fn minimal_with(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from} not in MINIMAL");
        MINIMAL.replacen(from, to, 1)
    }

    #[test]
    fn every_shipped_file_loads_and_covers_every_action() {
        let catalog = match load_dir(shipped_dir()) {
            Ok(c) => c,
            Err(e) => panic!("shipped catalog is invalid:\n{e}"),
        };
        for action in Action::ALL {
            let spec = catalog
                .get(action.as_str())
                .unwrap_or_else(|| panic!("{action} missing"));
            assert_eq!(spec.action, action);
            assert_eq!(spec.approvals == 0, action.is_read_only(), "{action}");
        }
        assert_eq!(catalog.commands.len(), 16);
        assert_eq!(catalog.list_lines().len(), 16);
    }

    #[test]
    fn shipped_files_restrict_every_environment() {
        let catalog = load_dir(shipped_dir()).expect("valid catalog");
        for spec in catalog.iter() {
            let env = &spec.params[ENVIRONMENT];
            assert!(env.required, "{}", spec.name);
            for (name, p) in &spec.params {
                if let ParamKind::String { pattern } = &p.kind {
                    assert!(!pattern.is_match(""), "{}.{name} accepts empty", spec.name);
                    assert!(
                        !pattern.is_match("a b"),
                        "{}.{name} accepts a space",
                        spec.name
                    );
                }
            }
        }
    }

    #[test]
    fn minimal_file_parses_with_defaults() {
        let spec = parse(Path::new("commands/k8s-scale.toml"), MINIMAL).expect("valid");
        assert_eq!(spec.approvals, 1);
        assert_eq!(spec.expires_in, DEFAULT_EXPIRY);
        assert!(spec.requesters.is_empty());
        assert!(spec.params["replicas"].required);
        assert!(spec.params[ENVIRONMENT].required);
        assert_eq!(
            spec.params["namespace"].kind,
            ParamKind::String {
                pattern: Pattern::new("[a-z0-9-]{1,63}").unwrap()
            }
        );
        assert_eq!(
            spec.param_names(),
            ["namespace", "deployment", "replicas", "environment"]
        );
    }

    #[test]
    fn max_below_min_is_refused() {
        let text = minimal_with("max = 50", "max = -1");
        assert_eq!(
            errors_of("k8s-scale", &text),
            ["commands/k8s-scale.toml: params.replicas.max: must be >= min (0)"]
        );
    }

    #[test]
    fn name_must_equal_file_stem_and_pattern() {
        assert_eq!(
            errors_of("scale", MINIMAL),
            ["commands/scale.toml: name: must equal the file name without `.toml` (`scale`)"]
        );
        let text = minimal_with("name = \"k8s-scale\"", "name = \"K8s\"");
        assert_eq!(
            errors_of("K8s", &text),
            ["commands/K8s.toml: name: `K8s` must match ^[a-z][a-z0-9-]{1,40}$"]
        );
    }

    #[test]
    fn zero_approvals_only_for_read_only_actions() {
        let text = minimal_with("risk = \"high\"", "risk = \"high\"\napprovals = 0");
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: approvals: 0 is only allowed for read-only actions (k8s-scale changes state)"
            ]
        );
        let text = minimal_with("risk = \"high\"", "risk = \"high\"\napprovals = 9");
        assert_eq!(
            errors_of("k8s-scale", &text),
            ["commands/k8s-scale.toml: approvals: must be <= 5"]
        );
    }

    #[test]
    fn read_only_action_may_run_without_approvers() {
        let text = r#"
name = "pods"
summary = "List pods"
action = "k8s-pods"
risk = "low"
approvals = 0

[params.namespace]
type = "string"
pattern = "[a-z-]+"
"#;
        assert_eq!(errors_of("pods", text), Vec::<String>::new());
    }

    #[test]
    fn approvers_needed_when_approvals_positive() {
        let text = minimal_with("[approvers]\nroles = [\"commander\"]", "");
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: approvers: must name at least one user, group or role when approvals > 0"
            ]
        );
    }

    #[test]
    fn policy_ids_are_checked() {
        let text = minimal_with(
            "roles = [\"commander\"]",
            "roles = [\"commander\"]\nusers = [\"alice\"]\ngroups = [\"U123\"]",
        );
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: approvers.users[0]: `alice` is not a Slack user id (like U0123ABCD)",
                "commands/k8s-scale.toml: approvers.groups[0]: `U123` is not a Slack user group id (like S0123ABCD)",
            ]
        );
    }

    #[test]
    fn unknown_role_reports_line_and_key() {
        let text = minimal_with("roles = [\"commander\"]", "roles = [\"boss\"]");
        let errs = errors_of("k8s-scale", &text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .starts_with("commands/k8s-scale.toml:8: approvers.roles: unknown variant `boss`"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn expiry_rules() {
        let with = |v: &str| {
            minimal_with(
                "risk = \"high\"",
                &format!("risk = \"high\"\nexpires_in = \"{v}\""),
            )
        };
        assert_eq!(
            errors_of("k8s-scale", &with("25h")),
            ["commands/k8s-scale.toml: expires_in: must be at most 24h"]
        );
        assert_eq!(
            errors_of("k8s-scale", &with("0s")),
            ["commands/k8s-scale.toml: expires_in: must be longer than zero"]
        );
        let errs = errors_of("k8s-scale", &with("soon"));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(
                "commands/k8s-scale.toml: expires_in: `soon` is not a duration like \"15m\" or \"1h\""
            ),
            "{}",
            errs[0]
        );
        let spec = parse(Path::new("k8s-scale.toml"), &with("1h 30m")).unwrap();
        assert_eq!(spec.expires_in, Duration::from_secs(5400));
    }

    #[test]
    fn param_names_are_checked_against_the_action() {
        let text = minimal_with("[params.replicas]", "[params.count]");
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.count: unknown parameter for action k8s-scale (known: namespace, deployment, replicas, environment)",
                "commands/k8s-scale.toml: params.replicas: must be declared: action k8s-scale requires it",
            ]
        );
    }

    #[test]
    fn required_param_cannot_be_made_optional() {
        let text = minimal_with("min = 0", "min = 0\nrequired = false");
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.replicas.required: must be true: action k8s-scale requires `replicas`"
            ]
        );
    }

    #[test]
    fn param_type_must_fit_the_executor() {
        let text = minimal_with(
            "type = \"integer\"\nmin = 0\nmax = 50",
            "type = \"string\"\npattern = \"[0-9]+\"",
        );
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.replicas.type: must be \"integer\" for this parameter"
            ]
        );
    }

    #[test]
    fn keys_of_other_types_are_refused() {
        let text = minimal_with(
            "min = 0",
            "min = 0\npattern = \"[0-9]+\"\nallow_latest = true",
        );
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.replicas.pattern: only allowed for type \"string\"",
                "commands/k8s-scale.toml: params.replicas.allow_latest: only allowed for type \"timestamp\"",
            ]
        );
    }

    #[test]
    fn string_needs_a_valid_pattern() {
        let text = minimal_with(
            "pattern = \"[a-z0-9-]{1,63}\"\n\n[params.replicas]",
            "\n[params.replicas]",
        );
        assert_eq!(
            errors_of("k8s-scale", &text),
            ["commands/k8s-scale.toml: params.deployment.pattern: required for type \"string\""]
        );
        let text = minimal_with(
            "pattern = \"[a-z0-9-]{1,63}\"\n\n[params.replicas]",
            "pattern = \"[a-z\"\n\n[params.replicas]",
        );
        let errs = errors_of("k8s-scale", &text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .starts_with("commands/k8s-scale.toml: params.deployment.pattern: invalid regex: "),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn pattern_is_anchored() {
        let p = Pattern::new("[a-z]+|[0-9]+").unwrap();
        assert_eq!(p.anchored(), "^(?:[a-z]+|[0-9]+)$");
        assert!(p.is_match("abc"));
        assert!(!p.is_match("abc1"));
        assert!(!p.is_match("x;1"));
    }

    #[test]
    fn enum_values_rules() {
        let text = minimal_with("values = [\"prod\", \"staging\"]", "values = []");
        assert_eq!(
            errors_of("k8s-scale", &text),
            ["commands/k8s-scale.toml: params.environment.values: must list at least one value"]
        );
        let text = minimal_with(
            "values = [\"prod\", \"staging\"]",
            "values = [\"prod\", \"prod\", \"a;b\"]",
        );
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.environment.values[1]: `prod` is listed twice",
                "commands/k8s-scale.toml: params.environment.values[2]: contains a semicolon at position 2; shell metacharacters are refused",
                "commands/k8s-scale.toml: params.namespace.allowed.staging: unknown environment (environment values: prod, prod, a;b)",
            ]
        );
    }

    #[test]
    fn allowed_rules() {
        let text = minimal_with(
            "allowed = { prod = [\"payments\"], staging = [\"payments\"] }",
            "allowed = { prod = [\"Payments\"], qa = [\"payments\"], staging = [] }",
        );
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.namespace.allowed.prod[0]: `Payments` does not match ^(?:[a-z0-9-]{1,63})$",
                "commands/k8s-scale.toml: params.namespace.allowed.qa: unknown environment (environment values: prod, staging)",
                "commands/k8s-scale.toml: params.namespace.allowed.staging: must list at least one value",
            ]
        );
        let text = minimal_with(
            "[params.environment]\ntype = \"enum\"\nvalues = [\"prod\", \"staging\"]\n",
            "",
        );
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.environment: must be declared (an enum) because a parameter has `allowed` values"
            ]
        );
        let text = minimal_with(
            "values = [\"prod\", \"staging\"]",
            "values = [\"prod\", \"staging\"]\nrequired = false",
        );
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.environment.required: must be true because a parameter has `allowed` values"
            ]
        );
    }

    #[test]
    fn allowed_only_on_text_types() {
        let text = minimal_with("min = 0", "min = 0\nallowed = { prod = [\"1\"] }");
        assert_eq!(
            errors_of("k8s-scale", &text),
            [
                "commands/k8s-scale.toml: params.replicas.allowed: only allowed for type \"string\" or \"enum\""
            ]
        );
    }

    #[test]
    fn unknown_keys_and_syntax_errors_name_the_line() {
        let text = minimal_with("max = 50", "maximum = 50");
        let errs = errors_of("k8s-scale", &text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(
                "commands/k8s-scale.toml:26: params.replicas: unknown field `maximum`"
            ),
            "{}",
            errs[0]
        );
        let text = minimal_with("risk = \"high\"", "risk = \"high\"\nowner = \"me\"");
        let errs = errors_of("k8s-scale", &text);
        assert!(
            errs[0].starts_with("commands/k8s-scale.toml:6: unknown field `owner`"),
            "{}",
            errs[0]
        );
        let text = minimal_with("risk = \"high\"", "risk = \"high");
        let errs = errors_of("k8s-scale", &text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("commands/k8s-scale.toml:5: "),
            "{}",
            errs[0]
        );
        let text = minimal_with("action = \"k8s-scale\"", "action = \"k8s-explode\"");
        let errs = errors_of("k8s-scale", &text);
        assert!(
            errs[0].starts_with("commands/k8s-scale.toml:4: action: unknown variant `k8s-explode`"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn broken_directory_reports_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("k8s-scale.toml", &minimal_with("max = 50", "max = -1"));
        write(
            "wrong-name.toml",
            &minimal_with(
                "risk = \"high\"",
                "risk = \"high\"\napprovals = 0\nexpires_in = \"2d\"",
            ),
        );
        write("syntax.toml", "name = \"syntax\"\nsummary = [\n");
        write("README.md", "not a command");
        write(
            "k8s-pods.toml",
            &minimal_with("name = \"k8s-scale\"", "name = \"k8s-pods\""),
        );
        let errs = load_dir(dir.path()).unwrap_err();
        let f = |name: &str| dir.path().join(name).display().to_string();
        let lines: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                format!(
                    "{}: params.replicas.max: must be >= min (0)",
                    f("k8s-scale.toml")
                ),
                format!("{}:2: {}", f("syntax.toml"), errs.0[1].rule),
                format!(
                    "{}: name: must equal the file name without `.toml` (`wrong-name`)",
                    f("wrong-name.toml")
                ),
                format!(
                    "{}: approvals: 0 is only allowed for read-only actions (k8s-scale changes state)",
                    f("wrong-name.toml")
                ),
                format!("{}: expires_in: must be at most 24h", f("wrong-name.toml")),
            ]
        );
        assert_eq!(errs.to_string(), lines.join("\n"));
    }

    #[test]
    fn missing_directory_is_one_error() {
        let errs = load_dir(Path::new("/nonexistent/klaxon-commands")).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert!(
            errs.to_string()
                .starts_with("/nonexistent/klaxon-commands: cannot read the catalog directory"),
            "{errs}"
        );
    }

    #[test]
    fn describe_and_list() {
        let spec = parse(Path::new("commands/k8s-scale.toml"), MINIMAL).unwrap();
        let mut catalog = Catalog::default();
        catalog.commands.insert(spec.name.clone(), spec);
        assert_eq!(
            catalog.list_lines(),
            ["k8s-scale                high   1 approval   Scale a deployment"]
        );
        assert_eq!(catalog.describe("nope"), None);
        let text = catalog.describe("k8s-scale").unwrap();
        assert_eq!(
            text,
            "k8s-scale: Scale a deployment
  action:     k8s-scale
  risk:       high
  approvals:  1 approval besides the requester
  expires:    15m after the request
  requesters: anyone in the incident channel
  approvers:  roles commander
  params:
    namespace (string, required): matches ^(?:[a-z0-9-]{1,63})$
      allowed in prod: payments
      allowed in staging: payments
    deployment (string, required): matches ^(?:[a-z0-9-]{1,63})$
    replicas (integer, required): 0 to 50
    environment (enum, required): one of prod, staging"
        );
    }

    #[test]
    fn policies_match_users_groups_and_roles() {
        let p = Policy {
            users: vec!["U1".into()],
            groups: vec!["S1".into()],
            roles: vec![Role::Commander],
        };
        assert!(p.matches("U1", &[], &[]));
        assert!(p.matches("U2", &["S1".to_string()], &[]));
        assert!(p.matches("U2", &[], &[Role::Commander]));
        assert!(!p.matches("U2", &["S2".to_string()], &[Role::Scribe]));
        let spec = parse(Path::new("k8s-scale.toml"), MINIMAL).unwrap();
        assert!(spec.may_request("U9", &[], &[]));
        assert!(!spec.may_approve("U9", &[], &[Role::Ops]));
        assert!(spec.may_approve("U9", &[], &[Role::Commander]));
    }
}
