//! The Kubernetes API stand-in for tests: starts `tests/standins/kmock_server.py` (kmock's
//! in-memory Kubernetes emulator, extended with the scale and eviction subresources,
//! strategic-merge patches, resourceVersion conflicts and selectors; see the script's
//! docstring) on a free loopback port, and builds real kube-rs clients that talk to it over
//! HTTP. Also: fixture builders, and the stand-in's test controls (request log, conflicts).
//!
//! Python: `$KLAXON_STANDIN_VENV/bin/python`, else `<repo>/.venv/bin/python`, else `python3`.
//! If the stand-in cannot start, the test PANICS with install instructions (never skips).
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use axum::http::Request;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::client::ConfigExt;
use serde_json::{Value, json};

/// How long the stand-in may take to print `READY <port>`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL: &str = "install the Python stand-ins: \
    `cd <repo> && python3 -m venv .venv && .venv/bin/pip install -r tests/standins/requirements.txt` \
    (or point KLAXON_STANDIN_VENV at a venv that has them)";

/// A running stand-in; killed on drop.
pub struct KubeStandin {
    child: Child,
    /// Held open: the stand-in exits when it closes (also if this process dies).
    _stdin: ChildStdin,
    _stderr: tempfile::NamedTempFile,
    port: u16,
}

/// One request the stand-in served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// e.g. `/apis/apps/v1/namespaces/shop/deployments/web/scale`.
    pub path: String,
    /// The raw query string.
    pub query: String,
}

impl KubeStandin {
    /// Starts the stand-in and waits (bounded) until it listens. Panics if it cannot.
    pub fn start() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = python(repo);
        let stderr =
            tempfile::NamedTempFile::new().expect("temporary file for the stand-in's stderr");
        let mut child = Command::new(&python)
            .arg(repo.join("tests/standins/kmock_server.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen the stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL}", python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let port = wait_ready(&mut child).unwrap_or_else(|why| {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(stderr.path()).unwrap_or_default();
            panic!(
                "the Kubernetes stand-in ({}) did not start: {why}\n{log}\n{INSTALL}",
                python.display()
            )
        });
        Self {
            child,
            _stdin: stdin,
            _stderr: stderr,
            port,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kube-rs config for the stand-in (no auth, namespace `default`).
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("stand-in URL"))
    }

    /// A real kube-rs client for the stand-in, over plain HTTP and without kube's retry
    /// layer (as `KubeExecutor::from_config` builds it): for seeding fixtures, reading state
    /// back, and `KubeExecutor::new`.
    ///
    /// Built by hand rather than with `kube::Client::try_from(config)` because that always
    /// builds kube's rustls connector, which panics while this crate enables both rustls
    /// providers (ring and aws-lc-rs) and installs neither as the process default.
    pub fn client(&self) -> kube::Client {
        let config = self.config();
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .map_err(tower::BoxError::from)
            .service(http);
        kube::Client::new(service, config.default_namespace)
    }

    /// A kubeconfig (YAML) whose current context points at the stand-in.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: standin\n\
             clusters:\n- name: standin\n  cluster:\n    server: {}\n\
             contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: tester\n\
             users:\n- name: tester\n  user: {{}}\n",
            self.url()
        )
    }

    /// Every Kubernetes request served so far, in order (test controls excluded).
    pub async fn served(&self) -> Vec<Served> {
        let request = Request::get("/_standin/requests")
            .body(Vec::new())
            .expect("request");
        let text = self
            .client()
            .request_text(request)
            .await
            .expect("stand-in request log");
        let entries: Vec<Value> = serde_json::from_str(&text).expect("request log JSON");
        entries
            .iter()
            .map(|e| Served {
                method: e["method"].as_str().unwrap_or_default().to_owned(),
                path: e["path"].as_str().unwrap_or_default().to_owned(),
                query: e["query"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// The served requests that were not reads (`GET`).
    pub async fn writes(&self) -> Vec<Served> {
        self.served()
            .await
            .into_iter()
            .filter(|s| s.method != "GET")
            .collect()
    }

    /// Arms a concurrent writer: just before the next write to the object at `path` (e.g.
    /// `/apis/apps/v1/namespaces/shop/deployments/web`), `patch` is merged into it, bumping its
    /// resourceVersion, so a write conditional on the version read before gets 409 Conflict.
    pub async fn concurrent_write(&self, path: &str, patch: Value) {
        let body = serde_json::to_vec(&json!({ "path": path, "patch": patch })).expect("JSON");
        let request = Request::post("/_standin/concurrent-write")
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        self.client()
            .request_text(request)
            .await
            .expect("arm the concurrent write");
    }
}

impl Drop for KubeStandin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python(repo: &Path) -> PathBuf {
    if let Some(venv) = std::env::var_os("KLAXON_STANDIN_VENV") {
        return PathBuf::from(venv).join("bin/python");
    }
    let local = repo.join(".venv/bin/python");
    if local.exists() {
        local
    } else {
        PathBuf::from("python3")
    }
}

/// Reads `READY <port>` from the child's stdout, giving up after [`READY_TIMEOUT`].
fn wait_ready(child: &mut Child) -> Result<u16, String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("READY ") {
                let _ = tx.send(
                    port.trim()
                        .parse::<u16>()
                        .map_err(|e| format!("bad READY line {line:?}: {e}")),
                );
            }
        }
        let _ = tx.send(Err("it exited before printing READY".to_owned()));
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(result) => result,
        Err(_) => Err(format!("no READY line within {READY_TIMEOUT:?}")),
    }
}

// --- fixtures, created through the kube client like any API user would -------------------

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Creates deployment `ns/name` (`app=name`) with `replicas` and `(container, image)` pairs.
pub async fn create_deployment(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
    containers: &[(&str, &str)],
) -> Deployment {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(n, i)| json!({ "name": n, "image": i }))
        .collect();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name }, "annotations": { "team": "payments" } },
                "spec": { "containers": containers },
            },
        },
    }))
    .expect("deployment fixture");
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment")
}

/// Sets a deployment's status through the `status` subresource (as its controller would).
pub async fn set_deployment_status(client: &kube::Client, ns: &str, name: &str, status: Value) {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    let patch = Patch::Merge(json!({ "status": status }));
    api.patch_status(name, &PatchParams::default(), &patch)
        .await
        .expect("patch deployment status");
}

/// Creates node `name` (schedulable).
pub async fn create_node(client: &kube::Client, name: &str) -> Node {
    let node: Node = serde_json::from_value(json!({ "metadata": { "name": name } })).expect("node");
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node")
}

/// How a fixture pod is owned.
#[derive(Clone, Copy, Debug)]
pub enum Owner {
    /// By a ReplicaSet (a deployment's pod).
    ReplicaSet,
    /// By a DaemonSet.
    DaemonSet,
    /// Not owned (a bare pod).
    None,
}

/// Creates pod `ns/name` on `node` with `labels`, then marks it Running and Ready with
/// `restarts` through the `status` subresource (as the kubelet would).
pub async fn create_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    node: &str,
    pod_labels: &[(&str, &str)],
    owner: Owner,
    restarts: i32,
) -> Pod {
    let owner_references = match owner {
        Owner::ReplicaSet => {
            json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true }])
        }
        Owner::DaemonSet => {
            json!([{ "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "ds-uid", "controller": true }])
        }
        Owner::None => json!([]),
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels(pod_labels), "ownerReferences": owner_references },
        "spec": { "nodeName": node, "containers": [ { "name": "main", "image": "app:1" } ] },
    }))
    .expect("pod fixture");
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let status = json!({ "status": {
        "phase": "Running",
        "conditions": [ { "type": "Ready", "status": "True" } ],
        "containerStatuses": [ {
            "name": "main", "image": "app:1", "imageID": "", "ready": true,
            "restartCount": restarts, "started": true,
        } ],
    } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("pod status")
}

/// Creates PodDisruptionBudget `ns/name` selecting `selector` with `minAvailable`.
pub async fn create_pdb(
    client: &kube::Client,
    ns: &str,
    name: &str,
    selector: &[(&str, &str)],
    min_available: Value,
) -> PodDisruptionBudget {
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "minAvailable": min_available, "selector": { "matchLabels": labels(selector) } },
    }))
    .expect("PDB fixture");
    let api = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &pdb)
        .await
        .expect("create PDB")
}
