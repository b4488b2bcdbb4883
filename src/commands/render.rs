//! The words of the recovery-command flow, in the neutral message model.

use crate::commands::catalog::CommandSpec;
use crate::commands::{ExecError, ExecOutput, ParamValue, Params, Preview};
use crate::domain::approval::ClickOutcome;
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

/// The approval request, with Approve / Deny buttons.
pub fn approval_request(
    run: &RunRow,
    spec: Option<&CommandSpec>,
    params: &str,
    preview: &Preview,
) -> Message {
    let mut blocks = vec![header(run, spec), requested_by(run, params)];
    blocks.extend(preview_blocks(preview));
    let who = spec
        .map(|s| s.approvers.describe())
        .unwrap_or_else(|| "the approver policy".into());
    blocks.push(Block::Context {
        spans: vec![
            Span::text(format!(
                "Needs {} approval{} from {who}, not the requester. Expires ",
                run.required,
                if run.required == 1 { "" } else { "s" }
            )),
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
    Message {
        fallback: vec![Span::text(format!(
            "Approval needed: run #{} {} {params}",
            run.id, run.command
        ))],
        blocks,
    }
}

/// A read-only run that needs no approval: the preview, and that it runs now.
pub fn running_now(
    run: &RunRow,
    spec: Option<&CommandSpec>,
    params: &str,
    preview: &Preview,
) -> Message {
    let mut blocks = vec![header(run, spec), requested_by(run, params)];
    blocks.extend(preview_blocks(preview));
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
) -> Message {
    let mut blocks = vec![header(run, spec), requested_by(run, params)];
    blocks.push(Block::Section {
        spans: vec![Span::bold("Dry-run mode: execution is switched off (config `recovery.execution`). This is what it would do:")],
    });
    blocks.extend(preview_blocks(preview));
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
