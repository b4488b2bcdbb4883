//! The floor: what any Slack bot must do per slash command, and nothing more. An axum
//! server that verifies the Slack signature (Klaxon's own `verify`, HMAC-SHA256 over the
//! raw body with the 5-minute window), parses the form, does ONE INSERT on the same kind
//! of store Klaxon uses (SQLite: one connection, WAL, `synchronous = normal`,
//! `foreign_keys`, `busy_timeout`, exactly `Store::connect`'s pragmas; PostgreSQL: a pool of
//! 10 on the same database) and answers an ephemeral JSON.
//!
//! It runs as a child process of the bench (`load --floor URL`), like the server, so both
//! share the machine the same way. It prints `FLOOR_LISTENING <addr>` on stdout once bound.
//!
//! KEEP IN STEP with `src/store/mod.rs` (`Store::connect`): the floor must have Klaxon's
//! durability settings (if Klaxon moves to `synchronous = full` for some transactions, the
//! floor's INSERT is an ordinary one and stays at the default).

use std::io::Write;
use std::str::FromStr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::SecretString;
use serde::Deserialize;
use sqlx::AnyPool;
use sqlx::Executor;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::loadgen::SECRET;

#[derive(Clone)]
struct Floor {
    pool: AnyPool,
    secrets: std::sync::Arc<Vec<SecretString>>,
}

#[derive(Deserialize)]
struct Form {
    text: String,
    user_id: String,
    channel_id: String,
}

/// The same pool settings as `Store::connect`.
pub async fn connect(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    if url.starts_with("sqlite:") {
        let url = if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "pragma journal_mode = wal; pragma synchronous = normal; \
                         pragma foreign_keys = on; pragma busy_timeout = 5000; \
                         pragma cache_size = -65536; pragma mmap_size = 268435456; \
                         pragma temp_store = memory;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(AnyConnectOptions::from_str(&url).expect("sqlite url"))
            .await
            .expect("floor: sqlite")
    } else {
        AnyPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await
            .expect("floor: postgres")
    }
}

async fn handle(State(floor): State<Floor>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
    ) else {
        return (StatusCode::UNAUTHORIZED, "missing signature").into_response();
    };
    if let Err(e) = klaxon::http::verify::verify(&floor.secrets, ts, sig, &body, chrono::Utc::now())
    {
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let form: Form = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let inserted = sqlx::query(
        "insert into floor_commands (user_id, channel_id, text, received_at_ms) values ($1, $2, $3, $4)",
    )
    .bind(form.user_id)
    .bind(form.channel_id)
    .bind(form.text)
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&floor.pool)
    .await;
    match inserted {
        Ok(_) => Json(serde_json::json!({"response_type": "ephemeral", "text": "recorded"}))
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `load --floor URL`: serves until killed.
pub async fn main(url: &str) {
    let pool = connect(url).await;
    let id = if url.starts_with("sqlite:") {
        "integer primary key autoincrement"
    } else {
        "bigserial primary key"
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create table if not exists floor_commands (id {id}, user_id text not null, \
         channel_id text not null, text text not null, received_at_ms bigint not null)"
    )))
    .execute(&pool)
    .await
    .expect("floor table");
    let floor = Floor {
        pool,
        secrets: std::sync::Arc::new(vec![SecretString::from(SECRET.to_string())]),
    };
    let app = axum::Router::new()
        .route("/slack/commands", post(handle))
        .route("/readyz", axum::routing::get(|| async { "ready" }))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("floor: bind");
    let addr = listener.local_addr().expect("floor address");
    println!("FLOOR_LISTENING {addr}");
    std::io::stdout().flush().expect("stdout");
    axum::serve(listener, app).await.expect("floor server");
}
