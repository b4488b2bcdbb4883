//! Request-time parameters: splits `key=value` text and validates it against a
//! [`CommandSpec`], producing the typed [`Params`] executors receive.
//!
//! Grammar: `key=value` tokens separated by ASCII whitespace. Keys match `^[a-z_]{1,32}$`;
//! values are single tokens: there is no quoting and no escaping, so a value can never carry
//! a space. Every value must be printable ASCII (no whitespace, control or non-ASCII
//! characters, which refuses look-alike letters such as Cyrillic `а`), and shell
//! metacharacters are refused unless the parameter's pattern names them. Executors call
//! SDKs, never a shell; this is defence in depth, and keeps what people approve readable.
//!
//! Error texts are shown in Slack: they never echo a value that failed the character rules.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use regex::Regex;

use super::catalog::{CommandSpec, ENVIRONMENT, ParamKind, ParamSpec, Pattern};
use super::{ParamValue, Params};

/// Longest accepted value, in characters.
pub const MAX_VALUE_LEN: usize = 256;

/// Characters refused in values unless the parameter's pattern contains them.
pub const SHELL_METACHARACTERS: [char; 10] = [';', '|', '&', '$', '`', '\'', '"', '<', '>', '\\'];

/// Example shown when a timestamp does not parse.
const TIME_EXAMPLE: &str = "2025-01-06T10:30:00Z";

static KEY_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z_]{1,32}$").expect("valid regex"));
static INTEGER_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-?[0-9]{1,18}$").expect("valid regex"));

/// Why a request's parameters were refused; shown to the requester.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {rule}")]
pub struct ParamError {
    /// The parameter (or, for text that is not `key=value`, the offending token, escaped).
    pub param: String,
    /// What is wrong and what is expected.
    pub rule: String,
}

fn error(param: impl Into<String>, rule: impl Into<String>) -> ParamError {
    ParamError {
        param: param.into(),
        rule: rule.into(),
    }
}

/// Splits `key=value key2=value2` into pairs, in order. Values are single tokens: quotes are
/// refused (there is no quoting), as are empty values, malformed keys and repeated keys.
pub fn parse_args(text: &str) -> Result<Vec<(String, String)>, ParamError> {
    let mut args: Vec<(String, String)> = Vec::new();
    for token in text.split_ascii_whitespace() {
        let (key, value) = split_token(token)?;
        if args.iter().any(|(k, _)| k == key) {
            return Err(error(key, "given more than once"));
        }
        args.push((key.to_string(), value.to_string()));
    }
    Ok(args)
}

fn split_token(token: &str) -> Result<(&str, &str), ParamError> {
    let Some((key, value)) = token.split_once('=') else {
        let rule = "expected key=value (values are single tokens: no spaces, no quotes)";
        return Err(error(shown(token), rule));
    };
    if !KEY_RE.is_match(key) {
        let rule = "is not a parameter name (lowercase letters and `_`, at most 32)";
        return Err(error(shown(key), rule));
    }
    if value.contains(['"', '\'']) {
        let rule = "quoting is not supported: values are single tokens without spaces or quotes";
        return Err(error(key, rule));
    }
    if value.is_empty() {
        return Err(error(key, "needs a value (key=value)"));
    }
    Ok((key, value))
}

/// Text safe to show: escaped, and cut to 40 characters.
fn shown(text: &str) -> String {
    let escaped: String = text
        .chars()
        .take(40)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().count() > 40 {
        format!("{escaped}...")
    } else {
        escaped
    }
}

/// Checks `args` against `spec` and returns typed parameters. Checks, in order: the
/// character rule on every value, key names, repeats, unknown keys, missing required
/// parameters, each value's type and rule, then per-environment allowed values.
pub fn validate(spec: &CommandSpec, args: &[(String, String)]) -> Result<Params, ParamError> {
    for (key, value) in args {
        let pattern = spec.params.get(key).and_then(|p| match &p.kind {
            ParamKind::String { pattern } => Some(pattern),
            _ => None,
        });
        check_token(value, pattern).map_err(|rule| error(shown(key), rule))?;
    }
    check_keys(spec, args)?;
    check_required(spec, args)?;
    let mut params = BTreeMap::new();
    for (key, value) in args {
        let typed = typed_value(&spec.params[key], value).map_err(|rule| error(key, rule))?;
        params.insert(key.clone(), typed);
    }
    check_allowed(spec, args)?;
    Ok(Params(params))
}

/// The global character rule: a non-empty single token of printable ASCII, without shell
/// metacharacters unless `pattern`'s text contains them (the value must still match it).
pub(crate) fn check_token(value: &str, pattern: Option<&Pattern>) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_string());
    }
    for (i, c) in value.chars().enumerate() {
        let position = i + 1;
        if !c.is_ascii() {
            return Err(format!(
                "contains the non-ASCII character U+{:04X} at position {position}; only printable ASCII is accepted (look-alike letters are refused)",
                u32::from(c)
            ));
        }
        if c.is_ascii_whitespace() || c.is_ascii_control() {
            return Err(format!(
                "contains whitespace or a control character (U+{:04X}) at position {position}; values are single tokens",
                u32::from(c)
            ));
        }
        let named = pattern.is_some_and(|p| p.source().contains(c));
        if SHELL_METACHARACTERS.contains(&c) && !named {
            return Err(format!(
                "contains {} at position {position}; shell metacharacters are refused",
                char_name(c)
            ));
        }
    }
    if value.chars().count() > MAX_VALUE_LEN {
        return Err(format!("is longer than {MAX_VALUE_LEN} characters"));
    }
    Ok(())
}

fn char_name(c: char) -> &'static str {
    match c {
        ';' => "a semicolon",
        '|' => "a pipe",
        '&' => "an ampersand",
        '$' => "a dollar sign",
        '`' => "a backtick",
        '\'' => "a single quote",
        '"' => "a double quote",
        '<' => "a less-than sign",
        '>' => "a greater-than sign",
        '\\' => "a backslash",
        _ => "a refused character",
    }
}

fn check_keys(spec: &CommandSpec, args: &[(String, String)]) -> Result<(), ParamError> {
    for (i, (key, _)) in args.iter().enumerate() {
        if !KEY_RE.is_match(key) {
            return Err(error(shown(key), "is not a parameter name"));
        }
        if args[..i].iter().any(|(k, _)| k == key) {
            return Err(error(key, "given more than once"));
        }
        if !spec.params.contains_key(key) {
            let known = spec.param_names().join(", ");
            return Err(error(key, format!("unknown parameter (known: {known})")));
        }
    }
    Ok(())
}

fn check_required(spec: &CommandSpec, args: &[(String, String)]) -> Result<(), ParamError> {
    for name in spec.param_names() {
        let p = &spec.params[name];
        if p.required && !args.iter().any(|(k, _)| k == name) {
            let rule = format!("is required ({}: {})", p.kind.type_name(), p.kind.rule());
            return Err(error(name, rule));
        }
    }
    Ok(())
}

fn typed_value(p: &ParamSpec, value: &str) -> Result<ParamValue, String> {
    match &p.kind {
        ParamKind::String { pattern } => text_value(pattern, value),
        ParamKind::Integer { min, max } => integer_value(*min, *max, value),
        ParamKind::Enum { values } => enum_value(values, value),
        ParamKind::Timestamp { allow_latest } => timestamp_value(*allow_latest, value),
    }
}

fn text_value(pattern: &Pattern, value: &str) -> Result<ParamValue, String> {
    if pattern.is_match(value) {
        Ok(ParamValue::Text(value.to_string()))
    } else {
        Err(format!("`{value}` does not match {}", pattern.anchored()))
    }
}

fn integer_value(min: Option<i64>, max: Option<i64>, value: &str) -> Result<ParamValue, String> {
    let n: i64 = INTEGER_RE
        .is_match(value)
        .then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| format!("`{value}` is not an integer"))?;
    if let Some(lo) = min
        && n < lo
    {
        return Err(format!("must be >= {lo} (got {n})"));
    }
    if let Some(hi) = max
        && n > hi
    {
        return Err(format!("must be <= {hi} (got {n})"));
    }
    Ok(ParamValue::Integer(n))
}

fn enum_value(values: &[String], value: &str) -> Result<ParamValue, String> {
    if values.iter().any(|v| v == value) {
        Ok(ParamValue::Text(value.to_string()))
    } else {
        Err(format!("`{value}` is not one of: {}", values.join(", ")))
    }
}

fn timestamp_value(allow_latest: bool, value: &str) -> Result<ParamValue, String> {
    if value == "latest" {
        return if allow_latest {
            Ok(ParamValue::Latest)
        } else {
            Err(format!(
                "`latest` is not allowed here; give an RFC 3339 time (e.g. {TIME_EXAMPLE})"
            ))
        };
    }
    match DateTime::parse_from_rfc3339(value) {
        Ok(t) => Ok(ParamValue::Timestamp(t.with_timezone(&Utc))),
        Err(_) if allow_latest => Err(format!(
            "`{value}` is not an RFC 3339 time (e.g. {TIME_EXAMPLE}) or `latest`"
        )),
        Err(_) => Err(format!(
            "`{value}` is not an RFC 3339 time (e.g. {TIME_EXAMPLE})"
        )),
    }
}

/// Per-environment allowed values. The catalog makes `environment` required wherever a
/// parameter has `allowed`; its absence is still refused here.
fn check_allowed(spec: &CommandSpec, args: &[(String, String)]) -> Result<(), ParamError> {
    let env = args
        .iter()
        .find(|(k, _)| k == ENVIRONMENT)
        .map(|(_, v)| v.as_str());
    for (key, value) in args {
        let allowed = &spec.params[key].allowed;
        if allowed.is_empty() {
            continue;
        }
        let Some(env) = env else {
            let rule = format!("is required because `{key}` is restricted per environment");
            return Err(error(ENVIRONMENT, rule));
        };
        let list = allowed.get(env).map(Vec::as_slice).unwrap_or_default();
        if !list.iter().any(|v| v == value) {
            let shown_list = if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            };
            let rule =
                format!("`{value}` is not allowed in environment `{env}` (allowed: {shown_list})");
            return Err(error(key, rule));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
