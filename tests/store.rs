//! The store suite: the same scenarios on SQLite and (when KLAXON_TEST_DATABASE_URL is
//! set) PostgreSQL.

mod support;

use std::sync::Arc;

use chrono::TimeDelta;
use klaxon::clock::ManualClock;
use klaxon::domain::incident::{Actor, Change, EventKind, IncidentId};
use klaxon::domain::severity::Severity;
use klaxon::domain::timeline;
use klaxon::engine::{Engine, EngineError, PolicySet, RequestMeta, Wakers};
use klaxon::store::Store;
use support::{Db, fresh_store, start};

both_backends!(
    incident_numbers_are_sequential_and_refusals_burn_none,
    a_dropped_transaction_leaves_nothing,
    timeline_chains_across_transactions,
    concurrent_changes_to_one_incident_all_land_in_order,
    inbound_events_are_recorded_once,
    outbox_hands_out_one_row_per_key_in_order,
    concurrent_claimers_never_share_a_row,
    next_due_accounts_for_leases_and_retries,
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
    let lease = start() + TimeDelta::seconds(60);
    let claimed = store.claim_outbox(start(), lease, 10).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|r| r.payload.as_str())
            .collect::<Vec<_>>(),
        ["a1", "b1"]
    );
    assert!(
        store
            .claim_outbox(start(), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "heads are leased"
    );
    store.complete_outbox(claimed[0].id, start()).await.unwrap();
    let next = store.claim_outbox(start(), lease, 10).await.unwrap();
    assert_eq!(
        next.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>(),
        ["a2"]
    );
    // A failed row no longer blocks its key.
    store
        .fail_outbox(next[0].id, "gone", start())
        .await
        .unwrap();
    let next = store.claim_outbox(start(), lease, 10).await.unwrap();
    assert_eq!(
        next.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>(),
        ["a3"]
    );
    assert_eq!(next[0].attempts, 1);
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
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let rows = store
                        .claim_outbox(start(), start() + TimeDelta::seconds(60), 7)
                        .await
                        .unwrap();
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

async fn next_due_accounts_for_leases_and_retries(db: Db) {
    let store = fresh_store(db).await;
    assert_eq!(store.next_outbox_due().await.unwrap(), None);
    let mut tx = store.begin().await.unwrap();
    tx.enqueue("k", None, "p", start()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.next_outbox_due().await.unwrap(), Some(start()));
    let row = store
        .claim_outbox(start(), start() + TimeDelta::seconds(60), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        store.next_outbox_due().await.unwrap(),
        Some(start() + TimeDelta::seconds(60))
    );
    store
        .retry_outbox(row.id, start() + TimeDelta::seconds(5), "429")
        .await
        .unwrap();
    assert_eq!(
        store.next_outbox_due().await.unwrap(),
        Some(start() + TimeDelta::seconds(5))
    );
}
