//! Issue 10: the post-mortem draft of a scripted SEV1 on simulated time, compared with a
//! committed golden file; its upload through Slack's external upload flow (and a retry
//! that does not upload twice); timeline notes from commands, pins and reactions; action
//! items; the tamper check; `klaxon report`. Both backends.
//!
//! `KLAXON_BLESS=1 cargo test --test postmortem` rewrites the golden file after a change
//! to the draft that is meant.

#[path = "support/approvals.rs"]
mod helpers;
mod support;

use chrono::TimeDelta;
use helpers::{Exec, recovery, shipped};
use klaxon::clock::Clock;
use klaxon::commands::render::APPROVE_ACTION;
use klaxon::domain::incident::{EventKind, IncidentId};
use serde_json::json;
use support::slack_emulator::Failure;
use support::{Db, TestApp, start};

both_backends!(
    the_sev1_post_mortem_matches_the_golden_file,
    a_failed_upload_step_resumes_without_uploading_twice,
    pins_and_reactions_add_the_message_once,
    bad_record_commands_name_the_field,
    an_altered_row_is_named_by_the_audit,
    the_report_tables_response_times_per_severity,
);

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/postmortem_sev1.md"
);

/// Fails with a readable line diff when `actual` differs from the golden file; with
/// `KLAXON_BLESS=1`, rewrites it instead.
fn assert_golden(actual: &str) {
    if std::env::var("KLAXON_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(GOLDEN, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(GOLDEN)
        .unwrap_or_else(|e| panic!("{GOLDEN}: {e} (run with KLAXON_BLESS=1 to create it)"));
    if expected == actual {
        return;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut diff = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i), a.get(i));
        if x != y {
            diff.push_str(&format!(
                "line {}:\n  - {}\n  + {}\n",
                i + 1,
                x.unwrap_or(&"<none>"),
                y.unwrap_or(&"<none>")
            ));
        }
    }
    panic!(
        "the post-mortem draft differs from {GOLDEN} (KLAXON_BLESS=1 rewrites it if the change is meant):\n{diff}"
    );
}

async fn sev1_app(db: Db) -> (TestApp, std::sync::Arc<Exec>) {
    let exec = Exec::new("prod");
    let app = TestApp::start_with_recovery_configured(
        db,
        recovery(shipped(), exec.clone(), exec.clone()),
        |c| c.calendar.tz = chrono_tz::Europe::Berlin,
    )
    .await;
    (app, exec)
}

fn at(min: i64) -> chrono::DateTime<chrono::Utc> {
    start() + TimeDelta::minutes(min)
}

/// The scripted SEV1: declare, a page, updates, an approved command, a hand-over, a
/// severity change, monitoring, an action item, data lost, resolve. Returns the channel.
async fn scripted_sev1(app: &TestApp) -> String {
    let ch = app.declare("UALICE", "sev1 Payments API down").await;
    app.run_until(at(5)).await;
    app.command("UALICE", &ch, "role ops <@UBOB>").await;
    app.run_until(at(10)).await;
    app.command(
        "UALICE",
        &ch,
        "update Error rate 100% on checkout; DB connections exhausted",
    )
    .await;
    app.command(
        "UBOB",
        &ch,
        "note api pods crash-looping since the 09:52 deploy",
    )
    .await;
    // 10:15: the SEV1 ladder pages the team.
    app.run_until(at(20)).await;
    let reply = app
        .command(
            "UBOB",
            &ch,
            "run k8s-scale environment=prod namespace=payments deployment=api replicas=0",
        )
        .await;
    assert!(reply.starts_with("Run #1"), "{reply}");
    app.deliver().await;
    app.clock.set(at(22));
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    app.deliver().await;
    app.run_until(at(25)).await;
    app.command("UALICE", &ch, "role commander <@UCAROL>").await;
    // 10:40: no update for 30 minutes, a reminder.
    app.run_until(at(45)).await;
    app.command("UCAROL", &ch, "sev 2").await;
    app.run_until(at(50)).await;
    app.command("UCAROL", &ch, "status monitoring").await;
    app.command(
        "UCAROL",
        &ch,
        "update Rolled back to v41; error rate normal",
    )
    .await;
    app.run_until(at(55)).await;
    let reply = app
        .command(
            "UCAROL",
            &ch,
            "action Alert on DB connection saturation <@UBOB> due 2026-12-04",
        )
        .await;
    assert_eq!(reply, "Action item 1 recorded for INC-1.");
    app.command("UCAROL", &ch, "action Canary the api deploys")
        .await;
    app.command("UCAROL", &ch, "rpo 5").await;
    app.run_until(at(90)).await;
    let reply = app
        .command("UCAROL", &ch, "resolve Rolled back the bad deploy")
        .await;
    assert!(reply.contains("resolved"), "{reply}");
    app.deliver().await;
    ch
}

async fn the_sev1_post_mortem_matches_the_golden_file(db: Db) {
    let (app, exec) = sev1_app(db).await;
    let ch = scripted_sev1(&app).await;
    assert_eq!(exec.count(), 1);
    assert!(
        !app.pagerduty.events().is_empty(),
        "the ladder paged PagerDuty"
    );
    let drafts = app.store.postmortems_of(IncidentId(1)).await.unwrap();
    assert_eq!(drafts.len(), 1);
    let draft = &drafts[0];
    assert!(draft.shared, "the draft was uploaded and shared");
    assert_golden(&draft.markdown);

    // Uploaded with the external flow, bytes as stored, shared in the incident channel.
    let files = app.slack.files();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(file.filename, "INC-1-postmortem-v1.md");
    assert_eq!(file.bytes.as_deref(), Some(draft.markdown.as_bytes()));
    assert_eq!(file.posts, 1);
    assert_eq!(file.shares.len(), 1);
    assert_eq!(file.shares[0].0, ch);
    assert_eq!(
        file.shares[0].1,
        "Post-mortem draft: INC-1 Payments API down"
    );
    assert!(
        app.slack.calls_to("files.upload").is_empty(),
        "files.upload is retired"
    );
    // The action items were listed at resolution, before the file.
    let messages = app.messages_in(&ch);
    assert!(
        messages.iter().any(|m| m.contains("Action items (2)")),
        "{messages:#?}"
    );
    // The draft is on the record too.
    let timeline = app.store.timeline(IncidentId(1)).await.unwrap();
    assert!(matches!(
        timeline.last().unwrap().kind,
        EventKind::PostmortemDrafted { version: 1, .. }
    ));

    // On demand: a second draft, uploaded as a second file.
    let reply = app.command("UCAROL", &ch, "postmortem").await;
    assert!(reply.starts_with("Post-mortem draft 2 of INC-1"), "{reply}");
    app.deliver().await;
    assert_eq!(app.slack.files().len(), 2);
    let v2 = app
        .store
        .postmortems_of(IncidentId(1))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(v2.shared);
    assert!(
        v2.markdown.contains("Post-mortem draft 1 written"),
        "the second draft records the first"
    );
}

async fn a_failed_upload_step_resumes_without_uploading_twice(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev2 Search slow").await;
    // The completion fails (Slack 500): the retry completes the same file, it does not
    // reserve or send a second one.
    app.slack
        .fail_next("files.completeUploadExternal", Failure::Status(500));
    app.command("UALICE", &ch, "postmortem").await;
    app.deliver().await;
    assert_eq!(app.slack.files()[0].shares.len(), 0);
    app.clock.advance(TimeDelta::minutes(10));
    app.deliver().await;
    let files = app.slack.files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!((files[0].posts, files[0].shares.len()), (1, 1));

    // An upload URL Slack refuses (expired): the retry reserves a fresh file.
    app.slack.fail_next("upload", Failure::Status(403));
    app.command("UALICE", &ch, "postmortem").await;
    app.deliver().await;
    app.clock.advance(TimeDelta::minutes(10));
    app.deliver().await;
    let files = app.slack.files();
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files[1].shares.len(), 0, "the refused one is never shared");
    assert_eq!(files[2].shares.len(), 1);
    let drafts = app.store.postmortems_of(IncidentId(1)).await.unwrap();
    assert!(drafts.iter().all(|d| d.shared));
}

fn event(event_id: &str, event: serde_json::Value) -> String {
    json!({
        "type": "event_callback",
        "team_id": "TKLAXON",
        "api_app_id": "AKLAXON",
        "event_id": event_id,
        "event_time": 1_795_000_000,
        "event": event,
    })
    .to_string()
}

async fn notes(app: &TestApp) -> Vec<(String, String)> {
    app.store
        .timeline(IncidentId(1))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::NoteAdded { text, source, .. } => Some((source, text)),
            _ => None,
        })
        .collect()
}

async fn pins_and_reactions_add_the_message_once(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev2 Search slow").await;
    let ts = app
        .slack
        .add_user_message(&ch, "UBOB", "p99 jumped when the index rebuild started");
    let pin = event(
        "Ev1",
        json!({
            "type": "pin_added", "user": "UALICE", "channel_id": ch,
            "item": {"type": "message", "channel": ch, "created_by": "UALICE",
                     "message": {"type": "message", "user": "UBOB", "ts": ts,
                                 "text": "p99 jumped when the index rebuild started"}},
            "event_ts": "1795000000.000100"
        }),
    );
    for _ in 0..2 {
        // Slack retries: the same event id is processed once.
        let (status, _) = app
            .post_signed("/slack/events", "application/json", &pin)
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        notes(&app).await,
        vec![(
            "pin".to_string(),
            "p99 jumped when the index rebuild started".to_string()
        )]
    );
    // A :memo: reaction on another message: fetched and recorded by the worker.
    let ts2 = app
        .slack
        .add_user_message(&ch, "UCAROL", "rebuild paused at 10:20");
    let react = |id: &str, emoji: &str, ts: &str| {
        event(
            id,
            json!({
                "type": "reaction_added", "user": "UALICE", "reaction": emoji, "item_user": "UCAROL",
                "item": {"type": "message", "channel": ch, "ts": ts}, "event_ts": "1795000000.000200"
            }),
        )
    };
    for body in [
        react("Ev2", "memo", &ts2),
        react("Ev2", "memo", &ts2),
        react("Ev3", "thumbsup", &ts2),
        react("Ev4", "memo", &ts),
    ] {
        let (status, _) = app
            .post_signed("/slack/events", "application/json", &body)
            .await;
        assert_eq!(status, 200);
    }
    app.deliver().await;
    assert_eq!(
        notes(&app).await,
        vec![
            (
                "pin".to_string(),
                "p99 jumped when the index rebuild started".to_string()
            ),
            (
                "reaction:memo".to_string(),
                "rebuild paused at 10:20".to_string()
            ),
        ],
        "a retried event, another emoji and a message already pinned add nothing"
    );
    // The timeline shows them, in the reader's time zone and UTC.
    app.slack
        .set_user("UALICE", json!({"tz": "America/New_York"}));
    app.command("UALICE", &ch, "note checked the replica too")
        .await;
    let text = app.command("UALICE", &ch, "timeline").await;
    assert!(text.contains("page 1 of 1"), "{text}");
    assert!(
        text.contains("your time zone, America/New_York, and UTC"),
        "{text}"
    );
    assert!(text.contains("2026-11-23 05:00 EST (10:00 UTC)"), "{text}");
    assert!(
        text.contains("<@UALICE> pinned a message by <@UBOB>: p99 jumped"),
        "{text}"
    );
    assert!(
        text.contains("Note by <@UALICE>: checked the replica too"),
        "{text}"
    );
}

async fn bad_record_commands_name_the_field(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev3 Flaky job").await;
    let reply = app
        .command("UALICE", &ch, "action Fix it due next-week")
        .await;
    assert!(
        reply.starts_with("due: `next-week` is not a date"),
        "{reply}"
    );
    let reply = app.command("UALICE", &ch, "rpo some").await;
    assert!(reply.starts_with("minutes: `some`"), "{reply}");
    let reply = app.command("UALICE", &ch, "timeline 9").await;
    assert!(reply.starts_with("page: INC-1 has 1 page"), "{reply}");
    let reply = app.command("UALICE", "CGENERAL01", "note hello").await;
    assert!(
        reply.contains("works in an incident's own channel"),
        "{reply}"
    );
    // Many entries page.
    for i in 0..20 {
        app.command("UALICE", &ch, &format!("note n{i}")).await;
    }
    let page1 = app.command("UALICE", &ch, "timeline").await;
    assert!(
        page1.contains("page 1 of 2") && page1.contains("More: `/incident timeline 2`"),
        "{page1}"
    );
    let page2 = app.command("UALICE", &ch, "timeline 2").await;
    assert!(page2.contains("Note by <@UALICE>: n19"), "{page2}");
}

async fn an_altered_row_is_named_by_the_audit(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev2 Search slow").await;
    app.command("UALICE", &ch, "update Looking at the index")
        .await;
    app.command("UALICE", &ch, "update Index rebuilt").await;
    let n = klaxon::app::audit_store(&app.store).await.unwrap();
    assert!(n >= 4, "{n}");
    // The triggers refuse an UPDATE...
    assert!(
        app.store
            .execute_raw(
                "update timeline set kind = replace(kind, 'rebuilt', 'fine') where seq = 5"
            )
            .await
            .is_err()
    );
    // ...so recreate the table around them, with entry 4's text edited.
    let target = app
        .store
        .timeline(IncidentId(1))
        .await
        .unwrap()
        .into_iter()
        .find(|e| matches!(&e.kind, EventKind::UpdatePosted { text } if text == "Looking at the index"))
        .unwrap()
        .seq;
    for sql in [
        "create table timeline_copy as select * from timeline".to_string(),
        "drop table timeline".to_string(),
        "alter table timeline_copy rename to timeline".to_string(),
        format!(
            "update timeline set kind = replace(kind, 'Looking at the index', 'All fine') where incident_id = 1 and seq = {target}"
        ),
    ] {
        app.store.execute_raw(&sql).await.unwrap();
    }
    let err = klaxon::app::audit_store(&app.store).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("INC-1 entry {target}: content does not match its hash (edited?)")
    );
    // A row that no longer decodes is named too.
    app.store
        .execute_raw(&format!(
            "update timeline set kind = '{{\"type\":\"gone\"}}' where incident_id = 1 and seq = {}",
            target + 1
        ))
        .await
        .unwrap();
    let err = klaxon::app::audit_store(&app.store).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("INC-1 entry {target}:")),
        "{err}"
    );
}

async fn the_report_tables_response_times_per_severity(db: Db) {
    let (app, _exec) = sev1_app(db).await;
    scripted_sev1(&app).await;
    let table = klaxon::app::report_from(
        &app.store,
        &app.config.severities,
        app.clock.now(),
        TimeDelta::days(30),
    )
    .await
    .unwrap();
    let sev1 = table
        .lines()
        .find(|l| l.starts_with("SEV1"))
        .unwrap_or_else(|| panic!("{table}"));
    // Declared 10:00 with a commander at once, monitoring 10:50, resolved 11:30.
    let cells: Vec<&str> = sev1
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        vec![
            "SEV1",
            "1",
            "0",
            "0 min",
            "0 min",
            "50 min",
            "50 min",
            "1 h 30 min",
            "1 h 30 min",
            "1/1",
            "1/1"
        ],
        "{table}"
    );
}
