//! The worker's leases: claiming lanes (on the store thread when there is one), taking
//! back an earlier life's at start-up, naming this instance in them, and renewing what
//! is in flight (the heartbeat).

use std::collections::HashMap;
use std::sync::Arc;

use super::OutboxWorker;
use crate::domain::outbound::LaneClass;
use crate::store::{OutboxRow, StoreError};

impl OutboxWorker {
    /// Claims up to `limit` due lanes of `class`.
    pub(super) async fn claim(
        &self,
        class: LaneClass,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let (store, owner, lease) = (
            self.engine.store().clone(),
            self.owner.clone(),
            self.settings.lease,
        );
        self.on_store_thread(async move {
            store
                .claim_lanes(class, &owner, now, now + lease, limit as i64)
                .await
        })
        .await
    }

    /// Runs claims and settles on the store thread (see
    /// [`crate::background::StoreThread`]) when this worker has one.
    pub fn with_store_thread(mut self, thread: crate::background::StoreThread) -> Self {
        self.store_thread = Some(Arc::new(thread));
        self
    }

    /// Where claims and settles run: the store thread if there is one, else this
    /// worker's own runtime.
    pub(super) fn store_runtime(&self) -> tokio::runtime::Handle {
        match &self.store_thread {
            Some(thread) => thread.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }

    /// `work` on [`OutboxWorker::store_runtime`].
    async fn on_store_thread<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        // The runtime outlives this worker (the store thread lives as long as any of its
        // clones), so the task is never cancelled; a panic is passed on, not hidden.
        match self.store_runtime().spawn(work).await {
            Ok(out) => out,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// At start-up on SQLite, takes back the leases a previous life of this process held
    /// (one process owns the file), so what it was delivering resumes at once.
    pub(super) async fn start_up(&self) -> Result<(), StoreError> {
        let store = self.engine.store();
        let now = self.clock.now();
        let released = match (store.backend(), &self.instance) {
            // One process owns the file: every lease is from this process's last life.
            (crate::store::Backend::Sqlite, _) => store.release_outbox_leases(now).await?,
            // Replicas share the database: only this instance's earlier life's leases.
            (crate::store::Backend::Postgres, Some(instance)) => {
                store
                    .release_instance_leases(&format!("{instance}/"), now)
                    .await?
            }
            // Not knowing which instance it is, it leaves them to run out.
            (crate::store::Backend::Postgres, None) => 0,
        };
        if released > 0 {
            tracing::info!(
                lanes = released,
                "resuming deliveries interrupted by the last stop"
            );
        }
        Ok(())
    }

    /// This worker as instance `instance` (`host:port` in `serve`): its leases carry the
    /// name, and at start-up it takes back the lanes its predecessor on the same
    /// instance leased before dying, on PostgreSQL too (SQLite takes back every lease).
    /// Two live processes must never share an instance name; host and listening port
    /// cannot be shared. Without a name (tests, tools), a dead worker's lanes come back
    /// when their leases run out.
    pub fn for_instance(mut self, instance: &str) -> Self {
        let instance: Arc<str> = instance.replace('/', "_").into();
        self.owner = format!("{instance}/{}", uuid::Uuid::new_v4().simple()).into();
        self.instance = Some(instance);
        self
    }

    /// Renews the leases of every lane in flight.
    pub(super) async fn heartbeat(
        &self,
        lanes: &HashMap<tokio::task::Id, Vec<(LaneClass, String)>>,
    ) {
        if lanes.is_empty() {
            return;
        }
        let keys: Vec<String> = lanes.values().flatten().map(|(_, k)| k.clone()).collect();
        let until = self.clock.now() + self.settings.lease;
        match self
            .engine
            .store()
            .renew_lanes(&self.owner, &keys, until)
            .await
        {
            Ok(held) if (held as usize) < keys.len() => {
                tracing::warn!(
                    in_flight = keys.len(),
                    held,
                    "some outbox leases were lost (this worker was too slow to renew them)"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not renew outbox leases"),
        }
    }
}
