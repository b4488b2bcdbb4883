//! Issue 8: the two-person rule cannot be bypassed. Each bypass is its own scenario, sent
//! as signed interaction payloads through the real router, on SQLite and PostgreSQL.

#[path = "support/approvals.rs"]
mod helpers;
mod support;

use helpers::*;
use klaxon::commands::render::{APPROVE_ACTION, DENY_ACTION};
use klaxon::domain::approval::RunState;
use klaxon::domain::incident::{EventKind, Role};
use serde_json::{Value, json};
use support::{Db, TestApp};

both_backends!(
    a_self_made_commander_cannot_approve,
    a_role_taken_after_the_request_grants_nothing,
    a_bystander_cannot_take_command_but_an_incident_admin_can,
    the_same_approver_twice_counts_once,
    a_click_from_another_channel_or_message_is_refused,
    a_foreign_team_or_app_is_refused,
    guests_and_external_users_cannot_approve,
    a_crafted_or_modified_run_id_is_refused,
    resolving_the_incident_cancels_its_pending_runs,
    the_store_refuses_writes_around_the_code,
);

async fn a_self_made_commander_cannot_approve(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    // MALLORY, outside every approver group, tries to make herself commander...
    let reply = app
        .command("UMALLORY", &ch, "role commander <@UMALLORY>")
        .await;
    assert!(
        reply.contains("only the incident commander <@UALICE>"),
        "{reply}"
    );
    // ...and presses Approve anyway.
    app.press("UMALLORY", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Pending);
    assert_eq!(exec.count(), 0);
    assert!(
        last_ephemeral(&app, "UMALLORY")
            .contains("approvers were fixed when the run was requested"),
        "{:?}",
        app.ephemerals_for("UMALLORY")
    );
    assert_eq!(refused_clicks(&app).await.len(), 1);
}

async fn a_role_taken_after_the_request_grants_nothing(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    // A legitimate hand-over after the request: CAROL commands now, but was not eligible
    // when run #1 was requested.
    let reply = app.command("UALICE", &ch, "role commander <@UCAROL>").await;
    assert!(reply.contains("is now the incident commander"), "{reply}");
    app.press("UCAROL", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Pending);
    assert!(last_ephemeral(&app, "UCAROL").contains("fixed when the run was requested"));
    // ALICE held the role at request time: still eligible.
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Succeeded);
    assert_eq!(exec.count(), 1);
    let frozen = timeline(&app).await.into_iter().find_map(|k| match k {
        EventKind::RunEligibility { eligible, .. } => Some(eligible),
        _ => None,
    });
    assert_eq!(frozen.unwrap(), ["UALICE@role:commander"]);
}

async fn a_bystander_cannot_take_command_but_an_incident_admin_can(db: Db) {
    let exec = Exec::new("prod");
    let app =
        TestApp::start_with_recovery_configured(db, recovery(shipped(), exec.clone(), exec), |c| {
            c.roles.incident_admins = vec!["SADMINS".into()]
        })
        .await;
    app.slack.set_usergroup("SADMINS", &["UADMIN"]);
    let ch = incident(&app).await;
    let posts_before = app.messages_in(&ch).len();
    let reply = app.command("UERIN", &ch, "role commander <@UERIN>").await;
    assert!(
        reply.starts_with("You cannot make <@UERIN> the incident commander"),
        "{reply}"
    );
    let reply = app.command("UERIN", &ch, "role ops <@UERIN>").await;
    assert!(reply.contains("the ops lead is <@UBOB>"), "{reply}");
    app.deliver().await;
    let incident = app.store.open_incidents().await.unwrap().remove(0);
    assert_eq!(incident.commander(), Some("UALICE"));
    assert_eq!(
        app.messages_in(&ch).len(),
        posts_before,
        "nothing said in the channel"
    );
    let refused: Vec<Role> = timeline(&app)
        .await
        .into_iter()
        .filter_map(|k| match k {
            EventKind::RoleRefused { role, .. } => Some(role),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [Role::Commander, Role::Ops]);
    // An incident admin hands command over; the channel is told and the timeline has it.
    let reply = app.command("UADMIN", &ch, "role commander <@UDAVE>").await;
    assert!(
        reply.contains("<@UDAVE> is now the incident commander"),
        "{reply}"
    );
    app.deliver().await;
    assert!(
        app.messages_in(&ch)
            .iter()
            .any(|m| m.contains("taking over from") && m.contains("UADMIN"))
    );
    // A guest may not be made commander, even by an admin.
    app.slack.set_user("UGUEST", json!({"is_restricted": true}));
    let reply = app.command("UADMIN", &ch, "role commander <@UGUEST>").await;
    assert!(reply.contains("must be a workspace member"), "{reply}");
}

async fn the_same_approver_twice_counts_once(db: Db) {
    let exec = Exec::new("default");
    let app = app_with_catalog(db, two_approvals(), exec.clone()).await;
    let ch = incident(&app).await;
    app.command(
        "UBOB",
        &ch,
        "run k8s-rollout-restart namespace=payments deployment=api",
    )
    .await;
    app.deliver().await;
    app.press("UAPPA", &ch, APPROVE_ACTION, "1").await;
    app.press("UAPPA", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Pending);
    assert!(last_ephemeral(&app, "UAPPA").contains("you already approved this run"));
    assert_eq!(app.store.run(1).await.unwrap().unwrap().approvers.len(), 1);
    app.press("UAPPB", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Succeeded);
    assert_eq!(exec.count(), 1);
}

async fn a_click_from_another_channel_or_message_is_refused(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    app.press("UALICE", "COTHER0001", APPROVE_ACTION, "1").await;
    let ts = app
        .store
        .run(1)
        .await
        .unwrap()
        .unwrap()
        .approval_message
        .unwrap()
        .1;
    app.press_with("UALICE", &ch, APPROVE_ACTION, "1", |p| {
        p["container"]["message_ts"] = json!("1.000001");
    })
    .await;
    app.deliver().await;
    assert_ne!(ts, "1.000001");
    assert_eq!(state(&app, 1).await, RunState::Pending);
    assert_eq!(exec.count(), 0);
    let told = app.ephemerals_for("UALICE");
    assert!(
        told[0].contains("only be approved from its approval message"),
        "{told:?}"
    );
    assert!(
        told[1].contains("not on run #1's approval message"),
        "{told:?}"
    );
    assert_eq!(refused_clicks(&app).await.len(), 2);
}

async fn a_foreign_team_or_app_is_refused(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    let ts = app
        .store
        .run(1)
        .await
        .unwrap()
        .unwrap()
        .approval_message
        .unwrap()
        .1;
    let on_message = |p: &mut Value| p["container"]["message_ts"] = json!(ts.clone());
    app.press_with("UALICE", &ch, APPROVE_ACTION, "1", |p| {
        on_message(p);
        p["team"]["id"] = json!("TOTHER");
    })
    .await;
    app.press_with("UALICE", &ch, APPROVE_ACTION, "1", |p| {
        on_message(p);
        p["api_app_id"] = json!("AOTHER");
    })
    .await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Pending);
    let told = app.ephemerals_for("UALICE");
    assert!(told[0].contains("workspace TOTHER"), "{told:?}");
    assert!(told[1].contains("app AOTHER"), "{told:?}");
    assert_eq!(refused_clicks(&app).await.len(), 2);
    // The same click from the right team and app goes through.
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(exec.count(), 1);
}

async fn guests_and_external_users_cannot_approve(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    // All four are in the approver group when the run is requested.
    let people = ["UGUEST1", "UGUEST2", "USTRANGER", "UOTHERTEAM"];
    app.slack.set_usergroup("S0PLACEHOLDER", &people);
    app.slack
        .set_user("UGUEST1", json!({"is_restricted": true}));
    app.slack.set_user(
        "UGUEST2",
        json!({"is_restricted": true, "is_ultra_restricted": true}),
    );
    app.slack
        .set_user("USTRANGER", json!({"is_stranger": true}));
    app.slack
        .set_user("UOTHERTEAM", json!({"team_id": "TPARTNER"}));
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    for user in people {
        app.press(user, &ch, APPROVE_ACTION, "1").await;
        app.press(user, &ch, DENY_ACTION, "1").await;
    }
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Pending);
    assert_eq!(exec.count(), 0);
    assert!(last_ephemeral(&app, "UGUEST1").contains("a guest (multi-channel) account cannot"));
    assert!(last_ephemeral(&app, "UGUEST2").contains("single-channel"));
    assert!(last_ephemeral(&app, "USTRANGER").contains("another workspace"));
    assert!(last_ephemeral(&app, "UOTHERTEAM").contains("another workspace"));
    assert_eq!(refused_clicks(&app).await.len(), 8);
    // Nor request one.
    app.command("UALICE", &ch, "role ops <@UGUEST1>").await;
    let reply = app.command("UGUEST1", &ch, SCALE).await;
    assert!(reply.starts_with("You may not request"), "{reply}");
}

async fn a_crafted_or_modified_run_id_is_refused(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    app.command("UBOB", &ch, SCALE).await;
    app.deliver().await;
    let ts1 = app
        .store
        .run(1)
        .await
        .unwrap()
        .unwrap()
        .approval_message
        .unwrap()
        .1;
    // Run #1's button, its value changed to run #2.
    app.press_with("UALICE", &ch, APPROVE_ACTION, "2", |p| {
        p["container"]["message_ts"] = json!(ts1);
    })
    .await;
    app.press("UALICE", &ch, APPROVE_ACTION, "999").await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1 or 1=1").await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Pending);
    assert_eq!(state(&app, 2).await, RunState::Pending);
    let told = app.ephemerals_for("UALICE");
    assert!(
        told[0].contains("not on run #2's approval message"),
        "{told:?}"
    );
    assert_eq!(told[1], "Run #999 does not exist.");
    assert_eq!(told[2], "That button does not name a run.");
    assert_eq!(exec.count(), 0);
}

async fn resolving_the_incident_cancels_its_pending_runs(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    let reply = app
        .command("UALICE", &ch, "resolve Failed over by hand")
        .await;
    assert!(reply.contains("resolved"), "{reply}");
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Cancelled);
    assert!(
        app.messages_in(&ch)
            .iter()
            .any(|m| m.contains("Recovery run #1 cancelled: the incident was resolved"))
    );
    let update = app
        .slack
        .calls_to("chat.update")
        .pop()
        .expect("message updated");
    let blocks = update["blocks"].to_string();
    assert!(
        !blocks.contains(APPROVE_ACTION),
        "buttons removed: {blocks}"
    );
    assert!(
        blocks.contains("cancelled") && blocks.contains("the incident was resolved"),
        "{blocks}"
    );
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(exec.count(), 0);
    assert!(last_ephemeral(&app, "UALICE").contains("already cancelled"));
}

async fn the_store_refuses_writes_around_the_code(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    app.slack.set_usergroup("S0PLACEHOLDER", &["UDAVE"]);
    let ch = incident(&app).await;
    // ALICE commands: she may request, and is an eligible approver (role:commander).
    app.command("UALICE", &ch, SCALE).await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Pending);
    let refused = |r: Result<u64, klaxon::store::StoreError>, rule: &str| match r {
        Err(klaxon::store::StoreError::Database(e)) => {
            let why = klaxon::store::trigger_refusal(&e).unwrap_or_else(|| e.to_string());
            assert!(why.contains(rule), "{why}");
        }
        other => panic!("expected a refusal containing {rule:?}, got {other:?}"),
    };
    let s = &app.store;
    let approve = |who: &str| {
        format!(
            "insert into run_approvals (run_id, approver, approved_at_ms) values (1, '{who}', 0)"
        )
    };
    refused(
        s.execute_raw(&approve("UALICE")).await,
        "requester cannot approve",
    );
    refused(
        s.execute_raw(&approve("UMALLORY")).await,
        "not an eligible approver",
    );
    refused(
        s.execute_raw("insert into run_eligible_approvers (run_id, approver, source) values (1, 'UMALLORY', 'role:commander')").await,
        "frozen",
    );
    refused(
        s.execute_raw("delete from run_eligible_approvers where run_id = 1")
            .await,
        "frozen",
    );
    refused(
        s.execute_raw("update command_runs set state = 'approved' where id = 1")
            .await,
        "not enough approvals",
    );
    refused(
        s.execute_raw("update command_runs set required_approvals = 0 where id = 1")
            .await,
        "never change",
    );
    assert_eq!(state(&app, 1).await, RunState::Pending);
    // A legitimate approval through Slack; nobody can take it back or add one later.
    app.press("UDAVE", &ch, APPROVE_ACTION, "1").await;
    refused(s.execute_raw("delete from run_approvals").await, "never");
    refused(s.execute_raw(&approve("UDAVE")).await, "");
    app.deliver().await;
    assert_eq!(exec.count(), 1);
    assert_eq!(state(&app, 1).await, RunState::Succeeded);
}
