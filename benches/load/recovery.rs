//! Timers and failure scenarios: `reminders`, `slack-down`, `restart` (kill -9, forms
//! under a backlog). See `benches/load.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::loadgen::{Command, SlashClient, Stats, closed_loop};
use super::outbox::{ROWS_PER_DECLARE, pacing};
use super::server::{self, Db, Proc, ServerParams, spawn_server};
use super::standins::{SlackStandin, now_ms};
use super::{Ctx, declare, heading, loadavg, secs};

// ---------------------------------------------------------------------------------------
// 4. reminders
// ---------------------------------------------------------------------------------------

/// A fired reminder timer: due, fired (epoch ms), the incident's channel.
type FiredReminder = (i64, Option<i64>, Option<String>);

pub async fn scenario_reminders(ctx: &Ctx) {
    heading(ctx, "reminders");
    let n = ctx.pick(1_000usize, 10_000);
    let cadence_s = ctx.pick(20i64, 60);
    let standin = SlackStandin::start().await;
    let db = Db::fresh(&ctx.backend, &ctx.dir, "reminders").await;
    let params = ServerParams {
        sev1_status_every: Some(format!("{cadence_s}s")),
        ..ServerParams::default()
    };
    let (mut server, client) = ctx.server(&db, &standin, &params).await;
    let reads = db.reader().await;
    let first_ms = now_ms();
    closed_loop(&client, 32, n, None, |i| {
        declare(i, "Reminder load", "sev1")
    })
    .await
    .fail_loudly("SEV1 declares");
    let last_ms = now_ms();
    println!(
        "{n} SEV1 incidents declared in {:.1} s; status_every = {cadence_s}s",
        (last_ms - first_ms) as f64 / 1e3
    );
    let cadence = cadence_s * 1000;
    let sleep_until = |at_ms: i64| async move {
        let wait = at_ms - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    };
    sleep_until(first_ms + cadence).await;
    server.assert_alive();
    let backlog_at_first_due = server::pending(&reads).await;
    let window_end = last_ms + 2 * cadence + 2_000;
    sleep_until(window_end).await;
    server.assert_alive();
    // Let the reminders due in the window reach Slack (up to 60 s more).
    let grace_from = Instant::now();
    let (mut fired, mut unfired);
    loop {
        fired = server::count(
            &reads,
            &format!("select count(*) from timers where kind = 'status_reminder' and state = 'fired' and due_at_ms <= {window_end}"),
        )
        .await;
        unfired = server::count(
            &reads,
            &format!("select count(*) from timers where kind = 'status_reminder' and state = 'pending' and due_at_ms <= {window_end}"),
        )
        .await;
        let posted: usize = standin
            .posts()
            .values()
            .map(|v| v.iter().filter(|p| p.reminder).count())
            .sum();
        if (unfired == 0 && posted as i64 >= fired)
            || grace_from.elapsed() > Duration::from_secs(60)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let waited = grace_from.elapsed();
    let rows: Vec<(i64, i64, Option<i64>, Option<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select t.incident_id, t.due_at_ms, t.fired_at_ms, i.channel_id from timers t \
         join incidents i on i.id = t.incident_id \
         where t.kind = 'status_reminder' and t.state = 'fired' and t.due_at_ms <= {window_end} \
         order by t.incident_id, t.due_at_ms"
        )))
        .fetch_all(&reads)
        .await
        .expect("fired reminders");
    let posts = standin.posts();
    let mut lag: [Vec<i64>; 3] = Default::default();
    let mut lateness = Vec::new();
    let mut missing = 0usize;
    // For reminders not posted by the end: their lag is at least `end - due`.
    let end_ms = now_ms();
    let mut missing_age = Vec::new();
    let mut by_incident: HashMap<i64, Vec<FiredReminder>> = HashMap::new();
    for (id, due, fired_at, channel) in rows {
        by_incident
            .entry(id)
            .or_default()
            .push((due, fired_at, channel));
    }
    for timers in by_incident.values() {
        let reminder_posts: Vec<i64> = timers[0]
            .2
            .as_ref()
            .and_then(|c| posts.get(c))
            .map(|v| v.iter().filter(|p| p.reminder).map(|p| p.at_ms).collect())
            .unwrap_or_default();
        for (round, (due, fired_at, _)) in timers.iter().enumerate() {
            if let Some(f) = fired_at {
                lateness.push(f - due);
            }
            match reminder_posts.get(round) {
                Some(at) => lag[round.min(2)].push(at - due),
                None => {
                    missing += 1;
                    missing_age.push(end_ms - due);
                }
            }
        }
    }
    println!(
        "outbox rows pending when the first reminders came due: {backlog_at_first_due} (the declarations' own deliveries)"
    );
    println!(
        "reminder timers due by the window end: {} fired, {unfired} not fired; {missing} fired but not posted {:.0} s later",
        fired,
        secs(waited)
    );
    if !missing_age.is_empty() {
        let (n, p50, _, max, min) = Stats::of_ms(&mut missing_age);
        println!(
            "  not posted: {n} reminders, already late by at least {min} ms (p50 {p50} ms, max {max} ms) when the bench stopped waiting: the lag figures below leave them out"
        );
    }
    println!(
        "{:<34} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "lag, ms", "n", "p50", "p99", "max", "min"
    );
    let labels = [
        "due -> Slack, round 1",
        "due -> Slack, round 2",
        "due -> Slack, later rounds",
    ];
    for (label, v) in labels.iter().zip(lag.iter_mut()) {
        let (n, p50, p99, max, min) = Stats::of_ms(v);
        println!("{label:<34} {n:>7} {p50:>8} {p99:>8} {max:>8} {min:>8}");
    }
    let mut all: Vec<i64> = lag.iter().flatten().copied().collect();
    let (n_all, p50, p99, max, min) = Stats::of_ms(&mut all);
    println!(
        "{:<34} {n_all:>7} {p50:>8} {p99:>8} {max:>8} {min:>8}   (target p99 < 1000)",
        "due -> Slack, all"
    );
    let (n, p50, p99, max, min) = Stats::of_ms(&mut lateness);
    println!(
        "{:<34} {n:>7} {p50:>8} {p99:>8} {max:>8} {min:>8}",
        "timer firing lateness (fired-due)"
    );
    println!(
        "Slack calls in the scenario: {}",
        standin.counts().describe()
    );
    reads.close().await;
    server.stop();
    db.drop_it().await;
    println!("load average at end: {}", loadavg());
}

// ---------------------------------------------------------------------------------------
// 5. slack-down
// ---------------------------------------------------------------------------------------

/// The server's CPU ticks over `d`, and the wall time it took.
async fn cpu_over(server: &Proc, d: Duration) -> (u64, Duration) {
    let c0 = server.cpu_ticks();
    let t0 = Instant::now();
    tokio::time::sleep(d).await;
    (server.cpu_ticks() - c0, t0.elapsed())
}

pub async fn scenario_slack_down(ctx: &Ctx) {
    heading(ctx, "slack-down");
    let window = Duration::from_secs(ctx.pick(10, 20));
    let tck = server::clock_ticks_per_sec();
    let standin = SlackStandin::start().await;
    let db = Db::fresh(&ctx.backend, &ctx.dir, "slack-down").await;
    let (mut server, client) = ctx.server(&db, &standin, &ServerParams::default()).await;
    let pct = |(ticks, wall): (u64, Duration)| ticks as f64 / tck as f64 / secs(wall) * 100.0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = cpu_over(&server, Duration::from_secs(5)).await;
    standin.set_down(true);
    closed_loop(&client, 4, 10, None, |i| declare(i, "Slack down", "sev1"))
        .await
        .fail_loudly("declares with Slack down");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let reads = db.reader().await;
    let waiting = server::pending(&reads).await;
    let c0 = standin.counts();
    let down = cpu_over(&server, window).await;
    server.assert_alive();
    let calls = standin.counts().since(&c0);
    println!(
        "idle, nothing waiting, Slack up   : {:.2} % of one core over {:.1} s ({} ticks at {tck}/s)",
        pct(idle),
        secs(idle.1),
        idle.0
    );
    println!(
        "Slack answering 503, {waiting} rows waiting (10 SEV1s): {:.2} % of one core over {:.1} s ({} ticks) (target < 1 %)",
        pct(down),
        secs(down.1),
        down.0
    );
    println!(
        "  Slack calls refused in the window: {} ({:.1}/s); log lines 'will be retried' so far: {}",
        calls.total_refused(),
        calls.total_refused() as f64 / secs(down.1),
        server.log_count("will be retried")
    );
    reads.close().await;
    server.stop();
    db.drop_it().await;
    println!("load average at end: {}", loadavg());
}

// ---------------------------------------------------------------------------------------
// 6. restart
// ---------------------------------------------------------------------------------------

async fn forms(
    client: &SlashClient,
    standin: &SlackStandin,
    label: &str,
    server: &mut Proc,
) -> Vec<String> {
    let mut out = Vec::new();
    for j in 0..3 {
        let trigger = format!("form.{label}.{j}.{}", now_ms());
        let sent = now_ms();
        let t0 = Instant::now();
        client
            .must(&Command::incident("declare", trigger.clone()))
            .await;
        let http = t0.elapsed();
        let mut opened = None;
        while t0.elapsed() < Duration::from_secs(15) {
            if let Some(at) = standin.view_opened_at(&trigger) {
                opened = Some(at - sent);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.assert_alive();
        out.push(match opened {
            Some(ms) => format!("{ms} ms (HTTP answer {:.0} ms)", secs(http) * 1e3),
            None => format!(
                "NOT opened within 15 s (HTTP answer {:.0} ms)",
                secs(http) * 1e3
            ),
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    out
}

pub async fn scenario_restart(ctx: &Ctx) {
    heading(ctx, "restart");
    let k = ctx.pick(150usize, 500);
    let cap = Duration::from_secs(ctx.pick(80, 90));
    let standin = SlackStandin::start().await;
    let db = Db::fresh(&ctx.backend, &ctx.dir, "restart").await;
    let (server_a, client) = ctx.server(&db, &standin, &ServerParams::default()).await;
    let reads = db.reader().await;
    closed_loop(&client, 32, k, None, |i| declare(i, "Restart", "sev2"))
        .await
        .fail_loudly("declares");
    // About 6 Slack calls per declaration (create, purpose, invite, topic, 2 posts).
    let threshold = (k * 6 / 3) as u64;
    let t = Instant::now();
    while standin.counts().total_ok() < threshold && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let calls_at_kill = standin.counts().total_ok();
    let server_a_addr = server_a.addr;
    server_a.kill9();
    let now = now_ms();
    let waiting = server::pending(&reads).await;
    let leased = server::count(
        &reads,
        &format!(
            "select count(*) from outbox_lanes where lease_owner is not null and due_at_ms > {now}"
        ),
    )
    .await;
    let restarted = Instant::now();
    // The same unit restarted: same config, same port (the instance that takes its
    // predecessor's leases back at start-up).
    let (mut server_b, ready_in) = spawn_server(
        &ctx.dir,
        ctx.label(),
        &db.url,
        &standin,
        &ServerParams {
            listen: Some(server_a_addr),
            ..ServerParams::default()
        },
    )
    .await;
    let client = SlashClient::new(server_b.addr);
    let mut left = server::pending(&reads).await;
    while left > 0 && restarted.elapsed() < cap {
        server_b.assert_alive();
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = server::pending(&reads).await;
    }
    let took = restarted.elapsed();
    let p = pacing(&standin.posts(), 0);
    // Where the drain's time went: posts after the restart in #incident-response (one
    // per second at most) and elsewhere, and when the last of each arrived.
    let restart_ms = now;
    let (mut announce, mut others) = (Vec::new(), Vec::new());
    for (channel, posts) in standin.posts() {
        for post in posts.iter().filter(|x| x.at_ms >= restart_ms) {
            if channel == super::server::ANNOUNCE_CHANNEL {
                announce.push(post.at_ms - restart_ms);
            } else {
                others.push(post.at_ms - restart_ms);
            }
        }
    }
    let last = |v: &[i64]| v.iter().max().map_or(0.0, |&ms| ms as f64 / 1e3);
    println!(
        "{k} incidents declared, Slack answering at once; kill -9 after {calls_at_kill} Slack calls: {waiting} rows pending, {leased} of them under a lease"
    );
    println!(
        "restart -> ready in {:.2} s; -> every row delivered in {:.2} s{} (target <= 10 s)",
        secs(ready_in),
        secs(took),
        if left == 0 {
            String::new()
        } else {
            format!(" -- NOT drained, {left} rows still pending at the cap")
        }
    );
    println!(
        "after the restart: {} posts in #incident-response (last at +{:.2} s), {} elsewhere (last at +{:.2} s)",
        announce.len(),
        last(&announce),
        others.len(),
        last(&others),
    );
    println!(
        "duplicates over the scenario: {} posts with the same text twice in one channel, {} name_taken",
        p.duplicates,
        standin.name_taken()
    );

    // Forms with 10,000 undelivered rows waiting.
    let rows = ctx.pick(2_000usize, 10_000);
    let incidents = rows.div_ceil(ROWS_PER_DECLARE as usize);
    standin.set_views_fast(true);
    standin.set_down(true);
    closed_loop(&client, 32, incidents, None, |i| {
        declare(i, "Form backlog", "sev2")
    })
    .await
    .fail_loudly("declares with Slack down");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = server::pending(&reads).await;
    let down = forms(&client, &standin, "down", &mut server_b).await;
    standin.set_down(false);
    standin.set_latency(Duration::from_millis(100));
    let cleared = server::clear_backoff(&reads).await;
    let waiting_slow = server::pending(&reads).await;
    let slow = forms(&client, &standin, "slow", &mut server_b).await;
    println!(
        "form (/incident declare, no arguments) -> views.open at the stand-in (target <= 1 s):"
    );
    println!(
        "  Slack down (503) except views.open, {waiting} rows waiting: {}",
        down.join("; ")
    );
    println!(
        "  Slack up, every call but views.open answered in 100 ms, {waiting_slow} rows waiting and due (backoff cleared: {cleared}): {}",
        slow.join("; ")
    );
    standin.set_latency(Duration::ZERO);
    reads.close().await;
    server_b.stop();
    db.drop_it().await;
    println!("load average at end: {}", loadavg());
}
