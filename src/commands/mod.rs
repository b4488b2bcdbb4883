//! Approved recovery commands: the catalog in `commands/*.toml`, typed parameters, and the
//! executors that call the AWS RDS and Kubernetes APIs through their SDKs (never a shell).
//!
//! Flow (issue "Approved recovery commands"): a request is validated against the catalog
//! ([`catalog`], [`params`]), previewed (the exact SDK call, and for Kubernetes the state it
//! will change), approved by a second person, then executed exactly once by an
//! [`Executor`]. This module defines the vocabulary shared by the catalog and executors.

pub mod catalog;
pub mod environments;
pub mod execution;
pub mod kube_exec;
pub mod params;
pub mod rds;
pub mod render;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an approved command does. Each catalog file names exactly one action; the
/// parameter names each action reads are listed in [`Action::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// DescribeDBInstances / DescribeDBClusters / DescribeEvents. Params: `instance`? `cluster`?
    RdsDescribe,
    /// FailoverDBCluster. Params: `cluster`, `target_instance`?
    RdsFailoverCluster,
    /// RebootDBInstance with ForceFailover=true. Params: `instance`.
    RdsRebootFailover,
    /// CreateDBSnapshot. Params: `instance`, `snapshot`.
    RdsSnapshotCreate,
    /// DescribeDBSnapshots. Params: `instance`.
    RdsSnapshotsList,
    /// RestoreDBInstanceToPointInTime. Params: `source`, `target`, `restore_time` (RFC 3339 or `latest`).
    RdsRestorePitr,
    /// RestoreDBInstanceFromDBSnapshot. Params: `snapshot`, `target`, `instance_class`?
    RdsRestoreSnapshot,
    /// PromoteReadReplica. Params: `instance`.
    RdsPromoteReplica,
    /// List pods with status. Params: `namespace`, `selector`?
    K8sPods,
    /// Scale a deployment (0 stops the service). Params: `namespace`, `deployment`, `replicas`.
    K8sScale,
    /// Rollout restart (patch the pod template's restartedAt annotation). Params: `namespace`, `deployment`.
    K8sRolloutRestart,
    /// Rollout status. Params: `namespace`, `deployment`.
    K8sRolloutStatus,
    /// Set one container's image. Params: `namespace`, `deployment`, `container`, `image`.
    K8sSetImage,
    /// Mark a node unschedulable. Params: `node`.
    K8sCordon,
    /// Mark a node schedulable. Params: `node`.
    K8sUncordon,
    /// Cordon, then evict every non-DaemonSet pod through the Eviction API (honours
    /// PodDisruptionBudgets) and report what could not be evicted. Params: `node`.
    K8sDrain,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 16] = [
        Action::RdsDescribe,
        Action::RdsFailoverCluster,
        Action::RdsRebootFailover,
        Action::RdsSnapshotCreate,
        Action::RdsSnapshotsList,
        Action::RdsRestorePitr,
        Action::RdsRestoreSnapshot,
        Action::RdsPromoteReplica,
        Action::K8sPods,
        Action::K8sScale,
        Action::K8sRolloutRestart,
        Action::K8sRolloutStatus,
        Action::K8sSetImage,
        Action::K8sCordon,
        Action::K8sUncordon,
        Action::K8sDrain,
    ];

    /// The kebab-case name used in catalog files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::RdsDescribe => "rds-describe",
            Action::RdsFailoverCluster => "rds-failover-cluster",
            Action::RdsRebootFailover => "rds-reboot-failover",
            Action::RdsSnapshotCreate => "rds-snapshot-create",
            Action::RdsSnapshotsList => "rds-snapshots-list",
            Action::RdsRestorePitr => "rds-restore-pitr",
            Action::RdsRestoreSnapshot => "rds-restore-snapshot",
            Action::RdsPromoteReplica => "rds-promote-replica",
            Action::K8sPods => "k8s-pods",
            Action::K8sScale => "k8s-scale",
            Action::K8sRolloutRestart => "k8s-rollout-restart",
            Action::K8sRolloutStatus => "k8s-rollout-status",
            Action::K8sSetImage => "k8s-set-image",
            Action::K8sCordon => "k8s-cordon",
            Action::K8sUncordon => "k8s-uncordon",
            Action::K8sDrain => "k8s-drain",
        }
    }

    /// Parameters the executor reads: `(name, required)`.
    pub fn params(self) -> &'static [(&'static str, bool)] {
        match self {
            Action::RdsDescribe => &[("instance", false), ("cluster", false)],
            Action::RdsFailoverCluster => &[("cluster", true), ("target_instance", false)],
            Action::RdsRebootFailover | Action::RdsPromoteReplica => &[("instance", true)],
            Action::RdsSnapshotCreate => &[("instance", true), ("snapshot", true)],
            Action::RdsSnapshotsList => &[("instance", true)],
            Action::RdsRestorePitr => &[("source", true), ("target", true), ("restore_time", true)],
            Action::RdsRestoreSnapshot => &[
                ("snapshot", true),
                ("target", true),
                ("instance_class", false),
            ],
            Action::K8sPods => &[("namespace", true), ("selector", false)],
            Action::K8sScale => &[
                ("namespace", true),
                ("deployment", true),
                ("replicas", true),
            ],
            Action::K8sRolloutRestart | Action::K8sRolloutStatus => {
                &[("namespace", true), ("deployment", true)]
            }
            Action::K8sSetImage => &[
                ("namespace", true),
                ("deployment", true),
                ("container", true),
                ("image", true),
            ],
            Action::K8sCordon | Action::K8sUncordon | Action::K8sDrain => &[("node", true)],
        }
    }

    /// Whether the action only reads (may run with 0 approvers).
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Action::RdsDescribe
                | Action::RdsSnapshotsList
                | Action::K8sPods
                | Action::K8sRolloutStatus
        )
    }

    /// Whether the action goes to the RDS executor (otherwise Kubernetes).
    pub fn is_rds(self) -> bool {
        self.as_str().starts_with("rds-")
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated parameter value. Executors receive only these, never raw text to parse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ParamValue {
    /// A string that passed its pattern / allowed-values rules.
    Text(String),
    /// An integer within its range.
    Integer(i64),
    /// An instant (RFC 3339 in the request).
    Timestamp(DateTime<Utc>),
    /// The word `latest` where a timestamp parameter allows it.
    Latest,
}

/// Validated parameters by name, exactly as approved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params(pub BTreeMap<String, ParamValue>);

impl Params {
    /// A text parameter.
    pub fn text(&self, name: &str) -> Result<&str, ExecError> {
        match self.0.get(name) {
            Some(ParamValue::Text(t)) => Ok(t),
            Some(other) => Err(ExecError::Invalid(format!(
                "parameter `{name}` is {other:?}, expected text"
            ))),
            None => Err(ExecError::Invalid(format!("parameter `{name}` is missing"))),
        }
    }

    /// An optional text parameter.
    pub fn opt_text(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(ParamValue::Text(t)) => Some(t),
            _ => None,
        }
    }

    /// An integer parameter.
    pub fn integer(&self, name: &str) -> Result<i64, ExecError> {
        match self.0.get(name) {
            Some(ParamValue::Integer(i)) => Ok(*i),
            Some(other) => Err(ExecError::Invalid(format!(
                "parameter `{name}` is {other:?}, expected an integer"
            ))),
            None => Err(ExecError::Invalid(format!("parameter `{name}` is missing"))),
        }
    }

    /// A timestamp parameter; `None` means `latest`.
    pub fn timestamp_or_latest(&self, name: &str) -> Result<Option<DateTime<Utc>>, ExecError> {
        match self.0.get(name) {
            Some(ParamValue::Timestamp(t)) => Ok(Some(*t)),
            Some(ParamValue::Latest) => Ok(None),
            Some(other) => Err(ExecError::Invalid(format!(
                "parameter `{name}` is {other:?}, expected a time or `latest`"
            ))),
            None => Err(ExecError::Invalid(format!("parameter `{name}` is missing"))),
        }
    }
}

/// What a command will do, shown before anyone approves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The exact SDK call with its arguments, e.g.
    /// `rds.failover_db_cluster(db_cluster_identifier="payments", target_db_instance_identifier="payments-2")`.
    pub call: String,
    /// The current state it will change, e.g. `deployment payments/api replicas: 3 -> 0`.
    pub changes: Vec<String>,
    /// Warnings people must read, e.g. `replicas=0 stops the service`.
    pub warnings: Vec<String>,
}

/// The result of an execution, for the channel and the timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// One line.
    pub summary: String,
    /// Further lines (one per instance, pod...), already summarised.
    pub details: Vec<String>,
    /// The SDK's request id, when the API returned one.
    pub request_id: Option<String>,
}

/// Why a preview or execution failed. The API's error IS the result and is shown to
/// people (code, message, request id), with secrets redacted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ExecError {
    /// The API refused: e.g. `DBClusterNotFoundFault`, a 409 conflict, a PDB 429.
    #[error("{code}: {message}{}", request_id.as_ref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Api {
        /// Error code or HTTP reason.
        code: String,
        /// Message from the API.
        message: String,
        /// Request id, when known.
        request_id: Option<String>,
    },
    /// The parameters do not fit the action (a bug in the catalog or caller).
    #[error("invalid parameters: {0}")]
    Invalid(String),
    /// No answer (network, timeout): the outcome may be unknown for mutating calls.
    #[error("transport error: {0}")]
    Transport(String),
}

/// Something that can preview and run actions.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Whether this executor runs `action`.
    fn handles(&self, action: Action) -> bool;
    /// Where it acts (account and region, cluster context), shown in previews.
    fn target(&self) -> Option<String> {
        None
    }
    /// Describes exactly what `execute` would do, reading current state where useful.
    /// Never changes anything.
    async fn preview(&self, action: Action, params: &Params) -> Result<Preview, ExecError>;
    /// Runs the action once.
    async fn execute(&self, action: Action, params: &Params) -> Result<ExecOutput, ExecError>;
}
