//! The policy-event relay: copies the policy service's changes (its `policy_history`, the
//! policy service's own outbox, read with ListPolicyHistory `after_id`) into this service's
//! outbox as `policy.created`, `policy.updated` and `policy.deleted` events, which the
//! streams and WatchEnrollmentEvents then deliver like every other event.
//!
//! Runs on every replica: whenever the policy-set watch announces a newer version, and
//! every `events.policy_relay_secs` in case an announcement was missed (the watch was down,
//! or another replica's announcement raced this one). The policy service being down only
//! delays the events: the round fails, is logged, and the next one catches up from the
//! cursor; nothing else waits for the relay. Two replicas relaying the same change write one
//! event (stable ids, see `store::policy_events`).
//!
//! The first round of a deployment (no cursor yet) starts after the newest change the
//! policy service has then: older history is not replayed as events (docs/events.md).
use std::sync::Arc;

use async_trait::async_trait;
use enroll_shared::time::SharedClock;
use tokio::sync::watch;

use crate::domain::policy_events::PolicyHistoryEntry;
use crate::error::DeviceError;
use crate::store::policy_events::PolicyRelayStore;

/// Changes read per ListPolicyHistory call.
pub const RELAY_PAGE: u32 = 100;

/// The policy service's change history, as the relay reads it.
#[async_trait]
pub trait PolicyHistory: Send + Sync + 'static {
    /// The id of the newest recorded change (0 when there is none).
    async fn newest_change(&self) -> Result<i64, DeviceError>;
    /// Up to `limit` changes with ids above `after_id`, oldest first.
    async fn changes_after(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<PolicyHistoryEntry>, DeviceError>;
}

#[derive(Clone)]
pub struct PolicyRelay {
    history: Arc<dyn PolicyHistory>,
    store: PolicyRelayStore,
    clock: SharedClock,
    every: std::time::Duration,
}

impl PolicyRelay {
    pub fn new(
        history: Arc<dyn PolicyHistory>,
        store: PolicyRelayStore,
        clock: SharedClock,
        every: std::time::Duration,
    ) -> Self {
        Self {
            history,
            store,
            clock,
            every,
        }
    }

    /// One round: relays every change after the cursor; returns how many events it wrote.
    pub async fn relay_once(&self) -> Result<u64, DeviceError> {
        let mut cursor = match self.store.cursor().await? {
            Some(cursor) => cursor,
            None => {
                let newest = self.history.newest_change().await?;
                let cursor = self.store.start_at(newest, self.clock.now()).await?;
                tracing::info!(
                    after_history_id = cursor,
                    "policy events start here (older policy history is not replayed)"
                );
                cursor
            }
        };
        let mut written = 0;
        loop {
            let changes = self.history.changes_after(cursor, RELAY_PAGE).await?;
            let Some(last) = changes.last().map(|change| change.facts.history_id) else {
                break;
            };
            if last <= cursor {
                // Never expected (the policy service answers ids above `after_id`): stop
                // rather than loop.
                return Err(DeviceError::corrupt(
                    "ListPolicyHistory",
                    format!("change {last} is not after {cursor}"),
                ));
            }
            written += self.store.relay(&changes, self.clock.now()).await?;
            cursor = last;
            if changes.len() < RELAY_PAGE as usize {
                break;
            }
        }
        Ok(written)
    }

    /// Relays when `versions` announces a newer policy-set version and every
    /// `events.policy_relay_secs`, until `stop` changes.
    pub async fn keep_relaying(
        self,
        mut versions: watch::Receiver<i64>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(self.every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announcing = true;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
                changed = versions.changed(), if announcing => {
                    // The watch's sender is gone (never while the server runs): poll only.
                    announcing = changed.is_ok();
                }
            }
            match self.relay_once().await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "policy changes relayed as events"),
                // Logged and retried at the next announcement or tick: the cursor stays.
                Err(error) => tracing::warn!(%error, "relaying policy changes failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
    use sea_orm_migration::MigratorTrait;

    use super::*;
    use crate::domain::events::EventKind;
    use crate::domain::policy_events::{PolicyChangeFacts, PolicySummary};
    use crate::store::events::EventStore;
    use crate::store::migration::Migrator;

    #[derive(Default)]
    struct FakeHistory {
        changes: Mutex<Vec<PolicyHistoryEntry>>,
        down: AtomicBool,
    }

    impl FakeHistory {
        fn record(&self, change: &str, name: &str) {
            let mut changes = self.changes.lock().unwrap();
            let id = changes.len() as i64 + 1;
            let summary = PolicySummary {
                name: name.into(),
                realms: vec!["corp".into()],
                ..Default::default()
            };
            changes.push(PolicyHistoryEntry {
                event_id: format!("00000000-0000-8000-8000-{id:012}"),
                actor: "admin-key".into(),
                change_time: chrono::Utc::now(),
                facts: PolicyChangeFacts {
                    name: name.into(),
                    change: change.into(),
                    history_id: id,
                    before: (change != "create").then(|| summary.clone()),
                    after: (change != "delete").then_some(summary),
                },
            });
        }

        fn check(&self) -> Result<(), DeviceError> {
            match self.down.load(Ordering::SeqCst) {
                true => Err(DeviceError::Unavailable("policy service down".into())),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl PolicyHistory for FakeHistory {
        async fn newest_change(&self) -> Result<i64, DeviceError> {
            self.check()?;
            Ok(self.changes.lock().unwrap().len() as i64)
        }

        async fn changes_after(
            &self,
            after_id: i64,
            limit: u32,
        ) -> Result<Vec<PolicyHistoryEntry>, DeviceError> {
            self.check()?;
            Ok(self
                .changes
                .lock()
                .unwrap()
                .iter()
                .filter(|change| change.facts.history_id > after_id)
                .take(limit as usize)
                .cloned()
                .collect())
        }
    }

    async fn database() -> DatabaseConnection {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        db
    }

    fn relay(history: &Arc<FakeHistory>, db: &DatabaseConnection) -> PolicyRelay {
        PolicyRelay::new(
            history.clone(),
            PolicyRelayStore::new(db.clone()),
            Arc::new(enroll_shared::time::SystemClock),
            std::time::Duration::from_secs(30),
        )
    }

    async fn count(db: &DatabaseConnection) -> i64 {
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) FROM enrollment_events",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
    }

    #[tokio::test]
    async fn changes_after_the_first_start_are_relayed_once_each() {
        let db = database().await;
        let history = Arc::new(FakeHistory::default());
        history.record("create", "old");
        let (one, two) = (relay(&history, &db), relay(&history, &db));
        // The first start begins after the newest change: old history is not replayed.
        assert_eq!(one.relay_once().await.unwrap(), 0);
        assert_eq!(count(&db).await, 0);

        history.record("update", "old");
        history.record("delete", "old");
        assert_eq!(one.relay_once().await.unwrap(), 2);
        // Another replica, or the same one again: nothing more.
        assert_eq!(two.relay_once().await.unwrap(), 0);
        assert_eq!(one.relay_once().await.unwrap(), 0);
        // A replica that read the changes before the cursor moved writes nothing.
        let stale = history.changes_after(1, 10).await.unwrap();
        let store = PolicyRelayStore::new(db.clone());
        assert_eq!(store.relay(&stale, chrono::Utc::now()).await.unwrap(), 0);
        // A cursor set back (a restored database) rewrites no event: the ids are unique.
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            "UPDATE policy_event_relay SET last_history_id = 1",
        ))
        .await
        .unwrap();
        assert_eq!(two.relay_once().await.unwrap(), 0);
        assert_eq!(store.cursor().await.unwrap(), Some(3));
        assert_eq!(count(&db).await, 2);

        let events = EventStore::new(db.clone());
        events.stamp().await.unwrap();
        let stamped = events.after(0, 10).await.unwrap();
        let kinds: Vec<EventKind> = stamped.iter().map(|event| event.kind).collect();
        assert_eq!(kinds, [EventKind::PolicyUpdated, EventKind::PolicyDeleted]);
        let updated = &stamped[0];
        assert_eq!(updated.id, "00000000-0000-8000-8000-000000000002");
        assert_eq!((updated.realm.as_str(), updated.user.as_str()), ("", ""));
        assert_eq!(updated.subject, "old");
        assert_eq!(updated.actor, "admin-key");
        let facts = updated.policy.as_ref().unwrap();
        assert_eq!((facts.history_id, facts.change.as_str()), (2, "update"));
        assert!(stamped[1].policy.as_ref().unwrap().after.is_none());
        assert_eq!(EventKind::PolicyUpdated.caep_change_type(), None);
    }

    #[tokio::test]
    async fn a_policy_service_out_of_reach_delays_the_events_and_loses_none() {
        let db = database().await;
        let history = Arc::new(FakeHistory::default());
        history.down.store(true, Ordering::SeqCst);
        let relay = relay(&history, &db);
        // Not even started: the cursor waits for the first answer.
        assert!(relay.relay_once().await.is_err());
        history.down.store(false, Ordering::SeqCst);
        assert_eq!(relay.relay_once().await.unwrap(), 0);
        for n in 0..(RELAY_PAGE as usize + 5) {
            history.record("create", &format!("p{n}"));
        }
        history.down.store(true, Ordering::SeqCst);
        assert!(relay.relay_once().await.is_err());
        assert_eq!(count(&db).await, 0);
        history.down.store(false, Ordering::SeqCst);
        // More than a page: all of them, in one round.
        assert_eq!(relay.relay_once().await.unwrap(), RELAY_PAGE as u64 + 5);
    }
}
