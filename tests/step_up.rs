//! Issue 8, optional step-up: a command with `step_up = "totp"` is approved only with the
//! approver's current TOTP code, entered in a modal; a wrong or reused code is refused
//! and recorded, on SQLite and PostgreSQL.

#[path = "support/approvals.rs"]
mod helpers;
mod support;

use std::sync::Arc;

use helpers::*;
use klaxon::clock::Clock;
use klaxon::commands::catalog::{self, Catalog};
use klaxon::commands::render::APPROVE_ACTION;
use klaxon::domain::approval::RunState;
use klaxon::totp::{self, TotpKey};
use serde_json::{Value, json};
use support::{Db, TestApp};

both_backends!(
    a_wrong_totp_code_is_refused_and_the_right_one_approves_once,
    an_unenrolled_approver_is_told_how_to_enrol,
);

fn key() -> TotpKey {
    TotpKey::from_hex(&"ab".repeat(32)).unwrap()
}

/// The shipped k8s-scale, with TOTP step-up.
fn step_up_catalog() -> Arc<Catalog> {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/commands/k8s-scale.toml"
    ))
    .unwrap();
    std::fs::write(
        dir.path().join("k8s-scale.toml"),
        format!("step_up = \"totp\"\n{shipped}"),
    )
    .unwrap();
    Arc::new(catalog::load_dir(dir.path()).expect("catalog"))
}

async fn start(db: Db, exec: Arc<Exec>) -> TestApp {
    TestApp::start_with_recovery_configured(
        db,
        recovery(step_up_catalog(), exec.clone(), exec),
        |c| c.recovery.totp_key = Some(key()),
    )
    .await
}

/// Submits the code modal Klaxon opened last, with `code`; returns the response body.
async fn submit_code(app: &TestApp, user: &str, code: &str) -> String {
    let view = app.slack.calls_to("views.open").pop().expect("a modal")["view"].clone();
    let payload = json!({
        "type": "view_submission",
        "team": { "id": support::slack_emulator::TEAM_ID },
        "api_app_id": support::APP_ID,
        "user": { "id": user },
        "view": {
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": { "values": { "code": { "value": { "value": code } } } }
        }
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let (status, body) = app
        .post_signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            &body,
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    body
}

fn code_error(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    v["errors"]["code"].as_str().unwrap_or_default().to_string()
}

async fn a_wrong_totp_code_is_refused_and_the_right_one_approves_once(db: Db) {
    let exec = Exec::new("prod");
    let app = start(db, exec.clone()).await;
    let uri = totp::enrol(&app.store, &key(), "UALICE", app.clock.now())
        .await
        .unwrap();
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let secret = totp_rs::Secret::try_from_base32(secret).unwrap();
    let secret = secret.as_bytes().to_vec();
    let ch = incident(&app).await;
    requested(&app, &ch).await;

    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    let view = &app.slack.calls_to("views.open")[0];
    assert_eq!(view["trigger_id"], "1337.43.efgh");
    assert_eq!(view["view"]["callback_id"], "klaxon_run_totp");
    assert_eq!(
        state(&app, 1).await,
        RunState::Pending,
        "the click alone approves nothing"
    );

    let refused = code_error(&submit_code(&app, "UALICE", "000000").await);
    assert!(refused.contains("TOTP code is wrong"), "{refused}");
    assert_eq!(state(&app, 1).await, RunState::Pending);
    assert!(refused_clicks(&app).await[0].contains("TOTP code is wrong"));

    // Someone else submitting ALICE's form with her code gets nothing either.
    let now = u64::try_from(app.clock.now().timestamp()).unwrap();
    let code = totp::code_at(&secret, "UALICE", now).unwrap();
    let body = submit_code(&app, "UMALLORY", &code).await;
    assert!(!code_error(&body).is_empty(), "{body}");
    assert_eq!(state(&app, 1).await, RunState::Pending);

    assert_eq!(submit_code(&app, "UALICE", &code).await, "");
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Succeeded);
    assert_eq!(exec.count(), 1);
    // The same code again is refused (and the run is done anyway).
    assert!(!code_error(&submit_code(&app, "UALICE", &code).await).is_empty());
    assert_eq!(exec.count(), 1);
    // The secret is stored sealed, never in clear.
    let sealed = app.store.totp_of("UALICE").await.unwrap().unwrap();
    assert!(!sealed.ciphertext.contains(&hex::encode(&secret)));
}

async fn an_unenrolled_approver_is_told_how_to_enrol(db: Db) {
    let exec = Exec::new("prod");
    let app = start(db, exec.clone()).await;
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert!(app.slack.calls_to("views.open").is_empty());
    let told = app.ephemerals_for("UALICE").pop().unwrap();
    assert!(told.contains("klaxon totp enrol UALICE"), "{told}");
    assert_eq!(state(&app, 1).await, RunState::Pending);
    assert_eq!(exec.count(), 0);
}
