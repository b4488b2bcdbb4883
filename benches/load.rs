//! Load harness: the REAL `klaxon serve` (release binary, over TCP, worker and scheduler
//! running) against fast Slack and PagerDuty stand-ins, measured beside a floor server in
//! the same run on the same machine. Prints figures; asserts none (a request that is not
//! answered 2xx, or a server that dies, stops the run loudly).
//!
//! ```text
//! cargo bench --bench load -- [SCENARIO...] [--quick] [--sqlite-only | --postgres-only] [--standin-same-priority]
//!   SCENARIO: declare outbox-fast outbox-slow reminders slack-down restart (default: all)
//! KLAXON_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test  also runs PostgreSQL
//! KLAXON_LOAD_EXTRA_TOML='[outbox]\nconcurrency = 64'  appended to the server's config
//! KLAXON_BENCH_KEEP_LOGS=1  keeps the run's temp dir (the servers' logs) and prints it
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
//!    when the server falls behind its queue shows in the figures. The Slack stand-in runs
//!    on a thread at background priority here (it plays Slack, whose CPU is not the
//!    server's: the calls the declarations cause must not take the CPU from the requests
//!    measured; `--standin-same-priority` keeps it beside the load generator); p50/p90/p99/max and
//!    achieved throughput, floor and server, and their ratios (target p50 <= 1.5x,
//!    p99 <= 2x). *Saturated*: closed loop, 64 clients, 10 s (5 s): throughput ratio
//!    (target >= 50 %). *Drift*: 40,000 declares (4,000), closed loop with 16 clients on a
//!    fresh store: p50 of the first quarter (10,000) vs the last (target <= 1.25x), and the
//!    store's size per 10,000 incidents once every declaration is written out.
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
//!    Its figure for the target is the *first wave*: the time until every channel got its
//!    first post (work that pacing lets go at once), as deliveries per second; the whole
//!    drain cannot take less than the one second the second posts must wait.
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
#[path = "load/outbox.rs"]
mod outbox;
#[path = "load/recovery.rs"]
mod recovery;
#[path = "load/server.rs"]
mod server;
#[path = "load/standins.rs"]
mod standins;

use std::path::PathBuf;
use std::process::{Command as Process, ExitCode};
use std::time::{Duration, Instant};

use loadgen::{Command, SlashClient, Stats, closed_loop, open_loop};
use server::{Backend, Db, Proc, ServerParams, spawn_floor, spawn_server};
use standins::{SlackStandin, now_ms};

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
    /// `--standin-same-priority`: the `declare` scenario's stand-in is not set aside.
    standin_same_priority: bool,
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

/// The Slack stand-in for the `declare` scenario: aside (low priority) unless the run
/// asked for `--standin-same-priority`.
async fn declare_standin(ctx: &Ctx) -> SlackStandin {
    if ctx.standin_same_priority {
        println!("(Slack stand-in at the same priority as the load generator)");
        SlackStandin::start().await
    } else {
        SlackStandin::start_aside()
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

    // Server. The stand-in answers the deliveries on a low-priority thread (it plays
    // Slack, whose CPU is elsewhere; see `SlackStandin::start_aside`), unless
    // `--standin-same-priority`.
    let standin = declare_standin(ctx).await;
    let db = Db::fresh(&ctx.backend, &ctx.dir, "declare").await;
    let (mut server, client) = ctx.server(&db, &standin, &ServerParams::default()).await;
    warm_up(&client, "server").await;
    let metrics_before = client.metrics().await;
    let server_open = open_loop(&client, rate, count, 256, |i| {
        declare(i, "Open loop", "sev2")
    })
    .await;
    let metrics_after = client.metrics().await;
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
    // Where an ack's time goes, from the server's own histograms over the open loop.
    for (what, metric, label) in [
        (
            "handler time",
            "klaxon_http_request_duration_seconds",
            ("route", "/slack/commands"),
        ),
        (
            "SQLite writer wait, requests",
            "klaxon_sqlite_writer_wait_seconds",
            ("priority", "request"),
        ),
        (
            "SQLite writer hold, requests",
            "klaxon_sqlite_writer_hold_seconds",
            ("priority", "request"),
        ),
        (
            "SQLite writer hold, background",
            "klaxon_sqlite_writer_hold_seconds",
            ("priority", "background"),
        ),
    ] {
        // None: nothing observed (PostgreSQL has no SQLite writer to wait for).
        if let Some(shares) = histogram_shares(
            &loadgen::histogram(&metrics_before, metric, label),
            &loadgen::histogram(&metrics_after, metric, label),
        ) {
            println!("   server {what} over the open loop: {shares}");
        }
    }
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
    let standin = declare_standin(ctx).await;
    let db = Db::fresh(&ctx.backend, &ctx.dir, "drift").await;
    let (mut server, client) = ctx.server(&db, &standin, &ServerParams::default()).await;
    let reads = db.reader().await;
    let size0 = db.size_bytes(&reads).await;
    let drift = closed_loop(&client, 16, total, None, |i| declare(i, "Drift", "sev2")).await;
    server.assert_alive();
    drift.fail_loudly("klaxon serve, drift");
    // The size counts once every acknowledged declaration is written out (its incident,
    // timers and outbox rows in the main tables): with acks first, most of a burst is
    // still `declaring` when the loop ends, and the store looks smaller than it will be.
    let written_from = Instant::now();
    while server::count(
        &reads,
        "select count(*) from incidents where status = 'declaring'",
    )
    .await
        > 0
        && written_from.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let written_out = written_from.elapsed();
    let still_declaring = server::count(
        &reads,
        "select count(*) from incidents where status = 'declaring'",
    )
    .await;
    if still_declaring > 0 {
        println!(
            "   WARNING: {still_declaring} declarations still not written out after {:.0} s: the store size below undercounts them",
            secs(written_out)
        );
    }
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
        "store: {:.1} MB after {incidents} incidents ({:.1} MB per 10,000; {:.1} MB empty), read when every declaration was written out ({:.1} s after the last ack); outbox rows still pending: {backlog}",
        size1 as f64 / 1e6,
        (size1 - size0.min(size1)) as f64 / 1e6 * 10_000.0 / incidents.max(1) as f64,
        size0 as f64 / 1e6,
        secs(written_out)
    );
    reads.close().await;
    server.stop();
    db.drop_it().await;
    println!("load average at end: {}", loadavg());
}

/// The share of observations within each bound of one of the server's histograms
/// between two scrapes (cumulative): where the time of a slow ack is spent (inside the
/// handler or before it; waiting for the SQLite writer or holding it). `None` when
/// nothing was observed between the scrapes.
fn histogram_shares(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<String> {
    let count_at =
        |h: &[(f64, u64)], le: f64| h.iter().find(|(b, _)| *b == le).map_or(0, |(_, c)| *c);
    let total = count_at(after, f64::INFINITY).saturating_sub(count_at(before, f64::INFINITY));
    if total == 0 {
        return None;
    }
    let shares = after
        .iter()
        .filter(|(le, _)| le.is_finite() && *le <= 0.1)
        .map(|(le, c)| {
            let n = c.saturating_sub(count_at(before, *le));
            format!(
                "<= {} ms {:.0} %",
                le * 1000.0,
                n as f64 * 100.0 / total as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!("{shares} (of {total})"))
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

async fn run_backend(
    backend: Backend,
    scenarios: &[&str],
    quick: bool,
    standin_same_priority: bool,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = Ctx {
        backend,
        dir: dir.path().to_path_buf(),
        quick,
        standin_same_priority,
    };
    for s in scenarios {
        match *s {
            "declare" => scenario_declare(&ctx).await,
            "outbox-fast" => outbox::scenario_outbox_fast(&ctx).await,
            "outbox-slow" => outbox::scenario_outbox_slow(&ctx).await,
            "reminders" => recovery::scenario_reminders(&ctx).await,
            "slack-down" => recovery::scenario_slack_down(&ctx).await,
            "restart" => recovery::scenario_restart(&ctx).await,
            _ => unreachable!("checked in main"),
        }
    }
    if std::env::var_os("KLAXON_BENCH_KEEP_LOGS").is_some() {
        // For a closer look at a run: the servers' logs outlive the temp dir.
        let kept = dir.keep();
        println!("logs kept in {}", kept.display());
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
    let standin_same_priority = args.iter().any(|a| a == "--standin-same-priority");
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
    let postgres_only = args.iter().any(|a| a == "--postgres-only");
    let mut backends = Vec::new();
    if !postgres_only {
        backends.push(Backend::Sqlite);
    }
    match std::env::var("KLAXON_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() && !sqlite_only => backends.push(Backend::Postgres(url)),
        _ => println!("PostgreSQL: not measured (set KLAXON_TEST_DATABASE_URL)"),
    }
    for backend in backends {
        runtime.block_on(run_backend(
            backend,
            &scenarios,
            quick,
            standin_same_priority,
        ));
    }
    ExitCode::SUCCESS
}
