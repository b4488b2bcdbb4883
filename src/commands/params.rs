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
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;
    use crate::commands::catalog::{load_dir, parse};

    const SPEC: &str = r#"
name = "test-cmd"
summary = "Test command"
action = "rds-restore-pitr"
risk = "medium"

[approvers]
roles = ["commander"]

[params.environment]
type = "enum"
values = ["prod", "staging", "dev"]

[params.source]
type = "string"
pattern = "[a-z][a-z0-9-]{0,62}"
allowed = { prod = ["payments-db"], staging = ["payments-db-staging"] }

[params.target]
type = "string"
pattern = "[a-z][a-z0-9-]{0,62}"

[params.restore_time]
type = "timestamp"
allow_latest = true
"#;

    fn spec() -> CommandSpec {
        parse(Path::new("commands/test-cmd.toml"), SPEC).expect("valid spec")
    }

    fn scale_spec() -> CommandSpec {
        let catalog = load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/commands")))
            .expect("valid catalog");
        catalog.get("k8s-scale").expect("k8s-scale").clone()
    }

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn good() -> Vec<(String, String)> {
        args(&[
            ("source", "payments-db"),
            ("target", "payments-db-restored"),
            ("restore_time", "latest"),
            ("environment", "prod"),
        ])
    }

    /// `good()` with `key` set to `value`.
    fn with(key: &str, value: &str) -> Vec<(String, String)> {
        let mut a = good();
        a.iter_mut().find(|(k, _)| k == key).expect("key").1 = value.to_string();
        a
    }

    fn refused(a: &[(String, String)]) -> String {
        validate(&spec(), a)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn parse_args_splits_pairs() {
        assert_eq!(
            parse_args("  namespace=payments\tdeployment=api\nreplicas=0 ").unwrap(),
            args(&[
                ("namespace", "payments"),
                ("deployment", "api"),
                ("replicas", "0")
            ])
        );
        assert_eq!(parse_args("").unwrap(), Vec::new());
        assert_eq!(
            parse_args("selector=app=web").unwrap(),
            args(&[("selector", "app=web")])
        );
    }

    #[test]
    fn parse_args_refuses_quoting_and_loose_words() {
        assert_eq!(
            parse_args(r#"key="value with spaces""#)
                .unwrap_err()
                .to_string(),
            "key: quoting is not supported: values are single tokens without spaces or quotes"
        );
        assert_eq!(
            parse_args("key=value with").unwrap_err().to_string(),
            "with: expected key=value (values are single tokens: no spaces, no quotes)"
        );
        assert_eq!(
            parse_args("key='x'").unwrap_err().to_string(),
            "key: quoting is not supported: values are single tokens without spaces or quotes"
        );
    }

    #[test]
    fn parse_args_refuses_bad_keys_empty_values_and_repeats() {
        assert_eq!(
            parse_args("Key=1").unwrap_err().to_string(),
            "Key: is not a parameter name (lowercase letters and `_`, at most 32)"
        );
        assert_eq!(
            parse_args("=1").unwrap_err().to_string(),
            ": is not a parameter name (lowercase letters and `_`, at most 32)"
        );
        assert_eq!(
            parse_args("replicas=").unwrap_err().to_string(),
            "replicas: needs a value (key=value)"
        );
        assert_eq!(
            parse_args("a=1 b=2 a=3").unwrap_err().to_string(),
            "a: given more than once"
        );
        assert_eq!(
            parse_args("clé=1").unwrap_err().to_string(),
            "cl\\u{e9}: is not a parameter name (lowercase letters and `_`, at most 32)"
        );
    }

    #[test]
    fn valid_request_is_typed() {
        let p = validate(&spec(), &good()).unwrap();
        assert_eq!(p.text("source").unwrap(), "payments-db");
        assert_eq!(p.timestamp_or_latest("restore_time").unwrap(), None);
        assert_eq!(p.text("environment").unwrap(), "prod");
        let p = validate(&spec(), &with("restore_time", "2025-01-06T12:30:00+02:00")).unwrap();
        assert_eq!(
            p.timestamp_or_latest("restore_time").unwrap(),
            Some(Utc.with_ymd_and_hms(2025, 1, 6, 10, 30, 0).unwrap())
        );
    }

    #[test]
    fn injection_attempts_are_refused() {
        assert_eq!(
            refused(&with("environment", "prod; rm -rf /")),
            "environment: contains a semicolon at position 5; shell metacharacters are refused"
        );
        assert_eq!(
            refused(&with("target", "a\nb")),
            "target: contains whitespace or a control character (U+000A) at position 2; values are single tokens"
        );
        assert_eq!(
            refused(&with("source", "p\u{430}yments-db")),
            "source: contains the non-ASCII character U+0430 at position 2; only printable ASCII is accepted (look-alike letters are refused)"
        );
        assert_eq!(
            refused(&with("target", "$(id)")),
            "target: contains a dollar sign at position 1; shell metacharacters are refused"
        );
        assert_eq!(
            refused(&with("target", "`id`")),
            "target: contains a backtick at position 1; shell metacharacters are refused"
        );
        assert_eq!(
            refused(&with("environment", "\u{ff50}\u{ff52}\u{ff4f}\u{ff44}")),
            "environment: contains the non-ASCII character U+FF50 at position 1; only printable ASCII is accepted (look-alike letters are refused)"
        );
        for (value, name) in [
            ("a|b", "a pipe"),
            ("a&b", "an ampersand"),
            ("a'b", "a single quote"),
            ("a\"b", "a double quote"),
            ("a<b", "a less-than sign"),
            ("a>b", "a greater-than sign"),
            ("a\\b", "a backslash"),
        ] {
            assert_eq!(
                refused(&with("target", value)),
                format!("target: contains {name} at position 2; shell metacharacters are refused")
            );
        }
        assert_eq!(
            refused(&with("target", "a\u{a0}b")),
            "target: contains the non-ASCII character U+00A0 at position 2; only printable ASCII is accepted (look-alike letters are refused)"
        );
        assert_eq!(
            refused(&with("target", "a\u{7f}")),
            "target: contains whitespace or a control character (U+007F) at position 2; values are single tokens"
        );
    }

    #[test]
    fn injection_through_parse_args_is_refused() {
        let a = parse_args("source=payments-db;rm target=x restore_time=latest environment=prod")
            .unwrap();
        assert_eq!(
            validate(&spec(), &a).unwrap_err().to_string(),
            "source: contains a semicolon at position 12; shell metacharacters are refused"
        );
        assert!(parse_args("environment=prod; rm -rf /").is_err());
    }

    #[test]
    fn character_rule_comes_before_unknown_keys() {
        let mut a = good();
        a.push(("bogus".to_string(), "x;y".to_string()));
        assert_eq!(
            refused(&a),
            "bogus: contains a semicolon at position 2; shell metacharacters are refused"
        );
    }

    #[test]
    fn metacharacters_named_by_the_pattern_are_accepted() {
        let text = SPEC.replace(
            "pattern = \"[a-z][a-z0-9-]{0,62}\"\n\n[params.restore_time]",
            "pattern = \"[a-z]+&[a-z]+\"\n\n[params.restore_time]",
        );
        let spec = parse(Path::new("test-cmd.toml"), &text).unwrap();
        let p = validate(&spec, &with("target", "a&b")).unwrap();
        assert_eq!(p.text("target").unwrap(), "a&b");
        assert_eq!(
            validate(&spec, &with("target", "a;b"))
                .unwrap_err()
                .to_string(),
            "target: contains a semicolon at position 2; shell metacharacters are refused"
        );
    }

    #[test]
    fn empty_and_long_values_are_refused() {
        assert_eq!(refused(&with("target", "")), "target: must not be empty");
        assert_eq!(
            refused(&with("target", &"a".repeat(300))),
            "target: is longer than 256 characters"
        );
    }

    #[test]
    fn unknown_repeated_and_missing_keys() {
        let mut a = good();
        a.push(("cluster".to_string(), "x".to_string()));
        assert_eq!(
            refused(&a),
            "cluster: unknown parameter (known: source, target, restore_time, environment)"
        );
        let mut a = good();
        a.push(("target".to_string(), "y".to_string()));
        assert_eq!(refused(&a), "target: given more than once");
        let a: Vec<_> = good().into_iter().filter(|(k, _)| k != "target").collect();
        assert_eq!(
            refused(&a),
            "target: is required (string: matches ^(?:[a-z][a-z0-9-]{0,62})$)"
        );
        let a: Vec<_> = good()
            .into_iter()
            .filter(|(k, _)| k != "environment")
            .collect();
        assert_eq!(
            refused(&a),
            "environment: is required (enum: one of prod, staging, dev)"
        );
        let a = args(&[("Bad-Key", "x")]);
        assert_eq!(refused(&a), "Bad-Key: is not a parameter name");
    }

    #[test]
    fn pattern_enum_and_timestamp_rules() {
        assert_eq!(
            refused(&with("target", "Payments")),
            "target: `Payments` does not match ^(?:[a-z][a-z0-9-]{0,62})$"
        );
        assert_eq!(
            refused(&with("environment", "qa")),
            "environment: `qa` is not one of: prod, staging, dev"
        );
        assert_eq!(
            refused(&with("restore_time", "yesterday")),
            "restore_time: `yesterday` is not an RFC 3339 time (e.g. 2025-01-06T10:30:00Z) or `latest`"
        );
        let strict = SPEC.replace("allow_latest = true", "allow_latest = false");
        let strict = parse(Path::new("test-cmd.toml"), &strict).unwrap();
        assert_eq!(
            validate(&strict, &good()).unwrap_err().to_string(),
            "restore_time: `latest` is not allowed here; give an RFC 3339 time (e.g. 2025-01-06T10:30:00Z)"
        );
        assert_eq!(
            validate(&strict, &with("restore_time", "2025-01-06"))
                .unwrap_err()
                .to_string(),
            "restore_time: `2025-01-06` is not an RFC 3339 time (e.g. 2025-01-06T10:30:00Z)"
        );
    }

    #[test]
    fn integer_rules() {
        let spec = scale_spec();
        let base = [
            ("namespace", "payments"),
            ("deployment", "api"),
            ("environment", "prod"),
        ];
        let run = |replicas: &str| {
            let mut a = args(&base);
            a.push(("replicas".to_string(), replicas.to_string()));
            validate(&spec, &a).map_err(|e| e.to_string())
        };
        assert_eq!(
            run("0").unwrap().integer("replicas").unwrap(),
            0,
            "0 stops the service but is allowed"
        );
        assert_eq!(run("-1").unwrap_err(), "replicas: must be >= 0 (got -1)");
        assert_eq!(run("51").unwrap_err(), "replicas: must be <= 50 (got 51)");
        assert_eq!(
            run("three").unwrap_err(),
            "replicas: `three` is not an integer"
        );
        assert_eq!(run("+3").unwrap_err(), "replicas: `+3` is not an integer");
        assert_eq!(
            run("99999999999999999999").unwrap_err(),
            "replicas: `99999999999999999999` is not an integer"
        );
    }

    #[test]
    fn values_outside_the_environment_are_refused() {
        assert_eq!(
            refused(&with("source", "orders-db")),
            "source: `orders-db` is not allowed in environment `prod` (allowed: payments-db)"
        );
        let mut a = with("environment", "staging");
        assert_eq!(
            refused(&a),
            "source: `payments-db` is not allowed in environment `staging` (allowed: payments-db-staging)"
        );
        a = with("environment", "dev");
        assert_eq!(
            refused(&a),
            "source: `payments-db` is not allowed in environment `dev` (allowed: none)"
        );
        let a = with("source", "payments-db-staging");
        assert_eq!(
            refused(&a),
            "source: `payments-db-staging` is not allowed in environment `prod` (allowed: payments-db)"
        );
    }

    #[test]
    fn shipped_cluster_outside_prod_allowlist_is_refused() {
        let catalog = load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/commands")))
            .expect("valid catalog");
        let spec = catalog.get("rds-failover-cluster").expect("present");
        let err = validate(
            spec,
            &args(&[("cluster", "orders-db"), ("environment", "prod")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cluster: `orders-db` is not allowed in environment `prod` (allowed: payments-db)"
        );
        let ok = validate(
            spec,
            &args(&[("cluster", "payments-db"), ("environment", "prod")]),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// Checks `value` for parameter `param` of shipped command `command`.
    fn shipped_check(command: &str, param: &str, value: &str) -> Result<(), String> {
        let catalog = load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/commands")))
            .expect("valid catalog");
        let spec = catalog.get(command).expect("present");
        let p = &spec.params[param];
        let pattern = match &p.kind {
            ParamKind::String { pattern } => Some(pattern),
            _ => None,
        };
        check_token(value, pattern)?;
        typed_value(p, value).map(|_| ())
    }

    #[test]
    fn shipped_patterns_accept_runbook_values_and_refuse_others() {
        let accepted = [
            (
                "k8s-set-image",
                "image",
                "ghcr.io/liquidtreasury/liquid-abt:v1.2.3",
            ),
            (
                "k8s-set-image",
                "image",
                "localhost:5000/team/api:2025-01-06_1",
            ),
            (
                "k8s-set-image",
                "image",
                "123456789012.dkr.ecr.us-west-2.amazonaws.com/api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            ("k8s-drain", "node", "ip-10-0-1-23.ec2.internal"),
            (
                "k8s-pods",
                "selector",
                "app=fusion-bitcoin-relayer,tier!=db",
            ),
            ("k8s-pods", "selector", "app.kubernetes.io/name==api"),
            ("k8s-scale", "deployment", "liquid-abt-app"),
            (
                "rds-restore-snapshot",
                "snapshot",
                "rds:liquid-abt-production-2025-01-06-02-00",
            ),
            ("rds-restore-snapshot", "instance_class", "db.r6g.2xlarge"),
            ("rds-restore-pitr", "target", "orders-db-restored-20250106"),
        ];
        for (command, param, value) in accepted {
            assert_eq!(
                shipped_check(command, param, value),
                Ok(()),
                "{command} {param}={value}"
            );
        }
        let refused = [
            ("k8s-set-image", "image", "nginx:latest"),
            ("k8s-set-image", "image", "ghcr.io/example/api"),
            ("k8s-set-image", "image", "ghcr.io/example/api:v1;id"),
            ("k8s-set-image", "image", "ghcr.io/example/api@sha256:abc"),
            ("k8s-drain", "node", "-node"),
            ("k8s-drain", "node", "Node1"),
            ("k8s-scale", "deployment", "api_v2"),
            ("k8s-pods", "namespace", &"a".repeat(64)),
            ("rds-restore-pitr", "target", "1db"),
            (
                "rds-restore-pitr",
                "target",
                &format!("a{}", "b".repeat(63)),
            ),
            ("rds-restore-snapshot", "instance_class", "db r6g large"),
        ];
        for (command, param, value) in refused {
            assert!(
                shipped_check(command, param, value).is_err(),
                "{command} {param}={value}"
            );
        }
    }

    #[test]
    fn missing_environment_is_refused_when_values_are_restricted() {
        let mut spec = spec();
        spec.params.get_mut(ENVIRONMENT).unwrap().required = false;
        let a: Vec<_> = good()
            .into_iter()
            .filter(|(k, _)| k != "environment")
            .collect();
        assert_eq!(
            validate(&spec, &a).unwrap_err().to_string(),
            "environment: is required because `source` is restricted per environment"
        );
    }
}
