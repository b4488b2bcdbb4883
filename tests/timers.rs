//! Durable timers on simulated time: status reminders, the escalation ladder through
//! PagerDuty, RTO watch, response deadlines, restarts and competing schedulers. Every
//! scenario runs on SQLite and, when KLAXON_TEST_DATABASE_URL is set, on PostgreSQL.

mod support;

use chrono::{DateTime, TimeDelta, Utc};
use klaxon::domain::incident::{Actor, EventKind, IncidentId};
use klaxon::domain::severity::Severity;
use klaxon::engine::RequestMeta;
use klaxon::store::{NextDue, Store};
use support::{Db, TestApp, fresh_store, fresh_store_with_url, routing_key, start};

both_backends!(
    a_sev1_left_alone_for_three_hours,
    an_update_at_minute_20_moves_the_next_reminder_to_minute_50,
    a_severity_change_reschedules_without_paging_twice,
    resolving_cancels_timers_and_resolves_pages,
    mitigated_incidents_stop_escalating,
    nobody_in_command_by_the_response_deadline_escalates,
    overdue_timers_fire_once_after_a_restart,
    two_schedulers_fire_a_thousand_timers_exactly_once,
    sev4_on_friday_evening_responds_next_business_day,
    paging_retries_until_pagerduty_accepts,
    regression_sub_millisecond_declaration_times_still_fire,
    an_escalation_notifies_its_targets_slack_channels_and_groups,
    a_commit_wakes_the_schedulers_with_its_earliest_timer,
    reminders_of_many_incidents_fire_together_each_once,
    a_timer_that_fails_to_fire_is_tried_again_a_lease_later_not_in_a_loop,
);

fn minutes(m: i64) -> DateTime<Utc> {
    start() + TimeDelta::minutes(m)
}

/// `(minute after start, event label)` for an incident's timer events.
async fn timer_events(app: &TestApp, id: IncidentId) -> Vec<(i64, String)> {
    let events = app
        .store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| {
            let label = match &e.kind {
                EventKind::ReminderSent { .. } => "reminder".to_string(),
                EventKind::Escalated { target, .. } => format!("page {target}"),
                EventKind::RtoCheckpoint { percent, .. } => format!("rto {percent}%"),
                EventKind::ResponseMissed { .. } => "response missed".to_string(),
                _ => return None,
            };
            Some(((e.at - start()).num_minutes(), label))
        })
        .collect::<Vec<_>>();
    sorted(events)
}

/// Timers due at the same instant fire in claim order; compare per minute, not by tie order.
fn sorted(mut events: Vec<(i64, String)>) -> Vec<(i64, String)> {
    events.sort();
    events
}

fn events(list: &[(i64, &str)]) -> Vec<(i64, String)> {
    sorted(list.iter().map(|(m, l)| (*m, l.to_string())).collect())
}

async fn a_sev1_left_alone_for_three_hours(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.command("UALICE", &ch, "role comms <@UCAROL>").await;
    app.run_until(minutes(180)).await;

    let got = timer_events(&app, IncidentId(1)).await;
    let expected = events(&[
        (15, "page team"),
        (30, "reminder"),
        (30, "page management"),
        (60, "reminder"),
        (60, "page executives"),
        (90, "reminder"),
        (120, "reminder"),
        (120, "page external"),
        (120, "rto 50%"),
        (150, "reminder"),
        (180, "reminder"),
        (180, "rto 75%"),
    ]);
    assert_eq!(got, expected);

    // PagerDuty got exactly one trigger per step, in ladder order, with the right keys.
    let pages: Vec<(String, String, String)> = app
        .pagerduty
        .events()
        .iter()
        .map(|e| {
            (
                e["event_action"].as_str().unwrap().to_string(),
                e["dedup_key"].as_str().unwrap().to_string(),
                e["routing_key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let prefix = page_prefix(&app).await;
    let expected_pages: Vec<(String, String, String)> =
        ["team", "management", "executives", "external"]
            .iter()
            .map(|t| {
                (
                    "trigger".to_string(),
                    format!("{prefix}1-{t}"),
                    routing_key(t),
                )
            })
            .collect();
    assert_eq!(pages, expected_pages);
    assert_eq!(app.pagerduty.events()[0]["payload"]["severity"], "critical");
    assert!(
        app.pagerduty.events()[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("INC-1 SEV1 unmitigated for 15 min")
    );

    // Reminders mention the commander and comms lead and say how to post an update.
    let reminders: Vec<String> = app
        .messages_in(&ch)
        .into_iter()
        .filter(|m| m.contains("No status update"))
        .collect();
    assert_eq!(reminders.len(), 6);
    assert!(
        reminders[0].contains("<@UALICE>") && reminders[0].contains("<@UCAROL>"),
        "{}",
        reminders[0]
    );
    assert!(
        reminders[0].contains("No status update yet, 30 min after declaration"),
        "{}",
        reminders[0]
    );
    assert!(reminders[0].contains("/incident update"));
    assert!(
        !reminders.iter().any(|r| r.contains("late")),
        "on time: no lateness note"
    );
    let rto: Vec<String> = app
        .messages_in(&ch)
        .into_iter()
        .filter(|m| m.contains("RTO used"))
        .collect();
    assert!(
        rto[0].contains("50% of the 4 h RTO used: 2 h left"),
        "{}",
        rto[0]
    );
    assert!(
        rto[0].contains("Mon 23 Nov 14:00 UTC (14:00 UTC)"),
        "{}",
        rto[0]
    );
}

async fn an_update_at_minute_20_moves_the_next_reminder_to_minute_50(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.run_until(minutes(20)).await;
    app.command("UALICE", &ch, "update Failing over to the replica")
        .await;
    app.run_until(minutes(85)).await;
    let reminders: Vec<i64> = timer_events(&app, IncidentId(1))
        .await
        .into_iter()
        .filter(|(_, l)| l == "reminder")
        .map(|(m, _)| m)
        .collect();
    assert_eq!(reminders, [50, 80]);
    let last = app
        .messages_in(&ch)
        .into_iter()
        .find(|m| m.contains("No status update"))
        .unwrap();
    assert!(
        last.contains("No status update for 30 min")
            && last.contains("Failing over to the replica"),
        "{last}"
    );
}

async fn a_severity_change_reschedules_without_paging_twice(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev2 Checkout slow").await;
    app.run_until(minutes(40)).await;
    // SEV2 paged management at 30 and reminds hourly.
    assert_eq!(
        timer_events(&app, IncidentId(1)).await,
        events(&[(30, "page management")])
    );
    app.command("UALICE", &ch, "sev 1").await;
    app.run_until(minutes(70)).await;
    // Upgraded at 40: the team step (15 min) is overdue and fires now; management is not
    // paged again; executives at 60; reminders every 30 min from the last (none yet).
    assert_eq!(
        timer_events(&app, IncidentId(1)).await,
        events(&[
            (30, "page management"),
            (40, "page team"),
            (40, "reminder"),
            (60, "page executives"),
            (70, "reminder")
        ])
    );
    let keys: Vec<String> = app
        .pagerduty
        .actions()
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let prefix = page_prefix(&app).await;
    assert_eq!(
        keys,
        [
            format!("{prefix}1-management"),
            format!("{prefix}1-team"),
            format!("{prefix}1-executives")
        ]
    );
}

async fn resolving_cancels_timers_and_resolves_pages(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.run_until(minutes(35)).await;
    app.command("UALICE", &ch, "resolve Failed over").await;
    app.run_until(minutes(300)).await;
    assert_eq!(
        timer_events(&app, IncidentId(1)).await,
        events(&[(15, "page team"), (30, "reminder"), (30, "page management")])
    );
    let resolves: Vec<(String, String)> = app
        .pagerduty
        .actions()
        .into_iter()
        .filter(|(a, _)| a == "resolve")
        .collect();
    let prefix = page_prefix(&app).await;
    assert_eq!(
        resolves,
        [
            ("resolve".to_string(), format!("{prefix}1-management")),
            ("resolve".to_string(), format!("{prefix}1-team"))
        ]
    );
    let pending: Vec<_> = app
        .store
        .timers_of(IncidentId(1))
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.2 == "pending")
        .collect();
    assert!(pending.is_empty(), "{pending:?}");
}

async fn mitigated_incidents_stop_escalating(db: Db) {
    let app = TestApp::start(db).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.run_until(minutes(20)).await;
    app.command("UALICE", &ch, "status monitoring").await;
    app.run_until(minutes(130)).await;
    let got = timer_events(&app, IncidentId(1)).await;
    assert!(
        got.iter()
            .all(|(_, l)| !l.starts_with("page") || l == "page team"),
        "{got:?}"
    );
    let reminders: Vec<i64> = got
        .iter()
        .filter(|(_, l)| l == "reminder")
        .map(|(m, _)| *m)
        .collect();
    assert_eq!(
        reminders,
        [30, 60, 90, 120],
        "reminders continue while monitoring"
    );
}

async fn nobody_in_command_by_the_response_deadline_escalates(db: Db) {
    let app = TestApp::start(db).await;
    let meta = RequestMeta {
        actor: Actor::Klaxon,
        request_id: "pd-webhook".into(),
        dedupe: None,
    };
    let engine = klaxon::engine::Engine::clone(app_engine(&app));
    engine
        .declare(&meta, Severity::Sev1, "Triggered by PagerDuty")
        .await
        .unwrap();
    engine
        .declare(&meta, Severity::Sev2, "Someone takes this one")
        .await
        .unwrap();
    app.deliver().await;
    let second = app
        .store
        .incident(IncidentId(2))
        .await
        .unwrap()
        .unwrap()
        .channel
        .unwrap()
        .id;
    app.clock.set(minutes(10));
    app.command("UBOB", &second, "role commander <@UBOB>").await;
    app.run_until(minutes(31)).await;
    let first = timer_events(&app, IncidentId(1)).await;
    assert_eq!(
        &first[..2],
        &events(&[(15, "page team"), (15, "response missed")])[..]
    );
    assert!(first.iter().all(|(m, _)| *m >= 15));
    assert!(
        !timer_events(&app, IncidentId(2))
            .await
            .iter()
            .any(|(_, l)| l == "response missed")
    );
    assert!(
        app.messages_in(support::ANNOUNCE)
            .iter()
            .any(|m| m.contains("INC-1 SEV1 has no incident commander"))
    );
}

fn app_engine(app: &TestApp) -> &klaxon::engine::Engine {
    app.scheduler.engine()
}

async fn overdue_timers_fire_once_after_a_restart(db: Db) {
    let (store, url) = fresh_store_with_url(db).await;
    let first = TestApp::start_with(store, "UTC", start()).await;
    let ch = first.declare("UALICE", "sev1 Database is down").await;
    first.command("UALICE", &ch, "update Looking").await;
    drop(first);

    // Klaxon was down for three hours. A new process on the same database:
    let store = klaxon::store::Store::connect(&url).await.unwrap();
    let second = TestApp::start_with(store, "UTC", minutes(180)).await;
    let report = second.fire().await;
    second.deliver().await;
    // team, management, executives, external, one reminder, rto 50% and 75%.
    assert_eq!(report.fired, 7, "{report:?}");
    let again = second.fire().await;
    assert_eq!(again.fired, 0, "nothing fires twice");
    let got = timer_events(&second, IncidentId(1)).await;
    assert_eq!(got.len(), 7);
    assert!(got.iter().all(|(m, _)| *m == 180));
    assert_eq!(second.pagerduty.actions().len(), 4);
    let late = second.slack.calls_to("chat.postMessage");
    let reminder = late
        .iter()
        .find(|m| m["text"].as_str().unwrap().contains("No status update"))
        .unwrap();
    assert!(
        reminder["text"]
            .as_str()
            .unwrap()
            .contains("sent 2 h 30 min late"),
        "{reminder}"
    );
    // The next reminder is 30 min after the late one, not a burst of catch-ups.
    second.run_until(minutes(215)).await;
    let reminders: Vec<i64> = timer_events(&second, IncidentId(1))
        .await
        .into_iter()
        .filter(|(_, l)| l == "reminder")
        .map(|(m, _)| m)
        .collect();
    assert_eq!(reminders, [180, 210]);
}

async fn two_schedulers_fire_a_thousand_timers_exactly_once(db: Db) {
    let (store, url) = fresh_store_with_url(db).await;
    let app = TestApp::start_with(store, "UTC", start()).await;
    let engine = app_engine(&app).clone();
    for i in 0..1000 {
        engine
            .declare(
                &RequestMeta::user("UALICE", &format!("r{i}")),
                Severity::Sev1,
                &format!("Incident {i}"),
            )
            .await
            .unwrap();
    }
    // At minute 16 exactly one timer per incident is due: the team escalation.
    app.clock.set(minutes(16));
    let replica = TestApp::start_with(
        klaxon::store::Store::connect(&url).await.unwrap(),
        "UTC",
        minutes(16),
    )
    .await;
    let (a, b) = tokio::join!(app.scheduler.fire_due(), replica.scheduler.fire_due());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.fired + b.fired, 1000, "{a:?} {b:?}");
    // Deliver only the pages (Slack is not the point here): both replicas' workers.
    let (x, y) = tokio::join!(app.worker.deliver_due(), replica.worker.deliver_due());
    x.unwrap();
    y.unwrap();
    let mut keys: Vec<String> = app
        .pagerduty
        .actions()
        .into_iter()
        .chain(replica.pagerduty.actions())
        .map(|(_, k)| k)
        .collect();
    assert_eq!(keys.len(), 1000, "every timer paged exactly once");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 1000, "no page twice");
}

async fn sev4_on_friday_evening_responds_next_business_day(db: Db) {
    // Friday 20 Nov 2026, 19:00 in New York (EST, UTC-5) = Saturday 00:00 UTC.
    let friday = DateTime::parse_from_rfc3339("2026-11-21T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let app = TestApp::start_with(fresh_store(db).await, "America/New_York", friday).await;
    let engine = app_engine(&app).clone();
    let meta = RequestMeta {
        actor: Actor::Klaxon,
        request_id: "t".into(),
        dedupe: None,
    };
    engine
        .declare(&meta, Severity::Sev4, "Typo on the status page")
        .await
        .unwrap();
    let deadline = app
        .store
        .timers_of(IncidentId(1))
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.0 == "response_deadline")
        .unwrap();
    // Monday 23 Nov 09:00 EST = 14:00 UTC.
    assert_eq!(deadline.1.to_rfc3339(), "2026-11-23T14:00:00+00:00");

    // Across the end of DST: Friday 30 Oct 2026 18:00 EDT (22:00 UTC) -> Monday 2 Nov
    // 09:00 EST = 14:00 UTC (not 13:00).
    app.clock.set(
        DateTime::parse_from_rfc3339("2026-10-30T22:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    );
    engine
        .declare(&meta, Severity::Sev4, "Another")
        .await
        .unwrap();
    let deadline = app
        .store
        .timers_of(IncidentId(2))
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.0 == "response_deadline")
        .unwrap();
    assert_eq!(deadline.1.to_rfc3339(), "2026-11-02T14:00:00+00:00");
    let declared = app.store.timeline(IncidentId(2)).await.unwrap();
    assert!(
        matches!(&declared[0].kind, EventKind::Declared { respond_by, .. } if respond_by.to_rfc3339() == "2026-11-02T14:00:00+00:00")
    );
}

async fn paging_retries_until_pagerduty_accepts(db: Db) {
    let app = TestApp::start(db).await;
    app.declare("UALICE", "sev1 Database is down").await;
    app.pagerduty.fail_next(&[500, 429]);
    app.run_until(minutes(15)).await;
    assert!(app.pagerduty.actions().is_empty());
    app.clock.advance(TimeDelta::seconds(1));
    app.deliver().await; // 429 with Retry-After 3
    app.clock.advance(TimeDelta::seconds(3));
    app.deliver().await;
    let prefix = page_prefix(&app).await;
    assert_eq!(
        app.pagerduty.actions(),
        [("trigger".to_string(), format!("{prefix}1-team"))]
    );
}

/// Found by the timers benchmark: with the real clock, `declared_at` carried microseconds
/// while timer rows keep milliseconds, so the due-time check never matched and every timer
/// was cancelled as "no longer wanted". The clock here is deliberately off the millisecond.
async fn regression_sub_millisecond_declaration_times_still_fire(db: Db) {
    let odd = start() + TimeDelta::nanoseconds(123_456_789);
    let app = TestApp::start_with(fresh_store(db).await, "UTC", odd).await;
    app.declare("UALICE", "sev1 Database is down").await;
    app.run_until(odd + TimeDelta::minutes(31)).await;
    let fired: Vec<String> = timer_events(&app, IncidentId(1))
        .await
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(fired, ["page team", "page management", "reminder"]);
}

async fn an_escalation_notifies_its_targets_slack_channels_and_groups(db: Db) {
    let app = TestApp::start_configured(db, |config| {
        let team = config.targets.get_mut("team").unwrap();
        team.slack_channels = vec!["CSRETEAM01".into(), "CPLATFORM1".into()];
        team.slack_usergroups = vec!["SONCALL01".into()];
        // No routing key for management: it is paged nowhere, but still on the timeline.
        config.targets.get_mut("management").unwrap().routing_key = None;
    })
    .await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    app.run_until(minutes(31)).await;
    for channel in ["CSRETEAM01", "CPLATFORM1"] {
        let posts = app.messages_in(channel);
        assert_eq!(posts.len(), 1, "{channel}: {posts:?}");
        assert!(
            posts[0].starts_with("<!subteam^SONCALL01> ")
                && posts[0].contains("Escalated INC-1 to team"),
            "{}",
            posts[0]
        );
        assert!(posts[0].contains(&format!("<#{ch}>")), "{}", posts[0]);
    }
    let prefix = page_prefix(&app).await;
    assert_eq!(
        app.pagerduty.actions(),
        [("trigger".to_string(), format!("{prefix}1-team"))]
    );
    assert!(
        timer_events(&app, IncidentId(1))
            .await
            .contains(&(30, "page management".to_string()))
    );
}

/// A commit that writes timers wakes this process's scheduler and, on PostgreSQL, every
/// other replica's (through `NOTIFY`), saying when the earliest of them is due: a
/// scheduler whose next due time is sooner sleeps on without a query.
async fn a_commit_wakes_the_schedulers_with_its_earliest_timer(db: Db) {
    use std::sync::Arc;
    use std::time::Duration;

    let (store, url) = fresh_store_with_url(db).await;
    let slack = support::slack_emulator::SlackEmulator::start().await;
    let clock = Arc::new(klaxon::clock::ManualClock::new(start()));
    let config = support::test_config(&slack.base_url, &url);
    let client = klaxon::slack::morphism::MorphismSlack::new(
        &slack.base_url,
        config.slack.bot_token.clone(),
    )
    .unwrap();
    let replica = klaxon::app::wire(store.clone(), &config, clock.clone(), Arc::new(client));
    // Another replica's wake-ups, fed by its LISTEN connection (PostgreSQL only).
    let other = Arc::new(klaxon::store::TimerWake::default());
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let listener = {
        let (store, other) = (Store::connect(&url).await.unwrap(), other.clone());
        tokio::spawn(async move {
            store
                .listen_for_commits(Arc::default(), other, stop_rx)
                .await
        })
    };
    if db == Db::Postgres {
        // The first wake-up is the one every (re)connection gives: look.
        tokio::time::timeout(Duration::from_secs(30), other.notify().notified())
            .await
            .expect("the listener connects");
        assert_eq!(other.next_due(Some(i64::MAX)), NextDue::Look);
    }
    let meta = RequestMeta::user("UALICE", "req-wake");
    replica
        .state
        .engine
        .declare(&meta, Severity::Sev1, "Database is down")
        .await
        .unwrap();
    // The SEV1's first timer (the response deadline or the first reminder) is minutes
    // away: a scheduler due sooner is not disturbed; one due later looks.
    let soon = start().timestamp_millis() + 1_000;
    let later = (start() + TimeDelta::hours(1)).timestamp_millis();
    let wake = &replica.wakers.scheduler;
    assert_eq!(
        wake.next_due(Some(soon)),
        NextDue::Unchanged,
        "timers minutes away"
    );
    assert_eq!(
        wake.next_due(Some(later)),
        NextDue::Unchanged,
        "the hint was taken"
    );
    if db == Db::Postgres {
        tokio::time::timeout(Duration::from_secs(30), other.notify().notified())
            .await
            .expect("the other replica hears the commit");
        // A due time, not "look": the NOTIFY carried it.
        assert_eq!(
            other.next_due(Some(soon)),
            NextDue::Unchanged,
            "the NOTIFY carries the due time"
        );
    }
    replica
        .state
        .engine
        .declare(&meta, Severity::Sev1, "Payments are down")
        .await
        .unwrap();
    assert!(
        matches!(wake.next_due(Some(later)), NextDue::At(at) if at > soon && at < later),
        "a timer before the hour, and when"
    );
    if db == Db::Postgres {
        tokio::time::timeout(Duration::from_secs(30), other.notify().notified())
            .await
            .expect("the other replica hears the commit");
        assert!(matches!(other.next_due(Some(later)), NextDue::At(at) if at > soon && at < later));
    } else {
        // SQLite has one process: there is nobody to tell.
        listener.await.unwrap();
    }
}

/// Forty SEV1s declared together come due together: their reminders fire in groups (one
/// transaction for the timers of distinct incidents), each incident gets its own
/// reminder once, with its own events in its own intact hash chain, and its own post.
async fn reminders_of_many_incidents_fire_together_each_once(db: Db) {
    const N: i64 = 40;
    let app = TestApp::start(db).await;
    for i in 0..N {
        app.command("UALICE", "CGENERAL01", &format!("declare sev1 Outage {i}"))
            .await;
    }
    app.deliver().await;
    // Everyone takes command at once, so the response deadline and its page are gone and
    // the first reminder (minute 30) is each incident's next timer.
    for i in 1..=N {
        let incident = app.store.incident(IncidentId(i)).await.unwrap().unwrap();
        let channel = incident.channel.expect("channel").id;
        app.command("UBOB", &channel, "role commander <@UBOB>")
            .await;
    }
    app.clock.set(minutes(30));
    let report = app.fire().await;
    // The same timers fired for each (the reminder, and the ladder's steps due by now).
    let first = timer_events(&app, IncidentId(1)).await;
    assert_eq!(
        first
            .iter()
            .filter(|e| **e == (30, "reminder".to_string()))
            .count(),
        1,
        "{first:?}"
    );
    assert_eq!(report.fired, first.len() * N as usize, "{report:?}");
    for i in 1..=N {
        let id = IncidentId(i);
        assert_eq!(timer_events(&app, id).await, first, "{id}");
        let timeline = app.store.timeline(id).await.unwrap();
        klaxon::domain::timeline::verify(&timeline).unwrap_or_else(|e| panic!("{id}: {e:?}"));
        assert!(timeline.iter().all(|e| e.incident_id == id));
    }
    app.deliver().await;
    for i in 1..=N {
        let incident = app.store.incident(IncidentId(i)).await.unwrap().unwrap();
        let reminders = app
            .messages_in(&incident.channel.unwrap().id)
            .iter()
            .filter(|m| m.contains("No status update"))
            .count();
        assert_eq!(reminders, 1, "INC-{i}");
    }
}

/// The start of this installation's page dedup keys, `klaxon-<install8>-` (issue 9: keys
/// are unique per installation).
async fn page_prefix(app: &TestApp) -> String {
    let install = app.store.install_id().await.unwrap();
    format!("klaxon-{}-", &install[..8])
}

/// On SQLite the scheduler reads due timers without leasing them: one that fails to fire
/// must still be held back, or the pass would pick it up again forever.
async fn a_timer_that_fails_to_fire_is_tried_again_a_lease_later_not_in_a_loop(db: Db) {
    let app = TestApp::start_with(fresh_store(db).await, "UTC", start()).await;
    let ch = app.declare("UALICE", "sev1 Database is down").await;
    assert!(!ch.is_empty());
    // The incident's stored state no longer decodes: every firing fails.
    let broken = app
        .store
        .execute_raw("update incidents set state = 'x' || state where id = 1")
        .await
        .unwrap();
    assert_eq!(broken, 1);
    app.clock.set(minutes(31));
    let failed = app.fire().await;
    assert_eq!(
        failed,
        Default::default(),
        "nothing fired, and the pass ended"
    );
    // Mended; a few seconds later the failed timers are still held.
    app.store
        .execute_raw("update incidents set state = substr(state, 2) where id = 1")
        .await
        .unwrap();
    app.clock
        .set(minutes(31) + klaxon::scheduler::LEASE - TimeDelta::seconds(1));
    assert_eq!(app.fire().await.fired, 0, "held until the lease runs out");
    app.clock.set(minutes(31) + klaxon::scheduler::LEASE);
    let report = app.fire().await;
    // The team page (minute 15), the management page and the first reminder (minute
    // 30), each once.
    assert_eq!(report.fired, 3, "{report:?}");
    let got = timer_events(&app, IncidentId(1)).await;
    assert_eq!(
        got,
        events(&[(31, "page management"), (31, "page team"), (31, "reminder")])
    );
}
