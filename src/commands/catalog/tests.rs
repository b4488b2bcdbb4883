//! Tests of loading, validating and describing catalog files, including every file
//! shipped in `commands/`.

use std::path::Path;

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
        errs[0].starts_with("commands/k8s-scale.toml:8: approvers.roles: unknown variant `boss`"),
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
        ["commands/k8s-scale.toml: params.replicas.type: must be \"integer\" for this parameter"]
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
        errs[0].starts_with("commands/k8s-scale.toml: params.deployment.pattern: invalid regex: "),
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
        errs[0].starts_with("commands/k8s-scale.toml:26: params.replicas: unknown field `maximum`"),
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
