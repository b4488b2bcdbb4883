//! Shared by the approval test binaries (tests/approvals.rs, tests/run_lifecycle.rs): a
//! counting stand-in executor, catalogs, and the request/inspect helpers.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use klaxon::commands::catalog::{self, Catalog};
use klaxon::commands::{Action, ExecError, ExecOutput, Executor, Params, Preview};
use klaxon::domain::approval::RunState;
use klaxon::domain::incident::EventKind;
use klaxon::outbox::Recovery;
use tokio::sync::Notify;

use super::support::{Db, TestApp};

pub struct Exec {
    pub name: &'static str,
    executions: AtomicUsize,
    gate: Option<Arc<Notify>>,
}

impl Exec {
    pub fn new(name: &'static str) -> Arc<Exec> {
        Arc::new(Exec {
            name,
            executions: AtomicUsize::new(0),
            gate: None,
        })
    }
    pub fn gated(name: &'static str, gate: Arc<Notify>) -> Arc<Exec> {
        Arc::new(Exec {
            name,
            executions: AtomicUsize::new(0),
            gate: Some(gate),
        })
    }
    pub fn count(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Executor for Exec {
    fn handles(&self, _: Action) -> bool {
        true
    }
    async fn preview(&self, action: Action, _: &Params) -> Result<Preview, ExecError> {
        Ok(Preview {
            call: format!("{}.{action}()", self.name),
            changes: vec!["replicas 3 -> 0".into()],
            warnings: vec![],
        })
    }
    async fn execute(&self, action: Action, _: &Params) -> Result<ExecOutput, ExecError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        Ok(ExecOutput {
            summary: format!("{action} done by {}", self.name),
            details: vec![],
            request_id: Some(format!("req-{}", self.name)),
        })
    }
}

pub fn shipped() -> Arc<Catalog> {
    Arc::new(
        catalog::load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/commands")))
            .expect("shipped catalog"),
    )
}

/// `k8s-rollout-restart` needing two approvals from UA, UB, UC (no environment).
pub fn two_approvals() -> Arc<Catalog> {
    let dir = tempfile::tempdir().unwrap();
    let toml = "name = \"k8s-rollout-restart\"\nsummary = \"Restart\"\naction = \"k8s-rollout-restart\"\n\
        risk = \"medium\"\napprovals = 2\n[approvers]\nusers = [\"UAPPA\", \"UAPPB\", \"UAPPC\"]\n\
        [params.namespace]\ntype = \"string\"\npattern = \"[a-z]+\"\n\
        [params.deployment]\ntype = \"string\"\npattern = \"[a-z]+\"\n";
    std::fs::write(dir.path().join("k8s-rollout-restart.toml"), toml).unwrap();
    Arc::new(catalog::load_dir(dir.path()).expect("catalog"))
}

pub fn recovery(
    catalog: Arc<Catalog>,
    prod: Arc<dyn Executor>,
    staging: Arc<dyn Executor>,
) -> Recovery {
    Recovery {
        catalog,
        executors: vec![prod.clone()],
        environments: [
            ("prod".to_string(), vec![prod]),
            ("staging".to_string(), vec![staging]),
        ]
        .into_iter()
        .collect(),
        ..Recovery::default()
    }
}

pub async fn app(db: Db, exec: Arc<Exec>) -> TestApp {
    TestApp::start_with_recovery(db, recovery(shipped(), exec.clone(), exec)).await
}

/// ALICE declares (commander), BOB is ops; returns the channel.
pub async fn incident(app: &TestApp) -> String {
    let ch = app.declare("UALICE", "sev1 Payments down").await;
    app.command("UALICE", &ch, "role ops <@UBOB>").await;
    app.deliver().await;
    ch
}

pub const SCALE: &str =
    "run k8s-scale environment=prod namespace=payments deployment=api replicas=0";

pub async fn requested(app: &TestApp, ch: &str) {
    let reply = app.command("UBOB", ch, SCALE).await;
    assert!(reply.starts_with("Run #"), "{reply}");
    app.deliver().await;
    assert_eq!(state(app, 1).await, RunState::Pending);
}

pub async fn state(app: &TestApp, id: i64) -> RunState {
    app.store.run(id).await.unwrap().unwrap().state
}

pub async fn timeline(app: &TestApp) -> Vec<EventKind> {
    let id = app.store.open_incidents().await.unwrap()[0].id;
    app.store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

pub async fn refused_clicks(app: &TestApp) -> Vec<String> {
    timeline(app)
        .await
        .into_iter()
        .filter_map(|k| match k {
            EventKind::RunClicked { outcome, .. } if outcome.starts_with("refused") => {
                Some(outcome)
            }
            _ => None,
        })
        .collect()
}

pub fn last_ephemeral(app: &TestApp, user: &str) -> String {
    app.ephemerals_for(user).pop().unwrap_or_default()
}

pub async fn app_with_catalog(db: Db, catalog: Arc<Catalog>, exec: Arc<Exec>) -> TestApp {
    TestApp::start_with_recovery(db, recovery(catalog, exec.clone(), exec)).await
}
