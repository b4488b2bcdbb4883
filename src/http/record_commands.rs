//! `/incident timeline | note | action | rpo | postmortem`: reading and adding to an
//! incident's record. Dispatched from `incident_commands::run`; the rules live in
//! `domain::record`, `domain::narrative` and `domain::postmortem`.

use std::time::Duration;

use chrono_tz::Tz;

use super::AppState;
use super::incident_commands::{Invocation, Reply};
use crate::domain::command::SlashCommand;
use crate::domain::incident::Incident;
use crate::domain::narrative::{self, Users};
use crate::domain::record::{self, NoteSource};
use crate::engine::{Addition, EngineError, RequestMeta};

/// Entries per page of `/incident timeline`.
pub const TIMELINE_PAGE: usize = 15;
/// Longest line shown per entry (a long update is cut; the post-mortem has it whole).
const MAX_LINE_CHARS: usize = 280;
/// How long the reader's time zone may take to look up before UTC alone is shown.
const TZ_LOOKUP: Duration = Duration::from_millis(1_500);

/// Runs a record command in `incident`'s channel.
pub async fn run(
    state: &AppState,
    inv: &Invocation,
    incident: &Incident,
    cmd: SlashCommand,
) -> Result<Reply, EngineError> {
    let meta = RequestMeta {
        dedupe: inv.dedupe.clone(),
        ..RequestMeta::user(&inv.user, &inv.request_id)
    };
    let engine = &state.engine;
    let written = match cmd {
        SlashCommand::Timeline(page) => return timeline(state, inv, incident, page).await,
        SlashCommand::Note(text) => {
            let note = Addition::Note {
                text,
                source: NoteSource::Command,
            };
            engine.add_to_record(&meta, incident.id, note).await
        }
        SlashCommand::Action(text) => match record::parse_action(&text) {
            Ok(item) => {
                engine
                    .add_to_record(&meta, incident.id, Addition::Action(item))
                    .await
            }
            Err(e) => Err(EngineError::Refused(e)),
        },
        SlashCommand::Rpo(minutes) => {
            engine
                .add_to_record(&meta, incident.id, Addition::Rpo(minutes))
                .await
        }
        SlashCommand::Postmortem => engine
            .draft_postmortem(&meta, incident.id)
            .await
            .map(|d| crate::engine::Outcome {
                incident: incident.clone(),
                reply: format!(
                    "Post-mortem draft {} of {} written from the record; it will appear in this channel as a file.",
                    d.version, incident.id
                ),
            }),
        other => unreachable!("{} is not a record command", other.name()),
    };
    match written {
        Ok(outcome) => Ok(Reply {
            text: outcome.reply,
            dedupe_consumed: true,
        }),
        Err(EngineError::Refused(refusal)) => Ok(Reply {
            text: refusal.to_string(),
            dedupe_consumed: false,
        }),
        Err(e) => Err(e),
    }
}

/// The reader's time zone from Slack, or `None` (UTC alone is shown then).
async fn reader_zone(state: &AppState, user: &str) -> Option<Tz> {
    match tokio::time::timeout(TZ_LOOKUP, state.slack.user_time_zone(user)).await {
        Ok(Ok(Some(name))) => name.parse().ok(),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "users.info for the time zone failed");
            None
        }
        Err(_) => None,
    }
}

async fn timeline(
    state: &AppState,
    inv: &Invocation,
    incident: &Incident,
    page: u32,
) -> Result<Reply, EngineError> {
    let entries = state.engine.store().timeline(incident.id).await?;
    let pages = entries.len().div_ceil(TIMELINE_PAGE).max(1);
    let page = page as usize;
    if page > pages {
        return Ok(Reply {
            text: format!(
                "page: {} has {pages} page{} of timeline; ask for 1 to {pages}.",
                incident.id,
                if pages == 1 { "" } else { "s" }
            ),
            dedupe_consumed: false,
        });
    }
    let zone = reader_zone(state, &inv.user).await;
    let mut text = format!(
        "*Timeline of {}* — page {page} of {pages} ({} entries; times in {}):\n",
        incident.id,
        entries.len(),
        match zone {
            Some(tz) if tz != chrono_tz::UTC => format!("your time zone, {tz}, and UTC"),
            _ => "UTC".to_string(),
        }
    );
    let start = (page - 1) * TIMELINE_PAGE;
    for e in entries.iter().skip(start).take(TIMELINE_PAGE) {
        let mut line = narrative::describe(&e.kind, &e.actor, Users::Slack);
        if line.chars().count() > MAX_LINE_CHARS {
            line = line.chars().take(MAX_LINE_CHARS).collect::<String>() + "…";
        }
        let when = narrative::local_and_utc(e.at, zone.unwrap_or(chrono_tz::UTC));
        text.push_str(&format!("{}. {when} — {line}\n", e.seq));
    }
    if page < pages {
        text.push_str(&format!("More: `/incident timeline {}`.", page + 1));
    }
    Ok(Reply {
        text,
        dedupe_consumed: false,
    })
}
