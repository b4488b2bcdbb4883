//! Benchmark: durable timers at scale, through the REAL scheduler and outbox loops.
//!
//! For each backend (a fresh SQLite file and, when `KLAXON_TEST_DATABASE_URL` is set, a
//! fresh `bench_<uuid>` schema in that PostgreSQL, dropped at the end), in a child process
//! of its own so memory figures do not mix:
//!
//! 1. **Load** N open incidents (10,000; 1,000 with `--quick`) through an `Engine` on a
//!    `ManualClock`, delivering each chunk's declaration effects (channel, topic, summary,
//!    announcement) to the in-process Slack emulator, so every incident has its channel.
//!    The first 5% are SEV3/SEV4 "background" incidents declared at the real time (their
//!    next timers are hours away); their load time calibrates the rest. The others are
//!    declared in the past so that one timer each comes due during a burst window
//!    `[W, W + 60 s]` of real time, spread evenly: SEV1 incidents declared at
//!    `W - 15 min + i * 60 s / n` (`escalation:team`, 15 min after declaration) and one in
//!    five SEV2 declared at `W - 30 min + ...` (`escalation:management`, 30 min). `W` is
//!    chosen from the calibration so loading ends before it; timers that are nevertheless
//!    due before the loops start are counted as "overdue at start" and kept out of the
//!    lateness figures.
//! 2. **Burst**: `app::wire` again on the same store with `SystemClock`, Slack pointed at
//!    the emulator and PagerDuty at the in-process receiver, and `Scheduler::run` plus
//!    `OutboxWorker::run` spawned (they start 5 s before `W`). Every firing commits a page
//!    (PagerDuty lane) and two Slack effects. The window ends when every timer due by
//!    `W + 60 s` has fired and the outbox is empty (or after a 90 s grace).
//!    **Firing lateness** = `fired_at_ms - due_at_ms`, read straight from the `timers`
//!    table with a separate `sqlx::any` connection, over the timers fired since the loops
//!    started: p50 / p99 / max.
//! 3. **Idle**: 20 s (10 s with `--quick`) during which no timer is due (the next ones are
//!    15+ min away); process CPU time (utime + stime from `/proc/self/stat`, in clock ticks
//!    of `getconf CLK_TCK`, 100 assumed if unavailable) over that window, as % of one core.
//! 4. **Memory**: `VmHWM` (peak RSS) and `VmRSS` from `/proc/self/status` at the end. The
//!    peak includes the in-process Slack emulator and PagerDuty receiver, which keep every
//!    call they received in memory.
//!
//! Then the loops are stopped through their watch channel and joined.
//!
//! **Millisecond due times.** Every declaration time the bench chooses is a whole
//! millisecond. The `timers` table keeps milliseconds, while the incident state keeps the
//! clock's full precision, and `Change::TimerFired` only fires a timer whose stored due time
//! equals the planned one exactly: a timer derived from a sub-millisecond declaration time
//! is cancelled as "no longer wanted" instead of firing. "burst timers cancelled" shows it.
//!
//! `cargo bench --bench timers [-- --quick]`

#[path = "../tests/support/pagerduty.rs"]
mod pagerduty;
#[path = "../tests/support/slack_emulator.rs"]
mod slack_emulator;

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use klaxon::clock::{ManualClock, SystemClock};
use klaxon::config::Config;
use klaxon::domain::severity::Severity;
use klaxon::engine::RequestMeta;
use klaxon::slack::morphism::MorphismSlack;
use klaxon::store::Store;
use pagerduty::PagerDutyReceiver;
use slack_emulator::SlackEmulator;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tokio::sync::watch;

/// What one run does.
#[derive(Clone, Copy, Debug)]
struct Opts {
    /// Open incidents loaded.
    incidents: usize,
    /// Over how much real time the timers come due.
    burst: Duration,
    /// The idle CPU window.
    idle: Duration,
}

impl Opts {
    fn from_args(args: &[String]) -> Opts {
        if args.iter().any(|a| a == "--quick") {
            Opts {
                incidents: 1_000,
                burst: Duration::from_secs(20),
                idle: Duration::from_secs(10),
            }
        } else {
            Opts {
                incidents: 10_000,
                burst: Duration::from_secs(60),
                idle: Duration::from_secs(20),
            }
        }
    }
}

/// Incidents declared per chunk before their effects are delivered.
const CHUNK: usize = 250;
/// The loops start this long before the first timer is due.
const LEAD: Duration = Duration::from_secs(5);
/// How long after the burst the window may run on to let firing and delivery catch up.
const GRACE: Duration = Duration::from_secs(90);

fn routing_key(target: &str) -> String {
    format!("{target:x<32}").chars().take(32).collect()
}

fn config(api_url: &str, pagerduty_url: &str) -> Config {
    let api_url = api_url.to_string();
    let pagerduty_url = pagerduty_url.to_string();
    let env = move |name: &str| match name {
        "SLACK_SIGNING_SECRET" => Some("bench-secret".to_string()),
        "SLACK_BOT_TOKEN" => Some("xoxb-bench".to_string()),
        "KLAXON_SLACK_API_URL" => Some(api_url.clone()),
        "KLAXON_PAGERDUTY_EVENTS_URL" => Some(pagerduty_url.clone()),
        "KLAXON_DATABASE_URL" => Some("sqlite://unused.db".to_string()),
        "KLAXON_INCIDENT_RESPONSE_CHANNEL" => Some("CBENCH0001".to_string()),
        "KLAXON_TIMEZONE" => Some("UTC".to_string()),
        _ if name.starts_with("KLAXON_PAGERDUTY_KEY_") => Some(routing_key(
            &name["KLAXON_PAGERDUTY_KEY_".len()..].to_ascii_lowercase(),
        )),
        _ => None,
    };
    Config::from_toml(include_str!("../deploy/klaxon.example.toml"), &env).expect("bench config")
}

/// Process CPU time (user + system) in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name start at field 3 (state); utime and
    // stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Clock ticks per second, and whether it was read (`false`: 100 assumed).
fn clock_ticks_per_sec() -> (u64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .map_or((100, false), |t| (t, true))
}

/// A `/proc/self/status` field in kB.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Nearest-rank percentile of a sorted slice.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The real time, truncated to whole milliseconds.
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("valid time")
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn count(pool: &AnyPool, sql: &'static str, bind: i64) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(bind)
        .fetch_one(pool)
        .await
        .expect("count query");
    n
}

async fn count_all(pool: &AnyPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(pool)
        .await
        .expect("count query");
    n
}

/// One backend's run, in this (child) process. `url` reaches the migrated store.
async fn run(label: &str, url: &str, opts: Opts) {
    let started = Instant::now();
    let store = Store::connect(url).await.expect("store");
    store.migrate().await.expect("migrate");
    sqlx::any::install_default_drivers();
    let reads = AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("read connection");

    let slack = SlackEmulator::start().await;
    let pd = PagerDutyReceiver::start().await;
    let config = config(&slack.base_url, &pd.url);
    let client = || -> Arc<MorphismSlack> {
        Arc::new(
            MorphismSlack::new(&config.slack.api_url, config.slack.bot_token.clone())
                .expect("slack client"),
        )
    };

    // ---- Load -------------------------------------------------------------------------
    let manual = Arc::new(ManualClock::new(Utc::now()));
    let loader = klaxon::app::wire(store.clone(), &config, manual.clone(), client());
    let engine = loader.scheduler.engine().clone();
    let load_started = Instant::now();
    let mut load_delivered = 0;
    let mut load_failed = 0;
    let background = (opts.incidents / 20).max(1);
    let due_count = opts.incidents - background;
    let mut declared = 0;
    async fn declare_chunk(
        engine: &klaxon::engine::Engine,
        worker: &klaxon::outbox::OutboxWorker,
        manual: &ManualClock,
        batch: &[(DateTime<Utc>, Severity, String)],
    ) -> (usize, usize) {
        for (at, severity, title) in batch {
            manual.set(*at);
            let meta = RequestMeta::user("UBENCH", &format!("bench-{title}"));
            engine
                .declare(&meta, *severity, title)
                .await
                .expect("declare");
        }
        let latest = batch
            .iter()
            .map(|(at, _, _)| *at)
            .max()
            .expect("non-empty chunk");
        manual.set(latest);
        let report = worker.deliver_due().await.expect("load delivery");
        (report.delivered, report.failed)
    }
    // Background incidents at the real time; they calibrate the load rate.
    for chunk_start in (0..background).step_by(CHUNK) {
        let batch: Vec<_> = (chunk_start..(chunk_start + CHUNK).min(background))
            .map(|i| {
                let severity = if i % 2 == 0 {
                    Severity::Sev3
                } else {
                    Severity::Sev4
                };
                (now_ms(), severity, format!("Background incident {i}"))
            })
            .collect();
        let (d, f) = declare_chunk(&engine, &loader.worker, &manual, &batch).await;
        load_delivered += d;
        load_failed += f;
        declared += batch.len();
    }
    let per_incident = load_started.elapsed() / background as u32;
    let estimate = per_incident * due_count as u32;
    let lead = estimate.mul_f64(1.6) + Duration::from_secs(15) + LEAD;
    let first_due = Utc::now() + TimeDelta::from_std(lead).unwrap() + TimeDelta::seconds(1);
    let first_due = DateTime::from_timestamp(first_due.timestamp(), 0).expect("whole second");
    let burst = TimeDelta::from_std(opts.burst).unwrap();
    // SEV2 incidents (every fifth) first: they are declared earlier, so the manual clock
    // only moves forward.
    let mut plan: Vec<(DateTime<Utc>, Severity, String)> = (0..due_count)
        .map(|i| {
            // Whole milliseconds: see "Millisecond due times" in the header.
            let offset =
                TimeDelta::milliseconds(burst.num_milliseconds() * i as i64 / due_count as i64);
            if i % 5 == 4 {
                (
                    first_due - TimeDelta::minutes(30) + offset,
                    Severity::Sev2,
                    format!("Checkout errors {i}"),
                )
            } else {
                (
                    first_due - TimeDelta::minutes(15) + offset,
                    Severity::Sev1,
                    format!("Database is down {i}"),
                )
            }
        })
        .collect();
    plan.sort_by_key(|(at, _, _)| *at);
    for batch in plan.chunks(CHUNK) {
        let (d, f) = declare_chunk(&engine, &loader.worker, &manual, batch).await;
        load_delivered += d;
        load_failed += f;
        declared += batch.len();
    }
    let load_time = load_started.elapsed();
    drop(loader);

    // ---- Burst ------------------------------------------------------------------------
    let start_at = first_due - TimeDelta::from_std(LEAD).unwrap();
    if let Ok(wait) = (start_at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let (ticks_per_sec, ticks_read) = clock_ticks_per_sec();
    let services = klaxon::app::wire(store.clone(), &config, Arc::new(SystemClock), client());
    let (stop_tx, stop_rx) = watch::channel(false);
    let loops_started = Utc::now();
    let overdue_at_start = count(
        &reads,
        "select count(*) from timers where state = 'pending' and due_at_ms <= $1",
        ms(loops_started),
    )
    .await;
    let burst_cpu0 = cpu_ticks();
    let burst_wall0 = Instant::now();
    let scheduler = tokio::spawn(services.scheduler.run(stop_rx.clone()));
    let worker = tokio::spawn(services.worker.run(stop_rx));
    let last_due = first_due + burst;
    let deadline = last_due + TimeDelta::from_std(GRACE).unwrap();
    let mut drained = false;
    let mut all_fired_at = None;
    while Utc::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if Utc::now() < last_due {
            continue;
        }
        let unfired = count(
            &reads,
            "select count(*) from timers where state = 'pending' and due_at_ms <= $1",
            ms(last_due),
        )
        .await;
        if unfired > 0 {
            continue;
        }
        all_fired_at.get_or_insert_with(Utc::now);
        let pending = count_all(
            &reads,
            "select count(*) from outbox where state = 'pending'",
        )
        .await;
        if pending == 0 {
            drained = true;
            break;
        }
    }
    let burst_end = Utc::now();
    let burst_cpu = cpu_ticks() - burst_cpu0;
    let burst_wall = burst_wall0.elapsed();

    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "select due_at_ms, fired_at_ms from timers where state = 'fired' and fired_at_ms >= $1 order by id",
    )
    .bind(ms(loops_started))
    .fetch_all(&reads)
    .await
    .expect("fired timers");
    let fired = rows.len();
    let cutoff = ms(loops_started);
    let (mut on_time, mut overdue): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    for (due, fired_at) in rows {
        if due > cutoff {
            on_time.push(fired_at - due)
        } else {
            overdue.push(fired_at - due)
        }
    }
    on_time.sort_unstable();
    overdue.sort_unstable();
    let (cancelled,): (i64,) = sqlx::query_as(
        "select count(*) from timers where state = 'cancelled' and due_at_ms >= $1 and due_at_ms <= $2",
    )
    .bind(ms(first_due))
    .bind(ms(last_due))
    .fetch_one(&reads)
    .await
    .expect("cancelled timers");
    let delivered = count(
        &reads,
        "select count(*) from outbox where state = 'done' and finished_at_ms >= $1",
        ms(loops_started),
    )
    .await;
    let failed = count(
        &reads,
        "select count(*) from outbox where state = 'failed' and finished_at_ms >= $1",
        ms(loops_started),
    )
    .await;
    let outbox_pending = count_all(
        &reads,
        "select count(*) from outbox where state = 'pending'",
    )
    .await;
    let (next_due,): (Option<i64>,) =
        sqlx::query_as("select min(due_at_ms) from timers where state = 'pending'")
            .fetch_one(&reads)
            .await
            .expect("next due");

    // ---- Idle -------------------------------------------------------------------------
    let idle_fired0 = count_all(&reads, "select count(*) from timers where state = 'fired'").await;
    let idle_from = ms(Utc::now());
    let idle_cpu0 = cpu_ticks();
    let idle_wall0 = Instant::now();
    tokio::time::sleep(opts.idle).await;
    let idle_cpu = cpu_ticks() - idle_cpu0;
    let idle_wall = idle_wall0.elapsed();
    let idle_fired =
        count_all(&reads, "select count(*) from timers where state = 'fired'").await - idle_fired0;
    let idle_delivered = count(
        &reads,
        "select count(*) from outbox where state = 'done' and finished_at_ms >= $1",
        idle_from,
    )
    .await;

    // ---- Stop ---------------------------------------------------------------------------
    let hwm = status_kb("VmHWM:");
    let rss = status_kb("VmRSS:");
    let stop_started = Instant::now();
    stop_tx.send(true).expect("loops listening");
    let stopped = tokio::time::timeout(Duration::from_secs(30), async {
        scheduler.await.expect("scheduler task");
        worker.await.expect("worker task");
    })
    .await
    .is_ok();
    let stop_time = stop_started.elapsed();

    // ---- Report -------------------------------------------------------------------------
    let pct = |ticks: u64, wall: Duration| ticks as f64 / ticks_per_sec as f64 / secs(wall) * 100.0;
    let stats = |v: &[i64]| {
        if v.is_empty() {
            "n/a".to_string()
        } else {
            format!(
                "p50 {} ms, p99 {} ms, max {} ms (min {} ms)",
                percentile(v, 0.50),
                percentile(v, 0.99),
                v[v.len() - 1],
                v[0]
            )
        }
    };
    let mb = |kb: Option<u64>| {
        kb.map_or("n/a".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    println!("==================== timers bench: {label} ====================");
    println!(
        "incidents loaded          : {declared} ({background} SEV3/SEV4 background, {due_count} SEV1/SEV2 due in the burst)"
    );
    println!(
        "load time                 : {:.1} s ({:.2} ms/incident incl. {load_delivered} Slack deliveries, {load_failed} failed)",
        secs(load_time),
        secs(load_time) * 1e3 / declared as f64
    );
    println!(
        "burst window              : timers due {} .. {} UTC; loops started {:.1} s before the first",
        first_due.format("%H:%M:%S"),
        last_due.format("%H:%M:%S"),
        (first_due - loops_started).num_milliseconds() as f64 / 1e3
    );
    println!("overdue when loops started: {overdue_at_start} timers");
    println!(
        "timers fired in window    : {fired} ({} due after the loops started, {} overdue)",
        on_time.len(),
        overdue.len()
    );
    println!(
        "burst timers cancelled    : {cancelled} (due in the burst but not fired: should be 0)"
    );
    println!("firing lateness           : {}", stats(&on_time));
    if !overdue.is_empty() {
        println!("  overdue-at-start lateness: {}", stats(&overdue));
    }
    match all_fired_at {
        Some(t) => println!(
            "all burst timers fired by : {:.1} s after the last was due",
            (t - last_due).num_milliseconds().max(0) as f64 / 1e3
        ),
        None => println!(
            "all burst timers fired by : NOT within {} s grace",
            GRACE.as_secs()
        ),
    }
    println!(
        "outbox delivered in window: {delivered} rows ({failed} failed, {outbox_pending} still pending{}); PagerDuty events {}, Slack API calls {}",
        if drained { "" } else { ", NOT drained" },
        pd.events().len(),
        slack.calls().len()
    );
    println!(
        "burst CPU                 : {:.1}% of one core over {:.1} s ({burst_cpu} ticks)",
        pct(burst_cpu, burst_wall),
        secs(burst_wall)
    );
    println!(
        "idle CPU                  : {:.2}% of one core over {:.1} s ({idle_cpu} ticks at {ticks_per_sec}/s{}); {idle_fired} timers fired, {idle_delivered} rows delivered meanwhile; next timer due in {}",
        pct(idle_cpu, idle_wall),
        secs(idle_wall),
        if ticks_read {
            ", from getconf CLK_TCK"
        } else {
            ", ASSUMED"
        },
        next_due.map_or("never".to_string(), |n| format!(
            "{:.1} min",
            (n - ms(Utc::now())) as f64 / 60_000.0
        ))
    );
    println!(
        "peak RSS (VmHWM)          : {} (VmRSS now {})",
        mb(hwm),
        mb(rss)
    );
    println!(
        "stop                      : {} in {:.0} ms; total run {:.1} s (burst ended {:.1} s after the last due time)",
        if stopped {
            "both loops returned"
        } else {
            "loops did NOT return within 30 s"
        },
        stop_time.as_secs_f64() * 1e3,
        secs(started.elapsed()),
        (burst_end - last_due).num_milliseconds() as f64 / 1e3
    );
    println!();
    reads.close().await;
}

/// Runs one backend in a child process (`--child LABEL URL`) so peak RSS is its own.
fn child(label: &str, url: &str, args: &[String]) -> bool {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = Command::new(exe);
    command.arg("--child").arg(label).arg(url);
    if args.iter().any(|a| a == "--quick") {
        command.arg("--quick");
    }
    let status = command.status().expect("child process");
    if !status.success() {
        eprintln!("{label}: bench child failed: {status}");
    }
    status.success()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = Opts::from_args(&args);
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (label, url) = (&args[i + 1], &args[i + 2]);
        runtime().block_on(run(label, url, opts));
        return ExitCode::SUCCESS;
    }
    let mut ok = true;
    let dir = tempfile::tempdir().expect("temp dir");
    ok &= child(
        "sqlite",
        &format!("sqlite://{}", dir.path().join("bench.db").display()),
        &args,
    );
    if let Ok(base) = std::env::var("KLAXON_TEST_DATABASE_URL")
        && !base.is_empty()
    {
        let rt = runtime();
        let admin = rt
            .block_on(Store::connect(&base))
            .expect("postgres reachable");
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        rt.block_on(admin.execute_raw(&format!("create schema {schema}")))
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        ok &= child(
            "postgres",
            &format!("{base}{sep}options=-c%20search_path%3D{schema}"),
            &args,
        );
        rt.block_on(admin.execute_raw(&format!("drop schema {schema} cascade")))
            .expect("drop schema");
    } else {
        println!("KLAXON_TEST_DATABASE_URL not set: PostgreSQL not measured");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
