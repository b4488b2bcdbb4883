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
//!
//! The files, by the kind of object an action works on: `pods` (`k8s-pods`),
//! `deployments` (scale, rollout restart and status, set image) and `nodes` (cordon,
//! uncordon, drain). This file holds the executor, the dispatch from each action to its
//! preview and execution, and what they share (field manager, error mapping).

use std::path::Path;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{Action, ExecError, ExecOutput, Executor, Params, Preview};

mod deployments;
mod nodes;
mod pods;

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
            Action::K8sPods => pods::preview_pods(params),
            Action::K8sScale => self.preview_scale(params).await,
            Action::K8sRolloutRestart => self.preview_restart(params).await,
            Action::K8sRolloutStatus => deployments::preview_rollout_status(params),
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
    use super::*;

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
}
