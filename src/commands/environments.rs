//! One executor target per environment (issue 8): each value of a command's `environment`
//! parameter maps to `[recovery.environments.NAME]` in the config, with its own AWS
//! region and credentials (a profile, and/or a role assumed with STS) and its own
//! Kubernetes context. A run acts through the executors of its own environment and never
//! falls back to another's; a command without an `environment` parameter uses the
//! top-level `[recovery]` target.
//!
//! Every executor built here has bounded calls: the AWS SDK's operation timeout and the
//! kube client's connect/read/write timeouts are `recovery.call_timeout`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_rds::config::Region;
use kube::config::{Config as KubeConfig, KubeConfigOptions, Kubeconfig};

use super::catalog::{Catalog, CatalogError, CatalogErrors, ENVIRONMENT, ParamKind};
use super::kube_exec::KubeExecutor;
use super::rds::RdsExecutor;
use super::{Action, ExecError, ExecOutput, Executor, Params, Preview};
use crate::config::{EnvironmentConfig, RecoveryConfig};

/// An executor that also says where it acts (shown in previews).
pub struct Targeted {
    inner: Arc<dyn Executor>,
    target: String,
}

impl Targeted {
    /// Wraps `inner`, described as `target` (e.g. `AWS account 1234, region eu-west-1`).
    pub fn new(inner: Arc<dyn Executor>, target: impl Into<String>) -> Self {
        Self {
            inner,
            target: target.into(),
        }
    }
}

#[async_trait]
impl Executor for Targeted {
    fn handles(&self, action: Action) -> bool {
        self.inner.handles(action)
    }
    fn target(&self) -> Option<String> {
        Some(self.target.clone())
    }
    async fn preview(&self, action: Action, params: &Params) -> Result<Preview, ExecError> {
        self.inner.preview(action, params).await
    }
    async fn execute(&self, action: Action, params: &Params) -> Result<ExecOutput, ExecError> {
        self.inner.execute(action, params).await
    }
}

/// Executors by environment name.
pub type ByEnvironment = BTreeMap<String, Vec<Arc<dyn Executor>>>;

fn aws_timeouts(call: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(call))
        .operation_attempt_timeout(call)
        .operation_timeout(call)
        .build()
}

/// The RDS executor of one environment: region, profile and/or assumed role, endpoint.
pub async fn rds_for(env: &EnvironmentConfig, call_timeout: Duration) -> RdsExecutor {
    let region = Region::new(env.aws_region.clone());
    let mut base = aws_config::defaults(BehaviorVersion::latest())
        .region(region.clone())
        .timeout_config(aws_timeouts(call_timeout));
    if let Some(profile) = &env.aws_profile {
        base = base.profile_name(profile);
    }
    if let Some(url) = &env.aws_endpoint_url {
        base = base.endpoint_url(url);
    }
    let Some(role) = &env.aws_role_arn else {
        return RdsExecutor::new(aws_sdk_rds::Client::new(&base.load().await));
    };
    let base_conf = base.load().await;
    let provider = AssumeRoleProvider::builder(role)
        .session_name("klaxon")
        .region(region.clone())
        .configure(&base_conf)
        .build()
        .await;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(aws_timeouts(call_timeout))
        .credentials_provider(provider);
    if let Some(url) = &env.aws_endpoint_url {
        loader = loader.endpoint_url(url);
    }
    RdsExecutor::new(aws_sdk_rds::Client::new(&loader.load().await))
}

/// Sets the kube client's timeouts so no call waits forever.
pub fn bound_kube(config: &mut KubeConfig, call_timeout: Duration) {
    config.connect_timeout = Some(Duration::from_secs(5).min(call_timeout));
    config.read_timeout = Some(call_timeout);
    config.write_timeout = Some(call_timeout);
    config.reset_reader_on_write = true;
}

/// The Kubernetes executor of one environment's context.
pub async fn kube_for(
    context: &str,
    kubeconfig: Option<&Path>,
    call_timeout: Duration,
) -> Result<KubeExecutor, String> {
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let mut config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
            KubeConfig::from_custom_kubeconfig(file, &options).await
        }
        None => KubeConfig::from_kubeconfig(&options).await,
    }
    .map_err(|e| e.to_string())?;
    bound_kube(&mut config, call_timeout);
    KubeExecutor::from_config(config).map_err(|e| e.to_string())
}

/// The executors of every configured environment, each described for previews.
pub async fn build(recovery: &RecoveryConfig) -> ByEnvironment {
    let mut out = ByEnvironment::new();
    for (name, env) in &recovery.environments {
        let rds = rds_for(env, recovery.call_timeout).await;
        let mut list: Vec<Arc<dyn Executor>> = vec![Arc::new(Targeted::new(
            Arc::new(rds),
            format!("{name}: {}", env.describe_aws()),
        ))];
        if let Some(context) = &env.kube_context {
            match kube_for(context, env.kubeconfig.as_deref(), recovery.call_timeout).await {
                Ok(kube) => list.push(Arc::new(Targeted::new(
                    Arc::new(kube),
                    format!("{name}: {}", env.describe_kube()),
                ))),
                Err(e) => tracing::warn!(environment = %name, %context, error = %e,
                    "cannot load this Kubernetes context: k8s-* commands in this environment will fail their preview"),
            }
        }
        out.insert(name.clone(), list);
    }
    out
}

/// The top-level executors, for commands without an `environment` parameter.
pub async fn build_default(recovery: &RecoveryConfig) -> Vec<Arc<dyn Executor>> {
    let env = EnvironmentConfig {
        aws_region: recovery.aws_region.clone(),
        aws_endpoint_url: recovery.aws_endpoint_url.clone(),
        ..EnvironmentConfig::default()
    };
    let rds = rds_for(&env, recovery.call_timeout).await;
    let mut list: Vec<Arc<dyn Executor>> =
        vec![Arc::new(Targeted::new(Arc::new(rds), env.describe_aws()))];
    if recovery.kubernetes {
        let loaded = match KubeConfig::infer().await {
            Ok(mut config) => {
                bound_kube(&mut config, recovery.call_timeout);
                KubeExecutor::from_config(config).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match loaded {
            Ok(kube) => list.push(Arc::new(Targeted::new(
                Arc::new(kube),
                "Kubernetes default context",
            ))),
            Err(e) => tracing::warn!(error = %e,
                "no Kubernetes configuration: k8s-* commands without an environment will fail their preview"),
        }
    }
    list
}

/// Refuses a catalog whose commands name an environment the config does not define: a
/// run there would have no executor (and must never borrow another environment's).
pub fn check_catalog(
    catalog: &Catalog,
    catalog_dir: &Path,
    environments: &BTreeMap<String, EnvironmentConfig>,
) -> Result<(), CatalogErrors> {
    let mut errors = Vec::new();
    for spec in catalog.iter() {
        let Some(param) = spec.params.get(ENVIRONMENT) else {
            continue;
        };
        let ParamKind::Enum { values } = &param.kind else {
            continue;
        };
        for (i, value) in values.iter().enumerate() {
            if !environments.contains_key(value) {
                errors.push(CatalogError {
                    file: catalog_dir.join(format!("{}.toml", spec.name)),
                    line: None,
                    key: format!("params.environment.values[{i}]"),
                    rule: format!(
                        "environment `{value}` is not configured: add [recovery.environments.{value}] (its AWS region/credentials and Kubernetes context) to the config"
                    ),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CatalogErrors(errors))
    }
}
