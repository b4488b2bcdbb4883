//! `KubeExecutor` end to end: the real kube-rs client over HTTP against the Kubernetes
//! stand-in (kmock + tests/standins/kmock_server.py), asserting on the stand-in's state.

#[path = "support/kube.rs"]
mod kube_support;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use klaxon::commands::kube_exec::{KubeExecutor, RESTARTED_AT};
use klaxon::commands::{Action, ExecError, Executor, ParamValue, Params};
use kube::api::Api;
use kube_support::{
    KubeStandin, Owner, create_deployment, create_node, create_pdb, create_pod,
    set_deployment_status,
};
use serde_json::json;

const NS: &str = "shop";

fn params(pairs: &[(&str, ParamValue)]) -> Params {
    Params(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn text(value: &str) -> ParamValue {
    ParamValue::Text(value.to_owned())
}

fn deployment_params(name: &str) -> Vec<(&'static str, ParamValue)> {
    vec![("namespace", text(NS)), ("deployment", text(name))]
}

fn executor(standin: &KubeStandin) -> KubeExecutor {
    KubeExecutor::new(standin.client())
}

async fn deployment(standin: &KubeStandin, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(standin.client(), NS)
        .get(name)
        .await
        .expect("get deployment")
}

async fn node(standin: &KubeStandin, name: &str) -> Node {
    Api::<Node>::all(standin.client())
        .get(name)
        .await
        .expect("get node")
}

fn images(deployment: &Deployment) -> Vec<(String, String)> {
    let spec = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    spec.containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

fn template_annotations(deployment: &Deployment) -> BTreeMap<String, String> {
    let meta = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref());
    meta.and_then(|m| m.annotations.clone()).unwrap_or_default()
}

fn unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

async fn pod_exists(standin: &KubeStandin, name: &str) -> bool {
    Api::<Pod>::namespaced(standin.client(), NS)
        .get_opt(name)
        .await
        .expect("get pod")
        .is_some()
}

#[tokio::test]
async fn handles_exactly_the_kubernetes_actions() {
    let standin = KubeStandin::start();
    let exec = executor(&standin);
    for action in Action::ALL {
        assert_eq!(
            exec.handles(action),
            action.as_str().starts_with("k8s-"),
            "{action}"
        );
    }
}

#[tokio::test]
async fn pods_lists_phase_ready_restarts_and_node() {
    let standin = KubeStandin::start();
    let client = standin.client();
    create_pod(
        &client,
        NS,
        "web-1",
        "node-a",
        &[("app", "web")],
        Owner::ReplicaSet,
        2,
    )
    .await;
    create_pod(
        &client,
        NS,
        "web-2",
        "node-b",
        &[("app", "web")],
        Owner::ReplicaSet,
        0,
    )
    .await;
    create_pod(
        &client,
        NS,
        "db-0",
        "node-a",
        &[("app", "db")],
        Owner::None,
        0,
    )
    .await;
    let exec = executor(&standin);

    let all = exec
        .execute(Action::K8sPods, &params(&[("namespace", text(NS))]))
        .await
        .expect("list");
    assert_eq!(all.summary, "3 pods in shop");

    let web = params(&[("namespace", text(NS)), ("selector", text("app=web"))]);
    let out = exec.execute(Action::K8sPods, &web).await.expect("list web");
    assert_eq!(out.summary, "2 pods in shop matching app=web");
    assert_eq!(
        out.details,
        [
            "web-1 phase=Running ready=1/1 restarts=2 node=node-a",
            "web-2 phase=Running ready=1/1 restarts=0 node=node-b",
        ]
    );
    let list = standin
        .served()
        .await
        .into_iter()
        .find(|s| s.query.contains("labelSelector"))
        .expect("list call");
    assert_eq!(list.path, "/api/v1/namespaces/shop/pods");
}

#[tokio::test]
async fn scale_goes_through_the_scale_subresource() {
    let standin = KubeStandin::start();
    create_deployment(&standin.client(), NS, "web", 3, &[("app", "web:1")]).await;
    let exec = executor(&standin);
    let mut p = deployment_params("web");
    p.push(("replicas", ParamValue::Integer(0)));
    let p = params(&p);

    let preview = exec.preview(Action::K8sScale, &p).await.expect("preview");
    assert_eq!(preview.changes, ["deployment shop/web replicas 3 -> 0"]);
    assert!(
        preview
            .warnings
            .iter()
            .any(|w| w.contains("stops the service")),
        "{:?}",
        preview.warnings
    );
    assert!(
        preview.call.contains("patch_scale(\"web\""),
        "{}",
        preview.call
    );

    let out = exec.execute(Action::K8sScale, &p).await.expect("scale");
    assert_eq!(out.summary, "scaled deployment shop/web: replicas 3 -> 0");
    assert_eq!(
        deployment(&standin, "web").await.spec.unwrap().replicas,
        Some(0)
    );
    let writes = standin.writes().await;
    assert_eq!(
        writes.iter().filter(|w| w.method == "PATCH").count(),
        1,
        "{writes:?}"
    );
    assert_eq!(
        writes.last().unwrap().path,
        "/apis/apps/v1/namespaces/shop/deployments/web/scale"
    );
}

#[tokio::test]
async fn scale_up_has_no_stop_warning() {
    let standin = KubeStandin::start();
    create_deployment(&standin.client(), NS, "web", 2, &[("app", "web:1")]).await;
    let mut p = deployment_params("web");
    p.push(("replicas", ParamValue::Integer(5)));
    let preview = executor(&standin)
        .preview(Action::K8sScale, &params(&p))
        .await
        .expect("preview");
    assert_eq!(preview.changes, ["deployment shop/web replicas 2 -> 5"]);
    assert!(preview.warnings.is_empty(), "{:?}", preview.warnings);
}

#[tokio::test]
async fn rollout_restart_sets_the_restarted_at_annotation() {
    let standin = KubeStandin::start();
    let before = create_deployment(&standin.client(), NS, "web", 3, &[("app", "web:1")]).await;
    let exec = executor(&standin);
    let p = params(&deployment_params("web"));

    let preview = exec
        .preview(Action::K8sRolloutRestart, &p)
        .await
        .expect("preview");
    assert!(
        preview.changes[0].contains(&format!("{RESTARTED_AT}: (unset) -> ")),
        "{:?}",
        preview.changes
    );

    let out = exec
        .execute(Action::K8sRolloutRestart, &p)
        .await
        .expect("restart");
    let after = deployment(&standin, "web").await;
    let annotations = template_annotations(&after);
    let at = annotations.get(RESTARTED_AT).expect("restartedAt set");
    chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339 timestamp");
    assert!(out.summary.contains(at.as_str()), "{}", out.summary);
    assert_eq!(
        annotations.get("team").map(String::as_str),
        Some("payments"),
        "other annotations kept"
    );
    assert_eq!(
        after.metadata.generation,
        before.metadata.generation.map(|g| g + 1),
        "a new rollout"
    );
    let patch = standin.writes().await.pop().expect("one write");
    assert_eq!(
        (patch.method.as_str(), patch.path.as_str()),
        ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web")
    );
}

#[tokio::test]
async fn rollout_status_summarises_and_only_reads() {
    let standin = KubeStandin::start();
    let client = standin.client();
    create_deployment(&client, NS, "web", 3, &[("app", "web:1")]).await;
    let exec = executor(&standin);
    let p = params(&deployment_params("web"));

    set_deployment_status(&client, NS, "web", json!({
        "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
        "conditions": [
            { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability." },
        ],
    }))
    .await;
    let done = exec
        .execute(Action::K8sRolloutStatus, &p)
        .await
        .expect("status");
    assert_eq!(done.summary, "deployment shop/web: successfully rolled out");
    assert_eq!(
        done.details[0],
        "desired 3, updated 3, ready 3, available 3, total 3"
    );
    assert_eq!(done.details[1], "observedGeneration 1 (generation 1)");
    assert_eq!(
        done.details[2],
        "Available=True (MinimumReplicasAvailable): Deployment has minimum availability."
    );

    set_deployment_status(
        &client,
        NS,
        "web",
        json!({ "replicas": 4, "updatedReplicas": 1, "readyReplicas": 3, "availableReplicas": 3 }),
    )
    .await;
    let rolling = exec
        .execute(Action::K8sRolloutStatus, &p)
        .await
        .expect("status");
    assert_eq!(
        rolling.summary,
        "deployment shop/web: rolling out: 1 of 3 new replicas updated"
    );

    set_deployment_status(&client, NS, "web", json!({
        "conditions": [ { "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out" } ],
    }))
    .await;
    let failed = exec
        .execute(Action::K8sRolloutStatus, &p)
        .await
        .expect("status");
    assert_eq!(
        failed.summary,
        "deployment shop/web: rollout FAILED: progress deadline exceeded"
    );

    let writes_before = standin.writes().await.len();
    exec.preview(Action::K8sRolloutStatus, &p)
        .await
        .expect("preview");
    exec.execute(Action::K8sRolloutStatus, &p)
        .await
        .expect("status");
    assert_eq!(
        standin.writes().await.len(),
        writes_before,
        "rollout status never writes"
    );
}

#[tokio::test]
async fn rollout_status_waits_for_a_new_generation_to_be_observed() {
    let standin = KubeStandin::start();
    let client = standin.client();
    create_deployment(&client, NS, "web", 1, &[("app", "web:1")]).await;
    set_deployment_status(&client, NS, "web", json!({ "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1 })).await;
    let exec = executor(&standin);
    let mut set = deployment_params("web");
    set.extend([("container", text("app")), ("image", text("web:2"))]);
    exec.execute(Action::K8sSetImage, &params(&set))
        .await
        .expect("set image");

    let out = exec
        .execute(Action::K8sRolloutStatus, &params(&deployment_params("web")))
        .await
        .expect("status");
    assert_eq!(
        out.summary,
        "deployment shop/web: waiting for the deployment spec update to be observed"
    );
    assert_eq!(out.details[1], "observedGeneration 1 (generation 2)");
}

fn set_image_params(container: &str, image: &str) -> Params {
    let mut p = deployment_params("web");
    p.extend([("container", text(container)), ("image", text(image))]);
    params(&p)
}

#[tokio::test]
async fn set_image_changes_only_the_named_container() {
    let standin = KubeStandin::start();
    create_deployment(
        &standin.client(),
        NS,
        "web",
        2,
        &[("app", "web:1"), ("proxy", "envoy:1.30")],
    )
    .await;
    let exec = executor(&standin);
    let p = set_image_params("app", "web:2");

    let preview = exec
        .preview(Action::K8sSetImage, &p)
        .await
        .expect("preview");
    assert_eq!(
        preview.changes,
        ["deployment shop/web container app image web:1 -> web:2"]
    );

    let out = exec
        .execute(Action::K8sSetImage, &p)
        .await
        .expect("set image");
    assert_eq!(
        out.summary,
        "deployment shop/web container app image web:1 -> web:2"
    );
    let after = deployment(&standin, "web").await;
    assert_eq!(
        images(&after),
        [
            ("app".to_owned(), "web:2".to_owned()),
            ("proxy".to_owned(), "envoy:1.30".to_owned())
        ]
    );
}

#[tokio::test]
async fn set_image_refuses_a_missing_container() {
    let standin = KubeStandin::start();
    create_deployment(&standin.client(), NS, "web", 2, &[("app", "web:1")]).await;
    let exec = executor(&standin);
    let p = set_image_params("sidecar", "envoy:2");

    let preview = exec.preview(Action::K8sSetImage, &p).await;
    assert!(
        matches!(&preview, Err(ExecError::Invalid(m)) if m.contains("no container `sidecar`") && m.contains("app")),
        "{preview:?}"
    );
    let executed = exec.execute(Action::K8sSetImage, &p).await;
    assert!(
        matches!(executed, Err(ExecError::Invalid(_))),
        "{executed:?}"
    );
    assert!(
        standin.writes().await.iter().all(|w| w.method == "POST"),
        "only the fixture was written"
    );
    assert_eq!(
        images(&deployment(&standin, "web").await),
        [("app".to_owned(), "web:1".to_owned())]
    );
}

#[tokio::test]
async fn set_image_conflict_is_an_api_error() {
    let standin = KubeStandin::start();
    create_deployment(&standin.client(), NS, "web", 2, &[("app", "web:1")]).await;
    // Someone else edits the deployment between the executor's read and its patch.
    standin
        .concurrent_write(
            "/apis/apps/v1/namespaces/shop/deployments/web",
            json!({ "metadata": { "labels": { "edited": "yes" } } }),
        )
        .await;

    let result = executor(&standin)
        .execute(Action::K8sSetImage, &set_image_params("app", "web:2"))
        .await;
    match result {
        Err(ExecError::Api {
            code,
            message,
            request_id,
        }) => {
            assert_eq!(code, "Conflict (409)");
            assert!(
                message.contains("the object has been modified"),
                "{message}"
            );
            assert_eq!(request_id, None);
        }
        other => panic!("expected a 409 API error, got {other:?}"),
    }
    let after = deployment(&standin, "web").await;
    assert_eq!(
        images(&after),
        [("app".to_owned(), "web:1".to_owned())],
        "not changed"
    );
    assert_eq!(
        after
            .metadata
            .labels
            .unwrap()
            .get("edited")
            .map(String::as_str),
        Some("yes")
    );
}

#[tokio::test]
async fn missing_deployment_is_a_not_found_api_error() {
    let standin = KubeStandin::start();
    let mut p = deployment_params("ghost");
    p.push(("replicas", ParamValue::Integer(1)));
    let result = executor(&standin)
        .preview(Action::K8sScale, &params(&p))
        .await;
    assert_eq!(
        result,
        Err(ExecError::Api {
            code: "NotFound (404)".into(),
            message: "deployments.apps \"ghost\" not found".into(),
            request_id: None
        })
    );
}

#[tokio::test]
async fn cordon_and_uncordon_patch_unschedulable() {
    let standin = KubeStandin::start();
    create_node(&standin.client(), "node-a").await;
    let exec = executor(&standin);
    let p = params(&[("node", text("node-a"))]);

    let preview = exec
        .preview(Action::K8sCordon, &p)
        .await
        .expect("preview cordon");
    assert_eq!(preview.changes, ["node node-a unschedulable false -> true"]);
    let out = exec.execute(Action::K8sCordon, &p).await.expect("cordon");
    assert_eq!(
        out.summary,
        "node node-a cordoned (unschedulable false -> true)"
    );
    assert!(unschedulable(&node(&standin, "node-a").await));

    let preview = exec
        .preview(Action::K8sUncordon, &p)
        .await
        .expect("preview uncordon");
    assert_eq!(preview.changes, ["node node-a unschedulable true -> false"]);
    let out = exec
        .execute(Action::K8sUncordon, &p)
        .await
        .expect("uncordon");
    assert_eq!(
        out.summary,
        "node node-a uncordoned (unschedulable true -> false)"
    );
    let after = node(&standin, "node-a").await;
    assert_eq!(
        after.spec.and_then(|s| s.unschedulable),
        None,
        "field removed, as kubectl does"
    );
}

/// node-a: web-1, web-2 (PDB web-pdb minAvailable 1 of 3: evictable), agent (DaemonSet),
/// db-0 (PDB db-pdb minAvailable 1 of 1: refused). node-b: web-3 (not touched).
async fn seed_drain(standin: &KubeStandin) {
    let client = standin.client();
    create_node(&client, "node-a").await;
    create_node(&client, "node-b").await;
    let web = [("app", "web")];
    create_pod(&client, NS, "web-1", "node-a", &web, Owner::ReplicaSet, 0).await;
    create_pod(&client, NS, "web-2", "node-a", &web, Owner::ReplicaSet, 0).await;
    create_pod(&client, NS, "web-3", "node-b", &web, Owner::ReplicaSet, 0).await;
    create_pod(
        &client,
        NS,
        "agent-a",
        "node-a",
        &[("app", "agent")],
        Owner::DaemonSet,
        0,
    )
    .await;
    create_pod(
        &client,
        NS,
        "db-0",
        "node-a",
        &[("app", "db")],
        Owner::None,
        0,
    )
    .await;
    create_pdb(&client, NS, "web-pdb", &web, json!(1)).await;
    create_pdb(&client, NS, "db-pdb", &[("app", "db")], json!(1)).await;
}

#[tokio::test]
async fn drain_evicts_skips_daemonsets_and_reports_pdb_refusals() {
    let standin = KubeStandin::start();
    seed_drain(&standin).await;
    let exec = executor(&standin);
    let p = params(&[("node", text("node-a"))]);

    let started = std::time::Instant::now();
    let out = exec.execute(Action::K8sDrain, &p).await.expect("drain");
    assert!(
        started.elapsed().as_secs() < 5,
        "a PDB refusal is reported, not retried"
    );
    assert_eq!(
        out.summary,
        "node node-a cordoned and drained: 2 evicted, 1 skipped (DaemonSet), 1 refused"
    );
    for line in [
        "evicted shop/web-1",
        "evicted shop/web-2",
        "skipped shop/agent-a: managed by a DaemonSet",
    ] {
        assert!(
            out.details.iter().any(|d| d == line),
            "{line:?} in {:?}",
            out.details
        );
    }
    let refusal = out
        .details
        .iter()
        .find(|d| d.starts_with("could not evict shop/db-0: "))
        .expect("db-0 refusal");
    assert!(refusal.contains("TooManyRequests (429)"), "{refusal}");
    assert!(refusal.contains("disruption budget"), "{refusal}");

    assert!(
        unschedulable(&node(&standin, "node-a").await),
        "cordoned first"
    );
    assert!(
        !pod_exists(&standin, "web-1").await && !pod_exists(&standin, "web-2").await,
        "evicted"
    );
    assert!(
        pod_exists(&standin, "agent-a").await,
        "DaemonSet pod left alone"
    );
    assert!(
        pod_exists(&standin, "db-0").await,
        "PDB-protected pod left alone"
    );
    assert!(pod_exists(&standin, "web-3").await, "other node untouched");

    let evictions: Vec<String> = standin
        .writes()
        .await
        .into_iter()
        .filter(|w| w.path.ends_with("/eviction"))
        .map(|w| w.path)
        .collect();
    assert_eq!(
        evictions,
        [
            "/api/v1/namespaces/shop/pods/web-1/eviction",
            "/api/v1/namespaces/shop/pods/web-2/eviction",
            "/api/v1/namespaces/shop/pods/db-0/eviction",
        ],
        "one eviction per pod (no retries), none for the DaemonSet pod"
    );
    let list = standin
        .served()
        .await
        .into_iter()
        .find(|s| s.path == "/api/v1/pods")
        .expect("pods listed");
    assert!(
        list.query.contains("fieldSelector=spec.nodeName"),
        "{list:?}"
    );
}

#[tokio::test]
async fn previews_change_nothing() {
    let standin = KubeStandin::start();
    seed_drain(&standin).await;
    create_deployment(&standin.client(), NS, "web", 3, &[("app", "web:1")]).await;
    let exec = executor(&standin);
    let writes = standin.writes().await;
    let before = (
        deployment(&standin, "web").await,
        node(&standin, "node-a").await,
    );

    let mut scale = deployment_params("web");
    scale.push(("replicas", ParamValue::Integer(0)));
    let node_a = params(&[("node", text("node-a"))]);
    let cases = [
        (Action::K8sScale, params(&scale)),
        (Action::K8sRolloutRestart, params(&deployment_params("web"))),
        (Action::K8sSetImage, set_image_params("app", "web:2")),
        (Action::K8sCordon, node_a.clone()),
        (Action::K8sUncordon, node_a.clone()),
        (Action::K8sDrain, node_a.clone()),
        (Action::K8sPods, params(&[("namespace", text(NS))])),
        (Action::K8sRolloutStatus, params(&deployment_params("web"))),
    ];
    for (action, p) in &cases {
        exec.preview(*action, p)
            .await
            .unwrap_or_else(|e| panic!("preview {action}: {e}"));
    }
    let drain = exec
        .preview(Action::K8sDrain, &node_a)
        .await
        .expect("drain preview");
    assert_eq!(
        drain.changes,
        [
            "node node-a unschedulable false -> true",
            "evict pod shop/web-1",
            "evict pod shop/web-2",
            "skip pod shop/agent-a (DaemonSet)",
            "evict pod shop/db-0",
        ]
    );

    assert_eq!(standin.writes().await, writes, "previews only read");
    let after = (
        deployment(&standin, "web").await,
        node(&standin, "node-a").await,
    );
    assert_eq!(
        after.0.metadata.resource_version,
        before.0.metadata.resource_version
    );
    assert_eq!(
        after.1.metadata.resource_version,
        before.1.metadata.resource_version
    );
    assert!(pod_exists(&standin, "web-1").await);
}

#[tokio::test]
async fn from_kubeconfig_uses_the_current_context() {
    let standin = KubeStandin::start();
    create_pod(
        &standin.client(),
        NS,
        "web-1",
        "node-a",
        &[("app", "web")],
        Owner::ReplicaSet,
        0,
    )
    .await;
    let file = tempfile::NamedTempFile::new().expect("temp kubeconfig");
    std::fs::write(file.path(), standin.kubeconfig_yaml()).expect("write kubeconfig");

    let exec = KubeExecutor::from_kubeconfig(file.path())
        .await
        .expect("executor from kubeconfig");
    let out = exec
        .execute(Action::K8sPods, &params(&[("namespace", text(NS))]))
        .await
        .expect("list");
    assert_eq!(out.summary, "1 pods in shop");
}

#[tokio::test]
async fn unreachable_api_is_a_transport_error() {
    let standin = KubeStandin::start();
    let exec = KubeExecutor::new(standin.client());
    drop(standin); // killed: nothing listens on its port any more
    let result = exec
        .execute(Action::K8sCordon, &params(&[("node", text("node-a"))]))
        .await;
    assert!(matches!(result, Err(ExecError::Transport(_))), "{result:?}");
}
