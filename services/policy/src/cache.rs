//! The compiled policy set, held in memory and kept current: PostgreSQL LISTEN/NOTIFY for
//! prompt updates, plus a version poll (the only mechanism on SQLite, and the fallback when
//! the notification connection drops).
//!
//! The set is served only while it is known to be the stored one: every active stored policy
//! compiled (an unreadable one stops decisions instead of being left out, which would
//! decide as if it did not exist, usually more permissively), and confirmed against the
//! database within `max_staleness` (a replica that cannot reach its database stops deciding
//! instead of deciding on a set that may have been tightened since).
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use enroll_shared::db_changes::{ChangeFeed, Wake};
use sea_orm::DatabaseConnection;

use crate::domain::engine::PolicySet;
use crate::domain::policy::UnreadablePolicy;
use crate::store::{CHANGE_CHANNEL, LoadedPolicies, PolicyStore, StoreError};

/// A monotonic clock (tests inject one; wall-clock jumps must not age the set).
pub type MonotonicClock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Why decisions are refused right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unservable {
    /// Nothing loaded yet.
    NotLoaded,
    /// Active stored policies that do not parse or no longer validate.
    Unreadable(Vec<UnreadablePolicy>),
    /// The set was last confirmed against the database `age` ago, more than `max`.
    Stale { age: Duration, max: Duration },
}

/// One load of the stored policies.
struct Loaded {
    version: i64,
    /// The policies that compiled (also used for conflict checks on writes).
    set: Arc<PolicySet>,
    /// Active policies that did not; decisions are refused while there are any.
    unreadable: Vec<UnreadablePolicy>,
    /// When the database last said this is its version.
    confirmed_at: Instant,
}

/// What the metrics show of the loaded set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    pub version: i64,
    /// Policies that compiled.
    pub policies: usize,
    /// Active policies that did not.
    pub unreadable: usize,
    /// Since the database last confirmed the version.
    pub age: Duration,
}

/// The current policy set; readers take an `Arc` snapshot and never wait for a refresh.
pub struct PolicyCache {
    current: RwLock<Option<Loaded>>,
    /// Serializes refreshes so a slow load cannot overwrite a newer one.
    refreshing: tokio::sync::Mutex<()>,
    max_staleness: Duration,
    clock: MonotonicClock,
    /// Whether decisions are served, for the health status.
    serving: tokio::sync::watch::Sender<bool>,
    /// The loaded version and whether it is served, for WatchPolicySet.
    published: tokio::sync::watch::Sender<PublishedSet>,
}

/// What WatchPolicySet streams; `closing` ends the streams at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishedSet {
    pub version: i64,
    pub serving: bool,
    /// Whether some policy of the set restricts clients (decisions depend on the client IP).
    pub client_ip_used: bool,
    pub closing: bool,
}

impl PolicyCache {
    pub fn new(max_staleness: Duration) -> Self {
        Self::with_clock(max_staleness, Arc::new(Instant::now))
    }

    pub fn with_clock(max_staleness: Duration, clock: MonotonicClock) -> Self {
        Self {
            current: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            max_staleness,
            clock,
            serving: tokio::sync::watch::Sender::new(false),
            published: tokio::sync::watch::Sender::new(PublishedSet::default()),
        }
    }

    /// Follows the loaded version and whether it is served (WatchPolicySet).
    pub fn published(&self) -> tokio::sync::watch::Receiver<PublishedSet> {
        self.published.subscribe()
    }

    /// Ends every WatchPolicySet stream (shutdown), so none holds the server open.
    pub fn close_watchers(&self) {
        self.published
            .send_modify(|published| published.closing = true);
    }

    /// The set decisions may use, or why there is none.
    pub fn decision_set(&self) -> Result<Arc<PolicySet>, Unservable> {
        let now = (self.clock)();
        self.read(|loaded| {
            let loaded = loaded.ok_or(Unservable::NotLoaded)?;
            if !loaded.unreadable.is_empty() {
                return Err(Unservable::Unreadable(loaded.unreadable.clone()));
            }
            let age = now.saturating_duration_since(loaded.confirmed_at);
            if age > self.max_staleness {
                return Err(Unservable::Stale {
                    age,
                    max: self.max_staleness,
                });
            }
            Ok(loaded.set.clone())
        })
    }

    /// The last compiled set whatever its state (for conflict warnings on writes).
    pub fn last_set(&self) -> Option<Arc<PolicySet>> {
        self.read(|loaded| loaded.map(|loaded| loaded.set.clone()))
    }

    /// The loaded set's version, size and age, once one is loaded.
    pub fn status(&self) -> Option<CacheStatus> {
        let now = (self.clock)();
        self.read(|loaded| {
            loaded.map(|loaded| CacheStatus {
                version: loaded.version,
                policies: loaded.set.len(),
                unreadable: loaded.unreadable.len(),
                age: now.saturating_duration_since(loaded.confirmed_at),
            })
        })
    }

    pub fn loaded_version(&self) -> Option<i64> {
        self.read(|loaded| loaded.map(|loaded| loaded.version))
    }

    /// Follows whether decisions are served (re-evaluated on every load, confirmation and
    /// [`PolicyCache::update_serving`]).
    pub fn serving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Re-evaluates whether decisions are served (age alone can change it).
    pub fn update_serving(&self) {
        let serving = self.decision_set().is_ok();
        self.serving.send_if_modified(|current| {
            let changed = *current != serving;
            *current = serving;
            changed
        });
        let (version, client_ip_used) = self.read(|loaded| {
            loaded.map_or((0, true), |loaded| {
                (loaded.version, loaded.set.uses_client_ip())
            })
        });
        self.published.send_if_modified(|current| {
            let changed = current.version != version
                || current.serving != serving
                || current.client_ip_used != client_ip_used;
            current.version = version;
            current.serving = serving;
            current.client_ip_used = client_ip_used;
            changed
        });
    }

    /// Reloads when the stored version differs from the cached one; otherwise records that
    /// the cached set is still the stored one.
    pub async fn refresh_if_changed<S: PolicyStore>(&self, store: &S) -> Result<bool, StoreError> {
        let asked_at = (self.clock)();
        let stored_version = store.version().await?;
        if Some(stored_version) == self.loaded_version() {
            self.confirm(stored_version, asked_at);
            return Ok(false);
        }
        self.reload(store).await.map(|_| true)
    }

    /// Loads and compiles every policy.
    pub async fn reload<S: PolicyStore>(&self, store: &S) -> Result<(), StoreError> {
        let _guard = self.refreshing.lock().await;
        let asked_at = (self.clock)();
        let loaded = store.load_all().await?;
        self.install(loaded, asked_at);
        Ok(())
    }

    /// Installs a load read at `asked_at` (the start of the read: the set is at least that
    /// fresh), unless a newer version is already installed.
    fn install(&self, loaded: LoadedPolicies, asked_at: Instant) {
        let LoadedPolicies {
            version,
            policies,
            unreadable: mut unparsed,
        } = loaded;
        if self
            .loaded_version()
            .is_some_and(|current| version < current)
        {
            return;
        }
        let (set, invalid) = PolicySet::compile(version, &policies);
        unparsed.extend(invalid);
        for policy in &unparsed {
            tracing::error!(
                policy = %policy.name,
                active = policy.active,
                reason = %policy.reason,
                "stored policy is unreadable; decisions are refused while it is active"
            );
        }
        let unreadable: Vec<UnreadablePolicy> = unparsed
            .into_iter()
            .filter(|policy| policy.active)
            .collect();
        tracing::debug!(version, policies = set.len(), "policy set loaded");
        self.write(Loaded {
            version,
            set: Arc::new(set),
            unreadable,
            confirmed_at: asked_at,
        });
        self.update_serving();
    }

    /// Records that the database's version was still `version` at `asked_at`.
    fn confirm(&self, version: i64, asked_at: Instant) {
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(loaded) = current.as_mut()
            && loaded.version == version
            && loaded.confirmed_at < asked_at
        {
            loaded.confirmed_at = asked_at;
        }
        drop(current);
        self.update_serving();
    }

    fn read<T>(&self, read: impl FnOnce(Option<&Loaded>) -> T) -> T {
        match self.current.read() {
            Ok(current) => read(current.as_ref()),
            Err(poisoned) => read(poisoned.into_inner().as_ref()),
        }
    }

    fn write(&self, loaded: Loaded) {
        match self.current.write() {
            Ok(mut current) => *current = Some(loaded),
            Err(poisoned) => *poisoned.into_inner() = Some(loaded),
        }
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
    let mut feed = ChangeFeed::new(db, CHANGE_CHANNEL, "policy changes", poll_interval);
    loop {
        match feed.next(&mut shutdown).await {
            Wake::Shutdown => {
                cache.close_watchers();
                return;
            }
            // The version poll below finds whatever the lost notifications announced.
            Wake::NotificationsLost | Wake::Look => {}
        }
        if let Err(error) = cache.refresh_if_changed(store.as_ref()).await {
            tracing::warn!(%error, "policy set refresh failed; the cached set ages until a refresh succeeds");
        }
        cache.update_serving();
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
