//! The RDS executor: previews and runs every `rds-*` [`Action`] through the AWS SDK
//! (`aws-sdk-rds`), never a shell.
//!
//! This module owns: turning validated [`Params`] into one typed request per action, the
//! text of the exact SDK call shown in previews, the read-only checks previews make
//! (current writer, source status, latest restorable time, snapshot status...), the single
//! SDK call an execution makes, and the mapping of SDK errors to [`ExecError`] (API code,
//! message and request id; transport failures; secrets redacted).
//!
//! Mutating calls are sent with SDK retries disabled so that an approved command runs at
//! most once; a timeout is reported as [`ExecError::Transport`] (outcome unknown).

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_rds::Client;
use aws_sdk_rds::config::retry::RetryConfig;
use aws_sdk_rds::config::timeout::TimeoutConfig;
use aws_sdk_rds::config::{self, Region};
use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_rds::operation::RequestId;
use aws_sdk_rds::primitives::DateTime as AwsTime;
use aws_sdk_rds::types::{DbCluster, DbInstance, DbSnapshot, Event, Filter, SourceType};
use chrono::{DateTime, SecondsFormat, Utc};
use regex::Regex;

use super::{Action, ExecError, ExecOutput, Executor, Params, Preview};

/// How far back `rds-describe` reads events, in minutes.
const EVENT_WINDOW_MINUTES: i32 = 60;
/// How many events `rds-describe` reads at most.
const EVENT_LIMIT: i32 = 20;

/// Runs the `rds-*` actions against one AWS account and region.
#[derive(Clone, Debug)]
pub struct RdsExecutor {
    client: Client,
}

impl RdsExecutor {
    /// Builds a client from the standard AWS environment (credentials chain, profile) for
    /// `region`, optionally against `endpoint_url` (a stand-in such as moto in tests).
    pub async fn from_env(region: &str, endpoint_url: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .timeout_config(default_timeouts());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        Self::new(Client::new(&loader.load().await))
    }

    /// Wraps an already configured client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// Bounded waits so that a stuck call ends as a transport error instead of hanging.
fn default_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

/// Per-call override for mutating calls: no automatic retry, so one approval = one call.
fn no_retry() -> config::Builder {
    config::Builder::default().retry_config(RetryConfig::disabled())
}

#[async_trait]
impl Executor for RdsExecutor {
    fn handles(&self, action: Action) -> bool {
        action.is_rds()
    }

    async fn preview(&self, action: Action, params: &Params) -> Result<Preview, ExecError> {
        let request = Request::parse(action, params)?;
        let notes = self.assess(&request).await?;
        Ok(Preview {
            call: request.call_text(),
            changes: notes.changes,
            warnings: notes.warnings,
        })
    }

    async fn execute(&self, action: Action, params: &Params) -> Result<ExecOutput, ExecError> {
        let request = Request::parse(action, params)?;
        self.run(&request).await
    }
}

// ---------------------------------------------------------------------------------------
// Requests and the text of their SDK calls
// ---------------------------------------------------------------------------------------

/// One RDS action with its parameters, parsed once and used by both preview and execute.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Request<'a> {
    Describe {
        instance: Option<&'a str>,
        cluster: Option<&'a str>,
    },
    Failover {
        cluster: &'a str,
        target: Option<&'a str>,
    },
    RebootFailover {
        instance: &'a str,
    },
    SnapshotCreate {
        instance: &'a str,
        snapshot: &'a str,
    },
    SnapshotsList {
        instance: &'a str,
    },
    RestorePitr {
        source: &'a str,
        target: &'a str,
        time: Option<DateTime<Utc>>,
    },
    RestoreSnapshot {
        snapshot: &'a str,
        target: &'a str,
        class: Option<&'a str>,
    },
    Promote {
        instance: &'a str,
    },
}

impl<'a> Request<'a> {
    /// Reads the parameters `action` needs (see [`Action::params`]).
    fn parse(action: Action, p: &'a Params) -> Result<Self, ExecError> {
        Ok(match action {
            Action::RdsDescribe => Self::Describe {
                instance: p.opt_text("instance"),
                cluster: p.opt_text("cluster"),
            },
            Action::RdsFailoverCluster => Self::Failover {
                cluster: p.text("cluster")?,
                target: p.opt_text("target_instance"),
            },
            Action::RdsRebootFailover => Self::RebootFailover {
                instance: p.text("instance")?,
            },
            Action::RdsSnapshotCreate => Self::SnapshotCreate {
                instance: p.text("instance")?,
                snapshot: p.text("snapshot")?,
            },
            Action::RdsSnapshotsList => Self::SnapshotsList {
                instance: p.text("instance")?,
            },
            Action::RdsRestorePitr => Self::RestorePitr {
                source: p.text("source")?,
                target: p.text("target")?,
                time: p.timestamp_or_latest("restore_time")?,
            },
            Action::RdsRestoreSnapshot => Self::RestoreSnapshot {
                snapshot: p.text("snapshot")?,
                target: p.text("target")?,
                class: p.opt_text("instance_class"),
            },
            Action::RdsPromoteReplica => Self::Promote {
                instance: p.text("instance")?,
            },
            other => {
                return Err(ExecError::Invalid(format!(
                    "`{other}` is not an RDS action"
                )));
            }
        })
    }

    /// The exact SDK calls, in order, as shown to approvers.
    fn call_text(&self) -> String {
        self.calls()
            .iter()
            .map(Call::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn calls(&self) -> Vec<Call> {
        match *self {
            Self::Describe { instance, cluster } => describe_calls(instance, cluster),
            Self::Failover { cluster, target } => vec![
                Call::new("failover_db_cluster")
                    .text("db_cluster_identifier", Some(cluster))
                    .text("target_db_instance_identifier", target),
            ],
            Self::RebootFailover { instance } => vec![
                Call::new("reboot_db_instance")
                    .text("db_instance_identifier", Some(instance))
                    .raw("force_failover", true),
            ],
            Self::SnapshotCreate { instance, snapshot } => vec![
                Call::new("create_db_snapshot")
                    .text("db_instance_identifier", Some(instance))
                    .text("db_snapshot_identifier", Some(snapshot)),
            ],
            Self::SnapshotsList { instance } => {
                vec![
                    Call::new("describe_db_snapshots")
                        .text("db_instance_identifier", Some(instance)),
                ]
            }
            Self::RestorePitr {
                source,
                target,
                time,
            } => vec![pitr_call(source, target, time)],
            Self::RestoreSnapshot {
                snapshot,
                target,
                class,
            } => vec![
                Call::new("restore_db_instance_from_db_snapshot")
                    .text("db_snapshot_identifier", Some(snapshot))
                    .text("db_instance_identifier", Some(target))
                    .text("db_instance_class", class),
            ],
            Self::Promote { instance } => {
                vec![
                    Call::new("promote_read_replica")
                        .text("db_instance_identifier", Some(instance)),
                ]
            }
        }
    }
}

fn describe_calls(instance: Option<&str>, cluster: Option<&str>) -> Vec<Call> {
    let instances = match (instance, cluster) {
        (None, Some(c)) => {
            Call::new("describe_db_instances").raw("filters", format!("[db-cluster-id={c:?}]"))
        }
        _ => Call::new("describe_db_instances").text("db_instance_identifier", instance),
    };
    let (source, kind) = event_source(instance, cluster);
    let events = Call::new("describe_events")
        .text("source_identifier", source)
        .text("source_type", kind.as_ref().map(SourceType::as_str))
        .raw("duration", EVENT_WINDOW_MINUTES)
        .raw("max_records", EVENT_LIMIT);
    vec![
        instances,
        Call::new("describe_db_clusters").text("db_cluster_identifier", cluster),
        events,
    ]
}

fn pitr_call(source: &str, target: &str, time: Option<DateTime<Utc>>) -> Call {
    let call = Call::new("restore_db_instance_to_point_in_time")
        .text("source_db_instance_identifier", Some(source))
        .text("target_db_instance_identifier", Some(target));
    match time {
        Some(t) => call.text("restore_time", Some(&rfc3339(t))),
        None => call.raw("use_latest_restorable_time", true),
    }
}

/// Which events `rds-describe` reads: the cluster's if one is named, else the instance's.
fn event_source<'a>(
    instance: Option<&'a str>,
    cluster: Option<&'a str>,
) -> (Option<&'a str>, Option<SourceType>) {
    match (instance, cluster) {
        (_, Some(c)) => (Some(c), Some(SourceType::DbCluster)),
        (Some(i), None) => (Some(i), Some(SourceType::DbInstance)),
        (None, None) => (None, None),
    }
}

/// One SDK call rendered as `rds.op(arg=value, ...)`.
struct Call {
    op: &'static str,
    args: Vec<(&'static str, String)>,
}

impl Call {
    fn new(op: &'static str) -> Self {
        Self {
            op,
            args: Vec::new(),
        }
    }

    /// A string argument, quoted; skipped when absent.
    fn text(mut self, name: &'static str, value: Option<&str>) -> Self {
        if let Some(v) = value {
            self.args.push((name, format!("{v:?}")));
        }
        self
    }

    /// A literal argument (bool, number, list).
    fn raw(mut self, name: &'static str, value: impl fmt::Display) -> Self {
        self.args.push((name, value.to_string()));
        self
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "rds.{}({})", self.op, args.join(", "))
    }
}

// ---------------------------------------------------------------------------------------
// Previews: read-only assessment
// ---------------------------------------------------------------------------------------

/// What a preview found: state that will change and warnings.
#[derive(Default)]
struct Notes {
    changes: Vec<String>,
    warnings: Vec<String>,
}

impl Notes {
    fn change(&mut self, line: impl Into<String>) {
        self.changes.push(line.into());
    }

    fn warn(&mut self, line: impl Into<String>) {
        self.warnings.push(line.into());
    }

    fn warn_if(&mut self, cond: bool, line: impl Into<String>) {
        if cond {
            self.warn(line);
        }
    }
}

impl RdsExecutor {
    /// Reads current state for a preview. Only Describe* calls: never changes anything.
    async fn assess(&self, request: &Request<'_>) -> Result<Notes, ExecError> {
        match *request {
            Request::Describe { .. } | Request::SnapshotsList { .. } => Ok(Notes::default()),
            Request::Failover { cluster, target } => self.assess_failover(cluster, target).await,
            Request::RebootFailover { instance } => self.assess_reboot(instance).await,
            Request::SnapshotCreate { instance, snapshot } => {
                self.assess_snapshot_create(instance, snapshot).await
            }
            Request::RestorePitr {
                source,
                target,
                time,
            } => self.assess_pitr(source, target, time).await,
            Request::RestoreSnapshot {
                snapshot,
                target,
                class,
            } => self.assess_restore_snapshot(snapshot, target, class).await,
            Request::Promote { instance } => self.assess_promote(instance).await,
        }
    }

    async fn assess_failover(
        &self,
        cluster: &str,
        target: Option<&str>,
    ) -> Result<Notes, ExecError> {
        let c = self.cluster(cluster).await?;
        let writer = writer_of(&c);
        let readers = readers_of(&c);
        let mut notes = Notes::default();
        let to = target.map_or_else(
            || "a reader chosen by RDS (promotion tier)".to_owned(),
            |t| format!("`{t}`"),
        );
        notes.change(format!(
            "cluster `{cluster}` writer: `{}` -> {to}",
            writer.unwrap_or("(none)")
        ));
        notes.warn("failover interrupts connections to the cluster for up to ~60 s; applications must reconnect");
        notes.warn_if(
            readers.is_empty(),
            format!("cluster `{cluster}` has no reader to fail over to"),
        );
        if let Some(t) = target {
            notes.warn_if(writer == Some(t), format!("`{t}` is already the writer"));
            notes.warn_if(
                writer != Some(t) && !readers.contains(&t),
                format!("`{t}` is not a member of cluster `{cluster}`: the call will fail"),
            );
        }
        warn_status(&mut notes, "cluster", cluster, c.status());
        Ok(notes)
    }

    async fn assess_reboot(&self, instance: &str) -> Result<Notes, ExecError> {
        let i = self.instance(instance).await?;
        let mut notes = Notes::default();
        let standby = i
            .secondary_availability_zone()
            .map(|az| format!(" in {az}"))
            .unwrap_or_default();
        notes.change(format!(
            "instance `{instance}` reboots; the primary moves from {} to its standby{standby}",
            i.availability_zone().unwrap_or("its current AZ")
        ));
        notes.warn(
            "reboot with failover interrupts connections for ~60 s; applications must reconnect",
        );
        notes.warn_if(
            i.multi_az() != Some(true),
            format!("`{instance}` is not Multi-AZ: RDS refuses ForceFailover (InvalidParameterCombination)"),
        );
        if let Some(c) = i.db_cluster_identifier() {
            notes.warn(format!(
                "`{instance}` belongs to Aurora cluster `{c}`: use rds-failover-cluster instead"
            ));
        }
        warn_status(&mut notes, "instance", instance, i.db_instance_status());
        Ok(notes)
    }

    async fn assess_snapshot_create(
        &self,
        instance: &str,
        snapshot: &str,
    ) -> Result<Notes, ExecError> {
        let i = self.instance(instance).await?;
        let existing = self.snapshot_if_exists(snapshot).await?;
        let mut notes = Notes::default();
        notes.change(format!(
            "new manual snapshot `{snapshot}` of instance `{instance}` ({})",
            describe_instance(&i)
        ));
        notes.warn_if(
            i.multi_az() != Some(true),
            "single-AZ instance: I/O is suspended briefly while the snapshot starts",
        );
        notes.warn_if(
            existing.is_some(),
            format!(
                "snapshot `{snapshot}` already exists: the call will fail (DBSnapshotAlreadyExists)"
            ),
        );
        if let Some(c) = i.db_cluster_identifier() {
            notes.warn(format!(
                "`{instance}` belongs to Aurora cluster `{c}`: Aurora needs a cluster snapshot"
            ));
        }
        Ok(notes)
    }

    async fn assess_pitr(
        &self,
        source: &str,
        target: &str,
        time: Option<DateTime<Utc>>,
    ) -> Result<Notes, ExecError> {
        let src = self.instance(source).await?;
        let target_exists = self.instance_if_exists(target).await?.is_some();
        let latest = src.latest_restorable_time().and_then(to_chrono);
        let latest_text = latest.map_or_else(|| "unknown".to_owned(), rfc3339);
        let mut notes = Notes::default();
        notes.change(format!(
            "source `{source}` exists ({}); latest restorable time {latest_text}",
            describe_instance(&src)
        ));
        let when = time.map_or_else(
            || format!("the latest restorable time (now {latest_text})"),
            rfc3339,
        );
        notes.change(format!(
            "new instance `{target}` restored from `{source}` as of {when}"
        ));
        notes.warn(new_instance_warning(target));
        notes.warn("the new instance gets the default security group and DB parameter group: check them before use");
        let too_late = matches!((time, latest), (Some(t), Some(l)) if t > l);
        notes.warn_if(
            too_late,
            format!(
                "restore time is after the latest restorable time {latest_text}: the call will fail"
            ),
        );
        notes.warn_if(
            src.backup_retention_period() == Some(0),
            format!(
                "`{source}` has automated backups disabled: point-in-time restore is impossible"
            ),
        );
        notes.warn_if(target_exists, already_exists_warning(target));
        if let Some(c) = src.db_cluster_identifier() {
            notes.warn(format!(
                "`{source}` belongs to Aurora cluster `{c}`: Aurora restores whole clusters"
            ));
        }
        Ok(notes)
    }

    async fn assess_restore_snapshot(
        &self,
        snapshot: &str,
        target: &str,
        class: Option<&str>,
    ) -> Result<Notes, ExecError> {
        let snap = self.snapshot(snapshot).await?;
        let target_exists = self.instance_if_exists(target).await?.is_some();
        let status = snap.status().unwrap_or("unknown");
        let mut notes = Notes::default();
        notes.change(format!(
            "snapshot `{snapshot}`: {}",
            describe_snapshot(&snap)
        ));
        let class = class.map_or_else(
            || "the snapshot's original class".to_owned(),
            |c| format!("class {c}"),
        );
        notes.change(format!(
            "new instance `{target}` ({class}) restored from snapshot `{snapshot}`"
        ));
        notes.warn(new_instance_warning(target));
        notes.warn_if(
            status != "available",
            format!(
                "snapshot `{snapshot}` is `{status}`, not available: the restore fails until it is"
            ),
        );
        notes.warn_if(target_exists, already_exists_warning(target));
        Ok(notes)
    }

    async fn assess_promote(&self, instance: &str) -> Result<Notes, ExecError> {
        let i = self.instance(instance).await?;
        let mut notes = Notes::default();
        match i.read_replica_source_db_instance_identifier() {
            Some(src) => notes.change(format!(
                "instance `{instance}` stops replicating from `{src}` and becomes a standalone writable instance"
            )),
            None => notes.warn(format!("`{instance}` is not a read replica: the call will fail")),
        }
        notes.warn("promotion cannot be undone: the instance never becomes a replica again");
        notes.warn(format!(
            "`{instance}` reboots during promotion; repoint writers to it afterwards"
        ));
        warn_status(&mut notes, "instance", instance, i.db_instance_status());
        Ok(notes)
    }
}

fn new_instance_warning(target: &str) -> String {
    format!("restore creates a NEW instance `{target}`; repoint the application afterwards")
}

fn already_exists_warning(target: &str) -> String {
    format!("instance `{target}` already exists: the call will fail (DBInstanceAlreadyExists)")
}

fn warn_status(notes: &mut Notes, kind: &str, id: &str, status: Option<&str>) {
    let status = status.unwrap_or("unknown");
    notes.warn_if(
        status != "available",
        format!("{kind} `{id}` is `{status}`, not available: the call may be refused"),
    );
}

// ---------------------------------------------------------------------------------------
// Reads used by previews
// ---------------------------------------------------------------------------------------

impl RdsExecutor {
    async fn instance(&self, id: &str) -> Result<DbInstance, ExecError> {
        let out = self
            .client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(sdk_error)?;
        first(out.db_instances(), "DBInstanceNotFound", id)
    }

    async fn instance_if_exists(&self, id: &str) -> Result<Option<DbInstance>, ExecError> {
        match self
            .client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_instances().first().cloned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn cluster(&self, id: &str) -> Result<DbCluster, ExecError> {
        let out = self
            .client
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await
            .map_err(sdk_error)?;
        first(out.db_clusters(), "DBClusterNotFoundFault", id)
    }

    async fn snapshot(&self, id: &str) -> Result<DbSnapshot, ExecError> {
        let out = self
            .client
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .send()
            .await
            .map_err(sdk_error)?;
        first(out.db_snapshots(), "DBSnapshotNotFound", id)
    }

    async fn snapshot_if_exists(&self, id: &str) -> Result<Option<DbSnapshot>, ExecError> {
        match self
            .client
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_snapshots().first().cloned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_snapshot_not_found_fault()) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }
}

/// The single item a Describe* by identifier returns (an empty answer is reported as the
/// API's own not-found code).
fn first<T: Clone>(items: &[T], code: &str, id: &str) -> Result<T, ExecError> {
    items.first().cloned().ok_or_else(|| ExecError::Api {
        code: code.to_owned(),
        message: format!("`{id}` was not found"),
        request_id: None,
    })
}

// ---------------------------------------------------------------------------------------
// Execution: exactly one SDK call per action (describe: one per resource kind)
// ---------------------------------------------------------------------------------------

impl RdsExecutor {
    async fn run(&self, request: &Request<'_>) -> Result<ExecOutput, ExecError> {
        match *request {
            Request::Describe { instance, cluster } => self.run_describe(instance, cluster).await,
            Request::Failover { cluster, target } => self.run_failover(cluster, target).await,
            Request::RebootFailover { instance } => self.run_reboot(instance).await,
            Request::SnapshotCreate { instance, snapshot } => {
                self.run_snapshot_create(instance, snapshot).await
            }
            Request::SnapshotsList { instance } => self.run_snapshots_list(instance).await,
            Request::RestorePitr {
                source,
                target,
                time,
            } => self.run_pitr(source, target, time).await,
            Request::RestoreSnapshot {
                snapshot,
                target,
                class,
            } => self.run_restore_snapshot(snapshot, target, class).await,
            Request::Promote { instance } => self.run_promote(instance).await,
        }
    }

    async fn run_describe(
        &self,
        instance: Option<&str>,
        cluster: Option<&str>,
    ) -> Result<ExecOutput, ExecError> {
        let mut instances = self
            .client
            .describe_db_instances()
            .set_db_instance_identifier(instance.map(str::to_owned));
        if let (None, Some(c)) = (instance, cluster) {
            instances =
                instances.filters(Filter::builder().name("db-cluster-id").values(c).build());
        }
        let instances = instances.send().await.map_err(sdk_error)?;
        let clusters = self
            .client
            .describe_db_clusters()
            .set_db_cluster_identifier(cluster.map(str::to_owned));
        let clusters = clusters.send().await.map_err(sdk_error)?;
        let (source, kind) = event_source(instance, cluster);
        let events = self
            .client
            .describe_events()
            .set_source_identifier(source.map(str::to_owned));
        let events = events
            .set_source_type(kind)
            .duration(EVENT_WINDOW_MINUTES)
            .max_records(EVENT_LIMIT);
        let events = events.send().await.map_err(sdk_error)?;
        let clusters = relevant_clusters(clusters.db_clusters(), instance, cluster);
        let mut details: Vec<String> = clusters.iter().map(cluster_line).collect();
        details.extend(
            instances
                .db_instances()
                .iter()
                .map(|i| instance_line(i, &clusters)),
        );
        details.extend(events.events().iter().map(event_line));
        let summary = format!(
            "{} instance(s), {} cluster(s), {} event(s) in the last {EVENT_WINDOW_MINUTES} min",
            instances.db_instances().len(),
            clusters.len(),
            events.events().len()
        );
        Ok(ExecOutput {
            summary,
            details,
            request_id: owned(instances.request_id()),
        })
    }

    async fn run_failover(
        &self,
        cluster: &str,
        target: Option<&str>,
    ) -> Result<ExecOutput, ExecError> {
        let call = self
            .client
            .failover_db_cluster()
            .db_cluster_identifier(cluster);
        let call = call.set_target_db_instance_identifier(target.map(str::to_owned));
        let out = call
            .customize()
            .config_override(no_retry())
            .send()
            .await
            .map_err(sdk_error)?;
        let c = out.db_cluster();
        let summary = format!(
            "failover of cluster `{cluster}` started (status {}); target {}",
            c.and_then(DbCluster::status).unwrap_or("unknown"),
            target.map_or_else(|| "chosen by RDS".to_owned(), |t| format!("`{t}`"))
        );
        let details = c.map(|c| vec![cluster_line(c)]).unwrap_or_default();
        Ok(ExecOutput {
            summary,
            details,
            request_id: owned(out.request_id()),
        })
    }

    async fn run_reboot(&self, instance: &str) -> Result<ExecOutput, ExecError> {
        let call = self
            .client
            .reboot_db_instance()
            .db_instance_identifier(instance)
            .force_failover(true);
        let out = call
            .customize()
            .config_override(no_retry())
            .send()
            .await
            .map_err(sdk_error)?;
        let summary = format!(
            "reboot with failover of instance `{instance}` started (status {})",
            out.db_instance()
                .and_then(DbInstance::db_instance_status)
                .unwrap_or("unknown")
        );
        Ok(instance_output(
            summary,
            out.db_instance(),
            out.request_id(),
        ))
    }

    async fn run_snapshot_create(
        &self,
        instance: &str,
        snapshot: &str,
    ) -> Result<ExecOutput, ExecError> {
        let call = self
            .client
            .create_db_snapshot()
            .db_instance_identifier(instance)
            .db_snapshot_identifier(snapshot);
        let out = call
            .customize()
            .config_override(no_retry())
            .send()
            .await
            .map_err(sdk_error)?;
        let snap = out.db_snapshot();
        let summary = format!(
            "snapshot `{snapshot}` of instance `{instance}` started (status {})",
            snap.and_then(DbSnapshot::status).unwrap_or("unknown")
        );
        let details = snap.map(|s| vec![snapshot_line(s)]).unwrap_or_default();
        Ok(ExecOutput {
            summary,
            details,
            request_id: owned(out.request_id()),
        })
    }

    async fn run_snapshots_list(&self, instance: &str) -> Result<ExecOutput, ExecError> {
        let out = self
            .client
            .describe_db_snapshots()
            .db_instance_identifier(instance)
            .send()
            .await
            .map_err(sdk_error)?;
        let mut snaps: Vec<&DbSnapshot> = out.db_snapshots().iter().collect();
        snaps.sort_by_key(|s| std::cmp::Reverse(s.snapshot_create_time().map(AwsTime::secs)));
        let summary = format!("{} snapshot(s) of instance `{instance}`", snaps.len());
        let details = snaps.into_iter().map(snapshot_line).collect();
        Ok(ExecOutput {
            summary,
            details,
            request_id: owned(out.request_id()),
        })
    }

    async fn run_pitr(
        &self,
        source: &str,
        target: &str,
        time: Option<DateTime<Utc>>,
    ) -> Result<ExecOutput, ExecError> {
        let call = self.client.restore_db_instance_to_point_in_time();
        let call = call
            .source_db_instance_identifier(source)
            .target_db_instance_identifier(target);
        let call = match time {
            Some(t) => call.restore_time(to_aws(t)),
            None => call.use_latest_restorable_time(true),
        };
        let out = call
            .customize()
            .config_override(no_retry())
            .send()
            .await
            .map_err(sdk_error)?;
        let when = time.map_or_else(|| "the latest restorable time".to_owned(), rfc3339);
        let summary =
            format!("restore of `{source}` as of {when} into NEW instance `{target}` started");
        Ok(instance_output(
            summary,
            out.db_instance(),
            out.request_id(),
        ))
    }

    async fn run_restore_snapshot(
        &self,
        snapshot: &str,
        target: &str,
        class: Option<&str>,
    ) -> Result<ExecOutput, ExecError> {
        let call = self.client.restore_db_instance_from_db_snapshot();
        let call = call
            .db_snapshot_identifier(snapshot)
            .db_instance_identifier(target);
        let call = call.set_db_instance_class(class.map(str::to_owned));
        let out = call
            .customize()
            .config_override(no_retry())
            .send()
            .await
            .map_err(sdk_error)?;
        let summary =
            format!("restore of snapshot `{snapshot}` into NEW instance `{target}` started");
        Ok(instance_output(
            summary,
            out.db_instance(),
            out.request_id(),
        ))
    }

    async fn run_promote(&self, instance: &str) -> Result<ExecOutput, ExecError> {
        let call = self
            .client
            .promote_read_replica()
            .db_instance_identifier(instance);
        let out = call
            .customize()
            .config_override(no_retry())
            .send()
            .await
            .map_err(sdk_error)?;
        let summary =
            format!("promotion of read replica `{instance}` to a standalone instance started");
        Ok(instance_output(
            summary,
            out.db_instance(),
            out.request_id(),
        ))
    }
}

fn instance_output(
    summary: String,
    instance: Option<&DbInstance>,
    request_id: Option<&str>,
) -> ExecOutput {
    let details = instance
        .map(|i| vec![instance_line(i, &[])])
        .unwrap_or_default();
    ExecOutput {
        summary,
        details,
        request_id: owned(request_id),
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

// ---------------------------------------------------------------------------------------
// Summaries (one line per resource)
// ---------------------------------------------------------------------------------------

/// Clusters worth showing: all when none was named, else those the request is about.
fn relevant_clusters(
    all: &[DbCluster],
    instance: Option<&str>,
    cluster: Option<&str>,
) -> Vec<DbCluster> {
    let keep = |c: &DbCluster| match (instance, cluster) {
        (Some(i), None) => members(c).any(|(id, _)| id == i),
        _ => true,
    };
    all.iter().filter(|c| keep(c)).cloned().collect()
}

fn members(c: &DbCluster) -> impl Iterator<Item = (&str, bool)> {
    c.db_cluster_members().iter().filter_map(|m| {
        m.db_instance_identifier()
            .map(|id| (id, m.is_cluster_writer().unwrap_or(false)))
    })
}

fn writer_of(c: &DbCluster) -> Option<&str> {
    members(c).find(|(_, w)| *w).map(|(id, _)| id)
}

fn readers_of(c: &DbCluster) -> Vec<&str> {
    members(c).filter(|(_, w)| !*w).map(|(id, _)| id).collect()
}

fn cluster_line(c: &DbCluster) -> String {
    let readers = readers_of(c);
    format!(
        "cluster {}: {}, {}, writer {}, readers {}",
        c.db_cluster_identifier().unwrap_or("?"),
        c.status().unwrap_or("unknown"),
        c.engine().unwrap_or("?"),
        writer_of(c).unwrap_or("(none)"),
        if readers.is_empty() {
            "(none)".to_owned()
        } else {
            readers.join(", ")
        }
    )
}

/// `instance id: status, engine, class, role, AZ` — the role from cluster membership when
/// `clusters` knows it, else from the instance's own replication fields.
fn instance_line(i: &DbInstance, clusters: &[DbCluster]) -> String {
    format!(
        "instance {}: {}, {}, {}, {}",
        i.db_instance_identifier().unwrap_or("?"),
        describe_instance(i),
        i.db_instance_class().unwrap_or("?"),
        role(i, clusters),
        i.availability_zone().unwrap_or("AZ unknown")
    )
}

fn describe_instance(i: &DbInstance) -> String {
    format!(
        "{}, {}",
        i.db_instance_status().unwrap_or("unknown"),
        i.engine().unwrap_or("?")
    )
}

fn role(i: &DbInstance, clusters: &[DbCluster]) -> String {
    let id = i.db_instance_identifier().unwrap_or_default();
    let membership = clusters.iter().find_map(|c| {
        members(c)
            .find(|(m, _)| *m == id)
            .map(|(_, w)| (w, c.db_cluster_identifier().unwrap_or("?")))
    });
    let multi_az = if i.multi_az() == Some(true) {
        " (Multi-AZ)"
    } else {
        ""
    };
    match (
        membership,
        i.db_cluster_identifier(),
        i.read_replica_source_db_instance_identifier(),
    ) {
        (Some((true, c)), _, _) => format!("writer of cluster {c}"),
        (Some((false, c)), _, _) => format!("reader of cluster {c}"),
        (None, Some(c), _) => format!("member of cluster {c}"),
        (None, None, Some(src)) => format!("read replica of {src}"),
        (None, None, None) if !i.read_replica_db_instance_identifiers().is_empty() => {
            format!(
                "primary{multi_az}, replicas {}",
                i.read_replica_db_instance_identifiers().join(", ")
            )
        }
        _ => format!("standalone{multi_az}"),
    }
}

fn snapshot_line(s: &DbSnapshot) -> String {
    format!(
        "snapshot {}: {}",
        s.db_snapshot_identifier().unwrap_or("?"),
        describe_snapshot(s)
    )
}

fn describe_snapshot(s: &DbSnapshot) -> String {
    let taken = s
        .snapshot_create_time()
        .and_then(to_chrono)
        .map_or_else(|| "time unknown".to_owned(), rfc3339);
    format!(
        "{}, {}, of instance {}, taken {taken}, {}% done",
        s.status().unwrap_or("unknown"),
        s.snapshot_type().unwrap_or("?"),
        s.db_instance_identifier().unwrap_or("?"),
        s.percent_progress().unwrap_or(0)
    )
}

fn event_line(e: &Event) -> String {
    let at = e
        .date()
        .and_then(to_chrono)
        .map_or_else(|| "?".to_owned(), rfc3339);
    format!(
        "event {at} {} ({}): {}",
        e.source_identifier().unwrap_or("?"),
        e.source_type().map_or("?", SourceType::as_str),
        e.message().unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------
// Time and errors
// ---------------------------------------------------------------------------------------

fn to_aws(t: DateTime<Utc>) -> AwsTime {
    AwsTime::from_secs_and_nanos(t.timestamp(), t.timestamp_subsec_nanos())
}

fn to_chrono(t: &AwsTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Maps an SDK failure: an API answer becomes [`ExecError::Api`] (code, message, request
/// id); no answer (dispatch, timeout, IO, unreadable response) becomes
/// [`ExecError::Transport`]. Messages are redacted.
fn sdk_error<E>(err: SdkError<E>) -> ExecError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let request_id = owned(err.request_id());
    match &err {
        SdkError::ServiceError(service) => {
            let code = service
                .err()
                .code()
                .map_or_else(|| format!("HTTP {}", service.raw().status()), str::to_owned);
            ExecError::Api {
                code,
                message: redact(service.err().message().unwrap_or_default()),
                request_id,
            }
        }
        SdkError::ConstructionFailure(_) => ExecError::Transport(format!(
            "request not sent: {}",
            redact(&DisplayErrorContext(&err).to_string())
        )),
        _ => ExecError::Transport(redact(&DisplayErrorContext(&err).to_string())),
    }
}

/// Removes anything that looks like a credential: access key ids, signatures, tokens.
fn redact(text: &str) -> String {
    static PATTERNS: LazyLock<[Regex; 2]> = LazyLock::new(|| {
        [
            Regex::new(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b").expect("valid regex"),
            Regex::new(r"(?i)\b(signature|credential|x-amz-security-token|secret[_-]?access[_-]?key|session[_-]?token)([=:]\s*)[^\s,&]+")
                .expect("valid regex"),
        ]
    });
    let text = PATTERNS[0].replace_all(text, "[redacted]");
    PATTERNS[1]
        .replace_all(&text, "$1$2[redacted]")
        .into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::commands::ParamValue;

    fn params(pairs: &[(&str, ParamValue)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn text(v: &str) -> ParamValue {
        ParamValue::Text(v.to_owned())
    }

    #[test]
    fn failover_call_text_names_every_argument() {
        let p = params(&[
            ("cluster", text("payments-db")),
            ("target_instance", text("payments-db-2")),
        ]);
        let r = Request::parse(Action::RdsFailoverCluster, &p).unwrap();
        assert_eq!(
            r.call_text(),
            r#"rds.failover_db_cluster(db_cluster_identifier="payments-db", target_db_instance_identifier="payments-db-2")"#
        );
    }

    #[test]
    fn pitr_call_text_uses_latest_or_time() {
        let latest = params(&[
            ("source", text("a")),
            ("target", text("b")),
            ("restore_time", ParamValue::Latest),
        ]);
        let r = Request::parse(Action::RdsRestorePitr, &latest).unwrap();
        assert!(
            r.call_text().ends_with("use_latest_restorable_time=true)"),
            "{}",
            r.call_text()
        );
        let t = DateTime::parse_from_rfc3339("2026-11-23T09:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = params(&[
            ("source", text("a")),
            ("target", text("b")),
            ("restore_time", ParamValue::Timestamp(t)),
        ]);
        let r = Request::parse(Action::RdsRestorePitr, &at).unwrap();
        assert!(
            r.call_text()
                .ends_with(r#"restore_time="2026-11-23T09:30:00Z")"#),
            "{}",
            r.call_text()
        );
    }

    #[test]
    fn describe_call_text_lists_three_calls() {
        let none = Params::default();
        let r = Request::parse(Action::RdsDescribe, &none).unwrap();
        assert_eq!(
            r.call_text(),
            "rds.describe_db_instances(); rds.describe_db_clusters(); rds.describe_events(duration=60, max_records=20)"
        );
    }

    #[test]
    fn missing_or_foreign_params_are_invalid() {
        let err = Request::parse(Action::RdsRebootFailover, &Params::default()).unwrap_err();
        assert!(matches!(err, ExecError::Invalid(_)));
        let err = Request::parse(Action::K8sPods, &Params::default()).unwrap_err();
        assert!(matches!(err, ExecError::Invalid(_)));
    }

    #[test]
    fn redact_hides_keys_and_signatures() {
        let out = redact("key AKIAABCDEFGHIJKLMNOP Signature=abc123, X-Amz-Security-Token=tok&x=1");
        assert!(
            !out.contains("AKIAABCDEFGHIJKLMNOP")
                && !out.contains("abc123")
                && !out.contains("tok"),
            "{out}"
        );
    }
}
