//! Posts are not repeated after a crash: every `chat.postMessage` carries its outbox row as
//! message metadata, and a row that may have gone out before looks for itself in the
//! channel's history (`include_all_metadata`) before posting again. Both backends.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use klaxon::domain::outbound::LaneClass;
use klaxon::outbox::{DeliverySettings, OutboxWorker};
use klaxon::slack::morphism::MorphismSlack;
use klaxon::store::{OutboxRow, Posted, Settlement, Store};
use serde_json::Value;
use support::slack_emulator::{Failure, SlackEmulator};
use support::{ANNOUNCE, Db, TestApp, fresh_store, fresh_store_with_url, start};
use tokio::sync::watch;

both_backends!(
    a_claim_stamps_its_rows_and_only_a_clean_retry_clears_the_stamp,
    fresh_rows_post_without_looking_back,
    a_post_whose_answer_was_lost_is_not_posted_again,
    a_post_cut_off_by_a_crash_is_found_by_the_next_worker,
    a_post_that_never_reached_slack_is_posted_exactly_once,
    a_rate_limited_post_needs_no_look_back,
    a_failing_history_holds_the_row_instead_of_posting_blind,
    a_worker_killed_mid_run_leaves_no_duplicate_posts,
    a_digest_whose_answer_was_lost_is_found_and_newer_announcements_go_together,
    a_restarted_instance_takes_back_its_predecessors_lanes_at_once,
    an_instance_releases_only_its_own_earlier_leases,
);

/// The outbox row each successful post carried, counted.
fn posts_per_row(app: &TestApp) -> BTreeMap<i64, usize> {
    posts_per_row_in(&app.slack)
}

fn posts_per_row_in(slack: &SlackEmulator) -> BTreeMap<i64, usize> {
    let mut rows = BTreeMap::new();
    for post in slack.calls_to("chat.postMessage") {
        let metadata = match &post["metadata"] {
            Value::String(s) => serde_json::from_str(s).unwrap(),
            other => other.clone(),
        };
        assert_eq!(metadata["event_type"], "klaxon_outbox", "{post}");
        let row = metadata["event_payload"]["row"]
            .as_i64()
            .unwrap_or_else(|| panic!("no row in {post}"));
        *rows.entry(row).or_default() += 1;
        // An announcement digest delivers several rows with one post.
        for also in metadata["event_payload"]["rows"]
            .as_array()
            .into_iter()
            .flatten()
        {
            *rows.entry(also.as_i64().expect("row id")).or_default() += 1;
        }
    }
    rows
}

/// Every row that posted did so once; returns how many rows posted.
fn assert_each_row_posted_once(app: &TestApp) -> usize {
    let rows = posts_per_row(app);
    let repeated: Vec<_> = rows.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "posted more than once: {repeated:?}");
    rows.len()
}

/// Passes with the clock moved past any backoff, until nothing is pending.
async fn drain(app: &TestApp) {
    for _ in 0..10 {
        app.deliver().await;
        if app.store.outbox_counts().await.unwrap().pending == 0 {
            return;
        }
        app.clock.advance(TimeDelta::minutes(1));
    }
    panic!(
        "the outbox did not drain: {:?}",
        app.store.outbox_counts().await
    );
}

/// The outbox row whose message is `ts`, from the stored delivery receipts.
async fn row_with_ts(app: &TestApp, ts: &str) -> Option<i64> {
    for id in 1..=50 {
        if let Some(posted) = app.store.outbox_posted(id).await.unwrap()
            && posted.ts == ts
        {
            return Some(id);
        }
    }
    None
}

/// A fresh worker on the same database (a restarted process: a new lease owner).
fn restarted_worker(app: &TestApp) -> OutboxWorker {
    let client = MorphismSlack::new(
        &app.config.slack.api_url,
        app.config.slack.bot_token.clone(),
    )
    .expect("slack client");
    klaxon::app::wire(
        app.store.clone(),
        &app.config,
        app.clock.clone(),
        Arc::new(client),
    )
    .worker
}

/// Claims the one slack lane due at `at` as `owner`.
async fn claim_at(store: &Store, owner: &str, at: chrono::DateTime<chrono::Utc>) -> OutboxRow {
    let lease = at + DeliverySettings::default().lease;
    let mut rows = store
        .claim_lanes(LaneClass::Slack, owner, at, lease, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.remove(0)
}

async fn retry(store: &Store, owner: &str, row: &OutboxRow, nothing_sent: bool) {
    let at = start() + TimeDelta::minutes(1);
    let outcome = Settlement::Retry {
        row_id: row.id,
        at,
        error: "x".into(),
        counted: true,
        nothing_sent,
    };
    store
        .settle_outbox(owner, &[(row.ordering_key.clone(), outcome)], at)
        .await
        .unwrap();
}

/// The store's half: a claim stamps the time on rows not stamped before (and returns the
/// earlier stamp); a retry that sent nothing clears it; one that may have sent keeps the
/// first stamp through later claims; a delivery stores where the message landed.
async fn a_claim_stamps_its_rows_and_only_a_clean_retry_clears_the_stamp(db: Db) {
    let store = fresh_store(db).await;
    let mut tx = store.begin().await.unwrap();
    tx.enqueue("incident:1", None, "{}", start()).await.unwrap();
    tx.commit().await.unwrap();
    let first = claim_at(&store, "a", start()).await;
    assert_eq!(first.attempt_started_at_ms, None, "never attempted");
    retry(&store, "a", &first, true).await;
    let t1 = start() + TimeDelta::minutes(1);
    let second = claim_at(&store, "b", t1).await;
    assert_eq!(
        second.attempt_started_at_ms, None,
        "the clean retry cleared it"
    );
    retry(&store, "b", &second, false).await;
    let t2 = start() + TimeDelta::minutes(2);
    let third = claim_at(&store, "c", t2).await;
    assert_eq!(third.attempt_started_at_ms, Some(t1.timestamp_millis()));
    // A later attempt that sent nothing leaves the earlier one's stamp alone.
    retry(&store, "c", &third, false).await;
    let fourth = claim_at(&store, "d", t2).await;
    assert_eq!(fourth.attempt_started_at_ms, Some(t1.timestamp_millis()));
    let posted = Posted {
        channel: "C1".into(),
        ts: "1.000001".into(),
    };
    let delivered = Settlement::Delivered {
        row_id: fourth.id,
        not_before: None,
        posted: Some(posted.clone()),
    };
    store
        .settle_outbox("d", &[(fourth.ordering_key.clone(), delivered)], t2)
        .await
        .unwrap();
    assert_eq!(store.outbox_posted(fourth.id).await.unwrap(), Some(posted));
    assert_eq!(store.install_id().await.unwrap().len(), 32);
}

async fn fresh_rows_post_without_looking_back(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.command("UALICE", &ch, "update rolled back").await;
    drain(&app).await;
    assert!(assert_each_row_posted_once(&app) >= 3);
    assert!(app.slack.calls_to("conversations.history").is_empty());
    // Every post's ts is stored with its row, like the channel it went to.
    for post in app.slack.channel(ANNOUNCE).unwrap().messages {
        let ts = post["ts"].as_str().unwrap();
        let row = row_with_ts(&app, ts).await.expect("ts stored");
        let stored = app.store.outbox_posted(row).await.unwrap().unwrap();
        assert_eq!(stored.channel, ANNOUNCE);
    }
}

/// Slack posted the message but its answer never came back: the retry finds the post by
/// its metadata, stores its ts, and posts nothing.
async fn a_post_whose_answer_was_lost_is_not_posted_again(db: Db) {
    let app = TestApp::start(db).await;
    app.slack
        .fail_next("chat.postMessage", Failure::AnswerLost(502));
    app.command("UALICE", "CGENERAL01", "declare sev1 Database is down")
        .await;
    let first = app.deliver().await;
    assert_eq!(first.retried, 1, "{first:?}");
    let lost = app.slack.calls_to("chat.postMessage")[0].clone();
    drain(&app).await;
    let posted = assert_each_row_posted_once(&app);
    assert!(posted >= 2, "{posted}");
    assert_eq!(app.slack.calls_to("conversations.history").len(), 1);
    // The lost post's ts is the one stored for its row.
    let channel = lost["channel"].as_str().unwrap();
    let row = posts_per_row(&app).keys().copied().min().unwrap();
    let message = app
        .slack
        .channel(channel)
        .unwrap()
        .messages
        .into_iter()
        .find(|m| m["metadata"] == lost["metadata"])
        .unwrap();
    let ts = message["ts"].as_str().unwrap();
    let found = row_with_ts(&app, ts).await.expect("the found ts is stored");
    assert!(found >= row);
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
}

/// kill -9 after Slack accepted a post but before the worker recorded it: the loop is
/// dropped while the answer is held back, so nothing is settled. The next worker (a new
/// process) finds the post instead of sending it again.
async fn a_post_cut_off_by_a_crash_is_found_by_the_next_worker(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.slack.fail_next(
        "chat.postMessage",
        Failure::AnswerAfter(Duration::from_secs(3_600)),
    );
    let (_stop, rx) = watch::channel(false);
    let dying = tokio::spawn(app.worker.clone().run(rx));
    app.command("UALICE", &ch, "update failover started").await;
    let before = posts_per_row(&app).len();
    app.slack
        .wait_for_calls("chat.postMessage", before + 1)
        .await;
    dying.abort();
    let _ = dying.await;
    let counts = app.store.outbox_counts().await.unwrap();
    assert!(counts.pending >= 1, "the cut-off post was never settled");
    // SQLite: the restarted process takes its leases back at start-up; PostgreSQL: they
    // run out. Moving past the lease covers both for a delivery pass.
    app.clock
        .advance(DeliverySettings::default().lease + TimeDelta::seconds(1));
    let restarted = restarted_worker(&app);
    restarted.deliver_due().await.unwrap();
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, 0);
    assert_each_row_posted_once(&app);
    assert!(!app.slack.calls_to("conversations.history").is_empty());
    let updates = app
        .messages_in(&ch)
        .iter()
        .filter(|m| m.contains("failover started"))
        .count();
    assert_eq!(updates, 1);
}

/// A 503 is Slack down, not taking the post: the retry posts once, without a look (after
/// an outage, a look per waiting message would hold the recovery back).
async fn a_post_that_never_reached_slack_is_posted_exactly_once(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.slack
        .fail_next("chat.postMessage", Failure::Status(503));
    app.command("UALICE", &ch, "update cache flushed").await;
    let first = app.deliver().await;
    assert_eq!(first.retried, 1, "{first:?}");
    drain(&app).await;
    assert_each_row_posted_once(&app);
    assert!(app.slack.calls_to("conversations.history").is_empty());
    let updates = app
        .messages_in(&ch)
        .iter()
        .filter(|m| m.contains("cache flushed"))
        .count();
    assert_eq!(updates, 1);
}

/// A 429 is Slack refusing the post: nothing went out, so the retry posts without a look.
async fn a_rate_limited_post_needs_no_look_back(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    app.command("UALICE", &ch, "update throttled").await;
    drain(&app).await;
    assert_each_row_posted_once(&app);
    assert!(app.slack.calls_to("conversations.history").is_empty());
    let updates = app
        .messages_in(&ch)
        .iter()
        .filter(|m| m.contains("throttled"))
        .count();
    assert_eq!(updates, 1);
}

/// The post went out, its answer was lost, and then the history cannot be read: the row
/// waits and tries again; it is not posted blind.
async fn a_failing_history_holds_the_row_instead_of_posting_blind(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.slack
        .fail_next("chat.postMessage", Failure::AnswerLost(502));
    app.command("UALICE", &ch, "update replica promoted").await;
    app.deliver().await;
    let posts = app.slack.calls_to("chat.postMessage").len();
    for _ in 0..2 {
        app.slack
            .fail_next("conversations.history", Failure::Status(500));
    }
    for _ in 0..2 {
        app.clock.advance(TimeDelta::minutes(1));
        let pass = app.deliver().await;
        assert_eq!(pass.retried, 1, "{pass:?}");
        assert_eq!(app.slack.calls_to("chat.postMessage").len(), posts);
        assert_eq!(app.store.outbox_counts().await.unwrap().pending, 1);
    }
    drain(&app).await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), posts);
    assert_each_row_posted_once(&app);
    let updates = app
        .messages_in(&ch)
        .iter()
        .filter(|m| m.contains("replica promoted"))
        .count();
    assert_eq!(updates, 1);
}

/// Polls `progress` (work done so far, or `None` when finished) every 10 ms, moving the
/// clock 50 ms each time; fails only when nothing moves for 6,000 polls in a row.
async fn until_finished(
    what: &str,
    clock: &klaxon::clock::ManualClock,
    mut progress: impl AsyncFnMut() -> Option<usize>,
) {
    let (mut best, mut still) = (0, 0);
    while let Some(now) = progress().await {
        if now > best {
            (best, still) = (now, 0);
        } else {
            still += 1;
            assert!(still < 6_000, "{what}: no progress past {now}");
        }
        clock.advance(TimeDelta::milliseconds(50));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// kill -9 of one of two workers in the middle of 200 declares (its task is dropped with
/// whatever it had in flight: posts Slack may have taken, outcomes not yet settled; three
/// posts are held unanswered so some surely are). The survivor takes its lanes when their
/// leases run out; every post reaches Slack once.
async fn a_worker_killed_mid_run_leaves_no_duplicate_posts(db: Db) {
    const INCIDENTS: usize = 200;
    let (store, url) = fresh_store_with_url(db).await;
    let slack = SlackEmulator::start().await;
    let clock = Arc::new(klaxon::clock::ManualClock::new(start()));
    slack.use_clock(clock.clone());
    let config = support::test_config(&slack.base_url, &url);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = match db {
            Db::Sqlite => store.clone(),
            Db::Postgres => Store::connect(&url).await.unwrap(),
        };
        let client = MorphismSlack::new(&slack.base_url, config.slack.bot_token.clone()).unwrap();
        replicas.push(klaxon::app::wire(
            store,
            &config,
            clock.clone(),
            Arc::new(client),
        ));
    }
    let (_stop, rx) = watch::channel(false);
    let victim = tokio::spawn(replicas[0].worker.clone().run(rx.clone()));
    let survivor = tokio::spawn(replicas[1].worker.clone().run(rx));
    let engine = replicas[0].state.engine.clone();
    for i in 0..INCIDENTS {
        let meta = klaxon::engine::RequestMeta::user("UALICE", &format!("req-{i}"));
        engine
            .declare(
                &meta,
                klaxon::domain::severity::Severity::Sev2,
                &format!("Outage number {i}"),
            )
            .await
            .unwrap();
        if i % 16 == 0 {
            replicas.iter().for_each(|r| r.wakers.outbox.notify_one());
        }
    }
    replicas.iter().for_each(|r| r.wakers.outbox.notify_one());
    until_finished("deliveries to start", &clock, async || {
        let n = slack.calls_to("chat.postMessage").len();
        (n < INCIDENTS / 4).then_some(n)
    })
    .await;
    // Three posts Slack takes but never answers: whoever sent them never settles them
    // (the victim, killed; or the survivor, whose call times out and is retried).
    let before = slack.calls_to("chat.postMessage").len();
    for _ in 0..3 {
        slack.fail_next(
            "chat.postMessage",
            Failure::AnswerAfter(Duration::from_secs(3_600)),
        );
    }
    until_finished("the held posts to reach Slack", &clock, async || {
        let n = slack.calls_to("chat.postMessage").len();
        (n < before + 3).then_some(n)
    })
    .await;
    victim.abort();
    let _ = victim.await;
    until_finished("the survivor to deliver everything", &clock, async || {
        replicas[1].wakers.outbox.notify_one();
        let counts = store.outbox_counts().await.unwrap();
        (counts.pending > 0).then_some(counts.done as usize)
    })
    .await;
    survivor.abort();
    let _ = survivor.await;
    let rows = posts_per_row_in(&slack);
    let repeated: Vec<_> = rows.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "posted more than once: {repeated:?}");
    // Every row posted (a summary and an announcement each; announcements may share a
    // digest post), none twice.
    assert_eq!(rows.len(), 2 * INCIDENTS, "summary + announcement each");
    let posts = slack.calls_to("chat.postMessage");
    let summaries = posts.iter().filter(|p| p["channel"] != ANNOUNCE).count();
    assert_eq!(summaries, INCIDENTS);
    assert_eq!(store.outbox_counts().await.unwrap().failed, 0);
    eprintln!(
        "after the kill: {} history look-ups",
        slack.calls_to("conversations.history").len()
    );
}

/// The rows a post delivered, from its metadata (`row` and, for a digest, `rows`).
fn rows_of(post: &Value) -> Vec<i64> {
    let metadata = match &post["metadata"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    let payload = &metadata["event_payload"];
    let mut rows = vec![payload["row"].as_i64().expect("row")];
    rows.extend(
        payload["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.as_i64().expect("row id")),
    );
    rows.sort_unstable();
    rows
}

/// An announcement digest that reached Slack but whose answer was lost: its rows keep
/// their stamps. The next claim takes them with two newer announcements: the three look
/// for themselves, find the digest and are settled with its ts; the two newer ones go out
/// together in ONE new digest. Nobody is announced twice, and nobody waits a second per
/// announcement.
async fn a_digest_whose_answer_was_lost_is_found_and_newer_announcements_go_together(db: Db) {
    let app = TestApp::start(db).await;
    for title in ["Payments down", "Search slow", "Login errors"] {
        app.command("UALICE", "CGENERAL01", &format!("declare sev2 {title}"))
            .await;
    }
    // The first round's only post is the digest (the incident lanes begin with their
    // channel creation).
    app.slack
        .fail_next("chat.postMessage", Failure::AnswerLost(502));
    app.deliver().await;
    let announced = || -> Vec<Value> {
        app.slack
            .calls_to("chat.postMessage")
            .into_iter()
            .filter(|p| p["channel"] == ANNOUNCE)
            .collect()
    };
    let lost = announced();
    assert_eq!(lost.len(), 1, "one digest: {lost:?}");
    let lost_rows = rows_of(&lost[0]);
    assert_eq!(lost_rows.len(), 3, "{lost_rows:?}");
    // Past the lost digest's backoff, two more incidents; then everything goes out.
    app.clock.advance(TimeDelta::seconds(5));
    for title in ["Queue backlog", "Cache misses"] {
        app.command("UALICE", "CGENERAL01", &format!("declare sev2 {title}"))
            .await;
    }
    drain(&app).await;
    assert_each_row_posted_once(&app);
    let posts = announced();
    assert_eq!(
        posts.len(),
        2,
        "the lost digest + one for the newer two: {posts:?}"
    );
    let newer = rows_of(&posts[1]);
    assert_eq!(newer.len(), 2, "{newer:?}");
    assert!(newer.iter().all(|r| !lost_rows.contains(r)));
    let shown = support::shown_text(&posts[1]);
    assert!(
        shown.contains("Queue backlog") && shown.contains("Cache misses"),
        "{shown}"
    );
    assert!(!shown.contains("Payments down"), "{shown}");
    // The three found their digest: their stored ts is its ts.
    let digest_ts = app
        .slack
        .channel(ANNOUNCE)
        .unwrap()
        .messages
        .into_iter()
        .find(|m| m["metadata"] == lost[0]["metadata"])
        .expect("the lost digest is in the channel")["ts"]
        .as_str()
        .unwrap()
        .to_string();
    for row in lost_rows {
        let posted = app
            .store
            .outbox_posted(row)
            .await
            .unwrap()
            .expect("settled");
        assert_eq!(posted.ts, digest_ts, "row {row}");
    }
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
}

/// kill -9 of a worker holding a post, and the same instance (host and port) restarted:
/// it takes its predecessor's lanes back at start-up, on PostgreSQL too, so the rest is
/// delivered without waiting for the leases to run out (the clock never moves here).
async fn a_restarted_instance_takes_back_its_predecessors_lanes_at_once(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.slack.fail_next(
        "chat.postMessage",
        Failure::AnswerAfter(Duration::from_secs(3_600)),
    );
    let before = app.slack.calls_to("chat.postMessage").len();
    let (_stop, rx) = watch::channel(false);
    let dying = tokio::spawn(app.worker.clone().for_instance("host-a:8080").run(rx));
    app.command("UALICE", &ch, "update failover started").await;
    app.slack
        .wait_for_calls("chat.postMessage", before + 1)
        .await;
    dying.abort();
    let _ = dying.await;
    assert!(app.store.outbox_counts().await.unwrap().pending >= 1);
    let (_stop, rx) = watch::channel(false);
    let restarted = tokio::spawn(restarted_worker(&app).for_instance("host-a:8080").run(rx));
    let mut polls = 0;
    while app.store.outbox_counts().await.unwrap().pending > 0 {
        polls += 1;
        assert!(polls < 3_000, "the lanes were not taken back at start-up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    restarted.abort();
    assert_each_row_posted_once(&app);
    let updates = app
        .messages_in(&ch)
        .iter()
        .filter(|m| m.contains("failover started"))
        .count();
    assert_eq!(updates, 1);
}

/// The store's half: an instance's start-up releases the leases whose owner names it,
/// and nobody else's (a live replica's lanes stay with it; `host-a:8080` is not a prefix
/// of `host-a:80801`'s owners because the name ends with `/`).
async fn an_instance_releases_only_its_own_earlier_leases(db: Db) {
    let store = fresh_store(db).await;
    let mut tx = store.begin().await.unwrap();
    for key in ["incident:1", "incident:2", "incident:3"] {
        tx.enqueue(key, None, "{}", start()).await.unwrap();
    }
    tx.commit().await.unwrap();
    let lease = start() + DeliverySettings::default().lease;
    for owner in ["host-a:8080/old", "host-b:8080/live", "host-a:80801/live"] {
        let rows = store
            .claim_lanes(LaneClass::Slack, owner, start(), lease, 1)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{owner}");
    }
    let released = store
        .release_instance_leases("host-a:8080/", start())
        .await
        .unwrap();
    assert_eq!(released, 1);
    let again = store
        .claim_lanes(LaneClass::Slack, "host-a:8080/new", start(), lease, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "only the released lane is free: {again:?}");
}
