//! The Kubernetes executor: runs every `k8s-*` [`Action`] through the Kubernetes API with
//! kube-rs (never `kubectl`, never a shell).
//!
//! It owns three things:
//! - the API calls each action makes (the same request bodies kubectl would send: the scale
//!   subresource for `k8s-scale`, the `restartedAt` pod-template annotation for a rollout
//!   restart, `spec.unschedulable` for cordon, the Eviction API for drain);
//! - the previews, which only read (current replicas, image, node state, the pods a drain
//!   would evict) and show the exact call that `execute` will make;
//! - the mapping of kube-rs errors to [`ExecError`]: the API's `Status` (reason, HTTP code,
//!   message) becomes [`ExecError::Api`], no answer becomes [`ExecError::Transport`].
//!
//! Retries: kube-rs's default client retries 429/503/504 with backoff. A 429 from the
//! Eviction API means "a PodDisruptionBudget refuses this", which a drain must report at
//! once rather than retry for minutes, and approved commands run exactly once; so the
//! constructors that build the client ([`KubeExecutor::from_config`] and friends) turn that
//! retry layer off. A client passed to [`KubeExecutor::new`] is used as given.
//!
//! The RBAC the executor needs is in `deploy/rbac.yaml`.

use std::path::Path;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

use super::{Action, ExecError, ExecOutput, Executor, Params, Preview};

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The annotation that marks a static (mirror) pod, which the API cannot evict.
const MIRROR_POD: &str = "kubernetes.io/config.mirror";
/// The field manager recorded on every write.
const FIELD_MANAGER: &str = "klaxon";

/// Runs the `k8s-*` actions against one cluster.
#[derive(Clone)]
pub struct KubeExecutor {
    client: Client,
}

impl KubeExecutor {
    /// Wraps a ready client. Prefer [`KubeExecutor::from_config`], which turns off the
    /// client's 429 retries (see the module docs); this uses `client` exactly as given.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Builds the client from `config` with kube-rs's default retry layer disabled.
    pub fn from_config(mut config: Config) -> Result<Self, kube::Error> {
        crate::tls::install_crypto_provider();
        config.default_retry = false;
        Client::try_from(config).map(Self::new)
    }

    /// Like `kube::Client::try_default()`: `$KUBECONFIG` / `~/.kube/config`, else the
    /// in-cluster service account; with retries disabled as in [`KubeExecutor::from_config`].
    pub async fn from_default() -> Result<Self, kube::Error> {
        let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
        Self::from_config(config)
    }

    /// Uses the current context of the kubeconfig file at `path`.
    pub async fn from_kubeconfig(path: impl AsRef<Path>) -> Result<Self, kube::Error> {
        let kubeconfig = Kubeconfig::read_from(path)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Self::from_config(config)
    }

    fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }
}

#[async_trait]
impl Executor for KubeExecutor {
    fn handles(&self, action: Action) -> bool {
        !action.is_rds()
    }

    async fn preview(&self, action: Action, params: &Params) -> Result<Preview, ExecError> {
        match action {
            Action::K8sPods => preview_pods(params),
            Action::K8sScale => self.preview_scale(params).await,
            Action::K8sRolloutRestart => self.preview_restart(params).await,
            Action::K8sRolloutStatus => preview_rollout_status(params),
            Action::K8sSetImage => self.preview_set_image(params).await,
            Action::K8sCordon => self.preview_cordon(params, true).await,
            Action::K8sUncordon => self.preview_cordon(params, false).await,
            Action::K8sDrain => self.preview_drain(params).await,
            rds => Err(not_kubernetes(rds)),
        }
    }

    async fn execute(&self, action: Action, params: &Params) -> Result<ExecOutput, ExecError> {
        match action {
            Action::K8sPods => self.list_pods(params).await,
            Action::K8sScale => self.scale(params).await,
            Action::K8sRolloutRestart => self.restart(params).await,
            Action::K8sRolloutStatus => self.rollout_status(params).await,
            Action::K8sSetImage => self.set_image(params).await,
            Action::K8sCordon => self.cordon(params, true).await,
            Action::K8sUncordon => self.cordon(params, false).await,
            Action::K8sDrain => self.drain(params).await,
            rds => Err(not_kubernetes(rds)),
        }
    }
}

// --- k8s-pods ---------------------------------------------------------------------------------

fn pods_list_params(params: &Params) -> ListParams {
    match params.opt_text("selector") {
        Some(selector) => ListParams::default().labels(selector),
        None => ListParams::default(),
    }
}

fn preview_pods(params: &Params) -> Result<Preview, ExecError> {
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
    async fn list_pods(&self, params: &Params) -> Result<ExecOutput, ExecError> {
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

// --- k8s-scale --------------------------------------------------------------------------------

fn scale_patch(replicas: i32) -> Value {
    json!({ "spec": { "replicas": replicas } })
}

fn replicas_param(params: &Params) -> Result<i32, ExecError> {
    let replicas = params.integer("replicas")?;
    i32::try_from(replicas)
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ExecError::Invalid(format!(
                "replicas must be between 0 and {}, got {replicas}",
                i32::MAX
            ))
        })
}

impl KubeExecutor {
    async fn current_replicas(&self, namespace: &str, deployment: &str) -> Result<i32, ExecError> {
        let scale = self
            .deployments(namespace)
            .get_scale(deployment)
            .await
            .map_err(api_error)?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    async fn preview_scale(&self, params: &Params) -> Result<Preview, ExecError> {
        let (namespace, deployment) = (params.text("namespace")?, params.text("deployment")?);
        let replicas = replicas_param(params)?;
        let current = self.current_replicas(namespace, deployment).await?;
        let mut warnings = Vec::new();
        if replicas == 0 {
            warnings.push(format!(
                "replicas=0 stops the service: every pod of {namespace}/{deployment} is terminated"
            ));
        }
        if replicas == current {
            warnings.push(format!(
                "{namespace}/{deployment} already has {current} replicas: nothing changes"
            ));
        }
        Ok(Preview {
            call: format!(
                "Api::<Deployment>::namespaced({namespace:?}).patch_scale({deployment:?}, Patch::Merge({}))",
                scale_patch(replicas)
            ),
            changes: vec![format!(
                "deployment {namespace}/{deployment} replicas {current} -> {replicas}"
            )],
            warnings,
        })
    }

    async fn scale(&self, params: &Params) -> Result<ExecOutput, ExecError> {
        let (namespace, deployment) = (params.text("namespace")?, params.text("deployment")?);
        let replicas = replicas_param(params)?;
        let before = self.current_replicas(namespace, deployment).await?;
        let patch = Patch::Merge(scale_patch(replicas));
        let after = self
            .deployments(namespace)
            .patch_scale(deployment, &patch_params(), &patch)
            .await
            .map_err(api_error)?;
        let after = after.spec.and_then(|s| s.replicas).unwrap_or(replicas);
        Ok(summary(format!(
            "scaled deployment {namespace}/{deployment}: replicas {before} -> {after}"
        )))
    }
}

// --- k8s-rollout-restart ----------------------------------------------------------------------

fn restart_patch(at: &str) -> Value {
    json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: at } } } } })
}

fn restarted_at(deployment: &Deployment) -> Option<&str> {
    let template = deployment.spec.as_ref()?.template.metadata.as_ref()?;
    template
        .annotations
        .as_ref()?
        .get(RESTARTED_AT)
        .map(String::as_str)
}

impl KubeExecutor {
    async fn preview_restart(&self, params: &Params) -> Result<Preview, ExecError> {
        let (namespace, name) = (params.text("namespace")?, params.text("deployment")?);
        let deployment = self
            .deployments(namespace)
            .get(name)
            .await
            .map_err(api_error)?;
        let previous = restarted_at(&deployment).unwrap_or("(unset)");
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        Ok(Preview {
            call: format!(
                "Api::<Deployment>::namespaced({namespace:?}).patch({name:?}, Patch::Strategic({}))",
                restart_patch("<now, RFC 3339>")
            ),
            changes: vec![format!(
                "deployment {namespace}/{name} pod template annotation {RESTARTED_AT}: {previous} -> <time of execution>"
            )],
            warnings: vec![format!(
                "replaces all {replicas} pods of {namespace}/{name}, following its rollout strategy"
            )],
        })
    }

    async fn restart(&self, params: &Params) -> Result<ExecOutput, ExecError> {
        let (namespace, name) = (params.text("namespace")?, params.text("deployment")?);
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let patch = Patch::Strategic(restart_patch(&now));
        self.deployments(namespace)
            .patch(name, &patch_params(), &patch)
            .await
            .map_err(api_error)?;
        Ok(summary(format!(
            "restarted deployment {namespace}/{name} ({RESTARTED_AT}={now})"
        )))
    }
}

// --- k8s-rollout-status -----------------------------------------------------------------------

fn preview_rollout_status(params: &Params) -> Result<Preview, ExecError> {
    let (namespace, name) = (params.text("namespace")?, params.text("deployment")?);
    Ok(Preview {
        call: format!("Api::<Deployment>::namespaced({namespace:?}).get({name:?})"),
        ..Preview::default()
    })
}

impl KubeExecutor {
    async fn rollout_status(&self, params: &Params) -> Result<ExecOutput, ExecError> {
        let (namespace, name) = (params.text("namespace")?, params.text("deployment")?);
        let deployment = self
            .deployments(namespace)
            .get(name)
            .await
            .map_err(api_error)?;
        let counts = RolloutCounts::of(&deployment);
        let mut details = vec![
            format!(
                "desired {}, updated {}, ready {}, available {}, total {}",
                counts.desired, counts.updated, counts.ready, counts.available, counts.total
            ),
            format!(
                "observedGeneration {} (generation {})",
                counts.observed_generation, counts.generation
            ),
        ];
        let conditions = deployment
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        details.extend(conditions.iter().map(condition_line));
        Ok(ExecOutput {
            summary: format!(
                "deployment {namespace}/{name}: {}",
                counts.verdict(conditions)
            ),
            details,
            request_id: None,
        })
    }
}

/// The numbers `kubectl rollout status` compares.
struct RolloutCounts {
    desired: i32,
    updated: i32,
    ready: i32,
    available: i32,
    total: i32,
    generation: i64,
    observed_generation: i64,
}

impl RolloutCounts {
    fn of(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        Self {
            desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            total: status.replicas.unwrap_or(0),
            generation: deployment.metadata.generation.unwrap_or(0),
            observed_generation: status.observed_generation.unwrap_or(0),
        }
    }

    /// The same verdicts, in the same order, as `kubectl rollout status`.
    fn verdict(&self, conditions: &[DeploymentCondition]) -> String {
        let deadline = conditions.iter().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        if self.observed_generation < self.generation {
            "waiting for the deployment spec update to be observed".to_owned()
        } else if deadline {
            "rollout FAILED: progress deadline exceeded".to_owned()
        } else if self.updated < self.desired {
            format!(
                "rolling out: {} of {} new replicas updated",
                self.updated, self.desired
            )
        } else if self.total > self.updated {
            format!(
                "rolling out: {} old replicas pending termination",
                self.total - self.updated
            )
        } else if self.available < self.updated {
            format!(
                "rolling out: {} of {} updated replicas available",
                self.available, self.updated
            )
        } else {
            "successfully rolled out".to_owned()
        }
    }
}

fn condition_line(condition: &DeploymentCondition) -> String {
    let reason = condition.reason.as_deref().unwrap_or("-");
    let message = condition.message.as_deref().unwrap_or("");
    format!(
        "{}={} ({reason}): {message}",
        condition.type_, condition.status
    )
}

// --- k8s-set-image ----------------------------------------------------------------------------

/// A strategic-merge patch of one container, conditional on the deployment not having
/// changed since it was read (a stale `resourceVersion` gets 409 Conflict), so the
/// container checked to exist cannot have been removed in between.
fn set_image_patch(resource_version: Option<&str>, container: &str, image: &str) -> Value {
    json!({
        "metadata": { "resourceVersion": resource_version },
        "spec": { "template": { "spec": { "containers": [ { "name": container, "image": image } ] } } },
    })
}

/// The current image of `container`, or `Invalid` naming the containers that exist.
fn container_image<'a>(deployment: &'a Deployment, container: &str) -> Result<&'a str, ExecError> {
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| &s.containers[..])
        .unwrap_or_default();
    match containers.iter().find(|c| c.name == container) {
        Some(found) => Ok(found.image.as_deref().unwrap_or("(none)")),
        None => {
            let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
            let name = deployment.metadata.name.as_deref().unwrap_or("?");
            Err(ExecError::Invalid(format!(
                "deployment {name} has no container `{container}` (containers: {})",
                names.join(", ")
            )))
        }
    }
}

impl KubeExecutor {
    async fn preview_set_image(&self, params: &Params) -> Result<Preview, ExecError> {
        let (namespace, name) = (params.text("namespace")?, params.text("deployment")?);
        let (container, image) = (params.text("container")?, params.text("image")?);
        let deployment = self
            .deployments(namespace)
            .get(name)
            .await
            .map_err(api_error)?;
        let current = container_image(&deployment, container)?;
        let patch = set_image_patch(
            deployment.metadata.resource_version.as_deref(),
            container,
            image,
        );
        let mut warnings = vec![format!(
            "replaces the pods of {namespace}/{name}, following its rollout strategy"
        )];
        if current == image {
            warnings.push(format!(
                "container {container} already runs {image}: nothing changes"
            ));
        }
        Ok(Preview {
            call: format!(
                "Api::<Deployment>::namespaced({namespace:?}).patch({name:?}, Patch::Strategic({patch}))"
            ),
            changes: vec![format!(
                "deployment {namespace}/{name} container {container} image {current} -> {image}"
            )],
            warnings,
        })
    }

    async fn set_image(&self, params: &Params) -> Result<ExecOutput, ExecError> {
        let (namespace, name) = (params.text("namespace")?, params.text("deployment")?);
        let (container, image) = (params.text("container")?, params.text("image")?);
        let api = self.deployments(namespace);
        let deployment = api.get(name).await.map_err(api_error)?;
        let before = container_image(&deployment, container)?.to_owned();
        let patch = Patch::Strategic(set_image_patch(
            deployment.metadata.resource_version.as_deref(),
            container,
            image,
        ));
        api.patch(name, &patch_params(), &patch)
            .await
            .map_err(api_error)?;
        Ok(summary(format!(
            "deployment {namespace}/{name} container {container} image {before} -> {image}"
        )))
    }
}

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
    async fn preview_cordon(
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

    async fn cordon(&self, params: &Params, unschedulable: bool) -> Result<ExecOutput, ExecError> {
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

    async fn preview_drain(&self, params: &Params) -> Result<Preview, ExecError> {
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

    async fn drain(&self, params: &Params) -> Result<ExecOutput, ExecError> {
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

// --- shared -----------------------------------------------------------------------------------

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn summary(line: String) -> ExecOutput {
    ExecOutput {
        summary: line,
        details: Vec::new(),
        request_id: None,
    }
}

fn not_kubernetes(action: Action) -> ExecError {
    ExecError::Invalid(format!("{action} is not a Kubernetes action"))
}

/// Maps a kube-rs error: the API's refusal (404, 409 Conflict, 429 from a
/// PodDisruptionBudget, ...) is shown as is; no usable answer is a transport error.
pub fn api_error(err: kube::Error) -> ExecError {
    match err {
        kube::Error::Api(status) => {
            let code = match status.reason.as_str() {
                "" => format!("HTTP {}", status.code),
                reason => format!("{reason} ({})", status.code),
            };
            ExecError::Api {
                code,
                message: status.message,
                request_id: None,
            }
        }
        kube::Error::BuildRequest(err) => ExecError::Invalid(err.to_string()),
        other => ExecError::Transport(other.to_string()),
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
    fn api_errors_keep_reason_code_and_message() {
        let status =
            kube::core::Status::failure("the object has been modified", "Conflict").with_code(409);
        let mapped = api_error(kube::Error::Api(status.boxed()));
        assert_eq!(
            mapped,
            ExecError::Api {
                code: "Conflict (409)".into(),
                message: "the object has been modified".into(),
                request_id: None
            }
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
