//! Declarations in a burst are committed in groups (the engine's intake), and each one is
//! still whole: its own number, its own hash-chained timeline, its timers, its outbox rows,
//! its channel. Both backends.

mod support;

use std::collections::BTreeSet;

use futures_util::future::join_all;
use klaxon::domain::incident::Actor;
use klaxon::domain::severity::Severity;
use klaxon::engine::{EngineError, RequestMeta};
use support::{ANNOUNCE, Db, TestApp};

both_backends!(
    a_burst_of_declarations_is_committed_in_groups_each_whole,
    a_repeated_submission_in_a_group_is_declared_once,
);

const BURST: usize = 40;

async fn a_burst_of_declarations_is_committed_in_groups_each_whole(db: Db) {
    let app = TestApp::start(db).await;
    let replies = join_all((0..BURST).map(|i| {
        let app = &app;
        async move {
            app.command(
                &format!("U{i:04}"),
                "CGENERAL01",
                &format!("declare sev1 Outage {i:03} now"),
            )
            .await
        }
    }))
    .await;

    // Every request got its own incident.
    let mut numbers = BTreeSet::new();
    for reply in &replies {
        assert!(reply.contains("declared"), "{reply}");
        let number = reply
            .split("INC-")
            .nth(1)
            .and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("no incident number in {reply}"));
        numbers.insert(number);
    }
    assert_eq!(numbers.len(), BURST, "distinct numbers: {numbers:?}");

    // ... and they were grouped: fewer transactions than declarations.
    let (transactions, declarations) = app.engine.intake_totals();
    assert_eq!(declarations, BURST as u64);
    assert!(
        transactions < declarations,
        "{declarations} declarations in {transactions} transactions: no grouping"
    );

    // Each incident is whole: a timeline that verifies and starts at 1 with its own
    // title, the same timers as any declared SEV1, its own outbox rows.
    let ids = app.store.incident_ids().await.unwrap();
    assert_eq!(ids.len(), BURST);
    let mut titles = BTreeSet::new();
    for id in &ids {
        let timeline = app.store.timeline(*id).await.unwrap();
        assert!(!timeline.is_empty(), "{id} has no timeline");
        assert_eq!(timeline[0].seq, 1);
        assert!(timeline.iter().all(|e| e.incident_id == *id));
        klaxon::domain::timeline::verify(&timeline).expect("chain verifies");
        let incident = app.store.incident(*id).await.unwrap().expect("stored");
        assert_eq!(incident.id, *id);
        assert_eq!(incident.severity, Severity::Sev1);
        titles.insert(incident.title.clone());
    }
    assert_eq!(titles.len(), BURST, "each incident kept its own title");
    let mut plans = BTreeSet::new();
    for id in &ids {
        let timers = app.store.timers_of(*id).await.unwrap();
        assert!(!timers.is_empty(), "{id} has timers");
        plans.insert(timers.len());
    }
    assert_eq!(plans.len(), 1, "the same plan for each SEV1: {plans:?}");

    // Delivered: one channel each, and every incident announced in #incident-response,
    // where the announcements that waited together went out as digests (the clock moves
    // on between passes: posts there are paced).
    let announced = |app: &TestApp| {
        let messages = app.messages_in(ANNOUNCE);
        let all = titles
            .iter()
            .all(|t| messages.iter().filter(|m| m.contains(t.as_str())).count() == 1);
        (all, messages.len())
    };
    for _ in 0..BURST * 2 {
        app.deliver().await;
        if announced(&app).0 {
            break;
        }
        app.clock.advance(chrono::TimeDelta::seconds(1));
    }
    let (all, posts) = announced(&app);
    assert!(all, "every incident announced exactly once");
    assert!(
        posts < BURST,
        "{posts} posts for {BURST} announcements: no digest"
    );
    let open = app.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), BURST);
    let channels: BTreeSet<String> = open
        .iter()
        .map(|i| i.channel.as_ref().expect("channel opened").id.clone())
        .collect();
    assert_eq!(channels.len(), BURST);
    let mut events = 0;
    for id in &ids {
        events += app.store.timeline(*id).await.unwrap().len();
    }
    assert_eq!(klaxon::app::audit_store(&app.store).await.unwrap(), events);
}

/// A form submitted twice (Slack retries) lands in the same group as its first copy: one
/// incident, and the copy is answered as a duplicate, while its neighbours are declared.
async fn a_repeated_submission_in_a_group_is_declared_once(db: Db) {
    let app = TestApp::start(db).await;
    let engine = app.engine.clone();
    let meta = |user: &str, dedupe: Option<&str>| RequestMeta {
        actor: Actor::User(user.to_string()),
        request_id: format!("req-{user}"),
        dedupe: dedupe.map(|id| ("slack_view".to_string(), id.to_string())),
    };
    let requests = [
        meta("UALICE", Some("view-1")),
        meta("UBOB", None),
        meta("UALICE", Some("view-1")),
        meta("UCAROL", Some("view-2")),
    ];
    let outcomes = join_all(
        requests
            .iter()
            .map(|m| engine.declare(m, Severity::Sev2, "Checkout is failing")),
    )
    .await;
    let declared = outcomes.iter().filter(|o| o.is_ok()).count();
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, Err(EngineError::Duplicate)))
        .count();
    assert_eq!((declared, duplicates), (3, 1), "{outcomes:?}");
    assert!(outcomes[0].is_ok(), "the first copy is the one declared");
    assert_eq!(app.store.incident_ids().await.unwrap().len(), 3);
}
