//! A local Socket Mode server: a tokio-tungstenite WebSocket server that speaks Slack's
//! envelope protocol (<https://api.slack.com/apis/socket-mode>) from the test's side. The
//! Slack emulator's `apps.connections.open` hands out its URL; each accepted connection
//! is given to the test, which sends `hello`, envelopes and `disconnect`, reads the acks
//! and may drop the connection at any point.
#![allow(
    dead_code,
    reason = "shared by several test binaries that each use part of it"
)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The server: connections arrive on [`SocketServer::accept`].
pub struct SocketServer {
    /// `ws://127.0.0.1:PORT/link`.
    pub url: String,
    connections: mpsc::UnboundedReceiver<Connection>,
}

/// One client connection.
pub struct Connection {
    ws: WebSocketStream<TcpStream>,
}

/// How long a test waits for the client before failing (it never waits this long when
/// things work: the waits end on the client's messages).
const PATIENCE: Duration = Duration::from_secs(20);

impl SocketServer {
    /// Binds `127.0.0.1:0` and accepts WebSocket connections in the background.
    pub async fn start() -> SocketServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                    let _ = tx.send(Connection { ws });
                }
            }
        });
        SocketServer {
            url: format!("ws://{addr}/link/?ticket=test"),
            connections: rx,
        }
    }

    /// The next connection the client opens; says hello on it as Slack does.
    pub async fn accept(&mut self) -> Connection {
        let mut conn = tokio::time::timeout(PATIENCE, self.connections.recv())
            .await
            .expect("the client did not connect")
            .expect("server stopped");
        conn.send(json!({
            "type": "hello", "num_connections": 1,
            "debug_info": {"host": "test", "approximate_connection_time": 18060},
            "connection_info": {"app_id": "AKLAXON"}
        }))
        .await;
        conn
    }
}

impl Connection {
    /// Sends one JSON message.
    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send to the client");
    }

    /// Sends an envelope of `kind` with `payload`; returns its envelope id.
    pub async fn envelope(&mut self, kind: &str, id: &str, payload: Value) -> String {
        self.send(json!({
            "envelope_id": id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api", "retry_attempt": 0, "retry_reason": ""
        }))
        .await;
        id.to_string()
    }

    /// The next ack (a JSON text message), or `None` when the client closed.
    pub async fn ack(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("no ack from the client");
            match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).expect("ack JSON"));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Asks the client to reconnect, as Slack does before closing a connection.
    pub async fn disconnect(&mut self, reason: &str) {
        self.send(json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "test"}}))
            .await;
    }

    /// Drops the TCP connection without a close frame (a network failure).
    pub fn drop_now(self) {
        drop(self.ws);
    }
}
