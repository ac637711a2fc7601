//! What the device use cases count: limit hits, autoassignment attempts, enrollment-link
//! changes and WebAuthn ceremonies. Labels are closed sets of names chosen here (never a
//! realm, user, serial, address or secret), so the number of series stays bounded.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enroll_shared::metrics::{Counter, Meters};
use enroll_shared::time::SharedClock;
use opentelemetry::KeyValue;

use crate::error::DeviceError;
use crate::store::devices::DeviceStore;
use crate::store::links::LinkCounts;
use crate::store::tokens::TokenStore;

#[derive(Clone)]
pub struct DeviceMetrics {
    limit_hits: Counter,
    autoassign: Counter,
    link_changes: Counter,
    ceremonies: Counter,
    metadata_refused: Counter,
}

/// What happened to an enrollment link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    Created,
    /// Its registration finished: the device exists, the link is spent.
    Redeemed,
    Revoked,
    /// Used after its expiry time (found expired, not swept).
    Expired,
}

impl LinkChange {
    fn as_str(self) -> &'static str {
        match self {
            LinkChange::Created => "created",
            LinkChange::Redeemed => "redeemed",
            LinkChange::Revoked => "revoked",
            LinkChange::Expired => "expired",
        }
    }
}

/// A WebAuthn ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    Registration,
    Authentication,
}

impl Ceremony {
    fn as_str(self) -> &'static str {
        match self {
            Ceremony::Registration => "registration",
            Ceremony::Authentication => "authentication",
        }
    }
}

impl DeviceMetrics {
    pub fn new(meters: &Meters) -> Self {
        Self {
            limit_hits: meters.counter(
                "enroll.device.limit.hits",
                "Mutations refused because a token limit is reached, by limit",
            ),
            autoassign: meters.counter(
                "enroll.device.autoassign.attempts",
                "Autoassignment attempts by outcome (challenged, retyped, confirmation_failed, assigned, or why it was refused; real and decoy challenges count alike)",
            ),
            link_changes: meters.counter(
                "enroll.device.link.changes",
                "Enrollment link state changes (created, redeemed, revoked, expired)",
            ),
            ceremonies: meters.counter(
                "enroll.device.webauthn.ceremonies",
                "Finished WebAuthn ceremonies by ceremony (registration, authentication) and outcome (success, or why it failed)",
            ),
            metadata_refused: meters.counter(
                "enroll.device.fido_metadata.refused",
                "FIDO metadata BLOBs not used, by reason (fetch, signer_name, chain, signature, malformed, algorithm, payload, older, jump; stored_unverified, stored_number_mismatch for rows in the database)",
            ),
        }
    }

    /// Counts nothing (use-case unit tests).
    pub fn none() -> Self {
        Self::new(&Meters::none())
    }

    /// Counts `limit` (one of the three limit names).
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.add(1, &[KeyValue::new("limit", limit)]);
    }

    /// Passes `result` on, counting a limit hit when it is one.
    pub fn limits<T>(&self, result: Result<T, DeviceError>) -> Result<T, DeviceError> {
        if let Err(DeviceError::LimitReached { limit, .. }) = &result {
            self.limit_hit(limit);
        }
        result
    }

    /// Counts an autoassignment attempt that ended with `outcome`.
    pub fn autoassign(&self, outcome: &'static str) {
        self.autoassign.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    pub fn link(&self, change: LinkChange) {
        self.link_changes
            .add(1, &[KeyValue::new("change", change.as_str())]);
    }

    /// Counts a FIDO metadata BLOB not used for `reason` (a closed set of names).
    pub fn metadata_refused(&self, reason: &'static str) {
        self.metadata_refused
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// Counts a finished ceremony: success, or the class of its failure.
    pub fn ceremony<T>(&self, ceremony: Ceremony, result: &Result<T, DeviceError>) {
        let outcome = match result {
            Ok(_) => "success",
            Err(error) => failure_class(error),
        };
        self.ceremonies.add(
            1,
            &[
                KeyValue::new("ceremony", ceremony.as_str()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}

/// Why a ceremony failed, as one of a few classes: the refusal's stable reason names come
/// from this service's code, the rest by kind of error.
fn failure_class(error: &DeviceError) -> &'static str {
    match error {
        DeviceError::Refused { .. } => "refused",
        DeviceError::Blocked { .. } => "blocked",
        DeviceError::Denied { .. } => "policy_denied",
        DeviceError::LimitReached { .. } => "limit_reached",
        DeviceError::NotFound(_) => "not_found",
        DeviceError::InvalidArgument { .. } | DeviceError::OutOfRange { .. } => "invalid_argument",
        DeviceError::FailedPrecondition(_) | DeviceError::RequestIdReused { .. } => {
            "failed_precondition"
        }
        DeviceError::RateLimited(_) => "rate_limited",
        DeviceError::Policy(_) => "policy_unavailable",
        DeviceError::AlreadyExists(_) => "already_exists",
        DeviceError::Unavailable(_) | DeviceError::Database(_) | DeviceError::Corrupt(_) => {
            "internal"
        }
    }
}

/// Counting again sooner than this reuses the last counts: anyone who reaches the metrics
/// port can scrape, and each count is a few database queries.
const MIN_RECOUNT: Duration = Duration::from_secs(1);

/// The device service's gauges: what is stored (the autoassignment pool, links by state),
/// counted in the database in the background and before a scrape, and whether the policy
/// service answers.
pub struct DeviceGauges {
    tokens: TokenStore,
    devices: DeviceStore,
    clock: SharedClock,
    counted: Mutex<Option<StoredCounts>>,
    /// When the database was last counted; held while counting, so concurrent scrapes wait
    /// for one count instead of each running their own.
    last_count: tokio::sync::Mutex<Option<Instant>>,
    policy_serving: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct StoredCounts {
    pool: u64,
    links: LinkCounts,
}

impl DeviceGauges {
    /// Gauges counted with `tokens` and `devices` (read-only use), registered on `meters`.
    pub fn new(
        tokens: TokenStore,
        devices: DeviceStore,
        clock: SharedClock,
        meters: &Meters,
    ) -> Arc<Self> {
        let gauges = Arc::new(Self {
            tokens,
            devices,
            clock,
            counted: Mutex::new(None),
            last_count: tokio::sync::Mutex::new(None),
            policy_serving: AtomicBool::new(false),
        });
        let read = gauges.clone();
        meters.gauge(
            "enroll.device.pool.tokens",
            "",
            "Autoassignable tokens (unassigned, enabled, imported as hardware) in all realms",
            move || {
                read.counted()
                    .map(|counted| vec![(counted.pool as f64, Vec::new())])
                    .unwrap_or_default()
            },
        );
        let read = gauges.clone();
        meters.gauge(
            "enroll.device.links",
            "",
            "Enrollment links by state (active, used, revoked, expired)",
            move || {
                let Some(StoredCounts { links, .. }) = read.counted() else {
                    return Vec::new();
                };
                [
                    ("active", links.active),
                    ("used", links.used),
                    ("revoked", links.revoked),
                    ("expired", links.expired),
                ]
                .into_iter()
                .map(|(state, count)| (count as f64, vec![KeyValue::new("state", state)]))
                .collect()
            },
        );
        let read = gauges.clone();
        meters.gauge(
            "enroll.device.policy_service.up",
            "",
            "1 while the policy service answers SERVING, else 0 (mutations fail closed)",
            move || {
                let up = read.policy_serving.load(Ordering::Relaxed);
                vec![(f64::from(u8::from(up)), Vec::new())]
            },
        );
        gauges
    }

    /// Records whether the policy service answers.
    pub fn set_policy_serving(&self, serving: bool) {
        self.policy_serving.store(serving, Ordering::Relaxed);
    }

    /// Counts the database again unless that was done within [`MIN_RECOUNT`]. A failed
    /// count keeps the last values (the gauges go missing only until the first success).
    pub async fn recount(&self) {
        let mut last = self.last_count.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_RECOUNT) {
            return;
        }
        let counted = async {
            Ok::<_, DeviceError>(StoredCounts {
                pool: self.tokens.pool_size().await?,
                links: self.devices.count_links(self.clock.now()).await?,
            })
        }
        .await;
        match counted {
            Ok(counted) => {
                if let Ok(mut current) = self.counted.lock() {
                    *current = Some(counted);
                }
            }
            Err(error) => tracing::warn!(%error, "pool and link gauges not counted"),
        }
        *last = Some(Instant::now());
    }

    fn counted(&self) -> Option<StoredCounts> {
        self.counted.lock().ok().and_then(|counted| *counted)
    }
}

/// Recounts `gauges` every `every` until `stop` (for the OTLP export, which no scrape
/// precedes).
pub async fn keep_counted(
    gauges: Arc<DeviceGauges>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => gauges.recount().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enroll_shared::metrics::MetricsExport;

    #[test]
    fn limit_hits_are_counted_by_limit_and_other_errors_not() {
        let export = MetricsExport::new("enroll-device-test", false).unwrap();
        let metrics = DeviceMetrics::new(&export.meters());
        let reached = || {
            Err::<(), _>(DeviceError::LimitReached {
                limit: "max_token_per_user",
                value: 1,
                policy: "corp".to_owned(),
            })
        };
        let _ = metrics.limits(reached());
        let _ = metrics.limits(reached());
        let _ = metrics.limits(Err::<(), _>(DeviceError::NotFound("x".to_owned())));
        metrics.ceremony(Ceremony::Registration, &Ok::<(), DeviceError>(()));
        metrics.ceremony(
            Ceremony::Authentication,
            &Err::<(), _>(DeviceError::Refused {
                reason: "WEBAUTHN_VERIFICATION_FAILED",
                message: "bad signature".to_owned(),
            }),
        );
        let text = export.render();
        assert!(
            text.contains("enroll_device_limit_hits_total{limit=\"max_token_per_user\"} 2"),
            "{text}"
        );
        assert!(!text.contains("corp"), "{text}");
        assert!(
            text.contains(
                "enroll_device_webauthn_ceremonies_total{ceremony=\"registration\",outcome=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "enroll_device_webauthn_ceremonies_total{ceremony=\"authentication\",outcome=\"refused\"} 1"
            ),
            "{text}"
        );
    }
}
