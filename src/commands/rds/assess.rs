//! Previews: the read-only checks made before a command is approved (current writer,
//! source status, latest restorable time, snapshot status...), as the changes and warnings
//! the approval message shows. Only Describe* calls: a preview never changes anything.

use aws_sdk_rds::types::{DbCluster, DbInstance, DbSnapshot};
use chrono::{DateTime, Utc};

use super::RdsExecutor;
use super::request::Request;
use super::sdk::{rfc3339, sdk_error, to_chrono};
use super::summary::{describe_instance, describe_snapshot, readers_of, writer_of};
use crate::commands::ExecError;

/// What a preview found: state that will change and warnings.
#[derive(Default)]
pub(super) struct Notes {
    pub(super) changes: Vec<String>,
    pub(super) warnings: Vec<String>,
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
    pub(super) async fn assess(&self, request: &Request<'_>) -> Result<Notes, ExecError> {
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
