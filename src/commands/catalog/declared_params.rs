//! The `[params.<name>]` tables of a catalog file: each parameter's declared type against
//! the type its action reads, the keys each type allows (`pattern`, `values`, `min`/`max`,
//! `allow_latest`), and `allowed` values per environment, which must pass the
//! parameter's own rule and name environments the `environment` enum lists.
//!
//! Split from [`super::load`] because these rules are most of a file's rules; a value a
//! request gives is checked at request time in `commands::params`, not here.

use std::collections::{BTreeMap, BTreeSet};

use super::load::{Errors, RawParam, TypeName};
use super::{ENVIRONMENT, ParamKind, ParamSpec, Pattern};
use crate::commands::Action;
use crate::commands::params::check_token;

/// The value type an executor reads for a parameter name (see [`super::Params`]).
fn expected_type(name: &str) -> &'static [TypeName] {
    match name {
        "replicas" => &[TypeName::Integer],
        "restore_time" => &[TypeName::Timestamp],
        ENVIRONMENT => &[TypeName::Enum],
        _ => &[TypeName::String, TypeName::Enum],
    }
}

pub(super) fn build_params(
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
