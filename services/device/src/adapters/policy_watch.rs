//! Follows the policy service's WatchPolicySet stream into CheckEnrollment's decision cache
//! and the last known policy set, reconnecting with back-off; while the stream is down the
//! cache is off (every check asks the policy service) and the last set received stays.
use std::sync::Arc;
use std::time::Duration;

use super::last_known_policy::LastKnownPolicy;
use super::policy_client::PolicyClient;
use crate::service::decision_cache::{DecisionCache, WATCH_TRUST};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Feeds `cache` (when CheckEnrollment caches) and `last_known` from the stream, and
/// announces every newer version on `versions` (the policy-event relay's trigger), until
/// `shutdown` fires.
pub async fn follow_policy_set(
    client: PolicyClient,
    cache: Option<Arc<DecisionCache>>,
    last_known: Arc<LastKnownPolicy>,
    versions: tokio::sync::watch::Sender<i64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let followed = tokio::select! {
            _ = shutdown.changed() => return,
            followed = follow_once(&client, cache.as_deref(), &last_known, &versions) => followed,
        };
        if let Some(cache) = &cache {
            cache.lost();
        }
        if followed {
            retry = FIRST_RETRY;
        }
        tracing::debug!(
            retry_ms = retry.as_millis() as u64,
            "policy set watch down; checks ask the policy service until it is back"
        );
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// One subscription, until it breaks or goes silent; true when it delivered a message.
async fn follow_once(
    client: &PolicyClient,
    cache: Option<&DecisionCache>,
    last_known: &LastKnownPolicy,
    versions: &tokio::sync::watch::Sender<i64>,
) -> bool {
    let mut stream = match client.watch_policy_set().await {
        Ok(stream) => stream,
        Err(status) => {
            tracing::debug!(code = ?status.code(), "cannot watch the policy set");
            return false;
        }
    };
    let mut delivered = false;
    loop {
        // A stream silent past the trust window is as good as dead (a half-open
        // connection): drop it and subscribe again.
        match tokio::time::timeout(WATCH_TRUST, stream.message()).await {
            Ok(Ok(Some(state))) => {
                delivered = true;
                if state.includes_policies {
                    last_known.receive(state.version, state.policies).await;
                }
                if let Some(cache) = cache {
                    cache.observe(state.version, state.serving, state.client_ip_used);
                }
                // Heartbeats repeat the version: only a newer one wakes the relay.
                versions.send_if_modified(|seen| {
                    let newer = state.version > *seen;
                    if newer {
                        *seen = state.version;
                    }
                    newer
                });
            }
            Ok(Ok(None)) => return delivered,
            Ok(Err(status)) => {
                tracing::debug!(code = ?status.code(), "policy set watch broke");
                return delivered;
            }
            Err(_) => {
                tracing::debug!("policy set watch silent; resubscribing");
                return delivered;
            }
        }
    }
}
