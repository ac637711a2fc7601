//! The compiled policy set, held in memory and kept current: PostgreSQL LISTEN/NOTIFY for
//! prompt updates, plus a version poll (the only mechanism on SQLite, and the fallback when
//! the notification connection drops).
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{DatabaseConnection, DbBackend};

use crate::domain::engine::PolicySet;
use crate::store::{CHANGE_CHANNEL, PolicyStore, StoreError};

/// The current policy set; readers take an `Arc` snapshot and never wait for a refresh.
/// Empty until the first load: decisions are refused rather than made without the policies.
#[derive(Default)]
pub struct PolicyCache {
    current: RwLock<Option<Arc<PolicySet>>>,
    /// Serializes refreshes so a slow load cannot overwrite a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl PolicyCache {
    pub fn snapshot(&self) -> Option<Arc<PolicySet>> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn loaded_version(&self) -> Option<i64> {
        self.snapshot().map(|set| set.version())
    }

    /// Reloads when the stored version differs from the cached one.
    pub async fn refresh_if_changed<S: PolicyStore>(&self, store: &S) -> Result<bool, StoreError> {
        let stored_version = store.version().await?;
        if Some(stored_version) == self.loaded_version() {
            return Ok(false);
        }
        self.reload(store).await.map(|_| true)
    }

    /// Loads and compiles every policy.
    pub async fn reload<S: PolicyStore>(&self, store: &S) -> Result<(), StoreError> {
        let _guard = self.refreshing.lock().await;
        let (version, stored) = store.load_all().await?;
        if self.loaded_version().is_some_and(|loaded| version < loaded) {
            return Ok(());
        }
        let (set, skipped) = PolicySet::compile(version, &stored);
        for (name, reason) in skipped {
            tracing::error!(policy = %name, %reason, "stored policy no longer validates; ignored");
        }
        tracing::debug!(version, policies = set.len(), "policy set loaded");
        let set = Some(Arc::new(set));
        match self.current.write() {
            Ok(mut current) => *current = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        Ok(())
    }
}

/// Keeps `cache` current until `shutdown` fires.
pub async fn keep_current<S: PolicyStore>(
    cache: Arc<PolicyCache>,
    store: Arc<S>,
    db: DatabaseConnection,
    poll_interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut listener = None;
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if listener.is_none() && db.get_database_backend() == DbBackend::Postgres {
            listener = listen(&db).await;
        }
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            result = notified => {
                if let Err(error) = result {
                    tracing::warn!(%error, "policy change notifications lost; polling until reconnected");
                    listener = None;
                }
            }
            _ = poll.tick() => {}
        }
        if let Err(error) = cache.refresh_if_changed(store.as_ref()).await {
            tracing::warn!(%error, "policy set refresh failed; serving the previous set");
        }
    }
}

async fn listen(db: &DatabaseConnection) -> Option<PgListener> {
    let pool = db.get_postgres_connection_pool();
    let result = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANGE_CHANNEL).await?;
        Ok::<_, sea_orm::sqlx::Error>(listener)
    }
    .await;
    match result {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "cannot LISTEN for policy changes; polling");
            None
        }
    }
}
