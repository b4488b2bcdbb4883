//! One RDS action with its parameters ([`Request`]), parsed once and used by both the
//! preview and the execution, and the text of the exact SDK calls it makes, as shown to
//! approvers (`rds.op(arg=value, ...)`).
//!
//! Apart from the SDK calls themselves so that what approvers read is built, and tested,
//! from the same value that is executed.

use std::fmt;

use aws_sdk_rds::types::SourceType;
use chrono::{DateTime, Utc};

use super::sdk::rfc3339;
use super::{EVENT_LIMIT, EVENT_WINDOW_MINUTES};
use crate::commands::{Action, ExecError, Params};

/// One RDS action with its parameters, parsed once and used by both preview and execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Request<'a> {
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
    pub(super) fn parse(action: Action, p: &'a Params) -> Result<Self, ExecError> {
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
    pub(super) fn call_text(&self) -> String {
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
pub(super) fn event_source<'a>(
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
}
