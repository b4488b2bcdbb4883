//! The deployment actions: `k8s-scale` (the scale subresource), `k8s-rollout-restart`
//! (the `restartedAt` pod-template annotation, as kubectl sets it), `k8s-rollout-status`
//! (read-only) and `k8s-set-image` (one container's image, conditional on the
//! `resourceVersion` read just before the patch).

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition};
use kube::api::Patch;
use serde_json::{Value, json};

use super::*;

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

    pub(super) async fn preview_scale(&self, params: &Params) -> Result<Preview, ExecError> {
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

    pub(super) async fn scale(&self, params: &Params) -> Result<ExecOutput, ExecError> {
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
    pub(super) async fn preview_restart(&self, params: &Params) -> Result<Preview, ExecError> {
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

    pub(super) async fn restart(&self, params: &Params) -> Result<ExecOutput, ExecError> {
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

pub(super) fn preview_rollout_status(params: &Params) -> Result<Preview, ExecError> {
    let (namespace, name) = (params.text("namespace")?, params.text("deployment")?);
    Ok(Preview {
        call: format!("Api::<Deployment>::namespaced({namespace:?}).get({name:?})"),
        ..Preview::default()
    })
}

impl KubeExecutor {
    pub(super) async fn rollout_status(&self, params: &Params) -> Result<ExecOutput, ExecError> {
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
    pub(super) async fn preview_set_image(&self, params: &Params) -> Result<Preview, ExecError> {
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

    pub(super) async fn set_image(&self, params: &Params) -> Result<ExecOutput, ExecError> {
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
