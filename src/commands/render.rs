//! The words of the recovery-command flow, in the neutral message model.

use crate::commands::catalog::CommandSpec;
use crate::commands::{ExecError, ExecOutput, ParamValue, Params, Preview};
use crate::domain::approval::{ClickOutcome, RunState};
use crate::domain::message::{Block, Button, Message, Span};
use crate::store::RunRow;

/// `action_id` of the Approve button.
pub const APPROVE_ACTION: &str = "klaxon_run_approve";
/// `action_id` of the Deny button.
pub const DENY_ACTION: &str = "klaxon_run_deny";

/// Parameters as `key=value` words, for people and the timeline.
pub fn params_line(params: &Params) -> String {
    params
        .0
        .iter()
        .map(|(k, v)| match v {
            ParamValue::Text(t) => format!("{k}={t}"),
            ParamValue::Integer(i) => format!("{k}={i}"),
            ParamValue::Timestamp(t) => format!("{k}={}", t.to_rfc3339()),
            ParamValue::Latest => format!("{k}=latest"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn preview_blocks(preview: &Preview) -> Vec<Block> {
    let mut blocks = vec![Block::Code {
        text: preview.call.clone(),
    }];
    if !preview.changes.is_empty() {
        blocks.push(Block::Section {
            spans: vec![Span::bold("Changes")],
        });
        blocks.push(Block::Code {
            text: preview.changes.join("\n"),
        });
    }
    for warning in &preview.warnings {
        blocks.push(Block::Section {
            spans: vec![Span::text(format!(":warning: {warning}"))],
        });
    }
    blocks
}

fn header(run: &RunRow, spec: Option<&CommandSpec>) -> Block {
    let risk = spec
        .map(|s| format!(" ({} risk)", s.risk))
        .unwrap_or_default();
    Block::Header {
        text: format!("Run #{}: {}{risk}", run.id, run.command),
    }
}

fn requested_by(run: &RunRow, params: &str) -> Block {
    Block::Section {
        spans: vec![
            Span::text("Requested by "),
            Span::User(run.requester.clone()),
            Span::text(format!(": `{}` {params}", run.command)),
        ],
    }
}

fn target_block(target: Option<&str>) -> Option<Block> {
    target.map(|t| Block::Context {
        spans: vec![Span::text(format!("Acts on: {t}"))],
    })
}

/// The approval message as the run stands: the preview and where it acts, who may
/// approve (frozen at request time), who approved or denied and when, the outcome; the
/// Approve / Deny buttons only while it is pending. Posted once, then updated in place.
pub fn approval_status(
    run: &RunRow,
    spec: Option<&CommandSpec>,
    params: &str,
    preview: &Preview,
    target: Option<&str>,
    eligible: &[(String, String)],
) -> Message {
    let mut blocks = vec![header(run, spec), requested_by(run, params)];
    blocks.extend(preview_blocks(preview));
    blocks.extend(target_block(target));
    let mut who: Vec<String> = eligible
        .iter()
        .filter(|(user, _)| *user != run.requester)
        .map(|(user, source)| format!("<@{user}> ({source})"))
        .collect();
    who.dedup();
    let who = if who.is_empty() {
        "nobody was eligible when it was requested".to_string()
    } else {
        who.join(", ")
    };
    blocks.push(Block::Context {
        spans: vec![Span::text(format!(
            "Needs {} approval{}, not the requester's. Approvers (fixed at request): {who}.",
            run.required,
            if run.required == 1 { "" } else { "s" }
        ))],
    });
    for approval in &run.approvers {
        blocks.push(Block::Context {
            spans: vec![
                Span::text(":white_check_mark: Approved by "),
                Span::User(approval.approver.clone()),
                Span::text(" at "),
                Span::Time(approval.at),
            ],
        });
    }
    if let Some(closed) = &run.closed {
        let by = if closed.by == "klaxon" {
            Span::text("Klaxon")
        } else {
            Span::User(closed.by.clone())
        };
        blocks.push(Block::Context {
            spans: vec![
                Span::text(format!(":no_entry: {} by ", closed.reason)),
                by,
                Span::text(" at "),
                Span::Time(closed.at),
            ],
        });
    }
    let status = match run.state {
        RunState::Pending => None,
        RunState::Approved => Some("Approved: waiting for a worker to run it.".to_string()),
        RunState::Executing => Some("Approved: running now.".to_string()),
        RunState::Succeeded => Some("Outcome: succeeded (see the result below).".to_string()),
        RunState::Failed => Some("Outcome: failed (see the result below).".to_string()),
        RunState::OutcomeUnknown => {
            Some("Outcome unknown: check by hand; it will not be re-run.".to_string())
        }
        other => Some(format!("Outcome: {other}. Nothing was run.")),
    };
    match status {
        None => {
            blocks.push(Block::Context {
                spans: vec![
                    Span::text("Expires "),
                    Span::Time(run.expires_at),
                    Span::text(". Klaxon runs exactly these parameters, once."),
                ],
            });
            blocks.push(Block::Actions {
                buttons: vec![
                    Button {
                        text: "Approve".into(),
                        action_id: APPROVE_ACTION.into(),
                        value: run.id.to_string(),
                        danger: false,
                    },
                    Button {
                        text: "Deny".into(),
                        action_id: DENY_ACTION.into(),
                        value: run.id.to_string(),
                        danger: true,
                    },
                ],
            });
        }
        Some(status) => blocks.push(Block::Section {
            spans: vec![Span::bold(status)],
        }),
    }
    let fallback = match run.state {
        RunState::Pending => format!("Approval needed: run #{} {} {params}", run.id, run.command),
        state => format!("Run #{} {} {params}: {state}", run.id, run.command),
    };
    Message {
        fallback: vec![Span::text(fallback)],
        blocks,
    }
}

/// A read-only run that needs no approval: the preview, and that it runs now.
pub fn running_now(
    run: &RunRow,
    spec: Option<&CommandSpec>,
    params: &str,
    preview: &Preview,
    target: Option<&str>,
) -> Message {
    let mut blocks = vec![header(run, spec), requested_by(run, params)];
    blocks.extend(preview_blocks(preview));
    blocks.extend(target_block(target));
    blocks.push(Block::Context {
        spans: vec![Span::text(
            "Read-only and needs no approval: running it now.",
        )],
    });
    Message {
        fallback: vec![Span::text(format!(
            "Running #{} {} {params}",
            run.id, run.command
        ))],
        blocks,
    }
}

/// Execution is switched off: what it would have done.
pub fn dry_run(
    run: &RunRow,
    spec: Option<&CommandSpec>,
    params: &str,
    preview: &Preview,
    target: Option<&str>,
) -> Message {
    let mut blocks = vec![header(run, spec), requested_by(run, params)];
    blocks.push(Block::Section {
        spans: vec![Span::bold("Dry-run mode: execution is switched off (config `recovery.execution`). This is what it would do:")],
    });
    blocks.extend(preview_blocks(preview));
    blocks.extend(target_block(target));
    Message {
        fallback: vec![Span::text(format!(
            "Dry run #{} {} {params}",
            run.id, run.command
        ))],
        blocks,
    }
}

/// The preview itself failed; the run cannot go on.
pub fn preview_failed(run: &RunRow, error: &str) -> Message {
    Message::paragraph(vec![
        Span::bold(format!(
            ":x: Run #{} {}: preview failed",
            run.id, run.command
        )),
        Span::text(format!(": {error}. Nothing was changed.")),
    ])
}

/// What a click did, for the channel (refusals go only to the clicker).
pub fn click(outcome: &ClickOutcome, run: &RunRow, clicker: &str) -> Option<Message> {
    let text = match outcome {
        ClickOutcome::Recorded { approvers } => format!(
            " approved run #{} ({} of {}).",
            run.id,
            approvers.len(),
            run.required
        ),
        ClickOutcome::Approved { .. } => format!(
            " approved run #{} `{}`: running it now.",
            run.id, run.command
        ),
        ClickOutcome::Denied => format!(
            " denied run #{} `{}`. It will not run.",
            run.id, run.command
        ),
        ClickOutcome::Cancelled => format!(
            " withdrew run #{} `{}`. It will not run.",
            run.id, run.command
        ),
        ClickOutcome::Refused(_) => return None,
    };
    Some(Message::paragraph(vec![
        Span::User(clicker.to_string()),
        Span::text(text),
    ]))
}

/// A finished run's result.
pub fn result(run: &RunRow, outcome: &Result<ExecOutput, ExecError>) -> Message {
    match outcome {
        Ok(out) => {
            let mut blocks = vec![Block::Section {
                spans: vec![
                    Span::bold(format!(
                        ":white_check_mark: Run #{} {} succeeded",
                        run.id, run.command
                    )),
                    Span::text(format!(": {}", out.summary)),
                ],
            }];
            if !out.details.is_empty() {
                blocks.push(Block::Code {
                    text: out.details.join("\n"),
                });
            }
            if let Some(id) = &out.request_id {
                blocks.push(Block::Context {
                    spans: vec![Span::text(format!("Request id {id}"))],
                });
            }
            Message {
                fallback: vec![Span::text(format!(
                    "Run #{} succeeded: {}",
                    run.id, out.summary
                ))],
                blocks,
            }
        }
        Err(ExecError::Transport(e)) => Message::paragraph(vec![
            Span::bold(format!(
                ":question: Run #{} {}: outcome unknown",
                run.id, run.command
            )),
            Span::text(format!(
                ": the API did not answer ({e}). It may or may not have happened: check by hand. Klaxon will not retry it."
            )),
        ]),
        Err(e) => Message::paragraph(vec![
            Span::bold(format!(":x: Run #{} {} failed", run.id, run.command)),
            Span::text(format!(": {e}")),
        ]),
    }
}

/// A run whose worker died mid-execution.
pub fn outcome_unknown(run: &RunRow) -> Message {
    Message::paragraph(vec![
        Span::bold(format!(
            ":question: Run #{} {}: outcome unknown",
            run.id, run.command
        )),
        Span::text(
            ". Klaxon stopped while it was executing, so nobody knows whether it happened. Check by hand; Klaxon will never re-run it on its own.",
        ),
    ])
}
