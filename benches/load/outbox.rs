//! Outbox scenarios: drains (`outbox-fast`), a slow Slack (`outbox-slow`), and the
//! pacing and duplicate checks over what the stand-in received. See `benches/load.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::AnyPool;

use super::loadgen::{Command, SlashClient, closed_loop};
use super::server::{self, ANNOUNCE_CHANNEL, Db, Proc, ServerParams};
use super::standins::{Counts, Post, SlackStandin, now_ms};
use super::{Ctx, declare, heading, loadavg, secs};

// ---------------------------------------------------------------------------------------
// Outbox measurements shared by the outbox scenarios.
// ---------------------------------------------------------------------------------------

/// Pacing and duplicates over the posts received since `from_ms`.
pub struct Pacing {
    pub posts: usize,
    pub channels: usize,
    /// Most posts one channel got within any 1 s window, and which channel.
    pub max_in_1s: usize,
    pub max_channel: String,
    /// Channels that got two posts less than 1 s apart.
    pub channels_over: usize,
    /// The same text posted twice in one channel (over the whole scenario).
    pub duplicates: usize,
    pub announce_posts: usize,
    pub announce_max_in_1s: usize,
}

/// When each of `channels` got its first post since `from_ms`, ascending (epoch ms).
fn first_posts(all: &HashMap<String, Vec<Post>>, from_ms: i64, channels: &[String]) -> Vec<i64> {
    let mut firsts: Vec<i64> = channels
        .iter()
        .filter_map(|c| {
            all.get(c)?
                .iter()
                .map(|p| p.at_ms)
                .filter(|at| *at >= from_ms)
                .min()
        })
        .collect();
    firsts.sort_unstable();
    firsts
}

pub fn pacing(all: &HashMap<String, Vec<Post>>, from_ms: i64) -> Pacing {
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
pub const ROWS_PER_DECLARE: i64 = 4;

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
        // Every 200 ms: counting 10,000 pending rows takes PostgreSQL ~8 ms, and polling
        // every 20 ms took a share of the CPU the server under test needs (the marks
        // are +-200 ms; the first-wave figure comes from the stand-in's own clock).
        tokio::time::sleep(Duration::from_millis(200)).await;
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

pub async fn scenario_outbox_fast(ctx: &Ctx) {
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
            "paced: the second post of each channel waits its second",
        );
        // The figure for the target: pacing allows one post per channel at once, so the
        // first wave (each channel's first post) is the rate while work is there to send.
        let firsts = first_posts(&standin.posts(), b.from_ms, &channels);
        if let (Some(first), Some(last)) = (firsts.first(), firsts.last()) {
            let span = (*last - b.from_ms).max(1) as f64 / 1000.0;
            let own = (*last - *first).max(1) as f64 / 1000.0;
            println!(
                "first wave: the first post in each of {} channels in {span:.2} s from the switch: {:.0} deliveries/s (target >= 5,000/s); \
                 {own:.2} s from the wave's first post to its last: {:.0}/s",
                firsts.len(),
                firsts.len() as f64 / span,
                (firsts.len() - 1) as f64 / own
            );
        }
    }
    reads.close().await;
    server.stop();
    db.drop_it().await;
    println!("load average at end: {}", loadavg());
}

// ---------------------------------------------------------------------------------------
// 3. outbox-slow
// ---------------------------------------------------------------------------------------

pub async fn scenario_outbox_slow(ctx: &Ctx) {
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
