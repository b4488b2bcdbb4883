//! The catalog in words, for people: `klaxon commands list` (one line per command) and
//! `klaxon commands show NAME` (everything about one command).
//!
//! Kept apart from the types and the loader so the wording can change without touching
//! what is validated, and the loader can change without touching what people read.

use super::{Catalog, CommandSpec, ParamSpec, Policy};

impl Policy {
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

impl CommandSpec {
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

impl Catalog {
    /// Multi-line description of one command, for `klaxon commands show NAME`.
    pub fn describe(&self, name: &str) -> Option<String> {
        self.get(name).map(CommandSpec::describe)
    }

    /// One line per command (name, risk, approvals, summary), for `klaxon commands list`.
    pub fn list_lines(&self) -> Vec<String> {
        self.iter().map(CommandSpec::list_line).collect()
    }
}
