//! What RDS answered, in words: one line per cluster, instance, snapshot or event, for
//! execution results and preview notes (an instance's role comes from cluster membership
//! when known, else from its own replication fields).

use aws_sdk_rds::types::{DbCluster, DbInstance, DbSnapshot, Event, SourceType};

use super::sdk::{rfc3339, to_chrono};

/// Clusters worth showing: all when none was named, else those the request is about.
pub(super) fn relevant_clusters(
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

pub(super) fn writer_of(c: &DbCluster) -> Option<&str> {
    members(c).find(|(_, w)| *w).map(|(id, _)| id)
}

pub(super) fn readers_of(c: &DbCluster) -> Vec<&str> {
    members(c).filter(|(_, w)| !*w).map(|(id, _)| id).collect()
}

pub(super) fn cluster_line(c: &DbCluster) -> String {
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
pub(super) fn instance_line(i: &DbInstance, clusters: &[DbCluster]) -> String {
    format!(
        "instance {}: {}, {}, {}, {}",
        i.db_instance_identifier().unwrap_or("?"),
        describe_instance(i),
        i.db_instance_class().unwrap_or("?"),
        role(i, clusters),
        i.availability_zone().unwrap_or("AZ unknown")
    )
}

pub(super) fn describe_instance(i: &DbInstance) -> String {
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

pub(super) fn snapshot_line(s: &DbSnapshot) -> String {
    format!(
        "snapshot {}: {}",
        s.db_snapshot_identifier().unwrap_or("?"),
        describe_snapshot(s)
    )
}

pub(super) fn describe_snapshot(s: &DbSnapshot) -> String {
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

pub(super) fn event_line(e: &Event) -> String {
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
