//! Reading catalog files: every `*.toml` of the directory, TOML syntax errors with their
//! line, and the rules of a command's own keys (name, summary, approvals, expiry, who may
//! request and approve, step-up). The `[params.*]` tables are checked in
//! `declared_params`.
//!
//! Every error of every file is collected (an [`Errors`] per file), so one `klaxon check`
//! run lists them all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::declared_params::build_params;
use super::{
    Catalog, CatalogError, CatalogErrors, CommandSpec, DEFAULT_EXPIRY, MAX_APPROVALS, MAX_EXPIRY,
    Policy, Risk,
};
use crate::commands::Action;

static NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9-]{1,40}$").expect("valid regex"));
static USER_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[UW][A-Z0-9]{2,20}$").expect("valid regex"));
static GROUP_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^S[A-Z0-9]{2,20}$").expect("valid regex"));

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
pub(super) struct Errors {
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

    pub(super) fn push(&mut self, key: impl Into<String>, rule: impl Into<String>) {
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
pub(super) struct RawParam {
    #[serde(rename = "type")]
    pub(super) kind: TypeName,
    pub(super) required: Option<bool>,
    pub(super) description: Option<String>,
    pub(super) pattern: Option<String>,
    pub(super) values: Option<Vec<String>>,
    pub(super) min: Option<i64>,
    pub(super) max: Option<i64>,
    pub(super) allow_latest: Option<bool>,
    pub(super) allowed: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum TypeName {
    String,
    Integer,
    Enum,
    Timestamp,
}

impl TypeName {
    pub(super) fn as_str(self) -> &'static str {
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
