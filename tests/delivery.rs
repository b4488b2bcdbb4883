//! The delivery engine under the conditions of a real outage: Slack down or rate-limiting,
//! a call that hangs, a worker that stops or dies, several workers on one database, a
//! timer firing while someone posts an update. The real `run()` loops on the manual
//! clock where the loops matter; both backends.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use futures_util::StreamExt;
use klaxon::clock::{Clock, ManualClock};
use klaxon::domain::incident::IncidentId;
use klaxon::domain::outbound::LaneClass;
use klaxon::domain::severity::Severity;
use klaxon::engine::RequestMeta;
use klaxon::outbox::{DeliverySettings, MAX_ATTEMPTS};
use klaxon::slack::morphism::MorphismSlack;
use klaxon::store::Store;
use support::slack_emulator::{Failure, SlackEmulator};
use support::{ANNOUNCE, Db, TestApp, fresh_store_with_url, start};
use tokio::sync::watch;

both_backends!(
    the_real_loops_deliver_a_declare_on_the_manual_clock,
    the_loops_deliver_with_their_store_work_on_threads_of_their_own,
    a_lease_is_renewed_while_a_slow_call_is_in_flight,
    a_restart_resumes_what_a_dead_process_was_delivering,
    a_503_storm_loses_nothing_and_fails_nothing,
    a_429_storm_is_never_a_failed_attempt,
    a_hung_call_times_out_while_other_lanes_deliver,
    a_lane_that_just_posted_waits_for_its_channel_instead_of_being_claimed,
    a_channel_that_cannot_be_opened_fails_its_lane_fast_and_says_so,
    pages_go_out_while_slack_is_down,
    forms_open_from_the_request_and_say_so_when_they_cannot,
    three_workers_deliver_every_call_exactly_once_when_one_stops,
);

/// Where a long wait stands: finished, or how much work is done so far.
enum Progress {
    Done,
    At(usize),
}

/// Polls `progress` until it says [`Progress::Done`]. No deadline: it fails only when the
/// count of work done stops moving for [`STALL_POLLS`] polls in a row (at least a minute
/// of real time), so a slow, loaded machine is waited for and a stuck delivery still
/// fails, naming `what` and where it stopped.
async fn until_done(what: &str, mut progress: impl AsyncFnMut() -> Progress) {
    let mut best = 0;
    let mut still = 0;
    loop {
        let now = match progress().await {
            Progress::Done => return,
            Progress::At(n) => n,
        };
        if now > best {
            best = now;
            still = 0;
        } else {
            still += 1;
            assert!(
                still < STALL_POLLS,
                "{what}: no progress past {now} for {STALL_POLLS} polls"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls without progress after which [`until_done`] gives up (each poll sleeps 10 ms).
const STALL_POLLS: usize = 6_000;

/// Polls `check` every 10 ms for up to 20 s of real time; panics naming `what`.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..2_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Starts the app's real worker and scheduler loops; stop them with the returned sender.
fn run_loops(app: &TestApp) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>) {
    let (stop, rx) = watch::channel(false);
    let worker = tokio::spawn(app.worker.clone().run(rx.clone()));
    let scheduler = tokio::spawn(app.scheduler.clone().run(rx));
    (stop, vec![worker, scheduler])
}

async fn stop_loops(stop: watch::Sender<bool>, handles: Vec<tokio::task::JoinHandle<()>>) {
    stop.send(true).unwrap();
    for h in handles {
        h.await.unwrap();
    }
}

async fn pending(store: &Store) -> i64 {
    store.outbox_counts().await.unwrap().pending
}

async fn the_real_loops_deliver_a_declare_on_the_manual_clock(db: Db) {
    let app = TestApp::start(db).await;
    let (stop, loops) = run_loops(&app);
    declare_and_get_reminded(&app).await;
    stop_loops(stop, loops).await;
}

/// With the loops running: a SEV1 declared is announced and drained without a clock move
/// or a deliver() call (the engine wakes the worker), and its status reminder goes out
/// when the clock reaches it, through the real scheduler.
async fn declare_and_get_reminded(app: &TestApp) {
    app.command("UALICE", "CGENERAL01", "declare sev1 Database is down")
        .await;
    let posts = app.slack.wait_for_calls("chat.postMessage", 2).await;
    assert!(posts.iter().any(|p| p["channel"] == ANNOUNCE));
    eventually("the outbox to drain", async || {
        pending(&app.store).await == 0
    })
    .await;
    app.clock.advance(TimeDelta::minutes(30));
    app.slack.wait_for_calls("chat.postMessage", 3).await;
}

/// As `serve` runs them: the worker's claims and settles on a store thread, the
/// scheduler on a thread of its own (each its own runtime, beside the test's).
async fn the_loops_deliver_with_their_store_work_on_threads_of_their_own(db: Db) {
    let app = TestApp::start(db).await;
    let (stop, rx) = watch::channel(false);
    let worker = app.worker.clone().with_store_thread(
        klaxon::background::StoreThread::start("test-outbox-store").expect("store thread"),
    );
    let worker = tokio::spawn(worker.run(rx.clone()));
    let scheduler =
        klaxon::background::spawn_on_own_thread("test-scheduler", app.scheduler.clone().run(rx))
            .expect("scheduler thread");
    declare_and_get_reminded(&app).await;
    stop.send(true).unwrap();
    worker.await.unwrap();
    tokio::task::spawn_blocking(move || scheduler.join())
        .await
        .unwrap()
        .expect("the scheduler thread ends at shutdown");
}

/// A call that outlives the lease keeps its lane: the heartbeat renews the lease on the
/// clock, so a second worker finds nothing to claim and the message is posted once.
async fn a_lease_is_renewed_while_a_slow_call_is_in_flight(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    let (stop, loops) = run_loops(&app);
    app.slack.fail_next(
        "chat.postMessage",
        Failure::Delay(Duration::from_millis(1_500)),
    );
    app.command("UALICE", &ch, "update slow but sure").await;
    // In flight: the incident's lane is leased (a no-op UPDATE counts it).
    eventually("the slow post to be in flight", async || {
        app.store
            .execute_raw(
                "update outbox_lanes set lease_owner = lease_owner \
                 where ordering_key = 'incident:1' and lease_owner is not null",
            )
            .await
            .unwrap()
            == 1
    })
    .await;
    // Three leases' worth of clock time pass while the call is in flight.
    // After each step, wait (real time, however loaded the machine) for the heartbeat to
    // renew the lease from the new clock time.
    let lease = DeliverySettings::default().lease;
    for _ in 0..6 {
        app.clock.advance(lease / 2);
        let renewed_until = (app.clock.now() + lease).timestamp_millis();
        eventually("the heartbeat to renew the lease", async || {
            app.store
                .execute_raw(&format!(
                    "update outbox_lanes set lease_owner = lease_owner \
                     where ordering_key = 'incident:1' and due_at_ms = {renewed_until}"
                ))
                .await
                .unwrap()
                == 1
        })
        .await;
    }
    let now = app.clock.now();
    let stolen = app
        .store
        .claim_lanes(LaneClass::Slack, "intruder", now, now + lease, 10)
        .await
        .unwrap();
    assert!(stolen.is_empty(), "the lease was renewed: {stolen:?}");
    eventually("the outbox to drain", async || {
        pending(&app.store).await == 0
    })
    .await;
    stop_loops(stop, loops).await;
    let posted = app
        .messages_in(&ch)
        .iter()
        .filter(|m| m.contains("slow but sure"))
        .count();
    assert_eq!(posted, 1);
}

/// kill -9 during delivery leaves leased lanes. On SQLite (one process owns the file) the
/// restarted worker takes them back at once; on PostgreSQL (other replicas may be alive)
/// when the short lease runs out.
async fn a_restart_resumes_what_a_dead_process_was_delivering(db: Db) {
    let app = TestApp::start(db).await;
    app.command("UALICE", "CGENERAL01", "declare sev1 Database is down")
        .await;
    let now = app.clock.now();
    let lease = DeliverySettings::default().lease;
    let dead = app
        .store
        .claim_lanes(LaneClass::Slack, "died-mid-delivery", now, now + lease, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let (stop, loops) = run_loops(&app);
    if db == Db::Postgres {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            app.slack.calls_to("conversations.create").len(),
            0,
            "leased"
        );
        app.clock.advance(lease);
    }
    app.slack.wait_for_calls("conversations.create", 1).await;
    eventually("the outbox to drain", async || {
        pending(&app.store).await == 0
    })
    .await;
    stop_loops(stop, loops).await;
    assert_eq!(app.slack.calls_to("conversations.create").len(), 1);
}

/// Runs delivery passes while moving the clock a minute at a time.
async fn storm_rounds(app: &TestApp, rounds: usize) {
    for _ in 0..rounds {
        app.deliver().await;
        app.clock.advance(TimeDelta::minutes(1));
    }
}

async fn a_503_storm_loses_nothing_and_fails_nothing(db: Db) {
    let app = TestApp::start(db).await;
    app.slack.set_outage(Some(Failure::Status(503)));
    for i in 0..5 {
        app.command("UALICE", "CGENERAL01", &format!("declare sev2 Outage {i}"))
            .await;
    }
    // Twenty failed attempts each: transient, backing off, never failed.
    storm_rounds(&app, 20).await;
    let counts = app.store.outbox_counts().await.unwrap();
    assert_eq!((counts.failed, counts.done), (0, 0));
    app.slack.set_outage(None);
    app.clock.advance(TimeDelta::minutes(10));
    app.deliver().await;
    let counts = app.store.outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.failed), (0, 0));
    assert_eq!(app.slack.calls_to("conversations.create").len(), 5);
    // Each incident announced once (announcements that waited together go out as one
    // digest message).
    let announcements: String = app
        .slack
        .calls_to("chat.postMessage")
        .iter()
        .filter(|p| p["channel"] == ANNOUNCE)
        .map(support::shown_text)
        .collect::<Vec<_>>()
        .join("\n");
    for i in 1..=5 {
        assert_eq!(
            announcements.matches(&format!("INC-{i} —")).count(),
            1,
            "{announcements}"
        );
    }
}

async fn a_429_storm_is_never_a_failed_attempt(db: Db) {
    let app = TestApp::start(db).await;
    app.slack.set_outage(Some(Failure::RateLimited {
        retry_after_secs: 30,
    }));
    app.command("UALICE", "CGENERAL01", "declare sev1 Database is down")
        .await;
    // More rounds than MAX_ATTEMPTS: a 429 is Slack asking us to wait, not a failure.
    storm_rounds(&app, MAX_ATTEMPTS as usize + 10).await;
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
    app.slack.set_outage(None);
    app.clock.advance(TimeDelta::minutes(1));
    app.deliver().await;
    let counts = app.store.outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.failed), (0, 0));
    // No row has a failed attempt on record (a no-op UPDATE counts them).
    let counted = app
        .store
        .execute_raw("update outbox set attempts = attempts where attempts > 0")
        .await
        .unwrap();
    assert_eq!(counted, 0, "a 429 was counted as a failed attempt");
}

async fn a_hung_call_times_out_while_other_lanes_deliver(db: Db) {
    let app = TestApp::start_configured(db, |c| {
        c.delivery.call_timeout = Duration::from_millis(300);
    })
    .await;
    let a = app.declare("UALICE", "sev1 Database is down").await;
    let b = app.declare("UBOB", "sev2 Search is slow").await;
    // The next topic change hangs far beyond the timeout.
    app.slack.fail_next(
        "conversations.setTopic",
        Failure::Delay(Duration::from_secs(3_600)),
    );
    app.command("UALICE", &a, "sev 2").await;
    app.command("UBOB", &b, "update reindexing").await;
    let report = app.deliver().await;
    assert_eq!(report.retried, 1, "the hung call, timed out: {report:?}");
    assert!(
        app.messages_in(&b).iter().any(|m| m.contains("reindexing")),
        "the other incident's lane delivered meanwhile"
    );
    app.clock.advance(TimeDelta::seconds(1));
    app.deliver().await;
    let counts = app.store.outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.failed), (0, 0));
}

/// Two updates in one channel: the second cannot go until the channel's second has
/// passed, so its lane comes due then. Claiming it at once would only have pacing hand
/// it back (a claim and a settle for nothing; half of a burst's claims, measured).
async fn a_lane_that_just_posted_waits_for_its_channel_instead_of_being_claimed(db: Db) {
    // Slack's own interval (the tests' default is 5 ms, slept through inline).
    let app = TestApp::start_configured(db, |c| {
        c.delivery.pacing.post_interval = Duration::from_secs(1);
    })
    .await;
    let channel = app.declare("UALICE", "sev2 Search is slow").await;
    app.clock.advance(TimeDelta::seconds(5));
    app.command("UALICE", &channel, "update reindexing").await;
    app.command("UALICE", &channel, "update reindexed half")
        .await;
    let first = app.deliver().await;
    assert_eq!(
        (first.delivered, first.retried),
        (1, 0),
        "the second update was not claimed: {first:?}"
    );
    let due = app
        .store
        .next_lane_due(LaneClass::Slack)
        .await
        .unwrap()
        .expect("the lane is due again");
    assert!(
        due >= app.clock.now() + TimeDelta::milliseconds(900),
        "the lane is due when its channel takes the next post: {due} vs {}",
        app.clock.now()
    );
    app.clock.advance(TimeDelta::seconds(1));
    assert_eq!(app.deliver().await.delivered, 1);
    let messages = app.messages_in(&channel);
    assert!(
        messages.iter().any(|m| m.contains("reindexed half")),
        "{messages:?}"
    );
}

async fn a_channel_that_cannot_be_opened_fails_its_lane_fast_and_says_so(db: Db) {
    let app = TestApp::start(db).await;
    app.slack
        .fail_next("conversations.create", Failure::Error("restricted_action"));
    app.command("UALICE", "CGENERAL01", "declare sev1 Database is down")
        .await;
    let report = app.deliver().await;
    // Channel creation, then topic and summary fail at once (no retries for hours).
    assert_eq!(report.failed, 3, "{report:?}");
    app.clock
        .advance(klaxon::engine::ANNOUNCEMENT_WAITS_FOR_CHANNEL);
    app.deliver().await;
    let said = app.messages_in(ANNOUNCE);
    assert!(
        said.iter().any(
            |m| m.contains("could not deliver the incident channel for INC-1")
                && m.contains("restricted_action")
        ),
        "{said:#?}"
    );
    assert!(
        said.iter().any(|m| m.contains("Database is down")),
        "the announcement still goes out: {said:#?}"
    );
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, 0);
}

async fn pages_go_out_while_slack_is_down(db: Db) {
    let app = TestApp::start(db).await;
    app.slack.set_outage(Some(Failure::Status(503)));
    app.command("UALICE", "CGENERAL01", "declare sev1 Database is down")
        .await;
    app.deliver().await;
    // Nobody mitigates: the 15-minute escalation step pages the team.
    app.clock.advance(TimeDelta::minutes(15));
    app.fire().await;
    app.deliver().await;
    let pages = app.pagerduty.actions();
    assert!(
        pages.iter().any(|(action, _)| action == "trigger"),
        "{pages:?}"
    );
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
}

async fn forms_open_from_the_request_and_say_so_when_they_cannot(db: Db) {
    let app = TestApp::start(db).await;
    let reply = app.command("UALICE", "CGENERAL01", "declare").await;
    assert_eq!(reply, "", "the form opened");
    // Opened before the HTTP answer, with no outbox pass.
    assert_eq!(app.slack.calls_to("views.open").len(), 1);
    assert_eq!(pending(&app.store).await, 0);
    app.slack
        .fail_next("views.open", Failure::Error("expired_trigger_id"));
    let reply = app.command("UALICE", "CGENERAL01", "declare").await;
    assert!(
        reply.contains("could not be opened") && reply.contains("declare sev1"),
        "{reply}"
    );
}

/// Three worker instances (three replicas on PostgreSQL; three workers in one process on
/// SQLite) over 1,000 incidents; one is stopped mid-run. Every channel is created once and
/// every summary and announcement posted once, none lost. The waits follow progress, not
/// the wall clock, so the parallel suite's load slows the test down without failing it.
async fn three_workers_deliver_every_call_exactly_once_when_one_stops(db: Db) {
    const INCIDENTS: usize = 1_000;
    /// Declares in flight at once while the incidents are written.
    const DECLARING: usize = 16;
    let (store, url) = fresh_store_with_url(db).await;
    let slack = SlackEmulator::start().await;
    let clock = Arc::new(ManualClock::new(start()));
    slack.use_clock(clock.clone());
    let config = support::test_config(&slack.base_url, &url);
    let mut replicas = Vec::new();
    for _ in 0..3 {
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
    let engine = replicas[0].state.engine.clone();
    let mut loops = Vec::new();
    for replica in &replicas {
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(replica.worker.clone().run(rx));
        loops.push((stop, handle));
    }
    // Declared a few at a time while the workers run (on PostgreSQL the commits overlap;
    // on SQLite they queue for the one writer without a round trip between them).
    let wake = || {
        // The replicas' own engines did not commit these: on PostgreSQL they hear the
        // NOTIFY; here, wake them as the LISTEN task would.
        for replica in &replicas {
            replica.wakers.outbox.notify_one();
        }
    };
    let mut declares = futures_util::stream::iter(0..INCIDENTS)
        .map(|i| {
            let engine = engine.clone();
            async move {
                let meta = RequestMeta::user("UALICE", &format!("req-{i}"));
                engine
                    .declare(&meta, Severity::Sev2, &format!("Outage number {i}"))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(DECLARING);
    let mut declared = 0;
    while declares.next().await.is_some() {
        declared += 1;
        if declared % DECLARING == 0 {
            wake();
        }
    }
    wake();
    // Stop one worker mid-run (it finishes and records what it has in flight).
    until_done("deliveries to start", async || {
        clock.advance(TimeDelta::milliseconds(50));
        match slack.calls_to("conversations.create").len() {
            n if n >= INCIDENTS / 10 => Progress::Done,
            n => Progress::At(n),
        }
    })
    .await;
    let (stop, handle) = loops.remove(0);
    stop.send(true).unwrap();
    handle.await.unwrap();
    until_done("every row delivered", async || {
        // Time passes (pacing of the shared #incident-response is on the clock), in steps
        // far shorter than a lease, so heartbeats keep up.
        clock.advance(TimeDelta::milliseconds(50));
        for replica in &replicas[1..] {
            replica.wakers.outbox.notify_one();
        }
        let counts = store.outbox_counts().await.unwrap();
        match counts.pending {
            0 => Progress::Done,
            _ => Progress::At((counts.done + counts.failed) as usize),
        }
    })
    .await;
    for (stop, handle) in loops {
        stop.send(true).unwrap();
        handle.await.unwrap();
    }
    let mut created: HashMap<String, usize> = HashMap::new();
    for call in slack.calls_to("conversations.create") {
        *created.entry(call["name"].to_string()).or_default() += 1;
    }
    assert_eq!(created.len(), INCIDENTS);
    assert!(
        created.values().all(|n| *n == 1),
        "a channel was created twice"
    );
    // A summary in each incident channel, once; each incident announced once in
    // #incident-response (announcements claimed together go out as one digest).
    let posts = slack.calls_to("chat.postMessage");
    let (announce_posts, summaries): (Vec<_>, Vec<_>) =
        posts.iter().partition(|p| p["channel"] == ANNOUNCE);
    assert_eq!(summaries.len(), INCIDENTS, "one summary each");
    let summarised: std::collections::HashSet<String> =
        summaries.iter().map(|p| p["channel"].to_string()).collect();
    assert_eq!(summarised.len(), INCIDENTS, "a summary posted twice");
    let announced: String = announce_posts
        .iter()
        .map(|p| support::shown_text(p))
        .collect::<Vec<_>>()
        .join("\n");
    for i in 1..=INCIDENTS {
        assert_eq!(
            announced.matches(&format!("INC-{i} —")).count(),
            1,
            "INC-{i} announced other than once"
        );
    }
    assert_eq!(slack.calls_to("conversations.setTopic").len(), INCIDENTS);
    assert_eq!(store.outbox_counts().await.unwrap().failed, 0);
    // Every incident got its channel recorded.
    for i in 1..=INCIDENTS as i64 {
        let incident = store.incident(IncidentId(i)).await.unwrap().unwrap();
        assert!(incident.channel.is_some(), "{} has no channel", incident.id);
    }
}

/// Posting an update locks the incident, then moves its timers; firing a timer must take
/// the same order (incident, then timer), or on PostgreSQL the two deadlock. Checked
/// deterministically: while the test holds the incident's row lock, a firing blocks on it
/// without having locked its timer row yet.
#[tokio::test]
async fn a_firing_timer_locks_its_incident_before_its_timer() {
    let Some(_) = support::postgres_url() else {
        eprintln!("KLAXON_TEST_DATABASE_URL not set: PostgreSQL-only test not run");
        return;
    };
    use sqlx::Connection;
    let (store, url) = fresh_store_with_url(Db::Postgres).await;
    let app = TestApp::start_with(store, "UTC", start()).await;
    let engine = app.scheduler.engine().clone();
    let meta = RequestMeta::user("UALICE", "req-1");
    let id = engine
        .declare(&meta, Severity::Sev1, "Database is down")
        .await
        .unwrap()
        .incident
        .id;
    app.clock.advance(TimeDelta::minutes(30));
    let now = app.clock.now();
    let timer = app
        .store
        .claim_timers(now, now + TimeDelta::seconds(15), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.incident_id == id)
        .expect("a due timer");

    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("select id from incidents where id = $1 for update")
        .bind(id.0)
        .execute(&mut *held)
        .await
        .unwrap();
    let firing = {
        let engine = engine.clone();
        let timer = timer.clone();
        tokio::spawn(async move { engine.fire_timer(&timer).await })
    };
    let mut probe = sqlx::PgConnection::connect(&url).await.unwrap();
    eventually("the firing to wait for the incident lock", async || {
        let (waiting,): (i64,) = sqlx::query_as(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' \
             and query like '%from incidents where id%for update%'",
        )
        .fetch_one(&mut probe)
        .await
        .unwrap();
        waiting > 0
    })
    .await;
    let mut check = probe.begin().await.unwrap();
    let free = sqlx::query("select id from timers where id = $1 for update nowait")
        .bind(timer.id)
        .execute(&mut *check)
        .await;
    assert!(
        free.is_ok(),
        "the firing locked its timer before its incident: {free:?}"
    );
    check.rollback().await.unwrap();
    held.rollback().await.unwrap();
    let outcome = firing.await.unwrap().unwrap();
    assert_eq!(outcome, klaxon::engine::TimerOutcome::Fired);
}
