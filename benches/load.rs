//! Load harness: the REAL `klaxon serve` (release binary, over TCP, worker and scheduler
//! running) against fast Slack and PagerDuty stand-ins, measured beside a floor server in
//! the same run on the same machine. Prints figures; asserts none (a request that is not
//! answered 2xx, or a server that dies, stops the run loudly).
//!
//! ```text
//! cargo bench --bench load -- [SCENARIO...] [--quick] [--sqlite-only]
//!   SCENARIO: declare outbox-fast outbox-slow reminders slack-down restart (default: all)
//! KLAXON_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test  also runs PostgreSQL
//! KLAXON_LOAD_EXTRA_TOML='[outbox]\nconcurrency = 64'  appended to the server's config
//! ```
//!
//! # Processes
//! - **bench** (this process): the load generator (hyper client with a connection pool),
//!   the Slack Web API + PagerDuty Events v2 stand-ins (one axum server, `load/standins.rs`),
//!   and the measurements (it reads the server's store through its own connection).
//! - **server**: `env!("CARGO_BIN_EXE_klaxon") serve --config <generated>` (config from ONE
//!   function, `server::config_toml`), secrets in `SLACK_SIGNING_SECRET` / `SLACK_BOT_TOKEN`,
//!   its log in the run's temp dir (its tail is printed if it dies).
//! - **floor**: this bench re-executed as `load --floor URL` (`load/floor.rs`): axum +
//!   Klaxon's signature check + ONE INSERT on the same kind of store with Klaxon's pragmas.
//!
//! Every scenario gets a fresh store (a new SQLite file; with `KLAXON_TEST_DATABASE_URL`,
//! also a new `bench_<uuid>` PostgreSQL schema through `options=-c search_path=...`, dropped
//! at the end), a fresh server and fresh stand-ins.
//!
//! # Scenarios (each prints its own table)
//! 1. `declare`: signed `/incident declare sev2 <title>` (form-encoded, as Slack sends it).
//!    *Open loop* at 2,000 req/s offered for 10 s (5 s `--quick`), at most 256 requests in
//!    flight; latency from each request's scheduled send time (no coordinated omission), so
//!    when the server falls behind its queue shows in the figures; p50/p90/p99/max and
//!    achieved throughput, floor and server, and their ratios (target p50 <= 1.5x,
//!    p99 <= 2x). *Saturated*: closed loop, 64 clients, 10 s (5 s): throughput ratio
//!    (target >= 50 %). *Drift*: 40,000 declares (4,000), closed loop with 16 clients on a
//!    fresh store: p50 of the first quarter (10,000) vs the last (target <= 1.25x), and the
//!    store's size per 10,000 incidents.
//! 2. `outbox-fast`: Slack answers 503 while M incidents are declared (5,000; 1,000), so
//!    their rows wait; then Slack answers at once and the time to drain is measured.
//!    Before the switch the backoff the 503s caused is cleared (`next_attempt_at_ms = now`
//!    for pending rows) and one SEV4 declaration wakes the worker: the figure is delivery
//!    throughput, not the retry schedule. *Pacing shapes the scenario*: Klaxon must post at
//!    most once per second per channel, so a throughput of >= 5,000/s needs >= 5,000
//!    channels with work waiting. Phase A (the declarations: channel, purpose, invite,
//!    topic, summary post in its own channel, announcement in `#incident-response`) is
//!    bounded by the one announcement channel once pacing exists (M announcements need M
//!    seconds), so its table also gives the calls excluding those. Phase B is the shape for
//!    the >= 5,000/s target: with Slack down again, 2 `/incident update` per incident channel
//!    (2 x M rows, all `chat.postMessage` spread over M channels: a paced server can post
//!    half of them in the first second and the rest one second later), then the same drain.
//!    Duplicates (the same text twice in one channel, `name_taken` on channel creation) and
//!    the most posts any channel got within one second are reported.
//! 3. `outbox-slow`: Slack answers every call in 100 ms; 500 incidents declared: rows and
//!    Slack calls delivered per second until drained (or 120 s; 30 s `--quick`), target
//!    >= 200/s, and the pacing check (<= 1 post per second per channel).
//! 4. `reminders`: 10,000 open SEV1s (1,000 `--quick`) with `status_every` overridden to
//!    60 s (20 s `--quick`) in the generated config, declared over HTTP as fast as the
//!    server takes them (closed loop, 32 clients). After two cadences past the last
//!    declaration, each fired `status_reminder` timer (`timers.due_at_ms`, `fired_at_ms`)
//!    is matched to the reminder posts ("No status update ...") the stand-in received in
//!    that incident's channel, in order: lag = arrival at the stand-in - due time,
//!    p50/p99/max per round (round 1 overlaps the tail of the declaration burst's own
//!    deliveries; round 2 is the steady state), target p99 < 1 s. Timer firing lateness
//!    (`fired_at_ms - due_at_ms`) alongside.
//! 5. `slack-down`: the server's CPU (utime + stime of its pid in `/proc`) as % of one
//!    core: idle with nothing waiting (5 s), then with Slack answering 503 and 10 incidents'
//!    messages waiting, over 20 s (10 s `--quick`) after 5 s to settle. Target < 1 %.
//! 6. `restart`: 500 incidents (150 `--quick`) declared with Slack answering at once; when
//!    the stand-in has received a third of the calls the declarations cause, `kill -9`
//!    (`Child::kill`); restart at once on the same store: time from the restart to every
//!    row delivered (target <= 10 s), duplicates. Then, on the restarted server, Slack
//!    down except `views.open` and 10,000 undelivered rows waiting (2,000 `--quick`):
//!    `/incident declare` with no arguments (opens a form) three times; time from the
//!    command to `views.open` at the stand-in (target <= 1 s). Repeated with Slack up but
//!    answering in 100 ms (the rows due, the worker busy).
//!
//! # What the numbers include
//! The bench process shares the machine with the server (and the floor): both are
//! measured under the same conditions, so ratios are meaningful; absolute figures depend
//! on the machine, printed at the top with its load average (other builds running show
//! there). Nothing here is a pass/fail test.

#[path = "load/floor.rs"]
mod floor;
#[path = "load/loadgen.rs"]
mod loadgen;
#[path = "load/server.rs"]
mod server;
#[path = "load/standins.rs"]
mod standins;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command as Process, ExitCode};
use std::time::{Duration, Instant};

use loadgen::{Command, SlashClient, Stats, closed_loop, open_loop};
use server::{ANNOUNCE_CHANNEL, Backend, Db, Proc, ServerParams, spawn_floor, spawn_server};
use sqlx::AnyPool;
use standins::{Counts, Post, SlackStandin, now_ms};

const SCENARIOS: [&str; 6] = [
    "declare",
    "outbox-fast",
    "outbox-slow",
    "reminders",
    "slack-down",
    "restart",
];

/// One backend's run.
struct Ctx {
    backend: Backend,
    dir: PathBuf,
    quick: bool,
}

impl Ctx {
    fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
    fn label(&self) -> &'static str {
        self.backend.label()
    }
    async fn server(
        &self,
        db: &Db,
        standin: &SlackStandin,
        params: &ServerParams,
    ) -> (Proc, SlashClient) {
        let (proc, _) = spawn_server(&self.dir, self.label(), &db.url, standin, params).await;
        let client = SlashClient::new(proc.addr);
        (proc, client)
    }
}

fn heading(ctx: &Ctx, title: &str) {
    println!();
    println!(
        "==================== {title} ({}) ====================",
        ctx.label()
    );
    println!("load average at start: {}", loadavg());
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn declare(i: usize, what: &str, sev: &str) -> Command {
    Command::incident(
        format!("declare {sev} {what} {i}"),
        format!("{}.{i}.bench", now_ms()),
    )
}

fn fmt_stats(s: &Stats) -> String {
    format!(
        "{:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        s.p50, s.p90, s.p99, s.max
    )
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

// ---------------------------------------------------------------------------------------
// 1. declare
// ---------------------------------------------------------------------------------------

async fn warm_up(client: &SlashClient, what: &str) {
    for i in 0..50 {
        client
            .must(&declare(i, &format!("Warm up {what}"), "sev2"))
            .await;
    }
}

async fn scenario_declare(ctx: &Ctx) {
    heading(ctx, "declare");
    let rate = 2_000.0;
    let run_secs = ctx.pick(5u64, 10);
    let count = (rate * run_secs as f64) as usize;
    let sat = Duration::from_secs(run_secs);

    // Floor.
    let db = Db::fresh(&ctx.backend, &ctx.dir, "floor").await;
    let mut floor = spawn_floor(&ctx.dir, &db.url).await;
    let client = SlashClient::new(floor.addr);
    warm_up(&client, "floor").await;
    let floor_open = open_loop(&client, rate, count, 256, |i| {
        declare(i, "Floor open loop", "sev2")
    })
    .await;
    floor.assert_alive();
    floor_open.fail_loudly("floor, open loop");
    let floor_sat = closed_loop(&client, 64, usize::MAX, Some(sat), |i| {
        declare(i, "Floor saturated", "sev2")
    })
    .await;
    floor.assert_alive();
    floor_sat.fail_loudly("floor, saturated");
    floor.stop();
    db.drop_it().await;

    // Server.
    let standin = SlackStandin::start().await;
    let db = Db::fresh(&ctx.backend, &ctx.dir, "declare").await;
    let (mut server, client) = ctx.server(&db, &standin, &ServerParams::default()).await;
    warm_up(&client, "server").await;
    let server_open = open_loop(&client, rate, count, 256, |i| {
        declare(i, "Open loop", "sev2")
    })
    .await;
    server.assert_alive();
    server_open.fail_loudly("klaxon serve, open loop");
    let server_sat = closed_loop(&client, 64, usize::MAX, Some(sat), |i| {
        declare(i, "Saturated", "sev2")
    })
    .await;
    server.assert_alive();
    server_sat.fail_loudly("klaxon serve, saturated");
    let reads = db.reader().await;
    let backlog = server::pending(&reads).await;
    reads.close().await;
    server.stop();
    db.drop_it().await;

    println!(
        "-- open loop: {rate:.0} req/s offered for {run_secs} s ({count} requests, <= 256 in flight), latency from the scheduled send, ms"
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "", "p50", "p90", "p99", "max", "achieved req/s"
    );
    let (fo, so) = (floor_open.stats(None), server_open.stats(None));
    println!(
        "{:<14} {} {:>14.0}",
        "floor",
        fmt_stats(&fo),
        floor_open.throughput()
    );
    println!(
        "{:<14} {} {:>14.0}",
        "klaxon serve",
        fmt_stats(&so),
        server_open.throughput()
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>14}   (target p50 <= 1.5x, p99 <= 2x)",
        "server/floor",
        ratio(so.p50, fo.p50),
        ratio(so.p90, fo.p90),
        ratio(so.p99, fo.p99),
        ratio(so.max, fo.max),
        ratio(server_open.throughput(), floor_open.throughput()),
    );
    println!(
        "   (outbox rows still pending when the server was stopped: {backlog}; the stand-in answered {} Slack calls)",
        standin.counts().total_ok()
    );
    println!("-- saturated: closed loop, 64 clients, {run_secs} s, latency from each send, ms");
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "", "p50", "p90", "p99", "max", "req/s"
    );
    for (label, r) in [("floor", &floor_sat), ("klaxon serve", &server_sat)] {
        println!(
            "{:<14} {} {:>14.0}",
            label,
            fmt_stats(&r.stats(None)),
            r.throughput()
        );
    }
    println!(
        "server/floor throughput: {:.0} % (target >= 50 %)",
        server_sat.throughput() / floor_sat.throughput().max(1e-9) * 100.0
    );

    // Drift on a fresh store.
    let total = ctx.pick(4_000usize, 40_000);
    let quarter = total / 4;
    let standin = SlackStandin::start().await;
    let db = Db::fresh(&ctx.backend, &ctx.dir, "drift").await;
    let (mut server, client) = ctx.server(&db, &standin, &ServerParams::default()).await;
    let reads = db.reader().await;
    let size0 = db.size_bytes(&reads).await;
    let drift = closed_loop(&client, 16, total, None, |i| declare(i, "Drift", "sev2")).await;
    server.assert_alive();
    drift.fail_loudly("klaxon serve, drift");
    let size1 = db.size_bytes(&reads).await;
    let backlog = server::pending(&reads).await;
    let incidents = server::count(&reads, "select count(*) from incidents").await;
    let window = |from: usize, to: usize| {
        let s = drift.stats(Some(from..to));
        let done: Vec<u64> = drift
            .samples
            .iter()
            .filter(|x| (from..to).contains(&x.index))
            .map(|x| x.done_us)
            .collect();
        let span = done.iter().max().unwrap_or(&0) - done.iter().min().unwrap_or(&0);
        (s, done.len() as f64 / (span as f64 / 1e6).max(1e-9))
    };
    let (first, first_rate) = window(0, quarter);
    let (last, last_rate) = window(total - quarter, total);
    println!(
        "-- drift: {total} declares on a fresh store, closed loop, 16 clients ({:.1} s, {:.0} req/s overall), ms",
        secs(drift.wall),
        drift.throughput()
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "p50", "p90", "p99", "max", "req/s"
    );
    println!(
        "{:<22} {} {:>9.0}",
        format!("first {quarter}"),
        fmt_stats(&first),
        first_rate
    );
    println!(
        "{:<22} {} {:>9.0}",
        format!("last {quarter}"),
        fmt_stats(&last),
        last_rate
    );
    println!(
        "last/first p50: {} (target <= 1.25x); p99 {}",
        ratio(last.p50, first.p50),
        ratio(last.p99, first.p99)
    );
    println!(
        "store: {:.1} MB after {incidents} incidents ({:.1} MB per 10,000; {:.1} MB empty); outbox rows still pending: {backlog}",
        size1 as f64 / 1e6,
        (size1 - size0.min(size1)) as f64 / 1e6 * 10_000.0 / incidents.max(1) as f64,
        size0 as f64 / 1e6
    );
    reads.close().await;
    server.stop();
    db.drop_it().await;
    println!("load average at end: {}", loadavg());
}

// ---------------------------------------------------------------------------------------
// Outbox measurements shared by the outbox scenarios.
// ---------------------------------------------------------------------------------------

/// Pacing and duplicates over the posts received since `from_ms`.
struct Pacing {
    posts: usize,
    channels: usize,
    /// Most posts one channel got within any 1 s window, and which channel.
    max_in_1s: usize,
    max_channel: String,
    /// Channels that got two posts less than 1 s apart.
    channels_over: usize,
    /// The same text posted twice in one channel (over the whole scenario).
    duplicates: usize,
    announce_posts: usize,
    announce_max_in_1s: usize,
}

fn pacing(all: &HashMap<String, Vec<Post>>, from_ms: i64) -> Pacing {
    let mut p = Pacing {
        posts: 0,
        channels: 0,
        max_in_1s: 0,
        max_channel: String::new(),
        channels_over: 0,
        duplicates: 0,
        announce_posts: 0,
        announce_max_in_1s: 0,
    };
    for (channel, posts) in all {
        let mut hashes: Vec<u64> = posts.iter().map(|x| x.hash).collect();
        hashes.sort_unstable();
        p.duplicates += hashes.windows(2).filter(|w| w[0] == w[1]).count();
        let mut times: Vec<i64> = posts
            .iter()
            .filter(|x| x.at_ms >= from_ms)
            .map(|x| x.at_ms)
            .collect();
        if times.is_empty() {
            continue;
        }
        times.sort_unstable();
        let mut most = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= 1000 {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        p.posts += times.len();
        p.channels += 1;
        if most > 1 {
            p.channels_over += 1;
        }
        if most > p.max_in_1s {
            p.max_in_1s = most;
            p.max_channel = channel.clone();
        }
        if channel == ANNOUNCE_CHANNEL {
            p.announce_posts = times.len();
            p.announce_max_in_1s = most;
        }
    }
    p
}

fn print_pacing(p: &Pacing, name_taken: u64) {
    println!(
        "posts: {} in {} channels; most in one channel within 1 s: {} ({}{}); channels with 2 posts < 1 s apart: {} (target: 0, at most 1 post/s/channel)",
        p.posts,
        p.channels,
        p.max_in_1s,
        p.max_channel,
        if p.max_channel == ANNOUNCE_CHANNEL {
            " = #incident-response"
        } else {
            ""
        },
        p.channels_over
    );
    println!(
        "  of which #incident-response: {} posts, most within 1 s: {}",
        p.announce_posts, p.announce_max_in_1s
    );
    println!(
        "duplicates: {} posts with the same text twice in one channel, {} channel creations answered name_taken",
        p.duplicates, name_taken
    );
}

/// One drain: from "Slack answers" until no outbox row is pending (or `cap`).
struct Drain {
    rows: i64,
    done: i64,
    elapsed: Duration,
    drained: bool,
    marks: [Option<Duration>; 3],
    calls: Counts,
    from_ms: i64,
    cleared: bool,
}

impl Drain {
    fn rate(&self) -> f64 {
        self.done as f64 / secs(self.elapsed).max(1e-9)
    }
}

/// Outbox rows one declaration queues today (open the channel, topic, summary,
/// announcement); only used to size backlogs and the drain's progress marks.
const ROWS_PER_DECLARE: i64 = 4;

/// Turns Slack on, clears the 503 backoff, wakes the worker with one declaration and
/// waits for the outbox to empty.
async fn drain(
    server: &mut Proc,
    client: &SlashClient,
    reads: &AnyPool,
    standin: &SlackStandin,
    cap: Duration,
) -> Drain {
    // The wake-up is a SEV4 declaration: it commits outbox rows whatever the server's
    // design (a form may open inline, without a row), so the worker is woken.
    let rows0 = server::pending(reads).await + ROWS_PER_DECLARE;
    let c0 = standin.counts();
    let from_ms = now_ms();
    standin.set_down(false);
    let cleared = server::clear_backoff(reads).await;
    let t0 = Instant::now();
    client
        .must(&declare(from_ms as usize, "Wake up", "sev4"))
        .await;
    let mut marks = [None; 3];
    let mut left = rows0;
    while t0.elapsed() < cap {
        left = server::pending(reads).await;
        let done = rows0 - left;
        for (mark, frac) in marks.iter_mut().zip([0.5, 0.9, 1.0]) {
            if mark.is_none() && done as f64 >= frac * rows0 as f64 {
                *mark = Some(t0.elapsed());
            }
        }
        if left == 0 {
            break;
        }
        server.assert_alive();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = marks[2].unwrap_or_else(|| t0.elapsed());
    Drain {
        rows: rows0,
        done: rows0 - left,
        elapsed,
        drained: left == 0,
        marks,
        calls: standin.counts().since(&c0),
        from_ms,
        cleared,
    }
}

fn print_drain(label: &str, d: &Drain, standin: &SlackStandin, target: &str) {
    let mark = |m: Option<Duration>| m.map_or("-".to_string(), |d| format!("{:.2} s", secs(d)));
    println!("-- {label}");
    println!(
        "rows waiting: {} (backoff cleared: {}); {} in {:.2} s{}: {:.0} rows/s ({target})",
        d.rows,
        if d.cleared { "yes" } else { "NO" },
        d.done,
        secs(d.elapsed),
        if d.drained {
            ""
        } else {
            " (cap reached, NOT drained)"
        },
        d.rate(),
    );
    println!(
        "drain marks: 50 % {}, 90 % {}, 100 % {}",
        mark(d.marks[0]),
        mark(d.marks[1]),
        mark(d.marks[2])
    );
    let p = pacing(&standin.posts(), d.from_ms);
    let calls = d.calls.total_ok();
    println!(
        "Slack calls: {calls} ({:.0}/s; {:.0}/s without #incident-response posts): {}",
        calls as f64 / secs(d.elapsed).max(1e-9),
        (calls as usize).saturating_sub(p.announce_posts) as f64 / secs(d.elapsed).max(1e-9),
        d.calls.describe()
    );
    print_pacing(&p, standin.name_taken());
}

// ---------------------------------------------------------------------------------------
// 2. outbox-fast
// ---------------------------------------------------------------------------------------

async fn scenario_outbox_fast(ctx: &Ctx) {
    heading(ctx, "outbox-fast");
    let m = ctx.pick(1_000usize, 5_000);
    let per_channel = 2usize;
    let cap = Duration::from_secs(ctx.pick(60, 120));
    let standin = SlackStandin::start().await;
    standin.set_down(true);
    let db = Db::fresh(&ctx.backend, &ctx.dir, "outbox-fast").await;
    let (mut server, client) = ctx.server(&db, &standin, &ServerParams::default()).await;
    let reads = db.reader().await;

    let seeded = Instant::now();
    closed_loop(&client, 32, m, None, |i| declare(i, "Outbox fast", "sev2"))
        .await
        .fail_loudly("declares with Slack down");
    println!(
        "phase A: {m} incidents declared with Slack answering 503 in {:.1} s",
        secs(seeded.elapsed())
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = drain(&mut server, &client, &reads, &standin, cap).await;
    print_drain(
        &format!("phase A: the declarations of {m} incidents, Slack answering at once"),
        &a,
        &standin,
        "target >= 5,000/s is for phase B's shape",
    );

    standin.set_down(true);
    let channels: Vec<(String,)> =
        sqlx::query_as("select channel_id from incidents where channel_id is not null order by id")
            .fetch_all(&reads)
            .await
            .expect("incident channels");
    let channels: Vec<String> = channels.into_iter().map(|(c,)| c).collect();
    if channels.is_empty() {
        println!("phase B skipped: no incident has a channel (phase A delivered nothing)");
    } else {
        let n = channels.len() * per_channel;
        let seeded = Instant::now();
        let list = channels.clone();
        closed_loop(&client, 32, n, None, move |i| Command {
            user: "UBENCH".into(),
            channel: list[i % list.len()].clone(),
            text: format!("update Status {i}: failing over, next update soon"),
            trigger_id: format!("u.{i}"),
        })
        .await
        .fail_loudly("updates with Slack down");
        println!(
            "phase B: {n} status updates ({per_channel} in each of {} incident channels) with Slack answering 503 in {:.1} s",
            channels.len(),
            secs(seeded.elapsed())
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = drain(&mut server, &client, &reads, &standin, cap).await;
        print_drain(
            &format!(
                "phase B: {n} chat.postMessage rows over {} channels, Slack answering at once",
                channels.len()
            ),
            &b,
            &standin,
            "target >= 5,000/s",
        );
    }
    reads.close().await;
    server.stop();
    db.drop_it().await;
    println!("load average at end: {}", loadavg());
}

// ---------------------------------------------------------------------------------------
// 3. outbox-slow
// ---------------------------------------------------------------------------------------

async fn scenario_outbox_slow(ctx: &Ctx) {
    heading(ctx, "outbox-slow");
    let m = 500usize;
    let cap = Duration::from_secs(ctx.pick(30, 120));
    let standin = SlackStandin::start().await;
    standin.set_latency(Duration::from_millis(100));
    let db = Db::fresh(&ctx.backend, &ctx.dir, "outbox-slow").await;
    let (mut server, client) = ctx.server(&db, &standin, &ServerParams::default()).await;
    let reads = db.reader().await;
    let from_ms = now_ms();
    let c0 = standin.counts();
    let t0 = Instant::now();
    closed_loop(&client, 32, m, None, |i| declare(i, "Outbox slow", "sev2"))
        .await
        .fail_loudly("declares");
    let declared_in = t0.elapsed();
    let mut left = server::pending(&reads).await;
    while left > 0 && t0.elapsed() < cap {
        server.assert_alive();
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = server::pending(&reads).await;
    }
    let elapsed = t0.elapsed();
    let done = server::count(&reads, "select count(*) from outbox where state = 'done'").await;
    let calls = standin.counts().since(&c0);
    let p = pacing(&standin.posts(), from_ms);
    println!(
        "{m} incidents declared in {:.1} s with Slack answering every call in 100 ms",
        secs(declared_in)
    );
    println!(
        "rows delivered: {done} in {:.1} s{} = {:.0} rows/s (target >= 200/s); {left} still pending",
        secs(elapsed),
        if left == 0 {
            " (drained)"
        } else {
            " (cap reached, NOT drained)"
        },
        done as f64 / secs(elapsed)
    );
    println!(
        "Slack calls: {} = {:.0}/s ({:.0}/s without #incident-response posts): {}",
        calls.total_ok(),
        calls.total_ok() as f64 / secs(elapsed),
        (calls.total_ok() as usize).saturating_sub(p.announce_posts) as f64 / secs(elapsed),
        calls.describe()
    );
    print_pacing(&p, standin.name_taken());
    reads.close().await;
    server.stop();
    db.drop_it().await;
    println!("load average at end: {}", loadavg());
}

// ---------------------------------------------------------------------------------------
// 4. reminders
// ---------------------------------------------------------------------------------------

/// A fired reminder timer: due, fired (epoch ms), the incident's channel.
type FiredReminder = (i64, Option<i64>, Option<String>);

async fn scenario_reminders(ctx: &Ctx) {
    heading(ctx, "reminders");
    let n = ctx.pick(1_000usize, 10_000);
    let cadence_s = ctx.pick(20i64, 60);
    let standin = SlackStandin::start().await;
    let db = Db::fresh(&ctx.backend, &ctx.dir, "reminders").await;
    let params = ServerParams {
        sev1_status_every: Some(format!("{cadence_s}s")),
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

async fn scenario_slack_down(ctx: &Ctx) {
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

async fn scenario_restart(ctx: &Ctx) {
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
    server_a.kill9();
    let now = now_ms();
    let waiting = server::pending(&reads).await;
    let leased = server::count(
        &reads,
        &format!("select count(*) from outbox where state = 'pending' and lease_until_ms > {now}"),
    )
    .await;
    let restarted = Instant::now();
    let (mut server_b, ready_in) = spawn_server(
        &ctx.dir,
        ctx.label(),
        &db.url,
        &standin,
        &ServerParams::default(),
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

// ---------------------------------------------------------------------------------------

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores (nproc), {cpu}")
}

fn git_rev() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = |args: &[&str]| {
        Process::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let rev = out(&["rev-parse", "--short", "HEAD"]);
    let dirty = !out(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!(
        "{rev}{}",
        if dirty {
            " (+ uncommitted changes)"
        } else {
            ""
        }
    )
}

async fn run_backend(backend: Backend, scenarios: &[&str], quick: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = Ctx {
        backend,
        dir: dir.path().to_path_buf(),
        quick,
    };
    for s in scenarios {
        match *s {
            "declare" => scenario_declare(&ctx).await,
            "outbox-fast" => scenario_outbox_fast(&ctx).await,
            "outbox-slow" => scenario_outbox_slow(&ctx).await,
            "reminders" => scenario_reminders(&ctx).await,
            "slack-down" => scenario_slack_down(&ctx).await,
            "restart" => scenario_restart(&ctx).await,
            _ => unreachable!("checked in main"),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        runtime.block_on(floor::main(&args[i + 1]));
        return ExitCode::SUCCESS;
    }
    klaxon::tls::install_crypto_provider();
    let quick = args.iter().any(|a| a == "--quick");
    let sqlite_only = args.iter().any(|a| a == "--sqlite-only");
    let mut scenarios: Vec<&str> = Vec::new();
    for a in args.iter().filter(|a| !a.starts_with("--")) {
        match SCENARIOS.iter().find(|s| **s == a.as_str()) {
            Some(s) => scenarios.push(s),
            None => {
                eprintln!(
                    "unknown scenario `{a}`; choose from: {}",
                    SCENARIOS.join(" ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if scenarios.is_empty() {
        scenarios = SCENARIOS.to_vec();
    }
    println!(
        "klaxon load bench: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!("machine : {}", machine());
    println!(
        "build   : {} profile (klaxon serve = {}), commit {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release/bench"
        },
        env!("CARGO_BIN_EXE_klaxon"),
        git_rev()
    );
    println!(
        "mode    : {}; scenarios: {}",
        if quick { "--quick" } else { "full" },
        scenarios.join(" ")
    );
    let mut backends = vec![Backend::Sqlite];
    match std::env::var("KLAXON_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() && !sqlite_only => backends.push(Backend::Postgres(url)),
        _ => println!("PostgreSQL: not measured (set KLAXON_TEST_DATABASE_URL)"),
    }
    for backend in backends {
        runtime.block_on(run_backend(backend, &scenarios, quick));
    }
    ExitCode::SUCCESS
}
