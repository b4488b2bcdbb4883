//! The post-mortem's recovery-command table: each run's command, requester, approvers
//! and outcome, as the timeline tells it.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::super::incident::EventKind;
use super::super::narrative::Users;
use super::super::timeline::TimelineEntry;

/// One recovery run as the record tells it.
#[derive(Default)]
struct RunStory {
    command: String,
    requested_by: String,
    approvers: Vec<String>,
    denied_by: Vec<String>,
    outcome: String,
}

pub(super) fn runs(md: &mut String, entries: &[TimelineEntry]) {
    let u = Users::Plain;
    let mut stories: BTreeMap<i64, RunStory> = BTreeMap::new();
    for e in entries {
        match &e.kind {
            EventKind::RunRequested {
                run_id,
                command,
                params,
            } => {
                let s = stories.entry(*run_id).or_default();
                s.command = format!("{command} {params}").trim().to_string();
                s.requested_by = u.actor(&e.actor);
                s.outcome = "requested".into();
            }
            EventKind::RunPrepared { run_id, state } => {
                stories.entry(*run_id).or_default().outcome = state.to_string();
            }
            EventKind::RunClicked {
                run_id,
                click,
                outcome,
            } => {
                let s = stories.entry(*run_id).or_default();
                if outcome.starts_with("refused") {
                    continue;
                }
                if click == "approve" {
                    s.approvers.push(u.actor(&e.actor));
                } else {
                    s.denied_by.push(u.actor(&e.actor));
                }
                if outcome == "approved" || outcome == "denied" {
                    s.outcome = outcome.clone();
                }
            }
            EventKind::RunStarted { run_id } => {
                stories.entry(*run_id).or_default().outcome = "executing".into();
            }
            EventKind::RunFinished {
                run_id,
                state,
                summary,
                request_id,
            }
            | EventKind::RunLateResult {
                run_id,
                state,
                summary,
                request_id,
            } => {
                stories.entry(*run_id).or_default().outcome = format!(
                    "{state}: {summary}{}",
                    request_id
                        .as_deref()
                        .map(|r| format!(" (request id {r})"))
                        .unwrap_or_default()
                );
            }
            EventKind::RunClosed {
                run_id,
                state,
                reason,
            } => {
                stories.entry(*run_id).or_default().outcome = format!("{state}: {reason}");
            }
            _ => {}
        }
    }
    let _ = writeln!(md, "### Recovery commands");
    let _ = writeln!(md);
    if stories.is_empty() {
        let _ = writeln!(md, "No recovery commands were requested.");
        let _ = writeln!(md);
        return;
    }
    let _ = writeln!(
        md,
        "| run | command | requested by | approved by | outcome |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (id, s) in stories {
        let mut approved = if s.approvers.is_empty() {
            "-".to_string()
        } else {
            s.approvers.join(", ")
        };
        if !s.denied_by.is_empty() {
            approved.push_str(&format!(" (denied by {})", s.denied_by.join(", ")));
        }
        let _ = writeln!(
            md,
            "| #{id} | `{}` | {} | {approved} | {} |",
            s.command,
            s.requested_by,
            s.outcome.replace('|', "\\|")
        );
    }
    let _ = writeln!(md);
}
