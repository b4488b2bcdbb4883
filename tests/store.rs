//! The store suite: the same scenarios on SQLite and (when KLAXON_TEST_DATABASE_URL is
//! set) PostgreSQL.

mod support;

use std::sync::Arc;

use chrono::TimeDelta;
use klaxon::clock::ManualClock;
use klaxon::domain::incident::{Actor, Change, EventKind, IncidentId};
use klaxon::domain::outbound::LaneClass;
use klaxon::domain::severity::Severity;
use klaxon::domain::timeline;
use klaxon::engine::{Engine, EngineError, PolicySet, RequestMeta, Wakers};
use klaxon::store::{OutboxRow, Settlement, Store};
use support::{Db, fresh_store, start};

both_backends!(
    incident_numbers_are_sequential_and_refusals_burn_none,
    a_dropped_transaction_leaves_nothing,
    timeline_chains_across_transactions,
    concurrent_changes_to_one_incident_all_land_in_order,
    inbound_events_are_recorded_once,
    outbox_hands_out_one_row_per_key_in_order,
    a_retry_counts_only_real_failures_and_holds_the_lane,
    concurrent_claimers_never_share_a_row,
    next_due_is_the_earliest_lane_head_not_the_rows_behind_it,
    settling_checks_the_lease_owner,
    enqueues_racing_settlements_are_never_stranded,
    durable_transactions_commit_like_the_others,
    retention_prunes_finished_work_and_keeps_the_record,
);

fn engine(store: &Store) -> Engine {
    Engine::new(
        store.clone(),
        Arc::new(ManualClock::new(start())),
        PolicySet::default(),
        Wakers::default(),
    )
}

async fn incident_numbers_are_sequential_and_refusals_burn_none(db: Db) {
    let store = fresh_store(db).await;
    let engine = engine(&store);
    let meta = RequestMeta::user("UALICE", "req-1");
    assert_eq!(
        engine
            .declare(&meta, Severity::Sev1, "One")
            .await
            .unwrap()
            .incident
            .id,
        IncidentId(1)
    );
    assert!(matches!(
        engine.declare(&meta, Severity::Sev1, " ").await,
        Err(EngineError::Refused(_))
    ));
    assert_eq!(
        engine
            .declare(&meta, Severity::Sev2, "Two")
            .await
            .unwrap()
            .incident
            .id,
        IncidentId(2)
    );
    let loaded = store.incident(IncidentId(2)).await.unwrap().unwrap();
    assert_eq!(
        (loaded.title.as_str(), loaded.severity),
        ("Two", Severity::Sev2)
    );
    assert_eq!(store.open_incidents().await.unwrap().len(), 2);
}

async fn a_dropped_transaction_leaves_nothing(db: Db) {
    let store = fresh_store(db).await;
    {
        let mut tx = store.begin().await.unwrap();
        let id = tx.allocate_incident_id(start()).await.unwrap();
        tx.append_events(
            id,
            start(),
            &Actor::Klaxon,
            "r",
            &[EventKind::UpdatePosted { text: "x".into() }],
        )
        .await
        .unwrap();
        tx.enqueue("incident:1", Some(id), "{}", start())
            .await
            .unwrap();
        // Dropped without commit.
    }
    assert!(store.incident_ids().await.unwrap().is_empty());
    assert_eq!(store.outbox_counts().await.unwrap().pending, 0);
}

async fn timeline_chains_across_transactions(db: Db) {
    let store = fresh_store(db).await;
    let engine = engine(&store);
    let id = engine
        .declare(&RequestMeta::user("UALICE", "r1"), Severity::Sev2, "Chain")
        .await
        .unwrap()
        .incident
        .id;
    for i in 0..5 {
        engine
            .change(
                &RequestMeta::user("UBOB", &format!("r{i}")),
                id,
                Change::PostUpdate(format!("update {i}")),
            )
            .await
            .unwrap();
    }
    let entries = store.timeline(id).await.unwrap();
    assert_eq!(entries.len(), 7);
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(entries[0].prev_hash, timeline::GENESIS);
    assert_eq!(timeline::verify(&entries), Ok(()));
}

async fn concurrent_changes_to_one_incident_all_land_in_order(db: Db) {
    let store = fresh_store(db).await;
    let engine = engine(&store);
    let id = engine
        .declare(&RequestMeta::user("UALICE", "r"), Severity::Sev1, "Busy")
        .await
        .unwrap()
        .incident
        .id;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .change(
                        &RequestMeta::user("UBOB", &format!("c{i}")),
                        id,
                        Change::PostUpdate(format!("u{i}")),
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let entries = store.timeline(id).await.unwrap();
    assert_eq!(entries.len(), 22, "every concurrent update landed");
    assert_eq!(timeline::verify(&entries), Ok(()));
    // Each update's outbox row exists, in the same order as the timeline.
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(counts.pending, 4 + 20);
}

async fn inbound_events_are_recorded_once(db: Db) {
    let store = fresh_store(db).await;
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.record_inbound("slack-events", "Ev1", start())
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(
        !tx.record_inbound("slack-events", "Ev1", start())
            .await
            .unwrap()
    );
    assert!(
        tx.record_inbound("other-source", "Ev1", start())
            .await
            .unwrap()
    );
}

const OWNER: &str = "worker-a";

fn lease() -> chrono::DateTime<chrono::Utc> {
    start() + TimeDelta::seconds(10)
}

async fn claim(store: &Store, owner: &str, limit: i64) -> Vec<OutboxRow> {
    store
        .claim_lanes(LaneClass::Slack, owner, start(), lease(), limit)
        .await
        .unwrap()
}

async fn settle(store: &Store, owner: &str, row: &OutboxRow, outcome: Settlement) {
    store
        .settle_outbox(owner, &[(row.ordering_key.clone(), outcome)], start())
        .await
        .unwrap();
}

fn payloads(rows: &[OutboxRow]) -> Vec<&str> {
    rows.iter().map(|r| r.payload.as_str()).collect()
}

async fn outbox_hands_out_one_row_per_key_in_order(db: Db) {
    let store = fresh_store(db).await;
    let mut tx = store.begin().await.unwrap();
    for (key, payload) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("b", "b2"),
        ("a", "a3"),
    ] {
        tx.enqueue(key, None, payload, start()).await.unwrap();
    }
    tx.commit().await.unwrap();
    let claimed = claim(&store, OWNER, 10).await;
    assert_eq!(payloads(&claimed), ["a1", "b1"]);
    assert!(
        claim(&store, "worker-b", 10).await.is_empty(),
        "heads are leased"
    );
    let row_id = claimed[0].id;
    settle(
        &store,
        OWNER,
        &claimed[0],
        Settlement::Delivered {
            row_id,
            not_before: None,
            posted: None,
        },
    )
    .await;
    let next = claim(&store, OWNER, 10).await;
    assert_eq!(payloads(&next), ["a2"]);
    // A failed row no longer blocks its lane.
    let failed = Settlement::Failed {
        row_id: next[0].id,
        error: "gone".into(),
    };
    settle(&store, OWNER, &next[0], failed).await;
    let next = claim(&store, OWNER, 10).await;
    assert_eq!(payloads(&next), ["a3"]);
    assert_eq!(next[0].attempts, 0, "claiming is not an attempt");
    assert_eq!(store.outbox_counts().await.unwrap().failed, 1);
}

async fn a_retry_counts_only_real_failures_and_holds_the_lane(db: Db) {
    let store = fresh_store(db).await;
    let mut tx = store.begin().await.unwrap();
    tx.enqueue("a", None, "a1", start()).await.unwrap();
    tx.commit().await.unwrap();
    let row = claim(&store, OWNER, 1).await.remove(0);
    let later = start() + TimeDelta::seconds(30);
    let rate_limited = Settlement::Retry {
        row_id: row.id,
        at: later,
        error: "429".into(),
        counted: false,
        nothing_sent: false,
    };
    settle(&store, OWNER, &row, rate_limited).await;
    assert!(
        claim(&store, OWNER, 1).await.is_empty(),
        "held until {later}"
    );
    let again = store
        .claim_lanes(
            LaneClass::Slack,
            OWNER,
            later,
            later + TimeDelta::seconds(10),
            1,
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (again.id, again.attempts),
        (row.id, 0),
        "a 429 is not an attempt"
    );
    let failed_attempt = Settlement::Retry {
        row_id: row.id,
        at: later,
        error: "503".into(),
        counted: true,
        nothing_sent: false,
    };
    settle(&store, OWNER, &again, failed_attempt).await;
    let third = store
        .claim_lanes(
            LaneClass::Slack,
            OWNER,
            later,
            later + TimeDelta::seconds(10),
            1,
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(third.attempts, 1);
}

async fn concurrent_claimers_never_share_a_row(db: Db) {
    let store = fresh_store(db).await;
    let mut tx = store.begin().await.unwrap();
    for i in 0..200 {
        tx.enqueue(&format!("k{i}"), None, &format!("p{i}"), start())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let claimers: Vec<_> = (0..4)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("worker-{n}");
                let mut mine = Vec::new();
                loop {
                    let rows = claim(&store, &owner, 7).await;
                    if rows.is_empty() {
                        return mine;
                    }
                    mine.extend(rows.into_iter().map(|r| r.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a row was claimed twice");
    assert_eq!(all.len(), 200);
}

/// The spin of old: rows queued behind a head that waits out its backoff made the worker
/// think something was due. Only lane heads count.
async fn next_due_is_the_earliest_lane_head_not_the_rows_behind_it(db: Db) {
    let store = fresh_store(db).await;
    assert_eq!(store.next_outbox_due().await.unwrap(), None);
    let mut tx = store.begin().await.unwrap();
    for i in 0..50 {
        tx.enqueue("k", None, &format!("p{i}"), start())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(store.next_outbox_due().await.unwrap(), Some(start()));
    let row = claim(&store, OWNER, 1).await.remove(0);
    assert_eq!(store.next_outbox_due().await.unwrap(), Some(lease()));
    let backoff = Settlement::Retry {
        row_id: row.id,
        at: start() + TimeDelta::seconds(5),
        error: "503".into(),
        counted: true,
        nothing_sent: false,
    };
    settle(&store, OWNER, &row, backoff).await;
    assert_eq!(
        store.next_outbox_due().await.unwrap(),
        Some(start() + TimeDelta::seconds(5)),
        "49 rows behind the head are not due"
    );
}

/// A worker whose lease ran out (it stalled) and whose lane another worker now holds does
/// not move that lane; its delivery is still recorded, so nothing is sent a third time.
async fn settling_checks_the_lease_owner(db: Db) {
    let store = fresh_store(db).await;
    let mut tx = store.begin().await.unwrap();
    tx.enqueue("k", None, "p1", start()).await.unwrap();
    tx.enqueue("k", None, "p2", start()).await.unwrap();
    tx.commit().await.unwrap();
    let stale = claim(&store, "slow", 1).await.remove(0);
    // The lease runs out; another worker takes the lane.
    let after = lease() + TimeDelta::seconds(1);
    let taken = store
        .claim_lanes(
            LaneClass::Slack,
            "fast",
            after,
            after + TimeDelta::seconds(10),
            1,
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(taken.id, stale.id);
    // Renewal by the old holder finds nothing to renew.
    let renewed = store
        .renew_lanes("slow", &["k".to_string()], after + TimeDelta::seconds(10))
        .await
        .unwrap();
    assert_eq!(renewed, 0);
    settle(
        &store,
        "slow",
        &stale,
        Settlement::Delivered {
            row_id: stale.id,
            not_before: None,
            posted: None,
        },
    )
    .await;
    // The lane is still the new holder's: nobody can claim it.
    let now = after + TimeDelta::seconds(1);
    assert!(
        store
            .claim_lanes(
                LaneClass::Slack,
                "third",
                now,
                now + TimeDelta::seconds(10),
                1
            )
            .await
            .unwrap()
            .is_empty()
    );
    settle(
        &store,
        "fast",
        &taken,
        Settlement::Delivered {
            row_id: taken.id,
            not_before: None,
            posted: None,
        },
    )
    .await;
    let next = store
        .claim_lanes(
            LaneClass::Slack,
            "third",
            now,
            now + TimeDelta::seconds(10),
            1,
        )
        .await
        .unwrap();
    assert_eq!(payloads(&next), ["p2"]);
    assert_eq!(store.outbox_counts().await.unwrap().done, 1);
}

/// Rows enqueued while their lane's head is being delivered and settled are never
/// stranded (the lane lock orders the two on PostgreSQL).
async fn enqueues_racing_settlements_are_never_stranded(db: Db) {
    let store = fresh_store(db).await;
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let mut tx = store.begin().await.unwrap();
                    tx.enqueue("shared", None, &format!("p{p}-{i}"), start())
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    let consumer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut delivered = 0;
            let mut idle_rounds = 0;
            while delivered < 100 && idle_rounds < 10_000 {
                let rows = claim(&store, OWNER, 1).await;
                match rows.first() {
                    Some(row) => {
                        settle(
                            &store,
                            OWNER,
                            row,
                            Settlement::Delivered {
                                row_id: row.id,
                                not_before: None,
                                posted: None,
                            },
                        )
                        .await;
                        delivered += 1;
                    }
                    None => {
                        idle_rounds += 1;
                        tokio::task::yield_now().await;
                    }
                }
            }
            delivered
        })
    };
    for p in producers {
        p.await.unwrap();
    }
    assert_eq!(
        consumer.await.unwrap(),
        100,
        "a row was stranded in an idle lane"
    );
    assert_eq!(store.outbox_counts().await.unwrap().pending, 0);
}

async fn durable_transactions_commit_like_the_others(db: Db) {
    let store = fresh_store(db).await;
    let mut tx = store.begin_durable().await.unwrap();
    tx.enqueue("k", None, "p", start()).await.unwrap();
    tx.commit().await.unwrap();
    // The writer is back to normal and keeps working.
    let mut tx = store.begin().await.unwrap();
    tx.enqueue("k", None, "q", start()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.outbox_counts().await.unwrap().pending, 2);
}

async fn retention_prunes_finished_work_and_keeps_the_record(db: Db) {
    let store = fresh_store(db).await;
    let engine = engine(&store);
    let meta = RequestMeta::user("UALICE", "req-1");
    let open = engine
        .declare(&meta, Severity::Sev1, "Still open")
        .await
        .unwrap()
        .incident
        .id;
    let closed = engine
        .declare(&meta, Severity::Sev1, "Over")
        .await
        .unwrap()
        .incident
        .id;
    engine
        .change(&meta, closed, Change::Resolve("fixed".into()))
        .await
        .unwrap();
    assert!(engine.mark_seen("slack", "Ev1").await.unwrap());
    // Deliver one row, fail another.
    let rows = claim(&store, OWNER, 2).await;
    settle(
        &store,
        OWNER,
        &rows[0],
        Settlement::Delivered {
            row_id: rows[0].id,
            not_before: None,
            posted: None,
        },
    )
    .await;
    let failed = Settlement::Failed {
        row_id: rows[1].id,
        error: "x".into(),
    };
    settle(&store, OWNER, &rows[1], failed).await;
    let timeline_before = store.timeline(closed).await.unwrap().len();
    let pruned = store.prune(start() + TimeDelta::days(8)).await.unwrap();
    assert_eq!(pruned.outbox, 1, "the delivered row");
    assert_eq!(pruned.inbound, 1);
    assert!(
        pruned.timers > 0,
        "the resolved incident's cancelled timers"
    );
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!((counts.done, counts.failed), (0, 1), "failed rows are kept");
    assert_eq!(store.timeline(closed).await.unwrap().len(), timeline_before);
    let open_timers = store.timers_of(open).await.unwrap();
    assert!(open_timers.iter().any(|(_, _, state)| state == "pending"));
    assert!(store.timers_of(closed).await.unwrap().is_empty());
    // The inbound id is forgotten: a very late retry would be processed again.
    assert!(engine.mark_seen("slack", "Ev1").await.unwrap());
}
