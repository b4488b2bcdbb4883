//! The real `RdsExecutor` against moto: every `rds-*` action is previewed and executed, and
//! moto's state (or, where moto only pretends, the request Klaxon sent) is checked after.
//!
//! Fixtures, created through the SDK in each test's own moto server: Aurora cluster
//! `payments-db` (writer `payments-db-1`, reader `payments-db-2`), Multi-AZ instance
//! `orders-db` and its read replica `orders-db-replica`.

#[path = "support/moto.rs"]
mod moto;

use std::net::{Ipv4Addr, TcpListener};

use aws_sdk_rds::Client;
use chrono::{DurationRound, TimeDelta, Utc};
use klaxon::commands::rds::RdsExecutor;
use klaxon::commands::{Action, ExecError, Executor, ParamValue, Params};
use moto::{MotoServer, Recorder, field};

const CLUSTER: &str = "payments-db";
const WRITER: &str = "payments-db-1";
const READER: &str = "payments-db-2";
const STANDALONE: &str = "orders-db";
const REPLICA: &str = "orders-db-replica";

/// A moto server with the fixtures, an admin client for setup and assertions, and the
/// executor under test on a client whose requests are recorded.
struct World {
    _moto: MotoServer,
    admin: Client,
    exec: RdsExecutor,
    sent: Recorder,
}

async fn world() -> World {
    let moto = moto::moto().await;
    let admin = moto.rds_client();
    create_fixtures(&admin).await;
    let (client, sent) = moto.recording_rds_client();
    World {
        _moto: moto,
        admin,
        exec: RdsExecutor::new(client),
        sent,
    }
}

async fn create_fixtures(admin: &Client) {
    admin
        .create_db_cluster()
        .db_cluster_identifier(CLUSTER)
        .engine("aurora-postgresql")
        .master_username("klaxon")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .expect("create cluster");
    for id in [WRITER, READER] {
        admin
            .create_db_instance()
            .db_instance_identifier(id)
            .db_instance_class("db.r6g.large")
            .engine("aurora-postgresql")
            .db_cluster_identifier(CLUSTER)
            .send()
            .await
            .expect("create cluster instance");
    }
    admin
        .create_db_instance()
        .db_instance_identifier(STANDALONE)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .master_username("klaxon")
        .master_user_password("not-a-secret-1")
        .allocated_storage(20)
        .multi_az(true)
        .backup_retention_period(7)
        .send()
        .await
        .expect("create standalone instance");
    admin
        .create_db_instance_read_replica()
        .db_instance_identifier(REPLICA)
        .source_db_instance_identifier(STANDALONE)
        .multi_az(false)
        .send()
        .await
        .expect("create read replica");
}

fn params(pairs: &[(&str, &str)]) -> Params {
    let mut p = Params::default();
    for (k, v) in pairs {
        p.0.insert((*k).to_owned(), ParamValue::Text((*v).to_owned()));
    }
    p
}

async fn writer(admin: &Client) -> String {
    let out = admin
        .describe_db_clusters()
        .db_cluster_identifier(CLUSTER)
        .send()
        .await
        .unwrap();
    let members = out.db_clusters()[0].db_cluster_members();
    let w = members.iter().find(|m| m.is_cluster_writer() == Some(true));
    w.and_then(|m| m.db_instance_identifier())
        .unwrap()
        .to_owned()
}

async fn instance_exists(admin: &Client, id: &str) -> bool {
    let out = admin
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await;
    out.is_ok_and(|o| !o.db_instances().is_empty())
}

/// Manual snapshots of `instance` (moto also keeps an automated one per instance).
async fn snapshot_ids(admin: &Client, instance: &str) -> Vec<String> {
    let out = admin
        .describe_db_snapshots()
        .db_instance_identifier(instance)
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    out.db_snapshots()
        .iter()
        .filter_map(|s| s.db_snapshot_identifier().map(str::to_owned))
        .collect()
}

async fn create_snapshot(admin: &Client, instance: &str, snapshot: &str) {
    admin
        .create_db_snapshot()
        .db_instance_identifier(instance)
        .db_snapshot_identifier(snapshot)
        .send()
        .await
        .expect("create snapshot");
}

/// Everything a command could change, in a comparable form.
async fn state(admin: &Client) -> Vec<String> {
    let mut lines = Vec::new();
    let instances = admin.describe_db_instances().send().await.unwrap();
    for i in instances.db_instances() {
        lines.push(format!(
            "instance {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            i.db_instance_identifier(),
            i.db_instance_status(),
            i.db_instance_class(),
            i.db_cluster_identifier(),
            i.read_replica_source_db_instance_identifier(),
            i.availability_zone(),
            i.multi_az()
        ));
    }
    let clusters = admin.describe_db_clusters().send().await.unwrap();
    for c in clusters.db_clusters() {
        lines.push(format!(
            "cluster {:?} {:?} {:?}",
            c.db_cluster_identifier(),
            c.status(),
            c.db_cluster_members()
        ));
    }
    let snapshots = admin.describe_db_snapshots().send().await.unwrap();
    for s in snapshots.db_snapshots() {
        lines.push(format!(
            "snapshot {:?} {:?} {:?}",
            s.db_snapshot_identifier(),
            s.status(),
            s.db_instance_identifier()
        ));
    }
    lines.sort();
    lines
}

fn assert_api_error(err: ExecError, expected_code: &str) {
    match err {
        ExecError::Api {
            code, request_id, ..
        } => {
            assert_eq!(code, expected_code);
            assert!(request_id.is_some(), "moto sends x-amzn-requestid");
        }
        other => panic!("expected Api {expected_code}, got {other:?}"),
    }
}

#[tokio::test]
async fn describe_lists_clusters_instances_roles_and_events() {
    let w = world().await;
    let out = w
        .exec
        .execute(Action::RdsDescribe, &Params::default())
        .await
        .unwrap();
    assert!(
        out.summary.starts_with("4 instance(s), 1 cluster(s), "),
        "{}",
        out.summary
    );
    let text = out.details.join("\n");
    for expected in [
        "cluster payments-db: available, aurora-postgresql, writer payments-db-1, readers payments-db-2",
        "instance payments-db-1: available, aurora-postgresql, db.r6g.large, writer of cluster payments-db, us-east-1",
        "instance payments-db-2: available, aurora-postgresql, db.r6g.large, reader of cluster payments-db, us-east-1",
        "instance orders-db: available, postgres, db.t3.micro, primary (Multi-AZ), replicas orders-db-replica, us-east-1",
        "instance orders-db-replica: available, postgres, db.t3.micro, read replica of orders-db, us-east-1",
        "event ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(out.request_id.is_some());
    assert_eq!(
        w.sent.actions(),
        [
            "DescribeDBInstances",
            "DescribeDBClusters",
            "DescribeEvents"
        ]
    );
}

#[tokio::test]
async fn describe_filters_by_cluster_and_by_instance() {
    let w = world().await;
    let by_cluster = w
        .exec
        .execute(Action::RdsDescribe, &params(&[("cluster", CLUSTER)]))
        .await
        .unwrap();
    assert!(
        by_cluster
            .summary
            .starts_with("2 instance(s), 1 cluster(s)"),
        "{}",
        by_cluster.summary
    );
    assert!(
        !by_cluster
            .details
            .iter()
            .any(|l| l.starts_with("instance orders-db"))
    );
    let filters = w.sent.last("DescribeDBInstances").unwrap();
    assert_eq!(
        field(&filters, "Filters.Filter.1.Name"),
        Some("db-cluster-id")
    );

    let by_instance = w
        .exec
        .execute(Action::RdsDescribe, &params(&[("instance", READER)]))
        .await
        .unwrap();
    assert!(
        by_instance
            .summary
            .starts_with("1 instance(s), 1 cluster(s)"),
        "{}",
        by_instance.summary
    );
    assert!(
        by_instance
            .details
            .iter()
            .any(|l| l.contains("reader of cluster payments-db"))
    );
    let events = w.sent.last("DescribeEvents").unwrap();
    assert_eq!(field(&events, "SourceIdentifier"), Some(READER));
    assert_eq!(field(&events, "SourceType"), Some("db-instance"));
    assert_eq!(field(&events, "Duration"), Some("60"));
    assert_eq!(field(&events, "MaxRecords"), Some("20"));
}

#[tokio::test]
async fn failover_moves_the_writer_to_the_target() {
    let w = world().await;
    let p = params(&[("cluster", CLUSTER), ("target_instance", READER)]);
    let preview = w
        .exec
        .preview(Action::RdsFailoverCluster, &p)
        .await
        .unwrap();
    assert_eq!(
        preview.call,
        r#"rds.failover_db_cluster(db_cluster_identifier="payments-db", target_db_instance_identifier="payments-db-2")"#
    );
    assert_eq!(
        preview.changes,
        ["cluster `payments-db` writer: `payments-db-1` -> `payments-db-2`"]
    );
    assert!(preview.warnings.iter().any(|w| w.contains("~60 s")));
    assert_eq!(writer(&w.admin).await, WRITER, "preview changed nothing");

    let out = w
        .exec
        .execute(Action::RdsFailoverCluster, &p)
        .await
        .unwrap();
    assert_eq!(writer(&w.admin).await, READER);
    assert!(
        out.summary
            .starts_with("failover of cluster `payments-db` started"),
        "{}",
        out.summary
    );
    assert!(out.request_id.is_some());
}

#[tokio::test]
async fn failover_of_an_unknown_cluster_is_an_api_error() {
    let w = world().await;
    let p = params(&[("cluster", "no-such-cluster")]);
    let err = w
        .exec
        .execute(Action::RdsFailoverCluster, &p)
        .await
        .unwrap_err();
    assert_api_error(err, "DBClusterNotFoundFault");
    let err = w
        .exec
        .preview(Action::RdsFailoverCluster, &p)
        .await
        .unwrap_err();
    assert_api_error(err, "DBClusterNotFoundFault");
}

#[tokio::test]
async fn reboot_with_failover_sends_force_failover() {
    let w = world().await;
    let p = params(&[("instance", STANDALONE)]);
    let preview = w.exec.preview(Action::RdsRebootFailover, &p).await.unwrap();
    assert_eq!(
        preview.call,
        r#"rds.reboot_db_instance(db_instance_identifier="orders-db", force_failover=true)"#
    );
    assert!(preview.changes[0].starts_with("instance `orders-db` reboots"));
    assert!(
        preview
            .warnings
            .iter()
            .any(|w| w.contains("interrupts connections for ~60 s"))
    );
    assert!(!preview.warnings.iter().any(|w| w.contains("not Multi-AZ")));

    let out = w.exec.execute(Action::RdsRebootFailover, &p).await.unwrap();
    let sent = w
        .sent
        .last("RebootDBInstance")
        .expect("RebootDBInstance sent");
    assert_eq!(field(&sent, "DBInstanceIdentifier"), Some(STANDALONE));
    assert_eq!(field(&sent, "ForceFailover"), Some("true"));
    assert!(out.summary.contains("`orders-db`"), "{}", out.summary);
    assert!(out.request_id.is_some());
    // moto treats the reboot as a no-op: the instance is still there and available.
    assert!(instance_exists(&w.admin, STANDALONE).await);

    let replica = w
        .exec
        .preview(Action::RdsRebootFailover, &params(&[("instance", REPLICA)]))
        .await
        .unwrap();
    assert!(replica.warnings.iter().any(|w| w.contains("not Multi-AZ")));
}

#[tokio::test]
async fn snapshot_create_makes_a_snapshot() {
    let w = world().await;
    let p = params(&[("instance", STANDALONE), ("snapshot", "orders-before-fix")]);
    let preview = w.exec.preview(Action::RdsSnapshotCreate, &p).await.unwrap();
    assert_eq!(
        preview.call,
        r#"rds.create_db_snapshot(db_instance_identifier="orders-db", db_snapshot_identifier="orders-before-fix")"#
    );
    assert!(snapshot_ids(&w.admin, STANDALONE).await.is_empty());

    let out = w.exec.execute(Action::RdsSnapshotCreate, &p).await.unwrap();
    assert_eq!(
        snapshot_ids(&w.admin, STANDALONE).await,
        ["orders-before-fix"]
    );
    assert!(
        out.details[0].starts_with("snapshot orders-before-fix: "),
        "{:?}",
        out.details
    );

    let again = w.exec.preview(Action::RdsSnapshotCreate, &p).await.unwrap();
    assert!(again.warnings.iter().any(|w| w.contains("already exists")));
    let err = w
        .exec
        .execute(Action::RdsSnapshotCreate, &p)
        .await
        .unwrap_err();
    assert_api_error(err, "DBSnapshotAlreadyExists");
}

#[tokio::test]
async fn snapshots_list_shows_the_instances_snapshots() {
    let w = world().await;
    create_snapshot(&w.admin, STANDALONE, "orders-snap-a").await;
    create_snapshot(&w.admin, STANDALONE, "orders-snap-b").await;
    create_snapshot(&w.admin, WRITER, "payments-snap").await;
    let p = params(&[("instance", STANDALONE)]);
    let preview = w.exec.preview(Action::RdsSnapshotsList, &p).await.unwrap();
    assert_eq!(
        preview.call,
        r#"rds.describe_db_snapshots(db_instance_identifier="orders-db")"#
    );
    let out = w.exec.execute(Action::RdsSnapshotsList, &p).await.unwrap();
    // Two manual snapshots plus the automated one moto (like RDS) keeps for the instance.
    assert_eq!(out.summary, "3 snapshot(s) of instance `orders-db`");
    let text = out.details.join("\n");
    assert!(
        text.contains(", automated, of instance orders-db"),
        "{text}"
    );
    assert!(text.contains("snapshot orders-snap-a: available, manual, of instance orders-db"));
    assert!(text.contains("snapshot orders-snap-b: available"));
    assert!(!text.contains("payments-snap"));
}

#[tokio::test]
async fn restore_pitr_latest_creates_the_target() {
    let w = world().await;
    let mut p = params(&[("source", STANDALONE), ("target", "orders-db-restored")]);
    p.0.insert("restore_time".to_owned(), ParamValue::Latest);
    let preview = w.exec.preview(Action::RdsRestorePitr, &p).await.unwrap();
    assert_eq!(
        preview.call,
        r#"rds.restore_db_instance_to_point_in_time(source_db_instance_identifier="orders-db", target_db_instance_identifier="orders-db-restored", use_latest_restorable_time=true)"#
    );
    assert!(
        preview.changes[0].starts_with(
            "source `orders-db` exists (available, postgres); latest restorable time 20"
        ),
        "{:?}",
        preview.changes
    );
    assert!(
        preview
            .warnings
            .iter()
            .any(|w| w.contains("restore creates a NEW instance `orders-db-restored`"))
    );
    assert!(!instance_exists(&w.admin, "orders-db-restored").await);

    let out = w.exec.execute(Action::RdsRestorePitr, &p).await.unwrap();
    assert!(instance_exists(&w.admin, "orders-db-restored").await);
    let sent = w.sent.last("RestoreDBInstanceToPointInTime").unwrap();
    assert_eq!(field(&sent, "UseLatestRestorableTime"), Some("true"));
    assert_eq!(field(&sent, "RestoreTime"), None);
    assert!(out.summary.contains("NEW instance `orders-db-restored`"));

    let err = w
        .exec
        .execute(Action::RdsRestorePitr, &p)
        .await
        .unwrap_err();
    assert_api_error(err, "DBInstanceAlreadyExists");
}

#[tokio::test]
async fn restore_pitr_to_a_time_sends_that_time() {
    let w = world().await;
    let at = (Utc::now() - TimeDelta::minutes(1))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    let mut p = params(&[("source", STANDALONE), ("target", "orders-db-at")]);
    p.0.insert("restore_time".to_owned(), ParamValue::Timestamp(at));
    let preview = w.exec.preview(Action::RdsRestorePitr, &p).await.unwrap();
    let stamp = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert!(
        preview
            .call
            .ends_with(&format!("restore_time=\"{stamp}\")")),
        "{}",
        preview.call
    );
    w.exec.execute(Action::RdsRestorePitr, &p).await.unwrap();
    assert!(instance_exists(&w.admin, "orders-db-at").await);
    let sent = w.sent.last("RestoreDBInstanceToPointInTime").unwrap();
    assert_eq!(field(&sent, "RestoreTime"), Some(stamp.as_str()));
    assert_eq!(field(&sent, "UseLatestRestorableTime"), None);
}

#[tokio::test]
async fn restore_snapshot_creates_the_target_with_the_class() {
    let w = world().await;
    create_snapshot(&w.admin, STANDALONE, "orders-nightly").await;
    let p = params(&[
        ("snapshot", "orders-nightly"),
        ("target", "orders-db-from-snap"),
        ("instance_class", "db.t3.small"),
    ]);
    let preview = w
        .exec
        .preview(Action::RdsRestoreSnapshot, &p)
        .await
        .unwrap();
    assert_eq!(
        preview.call,
        r#"rds.restore_db_instance_from_db_snapshot(db_snapshot_identifier="orders-nightly", db_instance_identifier="orders-db-from-snap", db_instance_class="db.t3.small")"#
    );
    assert!(
        preview.changes[0]
            .starts_with("snapshot `orders-nightly`: available, manual, of instance orders-db"),
        "{:?}",
        preview.changes
    );
    assert!(
        preview
            .warnings
            .iter()
            .any(|w| w.contains("NEW instance `orders-db-from-snap`"))
    );

    w.exec
        .execute(Action::RdsRestoreSnapshot, &p)
        .await
        .unwrap();
    let out = w
        .admin
        .describe_db_instances()
        .db_instance_identifier("orders-db-from-snap")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.db_instances()[0].db_instance_class(),
        Some("db.t3.small")
    );

    let missing = params(&[("snapshot", "no-such-snap"), ("target", "x")]);
    let err = w
        .exec
        .execute(Action::RdsRestoreSnapshot, &missing)
        .await
        .unwrap_err();
    assert_api_error(err, "DBSnapshotNotFound");
}

#[tokio::test]
async fn promote_replica_sends_promote_read_replica() {
    let w = world().await;
    let p = params(&[("instance", REPLICA)]);
    let preview = w.exec.preview(Action::RdsPromoteReplica, &p).await.unwrap();
    assert_eq!(
        preview.call,
        r#"rds.promote_read_replica(db_instance_identifier="orders-db-replica")"#
    );
    assert_eq!(
        preview.changes,
        [
            "instance `orders-db-replica` stops replicating from `orders-db` and becomes a standalone writable instance"
        ]
    );
    assert!(
        preview
            .warnings
            .iter()
            .any(|w| w.contains("cannot be undone"))
    );

    let out = w.exec.execute(Action::RdsPromoteReplica, &p).await.unwrap();
    let sent = w.sent.last("PromoteReadReplica").unwrap();
    assert_eq!(field(&sent, "DBInstanceIdentifier"), Some(REPLICA));
    assert!(out.summary.contains("`orders-db-replica`"));
    // moto keeps ReadReplicaSourceDBInstanceIdentifier after promotion; only existence is real.
    assert!(instance_exists(&w.admin, REPLICA).await);

    let not_replica = w
        .exec
        .preview(
            Action::RdsPromoteReplica,
            &params(&[("instance", STANDALONE)]),
        )
        .await
        .unwrap();
    assert!(
        not_replica
            .warnings
            .iter()
            .any(|w| w.contains("not a read replica"))
    );
}

#[tokio::test]
async fn previews_only_read_and_change_nothing() {
    let w = world().await;
    create_snapshot(&w.admin, STANDALONE, "orders-nightly").await;
    let before = state(&w.admin).await;
    w.sent.clear();
    let mut pitr = params(&[("source", STANDALONE), ("target", "orders-db-restored")]);
    pitr.0.insert("restore_time".to_owned(), ParamValue::Latest);
    let cases = [
        (Action::RdsDescribe, Params::default()),
        (
            Action::RdsFailoverCluster,
            params(&[("cluster", CLUSTER), ("target_instance", READER)]),
        ),
        (Action::RdsFailoverCluster, params(&[("cluster", CLUSTER)])),
        (
            Action::RdsRebootFailover,
            params(&[("instance", STANDALONE)]),
        ),
        (
            Action::RdsSnapshotCreate,
            params(&[("instance", STANDALONE), ("snapshot", "new-snap")]),
        ),
        (
            Action::RdsSnapshotsList,
            params(&[("instance", STANDALONE)]),
        ),
        (Action::RdsRestorePitr, pitr),
        (
            Action::RdsRestoreSnapshot,
            params(&[("snapshot", "orders-nightly"), ("target", "from-snap")]),
        ),
        (Action::RdsPromoteReplica, params(&[("instance", REPLICA)])),
    ];
    for (action, p) in &cases {
        w.exec
            .preview(*action, p)
            .await
            .unwrap_or_else(|e| panic!("preview {action}: {e}"));
    }
    assert_eq!(state(&w.admin).await, before);
    let actions = w.sent.actions();
    assert!(!actions.is_empty());
    assert!(
        actions.iter().all(|a| a.starts_with("Describe")),
        "previews sent {actions:?}"
    );
}

#[tokio::test]
async fn unknown_instance_errors_carry_the_api_code() {
    let w = world().await;
    let p = params(&[("instance", "no-such-db")]);
    let err = w
        .exec
        .execute(Action::RdsRebootFailover, &p)
        .await
        .unwrap_err();
    assert_api_error(err, "DBInstanceNotFound");
    let err = w
        .exec
        .preview(Action::RdsPromoteReplica, &p)
        .await
        .unwrap_err();
    assert_api_error(err, "DBInstanceNotFound");
    let shown = w
        .exec
        .execute(Action::RdsRebootFailover, &p)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        shown.starts_with("DBInstanceNotFound: ") && shown.contains("(request id "),
        "{shown}"
    );
}

#[tokio::test]
async fn mutating_calls_are_sent_once_even_on_a_server_error() {
    let w = world().await;
    // moto answers PromoteReadReplica for an unknown instance with a bare HTTP 500, which
    // the SDK's standard retry policy would repeat; Klaxon must not.
    let err = w
        .exec
        .execute(
            Action::RdsPromoteReplica,
            &params(&[("instance", "no-such-db")]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Api { .. }), "{err:?}");
    assert_eq!(w.sent.actions(), ["PromoteReadReplica"]);
}

#[tokio::test]
async fn no_answer_is_a_transport_error() {
    let port = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let config = moto::rds_config_for(&format!("http://127.0.0.1:{port}")).build();
    let exec = RdsExecutor::new(Client::from_conf(config));
    let err = exec
        .execute(Action::RdsFailoverCluster, &params(&[("cluster", CLUSTER)]))
        .await
        .unwrap_err();
    match err {
        ExecError::Transport(msg) => assert!(!msg.contains("testing"), "{msg}"),
        other => panic!("expected Transport, got {other:?}"),
    }
}

#[tokio::test]
async fn handles_exactly_the_rds_actions() {
    let config = moto::rds_config_for("http://127.0.0.1:9").build();
    let exec = RdsExecutor::new(Client::from_conf(config));
    for action in Action::ALL {
        assert_eq!(
            exec.handles(action),
            action.as_str().starts_with("rds-"),
            "{action}"
        );
    }
    let err = exec
        .execute(Action::K8sPods, &Params::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Invalid(_)), "{err:?}");
}
