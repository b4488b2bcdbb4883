//! Socket Mode (<https://api.slack.com/apis/socket-mode>): Klaxon connects out to Slack,
//! so it needs no public URL.
//!
//! `apps.connections.open` (with the app-level `xapp-` token) gives a `wss://` URL; Slack
//! sends `hello`, then envelopes (`events_api`, `slash_commands`, `interactive`), each
//! with an `envelope_id` the app must acknowledge (`{"envelope_id": ..., "payload": ...}`),
//! and `disconnect` when it is about to close the connection (`refresh_requested`,
//! `warning`, `link_disabled`).
//!
//! **Acknowledged only after the commit.** Each envelope's payload goes into the same
//! handler function as the HTTP request would (`http::commands::handle`,
//! `http::interactions::handle`, `http::events::handle`, re-encoded the way the HTTP
//! endpoint receives it, without a signature: the app token authenticates the socket).
//! Those handlers answer only after their transaction committed; the ack is sent from
//! their answer. A socket that drops before the ack loses nothing: Slack redelivers the
//! envelope and the Events API `event_id` dedupe makes the repeat a no-op. A handler that
//! failed (HTTP 5xx) is not acknowledged, so Slack retries it, as it would over HTTP.
//!
//! This is a small client on tokio-tungstenite rather than slack-morphism's Socket Mode
//! listener: that listener decodes every payload into slack-morphism's typed models
//! before the callback (Klaxon's handlers read raw payloads, and an event it cannot model
//! would be acknowledged and dropped by its parse-error path), and acknowledges an
//! envelope whose parse failed. Here the ack depends on Klaxon's own handler result.
//!
//! Why it lives in `http`: Socket Mode is a second inbound transport beside the HTTP
//! endpoints, not a feature of its own. It owns no rules; it unwraps envelopes and calls
//! the HTTP handlers, so it sits next to them and depends on nothing they do not.
//!
//! Reconnects: at once after `disconnect` / a clean close, else with exponential backoff
//! (from [`SocketSettings::initial_backoff`] to [`SocketSettings::max_backoff`]).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{AppState, RequestId, commands, events, interactions};

/// How the client connects.
#[derive(Clone, Debug)]
pub struct SocketSettings {
    /// Web API base URL (`https://slack.com/api`; tests: the emulator).
    pub api_url: String,
    /// First wait after a failed connection.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// A connection silent this long (Slack pings every few seconds) is taken for dead
    /// (a half-open TCP connection) and replaced.
    pub idle_timeout: Duration,
}

impl SocketSettings {
    /// Production settings against `api_url`.
    pub fn new(api_url: &str) -> Self {
        Self {
            api_url: api_url.trim_end_matches('/').to_string(),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Slack asked (`disconnect`) or closed cleanly: reconnect at once.
    Asked,
    /// Shut down.
    Shutdown,
}

/// The Socket Mode client.
pub struct SocketMode {
    state: AppState,
    token: SecretString,
    settings: SocketSettings,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ConnectionsOpen {
    ok: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// One envelope as Slack sends it.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    reason: Option<String>,
}

impl SocketMode {
    /// A client for `state`'s handlers, authenticating with the app token.
    pub fn new(state: AppState, token: SecretString, settings: SocketSettings) -> Self {
        Self {
            state,
            token,
            settings,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
        }
    }

    /// Connects and serves envelopes until shutdown, reconnecting as needed.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = self.settings.initial_backoff;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let result = self.connection(&mut shutdown).await;
            match result {
                Ok(Ended::Shutdown) => return,
                Ok(Ended::Asked) => {
                    backoff = self.settings.initial_backoff;
                    tracing::info!("Socket Mode: reconnecting as Slack asked");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, wait = ?backoff, "Socket Mode connection failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
    }

    /// `apps.connections.open`: the URL to connect to. The answer's URL carries a ticket,
    /// so it is not logged.
    async fn open_url(&self) -> Result<String, String> {
        let answer = self
            .http
            .post(format!("{}/apps.connections.open", self.settings.api_url))
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| format!("apps.connections.open: {}", e.without_url()))?;
        let status = answer.status();
        let body: ConnectionsOpen = answer
            .json()
            .await
            .map_err(|e| format!("apps.connections.open: HTTP {status}: {}", e.without_url()))?;
        match (body.ok, body.url) {
            (true, Some(url)) => Ok(url),
            _ => Err(format!(
                "apps.connections.open refused: {}",
                body.error.unwrap_or_else(|| "no url".into())
            )),
        }
    }

    /// One connection: until Slack asks to reconnect, the socket fails, or shutdown.
    async fn connection(&self, shutdown: &mut watch::Receiver<bool>) -> Result<Ended, String> {
        let connect = async {
            let url = self.open_url().await?;
            tokio_tungstenite::connect_async(url.as_str())
                .await
                .map_err(|e| format!("connecting the Socket Mode WebSocket: {e}"))
        };
        let (socket, _) = tokio::select! {
            c = connect => c?,
            _ = shutdown.changed() => return Ok(Ended::Shutdown),
        };
        let (mut sink, mut stream) = socket.split();
        // Acks come back from the handler tasks; they die with this connection, so an
        // ack for an envelope of a dropped socket is never sent on another one.
        let (acks, mut ack_rx) = mpsc::channel::<Value>(256);
        loop {
            tokio::select! {
                frame = tokio::time::timeout(self.settings.idle_timeout, stream.next()) => {
                    let Ok(frame) = frame else {
                        return Err(format!("nothing from Slack for {:?}; reconnecting", self.settings.idle_timeout));
                    };
                    let text = match frame {
                        None => return Err("the Socket Mode connection closed".into()),
                        Some(Err(e)) => return Err(format!("Socket Mode read: {e}")),
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) => return Ok(Ended::Asked),
                        Some(Ok(_)) => continue,
                    };
                    let envelope: Envelope = match serde_json::from_str(text.as_str()) {
                        Ok(e) => e,
                        Err(e) => {
                            // Not acknowledged: Slack redelivers, and the log says why.
                            tracing::warn!(error = %e, "Socket Mode frame that is not an envelope");
                            continue;
                        }
                    };
                    match envelope.kind.as_str() {
                        "hello" => tracing::info!("Socket Mode connected"),
                        "disconnect" => {
                            tracing::info!(reason = envelope.reason.as_deref().unwrap_or("-"), "Socket Mode: Slack asks to reconnect");
                            let _ = sink.close().await;
                            return Ok(Ended::Asked);
                        }
                        "events_api" | "slash_commands" | "interactive" => {
                            let Some(id) = envelope.envelope_id.clone() else {
                                tracing::warn!(kind = %envelope.kind, "envelope without an envelope_id");
                                continue;
                            };
                            let state = self.state.clone();
                            let acks = acks.clone();
                            tokio::spawn(async move {
                                if let Some(ack) = handle(state, &envelope.kind, &id, envelope.payload).await {
                                    // Fails only when the connection is gone: Slack redelivers.
                                    let _ = acks.send(ack).await;
                                }
                            });
                        }
                        other => tracing::debug!(kind = %other, "Socket Mode message ignored"),
                    }
                }
                Some(ack) = ack_rx.recv() => {
                    sink.send(Message::text(ack.to_string()))
                        .await
                        .map_err(|e| format!("Socket Mode write: {e}"))?;
                }
                _ = shutdown.changed() => {
                    let _ = sink.close().await;
                    return Ok(Ended::Shutdown);
                }
            }
        }
    }
}

/// Runs one envelope through the HTTP handler of its kind; the ack to send, or `None`
/// when the handler failed and Slack should redeliver.
pub async fn handle(
    state: AppState,
    kind: &str,
    envelope_id: &str,
    payload: Value,
) -> Option<Value> {
    let request_id = RequestId(format!("socket-{}", uuid::Uuid::new_v4()));
    let response = match kind {
        "events_api" => {
            let body = Bytes::from(payload.to_string());
            events::handle(State(state), request_id, body).await
        }
        "slash_commands" => {
            let fields: Vec<(String, String)> = match payload.as_object() {
                Some(map) => map
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_string),
                        )
                    })
                    .collect(),
                None => Vec::new(),
            };
            let body = serde_urlencoded::to_string(&fields).unwrap_or_default();
            commands::handle(State(state), request_id, Bytes::from(body)).await
        }
        "interactive" => {
            let body =
                serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default();
            interactions::handle(State(state), request_id, Bytes::from(body)).await
        }
        _ => return None,
    };
    ack_for(envelope_id, response).await
}

/// The ack for a handler's answer: its JSON body as the ack's payload (an ephemeral
/// reply, form errors); nothing on a server error (not committed: let Slack retry). A
/// request the handler refused as malformed (4xx) is acknowledged, so Slack does not
/// redeliver what can never succeed; the handler logged why.
async fn ack_for(envelope_id: &str, response: Response) -> Option<Value> {
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%envelope_id, %status, "envelope not acknowledged: its handler failed; Slack will redeliver");
        return None;
    }
    if status != StatusCode::OK {
        tracing::warn!(%envelope_id, %status, "envelope refused by its handler; acknowledged without a payload");
        return Some(json!({ "envelope_id": envelope_id }));
    }
    let body = axum::body::to_bytes(response.into_body(), super::verify::MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    match serde_json::from_slice::<Value>(&body) {
        Ok(payload) => Some(json!({ "envelope_id": envelope_id, "payload": payload })),
        Err(_) => Some(json!({ "envelope_id": envelope_id })),
    }
}
