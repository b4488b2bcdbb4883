//! Recovery commands with two-person confirmation, through Slack: request, preview,
//! approval rules, execution exactly once, dry-run, crash recovery, and the real RDS
//! (moto) and Kubernetes (kmock stand-in) executors end to end.

mod support;

#[path = "support/kube.rs"]
mod kube_support;
#[path = "support/moto.rs"]
mod moto;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::TimeDelta;
use klaxon::clock::Clock;
use klaxon::commands::catalog::{self, Catalog};
use klaxon::commands::kube_exec::KubeExecutor;
use klaxon::commands::rds::RdsExecutor;
use klaxon::commands::render::{APPROVE_ACTION, DENY_ACTION};
use klaxon::commands::{Action, ExecError, ExecOutput, Executor, Params, Preview};
use klaxon::domain::approval::RunState;
use klaxon::domain::incident::EventKind;
use klaxon::outbox::{EXECUTION_LEASE, Recovery};
use support::{Db, TestApp};

both_backends!(
    a_second_person_approves_and_it_runs_once,
    the_requester_cannot_approve_their_own_run,
    an_approver_outside_the_policy_is_refused,
    an_approver_in_a_named_user_group_is_allowed,
    many_racing_approvals_execute_once,
    an_expired_request_cannot_be_approved,
    a_denied_run_never_runs,
    dry_run_mode_stops_at_the_preview,
    a_crash_while_executing_becomes_outcome_unknown_and_is_not_rerun,
    parameters_outside_their_rules_are_refused_with_the_rule,
    read_only_commands_run_without_approval,
    rds_failover_end_to_end_against_moto,
    k8s_scale_to_zero_end_to_end_against_the_standin,
);

/// An executor that records executions and answers previews with a fixed plan.
#[derive(Default)]
struct CountingExecutor {
    executions: AtomicUsize,
}

#[async_trait]
impl Executor for CountingExecutor {
    fn handles(&self, _: Action) -> bool {
        true
    }
    async fn preview(&self, action: Action, params: &Params) -> Result<Preview, ExecError> {
        Ok(Preview {
            call: format!("fake.{action}({params:?})"),
            changes: vec!["replicas 3 -> 0".into()],
            warnings: vec![],
        })
    }
    async fn execute(&self, action: Action, _: &Params) -> Result<ExecOutput, ExecError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        Ok(ExecOutput {
            summary: format!("{action} done"),
            details: vec![],
            request_id: Some("req-1".into()),
        })
    }
}

fn shipped_catalog() -> Arc<Catalog> {
    Arc::new(
        catalog::load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/commands")))
            .expect("shipped catalog"),
    )
}

/// A catalog with one command approvable by twenty named users (for the race).
fn race_catalog() -> Arc<Catalog> {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..20).map(|i| format!("\"UAPP{i:02}\"")).collect();
    let toml = format!(
        "name = \"k8s-rollout-restart\"\nsummary = \"Restart\"\naction = \"k8s-rollout-restart\"\nrisk = \"medium\"\n\
         [approvers]\nusers = [{}]\n[params.namespace]\ntype = \"string\"\npattern = \"[a-z]+\"\n\
         [params.deployment]\ntype = \"string\"\npattern = \"[a-z]+\"\n",
        users.join(", ")
    );
    std::fs::write(dir.path().join("k8s-rollout-restart.toml"), toml).unwrap();
    Arc::new(catalog::load_dir(dir.path()).expect("race catalog"))
}

async fn app_with(
    db: Db,
    catalog: Arc<Catalog>,
    executor: Arc<dyn Executor>,
    dry_run: bool,
) -> TestApp {
    TestApp::start_with_recovery(
        db,
        Recovery {
            catalog,
            executors: vec![executor.clone()],
            // The shipped catalog's commands name prod or staging: both act through the
            // executor under test here (tests/approvals.rs keeps them apart).
            environments: [("prod", &executor), ("staging", &executor)]
                .into_iter()
                .map(|(name, e)| (name.to_string(), vec![e.clone()]))
                .collect(),
            dry_run,
            ..Recovery::default()
        },
    )
    .await
}

/// Declares an incident (ALICE commands, BOB is ops) and returns its channel.
async fn incident(app: &TestApp) -> String {
    let ch = app.declare("UALICE", "sev1 Payments down").await;
    app.command("UALICE", &ch, "role ops <@UBOB>").await;
    app.deliver().await;
    ch
}

const SCALE: &str = "run k8s-scale environment=prod namespace=payments deployment=api replicas=0";

async fn run_state(app: &TestApp, id: i64) -> RunState {
    app.store.run(id).await.unwrap().unwrap().state
}

async fn a_second_person_approves_and_it_runs_once(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    let reply = app.command("UBOB", &ch, SCALE).await;
    assert_eq!(
        reply,
        "Run #1 `k8s-scale` requested: the preview and approval request follows in this channel."
    );
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::Pending);
    let request = app
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .last()
        .unwrap();
    let text = request.to_string();
    assert!(
        text.contains("Run #1: k8s-scale (high risk)") && text.contains("replicas 3 -&gt; 0"),
        "{text}"
    );
    assert!(
        text.contains(APPROVE_ACTION) && text.contains(DENY_ACTION),
        "{text}"
    );
    assert_eq!(
        exec.executions.load(Ordering::SeqCst),
        0,
        "nothing runs before approval"
    );

    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(exec.executions.load(Ordering::SeqCst), 1);
    assert_eq!(run_state(&app, 1).await, RunState::Succeeded);
    let msgs = app.messages_in(&ch);
    assert!(
        msgs.iter().any(|m| m.contains("<@UALICE> approved run #1")),
        "{msgs:#?}"
    );
    assert!(
        msgs.last()
            .unwrap()
            .contains("Run #1 succeeded: k8s-scale done"),
        "{msgs:#?}"
    );
    // A second press after execution changes nothing.
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(exec.executions.load(Ordering::SeqCst), 1);
    assert!(
        app.ephemerals_for("UALICE")
            .last()
            .unwrap()
            .contains("already succeeded")
    );
    // The exact approved parameters were stored and the whole story is on the timeline.
    let run = app.store.run(1).await.unwrap().unwrap();
    assert!(
        run.params.contains("\"replicas\"")
            && run.params.contains("{\"type\":\"integer\",\"value\":0}"),
        "{}",
        run.params
    );
    let kinds: Vec<String> = app
        .store
        .timeline(run.incident_id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::RunRequested { .. } => Some("requested".to_string()),
            EventKind::RunPrepared { state, .. } => Some(format!("prepared:{state}")),
            EventKind::RunClicked { outcome, .. } => Some(format!("click:{outcome}")),
            EventKind::RunStarted { .. } => Some("started".into()),
            EventKind::RunFinished {
                state, request_id, ..
            } => Some(format!(
                "finished:{state}:{}",
                request_id.unwrap_or_default()
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "requested",
            "prepared:pending",
            "click:approved",
            "started",
            "finished:succeeded:req-1",
            "click:refused: this run is already succeeded"
        ]
    );
    assert!(klaxon::app::audit_store(&app.store).await.unwrap() > 0);
}

async fn the_requester_cannot_approve_their_own_run(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    // ALICE is commander: allowed to request AND to approve, but not both for one run.
    app.command("UALICE", &ch, SCALE).await;
    app.deliver().await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(exec.executions.load(Ordering::SeqCst), 0);
    assert_eq!(run_state(&app, 1).await, RunState::Pending);
    assert_eq!(
        app.ephemerals_for("UALICE"),
        ["Run #1: you asked for this run; a different person must approve it."]
    );
}

async fn an_approver_outside_the_policy_is_refused(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    app.command("UBOB", &ch, SCALE).await;
    app.deliver().await;
    app.press("UCAROL", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::Pending);
    let refusal = app.ephemerals_for("UCAROL").pop().unwrap();
    assert!(
        refusal.contains("you are not allowed to approve this command: its approvers were fixed when the run was requested (roles commander"),
        "{refusal}"
    );
    // CAROL, who has no role, may not request a command restricted to commander/ops either.
    let reply = app.command("UCAROL", &ch, SCALE).await;
    assert!(
        reply.starts_with("You may not request `k8s-scale`"),
        "{reply}"
    );
}

async fn an_approver_in_a_named_user_group_is_allowed(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    // The shipped k8s-scale approvers: role commander or group S0PLACEHOLDER.
    app.slack.set_usergroup("S0PLACEHOLDER", &["UDAVE"]);
    let ch = incident(&app).await;
    app.command("UBOB", &ch, SCALE).await;
    app.deliver().await;
    app.press("UERIN", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(
        run_state(&app, 1).await,
        RunState::Pending,
        "not in the group, no role"
    );
    app.press("UDAVE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(
        run_state(&app, 1).await,
        RunState::Succeeded,
        "a group member without a role may approve"
    );
    assert_eq!(exec.executions.load(Ordering::SeqCst), 1);
}

async fn many_racing_approvals_execute_once(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, race_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    app.command(
        "UBOB",
        &ch,
        "run k8s-rollout-restart namespace=payments deployment=api",
    )
    .await;
    app.deliver().await;
    let presses = (0..20).map(|i| {
        let user = format!("UAPP{i:02}");
        let app = &app;
        let ch = ch.clone();
        async move { app.press(&user, &ch, APPROVE_ACTION, "1").await }
    });
    futures_util::future::join_all(presses).await;
    // Two workers deliver at once.
    let (a, b) = tokio::join!(app.worker.deliver_due(), app.worker.deliver_due());
    a.unwrap();
    b.unwrap();
    app.deliver().await;
    assert_eq!(
        exec.executions.load(Ordering::SeqCst),
        1,
        "exactly one execution"
    );
    assert_eq!(run_state(&app, 1).await, RunState::Succeeded);
    let approvals = app
        .messages_in(&ch)
        .iter()
        .filter(|m| m.contains("approved run #1"))
        .count();
    assert_eq!(approvals, 1);
    assert_eq!(
        app.slack.calls_to("chat.postEphemeral").len(),
        19,
        "every other click was told why"
    );
}

async fn an_expired_request_cannot_be_approved(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    app.command("UBOB", &ch, SCALE).await;
    app.deliver().await;
    app.clock.advance(TimeDelta::minutes(15));
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::Expired);
    assert_eq!(exec.executions.load(Ordering::SeqCst), 0);
    assert!(app.ephemerals_for("UALICE")[0].contains("expired"));
}

async fn a_denied_run_never_runs(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    app.command("UBOB", &ch, SCALE).await;
    app.deliver().await;
    app.press("UALICE", &ch, DENY_ACTION, "1").await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::Denied);
    assert_eq!(exec.executions.load(Ordering::SeqCst), 0);
    assert!(
        app.messages_in(&ch)
            .iter()
            .any(|m| m.contains("<@UALICE> denied run #1"))
    );
}

async fn dry_run_mode_stops_at_the_preview(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), true).await;
    let ch = incident(&app).await;
    app.command("UBOB", &ch, SCALE).await;
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::DryRun);
    let last = app.messages_in(&ch).pop().unwrap();
    assert!(
        last.contains("Dry-run mode")
            && last.contains("replicas 3 -&gt; 0")
            && !last.contains(APPROVE_ACTION),
        "{last}"
    );
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(exec.executions.load(Ordering::SeqCst), 0);
}

async fn a_crash_while_executing_becomes_outcome_unknown_and_is_not_rerun(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    app.command("UBOB", &ch, SCALE).await;
    app.deliver().await;
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    // The worker takes the run to `executing` and dies before the SDK answers: do exactly
    // its first step, then throw the job away as a crash would (the outbox row is done).
    let started = app
        .scheduler
        .engine()
        .begin_execution(1, app.clock.now() + EXECUTION_LEASE)
        .await
        .unwrap();
    assert!(matches!(started, klaxon::engine::Begin::Run(_)));
    assert_eq!(run_state(&app, 1).await, RunState::Executing);
    // A restart before the lease runs out leaves it alone; after, it is outcome_unknown.
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::Executing);
    app.clock.advance(EXECUTION_LEASE);
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::OutcomeUnknown);
    assert_eq!(
        exec.executions.load(Ordering::SeqCst),
        0,
        "never re-run on its own"
    );
    assert!(
        app.messages_in(&ch)
            .last()
            .unwrap()
            .contains("outcome unknown")
    );
    app.clock.advance(TimeDelta::hours(1));
    app.deliver().await;
    assert_eq!(exec.executions.load(Ordering::SeqCst), 0);
}

async fn parameters_outside_their_rules_are_refused_with_the_rule(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    let reply = app
        .command(
            "UBOB",
            &ch,
            "run rds-failover-cluster environment=prod cluster=orders-db",
        )
        .await;
    assert!(
        reply.starts_with(
            "cluster: `orders-db` is not allowed in environment `prod` (allowed: payments-db)"
        ),
        "{reply}"
    );
    for attempt in [
        "run k8s-scale environment=prod namespace=payments;rm -rf / deployment=api replicas=0",
        "run k8s-scale environment=prod namespace=pаyments deployment=api replicas=0",
        "run k8s-scale environment=prod namespace=$(id) deployment=api replicas=0",
        "run k8s-scale environment=prod namespace=payments deployment=api replicas=0 extra=`id`",
    ] {
        let reply = app.command("UBOB", &ch, attempt).await;
        assert!(
            reply.contains("Usage: `/incident run"),
            "{attempt}: {reply}"
        );
        assert!(!reply.starts_with("Run #"), "{attempt} was accepted");
    }
    let reply = app
        .command(
            "UBOB",
            &ch,
            "run k8s-scale environment=prod namespace=payments deployment=api replicas=-1",
        )
        .await;
    assert!(reply.starts_with("replicas:"), "{reply}");
    let reply = app.command("UBOB", &ch, "run rm-rf environment=prod").await;
    assert!(
        reply.starts_with("`rm-rf` is not an approved command."),
        "{reply}"
    );
    assert!(
        app.store.run(1).await.unwrap().is_none(),
        "nothing was stored"
    );
    let list = app.command("UBOB", "CGENERAL01", "run").await;
    assert!(
        list.contains("rds-failover-cluster") && list.contains("k8s-drain"),
        "{list}"
    );
}

async fn read_only_commands_run_without_approval(db: Db) {
    let exec = Arc::new(CountingExecutor::default());
    let app = app_with(db, shipped_catalog(), exec.clone(), false).await;
    let ch = incident(&app).await;
    let reply = app
        .command(
            "UCAROL",
            &ch,
            "run k8s-pods environment=prod namespace=payments",
        )
        .await;
    assert_eq!(
        reply,
        "Run #1 `k8s-pods` requested: the preview follows in this channel."
    );
    app.deliver().await;
    assert_eq!(exec.executions.load(Ordering::SeqCst), 1);
    assert_eq!(run_state(&app, 1).await, RunState::Succeeded);
}

async fn rds_failover_end_to_end_against_moto(db: Db) {
    let moto = moto::moto().await;
    let admin = moto.rds_client();
    admin
        .create_db_cluster()
        .db_cluster_identifier("payments-db")
        .engine("aurora-postgresql")
        .master_username("klaxon")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .unwrap();
    for id in ["payments-db-1", "payments-db-2"] {
        admin
            .create_db_instance()
            .db_instance_identifier(id)
            .db_instance_class("db.r6g.large")
            .engine("aurora-postgresql")
            .db_cluster_identifier("payments-db")
            .send()
            .await
            .unwrap();
    }
    let writer = |admin: aws_sdk_rds::Client| async move {
        let clusters = admin
            .describe_db_clusters()
            .db_cluster_identifier("payments-db")
            .send()
            .await
            .unwrap();
        clusters.db_clusters()[0]
            .db_cluster_members()
            .iter()
            .find(|m| m.is_cluster_writer() == Some(true))
            .and_then(|m| m.db_instance_identifier().map(str::to_string))
            .unwrap()
    };
    assert_eq!(writer(admin.clone()).await, "payments-db-1");
    let rds: Arc<dyn Executor> = Arc::new(RdsExecutor::new(moto.rds_client()));
    let app = app_with(db, shipped_catalog(), rds, false).await;
    let ch = incident(&app).await;
    app.command("UBOB", &ch, "run rds-failover-cluster environment=prod cluster=payments-db target_instance=payments-db-2").await;
    app.deliver().await;
    let preview = app.messages_in(&ch).pop().unwrap();
    assert!(
        preview.contains("failover_db_cluster") && preview.contains("payments-db-2"),
        "{preview}"
    );
    assert_eq!(
        writer(admin.clone()).await,
        "payments-db-1",
        "the preview changed nothing"
    );
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::Succeeded);
    assert_eq!(
        writer(admin.clone()).await,
        "payments-db-2",
        "moto's writer moved"
    );
    let result = app.messages_in(&ch).pop().unwrap();
    assert!(
        result.contains("Run #1 succeeded") && result.contains("Request id"),
        "{result}"
    );
}

async fn k8s_scale_to_zero_end_to_end_against_the_standin(db: Db) {
    let standin = kube_support::KubeStandin::start();
    let client = standin.client();
    kube_support::create_deployment(
        &client,
        "payments",
        "api",
        3,
        &[("api", "registry.example.com/api:1.2.3")],
    )
    .await;
    let kube: Arc<dyn Executor> = Arc::new(KubeExecutor::new(client.clone()));
    let app = app_with(db, shipped_catalog(), kube, false).await;
    let ch = incident(&app).await;
    app.command("UBOB", &ch, SCALE).await;
    app.deliver().await;
    let preview = app.messages_in(&ch).pop().unwrap();
    assert!(preview.contains("3 -&gt; 0"), "{preview}");
    assert!(preview.contains("stops the service"), "{preview}");
    app.press("UALICE", &ch, APPROVE_ACTION, "1").await;
    app.deliver().await;
    assert_eq!(run_state(&app, 1).await, RunState::Succeeded);
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client, "payments");
    let scaled = deployments.get("api").await.unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(0));
}
