//! `k8s-pods`: list a namespace's pods (optionally by label selector), one line per pod
//! with phase, readiness, restarts and node. Read-only.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use super::*;

fn pods_list_params(params: &Params) -> ListParams {
    match params.opt_text("selector") {
        Some(selector) => ListParams::default().labels(selector),
        None => ListParams::default(),
    }
}

pub(super) fn preview_pods(params: &Params) -> Result<Preview, ExecError> {
    let namespace = params.text("namespace")?;
    let selector = params
        .opt_text("selector")
        .map(|s| format!("labelSelector={s:?}"))
        .unwrap_or_default();
    Ok(Preview {
        call: format!("Api::<Pod>::namespaced({namespace:?}).list({selector})"),
        ..Preview::default()
    })
}

impl KubeExecutor {
    pub(super) async fn list_pods(&self, params: &Params) -> Result<ExecOutput, ExecError> {
        let namespace = params.text("namespace")?;
        let pods = self
            .pods(namespace)
            .list(&pods_list_params(params))
            .await
            .map_err(api_error)?;
        let selector = params
            .opt_text("selector")
            .map(|s| format!(" matching {s}"))
            .unwrap_or_default();
        Ok(ExecOutput {
            summary: format!("{} pods in {namespace}{selector}", pods.items.len()),
            details: pods.items.iter().map(pod_line).collect(),
            request_id: None,
        })
    }
}

/// `name phase=Running ready=1/2 restarts=3 node=worker-1`.
fn pod_line(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref();
    let phase = if pod.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else {
        status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown")
    };
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map_or(statuses.len(), |s| s.containers.len());
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("-");
    format!("{name} phase={phase} ready={ready}/{containers} restarts={restarts} node={node}")
}
