//! Declarations in a burst are committed in groups (the engine's intake), and each one is
//! still whole: its own number, its own hash-chained timeline, its timers, its outbox rows,
//! its channel. Both backends.

mod support;

use std::collections::BTreeSet;

use chrono::TimeDelta;
use futures_util::future::join_all;
use klaxon::clock::Clock;
use klaxon::domain::incident::Actor;
use klaxon::domain::severity::Severity;
use klaxon::engine::{EngineError, RequestMeta};
use klaxon::store::Declaration;
use support::{ANNOUNCE, Db, TestApp};

both_backends!(
    a_burst_of_declarations_is_committed_in_groups_each_whole,
    a_repeated_submission_in_a_group_is_declared_once,
    an_acknowledged_declaration_left_unwritten_is_completed_once,
    a_declaration_the_store_refuses_fails_alone,
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

    // ... and they were grouped: fewer transactions than declarations, at both steps
    // (the ack, then the write-out).
    for (step, (transactions, declarations)) in [
        ("ack", app.engine.intake_ack_totals()),
        ("write-out", app.engine.intake_totals()),
    ] {
        assert_eq!(declarations, BURST as u64, "{step}");
        assert!(
            transactions < declarations,
            "{step}: {declarations} declarations in {transactions} transactions: no grouping"
        );
    }

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

/// A process killed between the ack and the write-out leaves `declaring` rows: nothing
/// half-written shows, and any process completes them from what was stored, as of the
/// ack, exactly once however many try at once.
async fn an_acknowledged_declaration_left_unwritten_is_completed_once(db: Db) {
    let app = TestApp::start(db).await;
    let acked_at = app.clock.now();
    // Step 1 alone, as a process killed right after its ack commit leaves it.
    let declarations: Vec<Declaration> = (0..5)
        .map(|i| Declaration {
            severity: Severity::Sev1,
            title: format!("Killed mid-declare {i}"),
            security: false,
            actor: Actor::User(format!("UKILLED{i}")),
            request_id: format!("req-killed-{i}"),
        })
        .collect();
    let mut tx = app.store.begin().await.unwrap();
    let ids = tx
        .insert_declarations(&declarations, acked_at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), 5);
    assert!(app.store.open_incidents().await.unwrap().is_empty());
    assert!(app.store.incident(ids[0]).await.unwrap().is_none());
    assert!(app.store.incident_ids().await.unwrap().is_empty());

    // A pass takes only what was acknowledged before its cut-off.
    assert_eq!(app.engine.complete_declarations(acked_at).await.unwrap(), 0);

    // Three passes at once, later: each declaration written once.
    app.clock.advance(TimeDelta::minutes(3));
    let later = app.clock.now();
    let written: usize = join_all((0..3).map(|_| app.engine.complete_declarations(later)))
        .await
        .into_iter()
        .map(|n| n.expect("pass"))
        .sum();
    assert_eq!(written, 5);
    assert_eq!(app.engine.complete_declarations(later).await.unwrap(), 0);

    // Each is whole, as of its ack: state, a verified timeline by its declarer, timers
    // counted from the ack (the SEV1 response deadline, 15 min, is already past).
    for (id, asked) in ids.iter().zip(&declarations) {
        let incident = app.store.incident(*id).await.unwrap().expect("written out");
        assert_eq!(incident.title, asked.title);
        assert_eq!(incident.declared_at, acked_at);
        let timeline = app.store.timeline(*id).await.unwrap();
        klaxon::domain::timeline::verify(&timeline).expect("chain verifies");
        assert_eq!(timeline[0].seq, 1);
        assert_eq!(timeline[0].at, acked_at);
        assert_eq!(timeline[0].actor, asked.actor);
        let timers = app.store.timers_of(*id).await.unwrap();
        assert!(
            timers
                .iter()
                .any(|(_, due, _)| *due == acked_at + TimeDelta::minutes(15)),
            "response deadline from the ack: {timers:?}"
        );
    }
    assert_eq!(app.store.open_incidents().await.unwrap().len(), 5);

    // Their outbox rows exist once: one channel each.
    app.deliver().await;
    let created = app.slack.calls_to("conversations.create");
    assert_eq!(created.len(), 5, "{created:?}");
}

/// Installs triggers that make the store refuse rows of declarations titled `Poison-ack`
/// (their `declaring` row, at the ack) and `Poison-write` (their timeline, at the
/// write-out), as a constraint or a bad value would.
async fn poison(app: &TestApp, db: Db) {
    let statements: &[&str] = match db {
        Db::Sqlite => &[
            "create trigger poison_ack before insert on incidents when new.declaration like '%Poison-ack%' \
             begin select raise(abort, 'poisoned declaration'); end",
            "create trigger poison_write before insert on timeline when new.kind like '%Poison-write%' \
             begin select raise(abort, 'poisoned write-out'); end",
        ],
        Db::Postgres => &[
            "create function poison_ack() returns trigger language plpgsql as $$ begin \
             if new.declaration like '%Poison-ack%' then raise exception 'poisoned declaration'; end if; \
             return new; end $$",
            "create trigger poison_ack before insert on incidents for each row execute function poison_ack()",
            "create function poison_write() returns trigger language plpgsql as $$ begin \
             if new.kind like '%Poison-write%' then raise exception 'poisoned write-out'; end if; \
             return new; end $$",
            "create trigger poison_write before insert on timeline for each row execute function poison_write()",
        ],
    };
    for sql in statements {
        app.store.execute_raw(sql).await.expect(sql);
    }
}

/// Twelve declarations at once, the one at `poisoned` titled `poison`; the replies.
async fn declare_twelve(app: &TestApp, round: &str, poisoned: usize, poison: &str) -> Vec<String> {
    join_all((0..12).map(|i| async move {
        let title = if i == poisoned {
            format!("{poison} outage {round}")
        } else {
            format!("Outage {round}-{i:02}")
        };
        app.command(
            &format!("U{round}{i:03}"),
            "CGENERAL01",
            &format!("declare sev2 {title}"),
        )
        .await
    }))
    .await
}

/// A declaration the store refuses fails its batch; the batch is retried one by one, so
/// its neighbours are declared and whole and only its own caller hears of it. At the ack
/// that caller is told it failed (nothing was kept); at the write-out it is told it was
/// declared (it was: the acknowledged row stands) and the incident is completed once the
/// store takes it.
async fn a_declaration_the_store_refuses_fails_alone(db: Db) {
    let app = TestApp::start(db).await;
    poison(&app, db).await;

    // At the ack: the poisoned one is refused, its eleven neighbours declared.
    let replies = declare_twelve(&app, "A", 7, "Poison-ack").await;
    for (i, reply) in replies.iter().enumerate() {
        if i == 7 {
            assert!(!reply.contains("declared"), "refused at the ack: {reply}");
        } else {
            assert!(reply.contains("declared"), "neighbour {i}: {reply}");
        }
    }
    assert!(
        app.engine.intake_split_batches() >= 1,
        "the failed batch was retried one by one"
    );
    assert_eq!(app.store.incident_ids().await.unwrap().len(), 11);

    // At the write-out: all twelve acknowledged; the poisoned one is left `declaring`
    // (invisible), its neighbours written whole.
    let split_before = app.engine.intake_split_batches();
    let replies = declare_twelve(&app, "B", 4, "Poison-write").await;
    assert!(
        replies.iter().all(|r| r.contains("declared")),
        "{replies:?}"
    );
    assert!(
        app.engine.intake_split_batches() > split_before,
        "the failed write-out was retried one by one"
    );
    let ids = app.store.incident_ids().await.unwrap();
    assert_eq!(
        ids.len(),
        22,
        "eleven more written, the poisoned one not yet"
    );
    for id in &ids {
        let timeline = app.store.timeline(*id).await.unwrap();
        klaxon::domain::timeline::verify(&timeline).expect("chain verifies");
    }

    // Once the store takes it again, it is completed from its stored declaration.
    let drop = match db {
        Db::Sqlite => "drop trigger poison_write",
        Db::Postgres => "drop trigger poison_write on timeline",
    };
    app.store.execute_raw(drop).await.unwrap();
    app.clock.advance(TimeDelta::seconds(10));
    let written = app
        .engine
        .complete_declarations(app.clock.now())
        .await
        .unwrap();
    assert_eq!(written, 1);
    let open = app.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 23);
    assert!(
        open.iter().any(|i| i.title == "Poison-write outage B"),
        "{:?}",
        open.iter().map(|i| &i.title).collect::<Vec<_>>()
    );
}
