//! Executions: exactly one SDK call per action (`rds-describe`: one per resource kind),
//! mutating calls with SDK retries disabled so that an approved command runs at most once.

use aws_sdk_rds::operation::RequestId;
use aws_sdk_rds::primitives::DateTime as AwsTime;
use aws_sdk_rds::types::{DbCluster, DbInstance, DbSnapshot, Filter};
use chrono::{DateTime, Utc};

use super::request::{Request, event_source};
use super::sdk::{owned, rfc3339, sdk_error, to_aws};
use super::summary::{cluster_line, event_line, instance_line, relevant_clusters, snapshot_line};
use super::{EVENT_LIMIT, EVENT_WINDOW_MINUTES, RdsExecutor, no_retry};
use crate::commands::{ExecError, ExecOutput};

impl RdsExecutor {
    pub(super) async fn run(&self, request: &Request<'_>) -> Result<ExecOutput, ExecError> {
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
