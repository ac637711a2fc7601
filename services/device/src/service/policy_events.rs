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
