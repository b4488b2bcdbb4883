//! Tests of request-time parameter validation: parsing `key=value` text, the character
//! rule against injection, types, and the shipped catalog's patterns and allow-lists.

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
    let a =
        parse_args("source=payments-db;rm target=x restore_time=latest environment=prod").unwrap();
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
