//! Device changes made by any replica, for CheckEnrollment's cache of users' device rows.
//! Every device change bumps one counter in its own transaction and records the user it
//! changed (`device_user_changes`); replicas read the counter every `poll_interval` (the
//! only signal on SQLite) and, on PostgreSQL, also at once on a NOTIFY sent by the same
//! transaction. A moved counter drops the changed users' cached rows.
//!
//! Bound: a change committed at T is seen by every poll that starts after T, and cached rows
//! are served only while the last successful poll started less than [`trust`] ago, so no
//! replica answers from rows older than `trust` (at most 900 ms).
//!
//! Authentications are the frequent device write, and one counter row would serialize them
//! across every replica: they change only the time of use (never the state CheckEnrollment
//! decides on), which is recorded at a coarse grain ([`LAST_USED_GRAIN`]), and only an
//! authentication that moves it bumps the counter. Cached rows are also re-read once they
//! are [`MAX_ROW_AGE`] old, a second line of defence.
use enroll_shared::clock_cache::ClockCache;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use enroll_shared::db_changes::{ChangeFeed, Wake};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr};

use super::sql::statement;
use crate::domain::devices::Device;
use crate::domain::names::{Realm, UserName};

/// How far an authentication must move a device's `last_used_time` to record it (and bump
/// the change counter): at most one counter bump a minute per device.
pub const LAST_USED_GRAIN: Duration = Duration::from_secs(60);

/// How long cached rows are served at most, whatever the counter says.
pub const MAX_ROW_AGE: Duration = Duration::from_secs(60);

/// The NOTIFY channel of device changes.
pub const CHANGE_CHANNEL: &str = "enroll_device_changed";

/// Records, in `transaction`, that `user_id`'s devices changed. The counter row's lock is
/// held to the commit, so versions commit in the order they are handed out and a poll that
/// saw version V has seen every change up to V.
pub(super) async fn record_change(
    transaction: &DatabaseTransaction,
    user_id: i64,
) -> Result<(), DbErr> {
    let backend = transaction.get_database_backend();
    let row = transaction
        .query_one_raw(statement(
            backend,
            "UPDATE device_changes SET version = version + 1 WHERE id = 1 RETURNING version",
            vec![],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("device_changes counter row".into()))?;
    let version: i64 = row.try_get_by_index(0)?;
    transaction
        .execute_raw(statement(
            backend,
            "INSERT INTO device_user_changes (user_id, version) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET version = excluded.version",
            vec![user_id.into(), version.into()],
        ))
        .await?;
    if backend == DbBackend::Postgres {
        // Delivered at commit, never for a rolled-back change.
        transaction
            .execute_raw(statement(
                backend,
                "SELECT pg_notify($1, $2)",
                vec![CHANGE_CHANNEL.into(), version.to_string().into()],
            ))
            .await?;
    }
    Ok(())
}

/// How long a successful poll vouches for the cached rows.
pub fn trust(poll_interval: Duration) -> Duration {
    (poll_interval * 3).min(Duration::from_millis(900))
}

type UserKey = (String, String);

struct RowsState {
    /// Bumped on every invalidation: rows read before it are not stored after it.
    epoch: u64,
    /// The counter as last read; None before the first poll (nothing cached).
    seen_version: Option<i64>,
    /// When the last successful poll started.
    confirmed_at: Option<Instant>,
    /// The rows and when they were stored; bounded, evicting users not checked lately
    /// (CLOCK), so the users a proxy checks often stay however many users there are.
    entries: ClockCache<UserKey, (Instant, Arc<Vec<Device>>)>,
}

/// Users' devices as CheckEnrollment reads them, kept while the change counter says they
/// have not changed.
pub struct UserDevicesCache {
    state: RwLock<RowsState>,
    trust: Duration,
    max_row_age: Duration,
}

impl UserDevicesCache {
    pub fn new(max_entries: usize, poll_interval: Duration) -> Self {
        Self {
            state: RwLock::new(RowsState {
                epoch: 0,
                seen_version: None,
                confirmed_at: None,
                entries: ClockCache::new(max_entries),
            }),
            trust: trust(poll_interval),
            max_row_age: MAX_ROW_AGE,
        }
    }

    /// Serves rows for at most `max_row_age` (tests shorten it).
    pub fn with_max_row_age(mut self, max_row_age: Duration) -> Self {
        self.max_row_age = max_row_age;
        self
    }

    fn key(realm: &Realm, user: &UserName) -> UserKey {
        (realm.as_str().to_owned(), user.as_str().to_owned())
    }

    /// The cached rows, while a recent poll vouches for them.
    pub fn get(&self, realm: &Realm, user: &UserName) -> Option<Arc<Vec<Device>>> {
        let state = self.read();
        if !self.trusted(&state) {
            return None;
        }
        state
            .entries
            .get(&Self::key(realm, user))
            .filter(|(stored_at, _)| stored_at.elapsed() <= self.max_row_age)
            .map(|(_, devices)| devices.clone())
    }

    /// The epoch to pass to [`UserDevicesCache::put`]; taken before reading the rows.
    pub fn epoch(&self) -> u64 {
        self.read().epoch
    }

    /// Keeps rows read since `epoch`, unless something changed meanwhile.
    pub fn put(&self, realm: &Realm, user: &UserName, epoch: u64, devices: Arc<Vec<Device>>) {
        let mut state = self.write();
        if state.epoch != epoch || !self.trusted(&state) {
            return;
        }
        state
            .entries
            .insert(Self::key(realm, user), (Instant::now(), devices));
    }

    /// The counter was `version` when a poll started at `asked_at`; `changed` lists the users
    /// changed since the version seen before (None: unknown, drop everything).
    fn confirm(&self, version: i64, asked_at: Instant, changed: Option<Vec<UserKey>>) {
        let mut state = self.write();
        if state.seen_version != Some(version) {
            state.epoch += 1;
            match changed {
                Some(users) if state.seen_version.is_some() => {
                    for user in users {
                        state.entries.remove(&user);
                    }
                }
                _ => state.entries.clear(),
            }
            state.seen_version = Some(version);
        }
        if state
            .confirmed_at
            .is_none_or(|confirmed| confirmed < asked_at)
        {
            state.confirmed_at = Some(asked_at);
        }
    }

    /// This replica changed `user`'s devices (committed): its own next check reads them,
    /// without waiting for the poll (None: the user is not known here, drop everything).
    pub fn changed_here(&self, user: Option<(&str, &str)>) {
        let mut state = self.write();
        state.epoch += 1;
        match user {
            Some((realm, user)) => {
                state.entries.remove(&(realm.to_owned(), user.to_owned()));
            }
            None => state.entries.clear(),
        }
    }

    /// Notifications may have been lost: drop everything (the next poll re-confirms).
    fn forget(&self) {
        let mut state = self.write();
        state.epoch += 1;
        state.entries.clear();
        state.seen_version = None;
    }

    fn seen_version(&self) -> Option<i64> {
        self.read().seen_version
    }

    fn trusted(&self, state: &RowsState) -> bool {
        state
            .confirmed_at
            .is_some_and(|confirmed| confirmed.elapsed() <= self.trust)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RowsState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RowsState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads the counter and, when it moved, the users changed since `seen`.
async fn poll(db: &DatabaseConnection, cache: &UserDevicesCache) -> Result<(), DbErr> {
    let asked_at = Instant::now();
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(statement(
            backend,
            "SELECT version FROM device_changes WHERE id = 1",
            vec![],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("device_changes counter row".into()))?;
    let version: i64 = row.try_get_by_index(0)?;
    let seen = cache.seen_version();
    let changed = match seen {
        Some(seen) if seen != version => {
            let rows = db
                .query_all_raw(statement(
                    backend,
                    "SELECT u.realm, u.name FROM device_user_changes c \
                     JOIN users u ON u.id = c.user_id WHERE c.version > $1",
                    vec![seen.into()],
                ))
                .await?;
            let mut users = Vec::with_capacity(rows.len());
            for row in rows {
                users.push((row.try_get_by_index(0)?, row.try_get_by_index(1)?));
            }
            Some(users)
        }
        _ => None,
    };
    cache.confirm(version, asked_at, changed);
    Ok(())
}

/// Keeps `cache` current until `shutdown` fires.
pub async fn keep_current(
    cache: Arc<UserDevicesCache>,
    db: DatabaseConnection,
    poll_interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut feed = ChangeFeed::new(db.clone(), CHANGE_CHANNEL, "device changes", poll_interval);
    loop {
        match feed.next(&mut shutdown).await {
            Wake::Shutdown => return,
            Wake::NotificationsLost => cache.forget(),
            Wake::Look => {}
        }
        if let Err(error) = poll(&db, &cache).await {
            // The cache stops being used once the last good poll is older than its trust.
            tracing::warn!(%error, "device change poll failed; CheckEnrollment reads the database");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (Realm, UserName) {
        (
            Realm::parse("acme").unwrap(),
            UserName::parse("alice").unwrap(),
        )
    }

    #[test]
    fn rows_read_across_a_change_are_not_kept() {
        let cache = UserDevicesCache::new(10, Duration::from_millis(250));
        let (realm, user) = names();
        let epoch = cache.epoch();
        cache.put(&realm, &user, epoch, Arc::new(vec![]));
        assert!(
            cache.get(&realm, &user).is_none(),
            "no poll yet: nothing cached"
        );
        cache.confirm(1, Instant::now(), None);
        let epoch = cache.epoch();
        cache.put(&realm, &user, epoch, Arc::new(vec![]));
        assert!(cache.get(&realm, &user).is_some());
        // A change of another user keeps alice; one of alice drops her.
        cache.confirm(2, Instant::now(), Some(vec![("acme".into(), "bob".into())]));
        assert!(cache.get(&realm, &user).is_some());
        let before = cache.epoch();
        cache.confirm(
            3,
            Instant::now(),
            Some(vec![("acme".into(), "alice".into())]),
        );
        assert!(cache.get(&realm, &user).is_none());
        // Rows read before that change are refused.
        cache.put(&realm, &user, before, Arc::new(vec![]));
        assert!(cache.get(&realm, &user).is_none());
        cache.forget();
        assert!(cache.get(&realm, &user).is_none());
    }

    #[test]
    fn rows_expire_after_their_max_age_even_while_polls_vouch() {
        let max_age = Duration::from_millis(100);
        let cache = UserDevicesCache::new(10, Duration::from_millis(250)).with_max_row_age(max_age);
        let (realm, user) = names();
        cache.confirm(1, Instant::now(), None);
        cache.put(&realm, &user, cache.epoch(), Arc::new(vec![]));
        assert!(cache.get(&realm, &user).is_some());
        std::thread::sleep(max_age + Duration::from_millis(20));
        // A fresh poll with an unchanged counter: the rows are still too old to serve.
        cache.confirm(1, Instant::now(), Some(vec![]));
        assert!(cache.get(&realm, &user).is_none());
    }

    #[test]
    fn untrusted_after_polls_stop() {
        let cache = UserDevicesCache::new(10, Duration::from_millis(10));
        let (realm, user) = names();
        cache.confirm(1, Instant::now(), None);
        cache.put(&realm, &user, cache.epoch(), Arc::new(vec![]));
        assert!(cache.get(&realm, &user).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&realm, &user).is_none());
    }
}
