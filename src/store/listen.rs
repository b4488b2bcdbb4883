//! Cross-replica wake-ups on PostgreSQL: every commit that adds outbox rows or moves
//! timers sends `NOTIFY` (see [`super::StoreTx::commit`]); each replica LISTENs and wakes
//! its own worker and scheduler, so a declare served by one replica is delivered by
//! whichever is free without waiting for anyone's poll.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};

use super::{Backend, OUTBOX_CHANNEL, Store, TIMERS_CHANNEL};

impl Store {
    /// Until shutdown: wakes `outbox` and `timers` on the matching notifications. Lost
    /// connections are re-established (with backoff); since notifications may have been
    /// missed meanwhile, both are woken after every reconnect. Returns at once on SQLite
    /// (one process: the engine wakes its loops directly).
    pub async fn listen_for_commits(
        &self,
        outbox: Arc<Notify>,
        timers: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            let listener = async {
                let mut listener = PgListener::connect(self.url()).await?;
                listener
                    .listen_all([OUTBOX_CHANNEL, TIMERS_CHANNEL])
                    .await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                l = listener => l,
                _ = shutdown.changed() => return,
            };
            match listener.as_mut() {
                Ok(listener) => {
                    backoff = Duration::from_millis(500);
                    outbox.notify_one();
                    timers.notify_one();
                    loop {
                        let next = tokio::select! {
                            n = listener.try_recv() => n,
                            _ = shutdown.changed() => return,
                        };
                        match next {
                            Ok(Some(n)) if n.channel() == OUTBOX_CHANNEL => outbox.notify_one(),
                            Ok(Some(_)) => timers.notify_one(),
                            // The connection dropped and was re-established.
                            Ok(None) => {
                                outbox.notify_one();
                                timers.notify_one();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN for commits; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}
