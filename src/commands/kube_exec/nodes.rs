//! The node actions: `k8s-cordon` / `k8s-uncordon` (`spec.unschedulable`, patched as
//! kubectl does) and `k8s-drain` (cordon, then evict every pod but DaemonSet and mirror
//! pods through the Eviction API, reporting what a PodDisruptionBudget refused).

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch};
use serde_json::{Value, json};

use super::*;

// --- k8s-cordon / k8s-uncordon ----------------------------------------------------------------

/// kubectl's patch: `true` to cordon, removing the field (`null`) to uncordon.
fn cordon_patch(unschedulable: bool) -> Value {
    json!({ "spec": { "unschedulable": if unschedulable { Value::Bool(true) } else { Value::Null } } })
}

fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn cordon_call(node: &str, unschedulable: bool) -> String {
    format!(
        "Api::<Node>::all().patch({node:?}, Patch::Strategic({}))",
        cordon_patch(unschedulable)
    )
}

impl KubeExecutor {
    pub(super) async fn preview_cordon(
        &self,
        params: &Params,
        unschedulable: bool,
    ) -> Result<Preview, ExecError> {
        let name = params.text("node")?;
        let current = is_unschedulable(&self.nodes().get(name).await.map_err(api_error)?);
        let mut warnings = Vec::new();
        if current == unschedulable {
            warnings.push(format!(
                "node {name} already has unschedulable={current}: nothing changes"
            ));
        } else if unschedulable {
            warnings.push(format!(
                "no new pods will be scheduled on {name}; running pods stay"
            ));
        }
        Ok(Preview {
            call: cordon_call(name, unschedulable),
            changes: vec![format!(
                "node {name} unschedulable {current} -> {unschedulable}"
            )],
            warnings,
        })
    }

    /// Patches `spec.unschedulable`; returns its value before the patch.
    async fn set_unschedulable(&self, name: &str, unschedulable: bool) -> Result<bool, ExecError> {
        let before = is_unschedulable(&self.nodes().get(name).await.map_err(api_error)?);
        let patch = Patch::Strategic(cordon_patch(unschedulable));
        self.nodes()
            .patch(name, &patch_params(), &patch)
            .await
            .map_err(api_error)?;
        Ok(before)
    }

    pub(super) async fn cordon(
        &self,
        params: &Params,
        unschedulable: bool,
    ) -> Result<ExecOutput, ExecError> {
        let name = params.text("node")?;
        let before = self.set_unschedulable(name, unschedulable).await?;
        let verb = if unschedulable {
            "cordoned"
        } else {
            "uncordoned"
        };
        Ok(summary(format!(
            "node {name} {verb} (unschedulable {before} -> {unschedulable})"
        )))
    }
}

// --- k8s-drain --------------------------------------------------------------------------------

/// What a drain does with one pod on the node.
#[derive(Debug, PartialEq, Eq)]
enum DrainPlan {
    /// Evict it through the Eviction API.
    Evict,
    /// Leave it: its DaemonSet would recreate it on the same node anyway.
    SkipDaemonSet,
    /// Leave it: a static pod's mirror, which only the kubelet can remove.
    SkipMirror,
}

fn drain_plan(pod: &Pod) -> DrainPlan {
    let owned_by_daemonset = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD));
    if mirror {
        DrainPlan::SkipMirror
    } else if owned_by_daemonset {
        DrainPlan::SkipDaemonSet
    } else {
        DrainPlan::Evict
    }
}

fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("?"),
        pod.metadata.name.as_deref().unwrap_or("?")
    )
}

/// Tally of a drain.
#[derive(Default)]
struct DrainReport {
    evicted: usize,
    skipped_daemonset: usize,
    skipped_mirror: usize,
    refused: usize,
    details: Vec<String>,
}

impl DrainReport {
    fn summary(&self, node: &str) -> String {
        let mut line = format!(
            "node {node} cordoned and drained: {} evicted, {} skipped (DaemonSet), {} refused",
            self.evicted, self.skipped_daemonset, self.refused
        );
        if self.skipped_mirror > 0 {
            line.push_str(&format!(", {} mirror pods skipped", self.skipped_mirror));
        }
        line
    }
}

impl KubeExecutor {
    async fn pods_on_node(&self, node: &str) -> Result<Vec<Pod>, ExecError> {
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(api_error)?;
        Ok(pods.items)
    }

    pub(super) async fn preview_drain(&self, params: &Params) -> Result<Preview, ExecError> {
        let name = params.text("node")?;
        let current = is_unschedulable(&self.nodes().get(name).await.map_err(api_error)?);
        let mut changes = vec![format!("node {name} unschedulable {current} -> true")];
        for pod in self.pods_on_node(name).await? {
            changes.push(match drain_plan(&pod) {
                DrainPlan::Evict => format!("evict pod {}", pod_ref(&pod)),
                DrainPlan::SkipDaemonSet => format!("skip pod {} (DaemonSet)", pod_ref(&pod)),
                DrainPlan::SkipMirror => format!("skip pod {} (mirror pod)", pod_ref(&pod)),
            });
        }
        Ok(Preview {
            call: format!(
                "{}; then for each pod of Api::<Pod>::all().list(fieldSelector=\"spec.nodeName={name}\") \
                 not owned by a DaemonSet: Api::<Pod>::namespaced(ns).evict(pod)",
                cordon_call(name, true)
            ),
            changes,
            warnings: vec![
                "evictions honour PodDisruptionBudgets: pods a budget protects are reported, not forced".to_owned(),
            ],
        })
    }

    pub(super) async fn drain(&self, params: &Params) -> Result<ExecOutput, ExecError> {
        let name = params.text("node")?;
        self.set_unschedulable(name, true).await?;
        let mut report = DrainReport::default();
        for pod in self.pods_on_node(name).await? {
            self.drain_pod(&pod, &mut report).await;
        }
        Ok(ExecOutput {
            summary: report.summary(name),
            details: report.details,
            request_id: None,
        })
    }

    async fn drain_pod(&self, pod: &Pod, report: &mut DrainReport) {
        let who = pod_ref(pod);
        match drain_plan(pod) {
            DrainPlan::SkipDaemonSet => {
                report.skipped_daemonset += 1;
                report
                    .details
                    .push(format!("skipped {who}: managed by a DaemonSet"));
            }
            DrainPlan::SkipMirror => {
                report.skipped_mirror += 1;
                report.details.push(format!("skipped {who}: mirror pod"));
            }
            DrainPlan::Evict => match self.evict(pod).await {
                Ok(()) => {
                    report.evicted += 1;
                    report.details.push(format!("evicted {who}"));
                }
                Err(err) => {
                    report.refused += 1;
                    report.details.push(format!("could not evict {who}: {err}"));
                }
            },
        }
    }

    async fn evict(&self, pod: &Pod) -> Result<(), ExecError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        self.pods(namespace)
            .evict(name, &EvictParams::default())
            .await
            .map_err(api_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn pod(owner: Option<&str>, annotations: &[(&str, &str)]) -> Pod {
        let owner_references = owner.map(|kind| {
            vec![OwnerReference {
                kind: kind.to_owned(),
                controller: Some(true),
                ..OwnerReference::default()
            }]
        });
        let annotations: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Pod {
            metadata: ObjectMeta {
                owner_references,
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn drain_skips_daemonset_and_mirror_pods_only() {
        assert_eq!(drain_plan(&pod(Some("ReplicaSet"), &[])), DrainPlan::Evict);
        assert_eq!(drain_plan(&pod(None, &[])), DrainPlan::Evict);
        assert_eq!(
            drain_plan(&pod(Some("DaemonSet"), &[])),
            DrainPlan::SkipDaemonSet
        );
        assert_eq!(
            drain_plan(&pod(None, &[(MIRROR_POD, "abc")])),
            DrainPlan::SkipMirror
        );
    }

    #[test]
    fn uncordon_removes_the_field_like_kubectl() {
        assert_eq!(cordon_patch(true), json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            cordon_patch(false),
            json!({"spec": {"unschedulable": null}})
        );
    }
}
