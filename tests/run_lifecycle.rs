//! Issue 8, a run's life after approval: the executor of its own environment, the checks
//! again at execution, the lease heartbeat and late results, the approval message kept
//! true, and clean input, on SQLite and PostgreSQL.

#[path = "support/approvals.rs"]
mod helpers;
#[path = "support/moto.rs"]
mod moto;
mod support;

use std::sync::Arc;

use chrono::TimeDelta;
use helpers::*;
use klaxon::commands::Executor;
use klaxon::commands::environments::Targeted;
use klaxon::commands::render::{APPROVE_ACTION, DENY_ACTION};
use klaxon::domain::approval::RunState;
use klaxon::domain::incident::EventKind;
use support::{Db, TestApp};
use tokio::sync::Notify;

both_backends!(
    a_staging_run_reaches_the_staging_executor_only,
    a_staging_failover_reaches_the_staging_moto_not_prods,
    a_late_execution_is_refused_and_told,
    a_late_result_after_outcome_unknown_is_still_recorded,
    the_heartbeat_keeps_a_long_call_leased,
    the_approval_message_tells_the_truth,
    invisible_and_bidi_text_is_refused_with_the_rule,
);

async fn a_staging_run_reaches_the_staging_executor_only(db: Db) {
    let prod = Exec::new("prod");
    let staging = Exec::new("staging");
    let prod_t: Arc<dyn Executor> = Arc::new(Targeted::new(
        prod.clone(),
        "prod: AWS account 111111111111, region us-east-1",
    ));
    let staging_t: Arc<dyn Executor> = Arc::new(Targeted::new(
        staging.clone(),
        "staging: AWS account 222222222222, region eu-west-1",
    ));
    let app = TestApp::start_with_recovery(db, recovery(shipped(), prod_t, staging_t)).await;
    let ch = incident(&app).await;
    app.command(
        "UBOB",
        &ch,
        "run k8s-scale environment=staging namespace=payments deployment=api replicas=0",
    )
    .await;
    app.deliver().await;
    let preview = app.messages_in(&ch).pop().unwrap();
    assert!(
        preview.contains("staging.k8s-scale()")
            && preview.contains("Acts on: staging: AWS account 222222222222, region eu-west-1"),
        "{preview}"
    );
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!((staging.count(), prod.count()), (1, 0));
    assert!(
        app.messages_in(&ch)
            .last()
            .unwrap()
            .contains("done by staging")
    );
    // A config without `staging` refuses the shipped catalog (klaxon check / serve).
    let mut config = app.config.clone();
    config.recovery.catalog_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/commands").into();
    config.recovery.environments.remove("staging");
    let err = klaxon::app::load_catalog(&config).unwrap_err().to_string();
    assert!(
        err.contains(
            "k8s-scale.toml: params.environment.values[1]: environment `staging` is not configured"
        ),
        "{err}"
    );
}

async fn a_late_execution_is_refused_and_told(db: Db) {
    let exec = Exec::new("prod");
    let app = app(db, exec.clone()).await;
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    assert_eq!(state(&app, 1).await, RunState::Approved);
    // The worker only gets to it after the request expired (Klaxon was down, say).
    app.clock.advance(TimeDelta::minutes(16));
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Expired);
    assert_eq!(exec.count(), 0);
    assert!(
        app.messages_in(&ch)
            .iter()
            .any(|m| m.contains("Run #1 k8s-scale expired"))
    );
    assert!(timeline(&app).await.iter().any(|k| matches!(
        k,
        EventKind::RunClosed {
            state: RunState::Expired,
            ..
        }
    )));
}

async fn a_late_result_after_outcome_unknown_is_still_recorded(db: Db) {
    let gate = Arc::new(Notify::new());
    let exec = Exec::gated("prod", gate.clone());
    let app = Arc::new(app(db, exec.clone()).await);
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    let worker = {
        let app = app.clone();
        tokio::spawn(async move { app.deliver().await })
    };
    while exec.count() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The call hangs past its lease (as if this worker were dead): another pass declares
    // the run outcome_unknown...
    app.clock.advance(TimeDelta::seconds(31));
    app.worker.recover_interrupted_runs().await.unwrap();
    assert_eq!(state(&app, 1).await, RunState::OutcomeUnknown);
    // ...then the API answers after all.
    gate.notify_one();
    worker.await.unwrap();
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::OutcomeUnknown);
    let late = timeline(&app).await.into_iter().find_map(|k| match k {
        EventKind::RunLateResult {
            state, request_id, ..
        } => Some((state, request_id)),
        _ => None,
    });
    assert_eq!(
        late,
        Some((RunState::Succeeded, Some("req-prod".to_string())))
    );
    assert!(
        app.messages_in(&ch)
            .iter()
            .any(|m| m.contains("Late result for run #1"))
    );
}

async fn the_heartbeat_keeps_a_long_call_leased(db: Db) {
    let gate = Arc::new(Notify::new());
    let exec = Exec::gated("prod", gate.clone());
    let mut rec = recovery(shipped(), exec.clone(), exec.clone());
    rec.heartbeat = std::time::Duration::from_millis(20);
    let app = Arc::new(TestApp::start_with_recovery(db, rec).await);
    let ch = incident(&app).await;
    requested(&app, &ch).await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    let worker = {
        let app = app.clone();
        tokio::spawn(async move { app.deliver().await })
    };
    while exec.count() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        // 25 s of simulated time, then let the heartbeat renew the lease.
        app.clock.advance(TimeDelta::seconds(25));
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        app.worker.recover_interrupted_runs().await.unwrap();
        assert_eq!(state(&app, 1).await, RunState::Executing, "lease renewed");
    }
    gate.notify_one();
    worker.await.unwrap();
    assert_eq!(state(&app, 1).await, RunState::Succeeded);
}

async fn the_approval_message_tells_the_truth(db: Db) {
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
    let (channel, ts) = app
        .store
        .run(1)
        .await
        .unwrap()
        .unwrap()
        .approval_message
        .unwrap();
    assert_eq!(channel, ch);
    let message = |app: &TestApp| {
        app.slack
            .channel(&ch)
            .unwrap()
            .messages
            .into_iter()
            .find(|m| m["ts"] == ts.as_str())
            .unwrap()["blocks"]
            .to_string()
    };
    assert!(message(&app).contains(APPROVE_ACTION));
    app.press("UAPPA", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    let one = message(&app);
    assert!(
        one.contains("Approved by") && one.contains("UAPPA") && one.contains(APPROVE_ACTION),
        "{one}"
    );
    app.press("UAPPC", &ch, DENY_ACTION, "1").await;
    app.deliver().await;
    let denied = message(&app);
    assert!(
        !denied.contains(APPROVE_ACTION),
        "no buttons once decided: {denied}"
    );
    assert!(
        denied.contains("denied by")
            && denied.contains("UAPPC")
            && denied.contains("Outcome: denied"),
        "{denied}"
    );
    assert_eq!(exec.count(), 0);
}

async fn invisible_and_bidi_text_is_refused_with_the_rule(db: Db) {
    let app = TestApp::start(db).await;
    let reply = app
        .command("UALICE", "CGENERAL01", "declare sev2 \u{200B}\u{200B}")
        .await;
    assert!(
        reply.contains("title: must not contain invisible characters (U+200B at position 1)"),
        "{reply}"
    );
    let reply = app
        .command("UALICE", "CGENERAL01", "declare sev2 Payments \u{202E}nwod")
        .await;
    assert!(
        reply.contains("title: must not contain bidirectional text controls (U+202E"),
        "{reply}"
    );
    assert!(app.store.open_incidents().await.unwrap().is_empty());
    let ch = app.declare("UALICE", "sev2 Payments slow").await;
    let reply = app.command("UALICE", &ch, "update all \u{7} good").await;
    assert!(
        reply.contains("update: must not contain control characters (U+0007"),
        "{reply}"
    );
}

/// An Aurora cluster with two instances on `moto`; returns its current writer.
async fn cluster(moto: &moto::MotoServer, id: &str) {
    let admin = moto.rds_client();
    admin
        .create_db_cluster()
        .db_cluster_identifier(id)
        .engine("aurora-postgresql")
        .master_username("klaxon")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .unwrap();
    for n in 1..=2 {
        admin
            .create_db_instance()
            .db_instance_identifier(format!("{id}-{n}"))
            .db_instance_class("db.r6g.large")
            .engine("aurora-postgresql")
            .db_cluster_identifier(id)
            .send()
            .await
            .unwrap();
    }
}

async fn writer(moto: &moto::MotoServer, id: &str) -> String {
    let clusters = moto
        .rds_client()
        .describe_db_clusters()
        .db_cluster_identifier(id)
        .send()
        .await
        .unwrap();
    clusters.db_clusters()[0]
        .db_cluster_members()
        .iter()
        .find(|m| m.is_cluster_writer() == Some(true))
        .and_then(|m| m.db_instance_identifier().map(str::to_string))
        .unwrap()
}

/// The real RDS executor, once per environment, each on its own endpoint (two moto
/// servers standing in for two AWS accounts). Prod's server holds a decoy cluster with
/// the staging name: a run that leaked to prod's executor would move its writer.
async fn a_staging_failover_reaches_the_staging_moto_not_prods(db: Db) {
    let (prod_moto, staging_moto) = (moto::moto().await, moto::moto().await);
    for m in [&prod_moto, &staging_moto] {
        cluster(m, "payments-db-staging").await;
    }
    let executor = |m: &moto::MotoServer, label: String| -> Arc<dyn Executor> {
        let rds = klaxon::commands::rds::RdsExecutor::new(m.rds_client());
        Arc::new(Targeted::new(Arc::new(rds), label))
    };
    let prod = executor(
        &prod_moto,
        format!("prod: region us-east-1 via {}", prod_moto.url()),
    );
    let staging = executor(
        &staging_moto,
        format!("staging: region us-east-1 via {}", staging_moto.url()),
    );
    let app = TestApp::start_with_recovery(db, recovery(shipped(), prod, staging)).await;
    let ch = incident(&app).await;
    app.command(
        "UBOB",
        &ch,
        "run rds-failover-cluster environment=staging cluster=payments-db-staging target_instance=payments-db-staging-2",
    )
    .await;
    app.deliver().await;
    let preview = app.messages_in(&ch).pop().unwrap();
    assert!(
        preview.contains(&format!(
            "Acts on: staging: region us-east-1 via {}",
            staging_moto.url()
        )),
        "{preview}"
    );
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(state(&app, 1).await, RunState::Succeeded);
    assert_eq!(
        writer(&staging_moto, "payments-db-staging").await,
        "payments-db-staging-2"
    );
    assert_eq!(
        writer(&prod_moto, "payments-db-staging").await,
        "payments-db-staging-1",
        "prod's account was not touched"
    );
}
