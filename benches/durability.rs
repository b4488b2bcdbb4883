//! Benchmark: what a durable commit costs on SQLite.
//!
//! The transactions that decide a recovery run (`approved -> executing`, its result) are
//! committed with `Store::begin_durable`: on SQLite `synchronous = FULL`, which fsyncs
//! the WAL before the commit returns, so an OS crash or power loss cannot roll back an
//! execution whose SDK call already went out. Every other transaction runs at
//! `synchronous = NORMAL` (WAL synced at checkpoints). This measures both kinds of commit
//! on the same file, the same one-row change (an outbox row and its lane), interleaved in
//! blocks so both see the same disk and machine load, and prints per-commit p50/p99/mean.
//! On PostgreSQL every commit is durable (`synchronous_commit` on); its figure is printed
//! for comparison when `KLAXON_TEST_DATABASE_URL` is set.
//!
//! `cargo bench --bench durability [-- N]` (N commits of each kind, default 400)

use std::time::{Duration, Instant};

use klaxon::store::Store;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    format!(
        "p50 {:>7.3} ms  p99 {:>7.3} ms  mean {:>7.3} ms",
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    )
}

/// One small committed change; returns how long the whole transaction took.
async fn one(store: &Store, durable: bool, i: usize) -> Duration {
    let started = Instant::now();
    let mut tx = if durable {
        store.begin_durable().await.expect("begin durable")
    } else {
        store.begin().await.expect("begin")
    };
    tx.enqueue(&format!("run:{i}"), None, "{}", chrono::Utc::now())
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    started.elapsed()
}

async fn measure(label: &str, store: &Store, n: usize, with_durable: bool) {
    for i in 0..20 {
        one(store, false, i).await;
    }
    let (mut normal, mut full) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let block = 20;
    let mut i = 100;
    while normal.len() < n {
        for _ in 0..block {
            normal.push(one(store, false, i).await);
            i += 1;
        }
        if with_durable {
            for _ in 0..block {
                full.push(one(store, true, i).await);
                i += 1;
            }
        }
    }
    if with_durable {
        let ratio = {
            let mean = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64() / v.len() as f64;
            mean(&full) / mean(&normal)
        };
        println!(
            "{label}: commit, synchronous = NORMAL: {}",
            summary(&mut normal)
        );
        println!(
            "{label}: commit, synchronous = FULL:   {}",
            summary(&mut full)
        );
        println!("{label}: a durable commit costs {ratio:.1}x an ordinary one (mean)");
    } else {
        println!("{label}: commit (always durable): {}", summary(&mut normal));
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(400);
    // Not in /tmp, which may be a RAM disk: the figure is about the disk the store is on.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let sqlite = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("durability.db").display()
    ))
    .await
    .expect("sqlite");
    sqlite.migrate().await.expect("migrate");
    println!("{n} one-row transactions of each kind, interleaved in blocks of 20");
    measure("sqlite", &sqlite, n, true).await;
    if let Ok(url) = std::env::var("KLAXON_TEST_DATABASE_URL") {
        let admin = Store::connect(&url).await.expect("postgres reachable");
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_raw(&format!("create schema {schema}"))
            .await
            .expect("schema");
        let sep = if url.contains('?') { '&' } else { '?' };
        let pg = Store::connect(&format!("{url}{sep}options=-c%20search_path%3D{schema}"))
            .await
            .expect("postgres");
        pg.migrate().await.expect("migrate");
        measure("postgres", &pg, n, false).await;
        admin
            .execute_raw(&format!("drop schema {schema} cascade"))
            .await
            .expect("drop schema");
    }
}
