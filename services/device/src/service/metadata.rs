//! The FIDO metadata in use: the last verified BLOB, loaded from the database (where every
//! replica and restart finds the same version) and refreshed from its source on a schedule.
//! A BLOB is used only after its signature chain verified against the configured FIDO root
//! and its signer carries the pinned name; an older serial number than the one in use is
//! refused, and one further ahead than `max_no_jump` waits for an operator's acceptance; a
//! stored row that does not verify is ignored and never stops a verified BLOB replacing it;
//! a failed refresh keeps the last good BLOB. Loading a BLOB flags the devices of the
//! models it marks compromised.
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use enroll_shared::time::SharedClock;

use super::metrics::DeviceMetrics;
use super::ports::MetadataBlobs;
use crate::domain::metadata::{MetadataCatalog, ModelAnchor};
use crate::domain::metadata_trust::{KeyPinCheck, is_jump, is_stale};
use crate::error::DeviceError;
use crate::store::metadata::{CompromisedModel, MetadataStore, StoredBlob};

/// How many stored rows are looked at, newest first (normally there is one).
const STORED_ROWS: u64 = 8;

/// How often a replica looks in the database for a BLOB another replica stored, at most.
const STORE_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// The metadata the use cases read: the catalog of the BLOB in use, if any, and what the
/// operator should know about it.
#[derive(Clone, Default)]
pub struct FidoMetadata {
    current: Arc<RwLock<Option<Arc<LoadedMetadata>>>>,
    /// A verified BLOB number refused as too far ahead, until accepted and adopted.
    pending_jump: Arc<Mutex<Option<u64>>>,
    /// Wakes the refresher (an operator accepted a jump).
    wake: Arc<tokio::sync::Notify>,
}

/// A verified BLOB's catalog with the anchors derived from it.
pub struct LoadedMetadata {
    pub catalog: MetadataCatalog,
    pub anchors: Arc<Vec<ModelAnchor>>,
    pub source: String,
    pub load_time: DateTime<Utc>,
    pub key_pin: KeyPinCheck,
    pub signer_keys: Vec<String>,
}

/// What an operator sees of the metadata in use (`GetMetadataStatus`, health, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataStatus {
    pub no: Option<u64>,
    pub next_update: String,
    pub stale: bool,
    pub source: String,
    pub load_time: Option<DateTime<Utc>>,
    pub signer_key_changed: bool,
    pub signer_keys: Vec<String>,
    pub pending_jump: Option<u64>,
}

impl MetadataStatus {
    /// Healthy: a BLOB is loaded, current, from the pinned keys, with no jump waiting.
    pub fn healthy(&self) -> bool {
        self.no.is_some() && !self.stale && !self.signer_key_changed && self.pending_jump.is_none()
    }
}

impl FidoMetadata {
    /// The BLOB in use; `None` before the first one is loaded (or without metadata).
    pub fn current(&self) -> Option<Arc<LoadedMetadata>> {
        self.current
            .read()
            .map(|current| current.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn no(&self) -> Option<u64> {
        self.current().map(|loaded| loaded.catalog.no)
    }

    fn set(&self, loaded: LoadedMetadata) {
        let no = loaded.catalog.no;
        let loaded = Arc::new(loaded);
        match self.current.write() {
            Ok(mut current) => *current = Some(loaded),
            Err(poisoned) => *poisoned.into_inner() = Some(loaded),
        }
        self.update_pending(|pending| pending.filter(|pending| *pending > no));
    }

    fn update_pending(&self, change: impl FnOnce(Option<u64>) -> Option<u64>) {
        let mut pending = self
            .pending_jump
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *pending = change(*pending);
    }

    /// The status of the metadata in use on `today` (the service clock's date).
    pub fn status(&self, today: chrono::NaiveDate) -> MetadataStatus {
        let pending_jump = *self
            .pending_jump
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(loaded) = self.current() else {
            return MetadataStatus {
                pending_jump,
                ..MetadataStatus::default()
            };
        };
        MetadataStatus {
            no: Some(loaded.catalog.no),
            next_update: loaded.catalog.next_update.clone(),
            stale: is_stale(&loaded.catalog.next_update, today),
            source: loaded.source.clone(),
            load_time: Some(loaded.load_time),
            signer_key_changed: loaded.key_pin.changed(),
            signer_keys: loaded.signer_keys.clone(),
            pending_jump,
        }
    }

    /// Asks the refresher to fetch now (after an operator accepted a jump).
    pub fn refresh_now(&self) {
        self.wake.notify_one();
    }
}

impl super::ports::AttestationAnchors for FidoMetadata {
    fn current(&self) -> Option<(u64, Arc<Vec<ModelAnchor>>)> {
        FidoMetadata::current(self).map(|loaded| (loaded.catalog.no, loaded.anchors.clone()))
    }
}

/// What refreshing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// A newer BLOB, now in use.
    Loaded { no: u64, flagged: usize },
    /// The BLOB in use again.
    Unchanged { no: u64 },
}

/// A BLOB that verified: its catalog and what its signer's keys said.
struct Checked {
    catalog: MetadataCatalog,
    key_pin: KeyPinCheck,
    chain_keys: Vec<String>,
}

/// Keeps [`FidoMetadata`] current.
pub struct MetadataRefresher {
    metadata: FidoMetadata,
    store: MetadataStore,
    blobs: Arc<dyn MetadataBlobs>,
    clock: SharedClock,
    revoke_compromised: bool,
    refresh_interval: Duration,
    max_no_jump: u64,
    metrics: DeviceMetrics,
    /// Stored rows already reported as not adoptable (reported once, not every sync).
    reported: Mutex<HashSet<(u64, &'static str)>>,
}

impl MetadataRefresher {
    pub fn new(
        metadata: FidoMetadata,
        store: MetadataStore,
        blobs: Arc<dyn MetadataBlobs>,
        clock: SharedClock,
    ) -> Self {
        Self {
            metadata,
            store,
            blobs,
            clock,
            revoke_compromised: false,
            refresh_interval: Duration::from_secs(86_400),
            max_no_jump: 1000,
            metrics: DeviceMetrics::none(),
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Revokes (not only flags) devices of compromised models.
    pub fn revoking(mut self, revoke: bool) -> Self {
        self.revoke_compromised = revoke;
        self
    }

    pub fn every(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// The largest step of the BLOB number taken without an operator's acceptance.
    pub fn max_no_jump(mut self, max: u64) -> Self {
        self.max_no_jump = max;
        self
    }

    pub fn with_metrics(mut self, metrics: DeviceMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Verifies a BLOB with the injected clock and parses its payload.
    fn verify(&self, jwt: &str) -> Result<Checked, crate::domain::metadata_trust::Unverified> {
        let now = std::time::SystemTime::from(self.clock.now());
        let verified = self.blobs.verify(jwt, now)?;
        let (catalog, skipped) = MetadataCatalog::parse(&verified.payload).map_err(|message| {
            crate::domain::metadata_trust::Unverified {
                reason: "payload",
                message,
            }
        })?;
        for entry in skipped {
            tracing::warn!(entry = %entry, "FIDO metadata entry skipped");
        }
        Ok(Checked {
            catalog,
            key_pin: verified.key_pin,
            chain_keys: verified.chain_keys,
        })
    }

    /// Whether BLOB `no` may follow the one in use: within the jump bound, or accepted.
    async fn jump_allowed(&self, no: u64) -> Result<bool, DeviceError> {
        if !is_jump(self.metadata.no(), no, self.max_no_jump) {
            return Ok(true);
        }
        self.store.jump_accepted(no).await
    }

    /// Checks a stored row as a fetched BLOB is checked (whoever can write the database must
    /// not choose the metadata): the catalog when the row may be used, else why not (a
    /// closed reason, for the metric).
    async fn check_stored(
        &self,
        stored: &StoredBlob,
    ) -> Result<Result<Checked, &'static str>, DeviceError> {
        let checked = match self.verify(&stored.blob) {
            Ok(checked) if checked.catalog.no == stored.no => checked,
            Ok(checked) => {
                self.report_stored(
                    stored.no,
                    "stored_number_mismatch",
                    &format!("the payload says no {}", checked.catalog.no),
                );
                return Ok(Err("stored_number_mismatch"));
            }
            Err(error) => {
                self.report_stored(stored.no, "stored_unverified", &error.message);
                return Ok(Err("stored_unverified"));
            }
        };
        if !self.jump_allowed(stored.no).await? {
            self.metadata.update_pending(|_| Some(stored.no));
            self.report_stored(stored.no, "jump", "further ahead than webauthn.metadata.max_no_jump; accept it with `enrollctl metadata accept`");
            return Ok(Err("jump"));
        }
        Ok(Ok(checked))
    }

    /// Logs and counts a stored row that cannot be used, once per row and reason.
    fn report_stored(&self, no: u64, reason: &'static str, message: &str) {
        let first = self
            .reported
            .lock()
            .map(|mut reported| reported.insert((no, reason)))
            .unwrap_or(true);
        if first {
            self.metrics.metadata_refused(reason);
            tracing::error!(no, reason, error = %message, "stored FIDO metadata BLOB not used");
        }
    }

    /// Takes a newer BLOB another replica stored: the newest stored row that verifies.
    pub async fn sync_from_store(&self) -> Result<Option<Refreshed>, DeviceError> {
        for stored in self.store.newest_first(STORED_ROWS).await? {
            if self.metadata.no().is_some_and(|no| no >= stored.no) {
                return Ok(None);
            }
            let Ok(checked) = self.check_stored(&stored).await? else {
                continue;
            };
            let no = checked.catalog.no;
            let flagged = self
                .adopt(checked, stored.source.clone(), stored.load_time)
                .await?;
            tracing::info!(no, next_update = %stored.next_update, "FIDO metadata BLOB loaded from the database");
            return Ok(Some(Refreshed::Loaded { no, flagged }));
        }
        Ok(None)
    }

    /// Fetches the BLOB from its source; a newer one is stored and used.
    pub async fn refresh(&self) -> Result<Refreshed, RefreshError> {
        let jwt = self.blobs.fetch().await.map_err(|error| {
            self.metrics.metadata_refused("fetch");
            RefreshError::Blob(error)
        })?;
        let checked = self.verify(&jwt).map_err(|error| {
            self.metrics.metadata_refused(error.reason);
            RefreshError::Blob(error.message)
        })?;
        let no = checked.catalog.no;
        let next_update = checked.catalog.next_update.clone();
        // Asked before the match: a guard cannot wait on the database.
        let allowed = self.jump_allowed(no).await?;
        match self.metadata.no() {
            Some(current) if no < current => {
                self.metrics.metadata_refused("older");
                return Err(RefreshError::Older { no, current });
            }
            Some(current) if no == current => return Ok(Refreshed::Unchanged { no }),
            Some(current) if !allowed => {
                self.metadata.update_pending(|_| Some(no));
                self.metrics.metadata_refused("jump");
                return Err(RefreshError::Jump {
                    no,
                    current,
                    max: self.max_no_jump,
                });
            }
            _ => {}
        }
        let stored = StoredBlob {
            no,
            blob: jwt,
            next_update: next_update.clone(),
            source: self.blobs.source(),
            load_time: self.clock.now(),
        };
        let mut saved = self.store.save_if_newer(&stored).await?;
        if !saved && self.drop_unusable_from(no).await? {
            saved = self.store.save_if_newer(&stored).await?;
        }
        if !saved {
            // Another replica stored this one or a newer one: take what the database holds.
            return match self.sync_from_store().await? {
                Some(refreshed) => Ok(refreshed),
                None => Ok(Refreshed::Unchanged { no }),
            };
        }
        let flagged = self
            .adopt(checked, stored.source.clone(), stored.load_time)
            .await?;
        tracing::info!(no, next_update = %next_update, source = %stored.source, flagged, "FIDO metadata BLOB loaded");
        Ok(Refreshed::Loaded { no, flagged })
    }

    /// Deletes the stored rows numbered `no` or above that cannot be used (they do not
    /// verify, or jump unaccepted), so a verified BLOB in hand replaces them: a row nobody
    /// can verify must not freeze the metadata. True when one was deleted.
    async fn drop_unusable_from(&self, no: u64) -> Result<bool, DeviceError> {
        let mut dropped = false;
        for stored in self.store.newest_first(STORED_ROWS).await? {
            if stored.no < no {
                break;
            }
            if self.check_stored(&stored).await?.is_err()
                && self.store.delete_row(stored.no, &stored.blob).await?
            {
                tracing::warn!(
                    no = stored.no,
                    "unusable stored FIDO metadata BLOB replaced by a verified one"
                );
                dropped = true;
            }
        }
        Ok(dropped)
    }

    /// Uses `checked` and flags the devices of its compromised models.
    async fn adopt(
        &self,
        checked: Checked,
        source: String,
        load_time: DateTime<Utc>,
    ) -> Result<usize, DeviceError> {
        let Checked {
            catalog,
            key_pin,
            chain_keys,
        } = checked;
        // A BLOB past its nextUpdate is still the best there is (it still flags compromised
        // models); the status, health and metrics say it is stale.
        if is_stale(&catalog.next_update, self.clock.now().date_naive()) {
            tracing::warn!(no = catalog.no, next_update = %catalog.next_update, "the FIDO metadata BLOB in use is past its nextUpdate: check webauthn.metadata.source");
        }
        if key_pin.changed() {
            // Same pinned name, other key: usually a renewed certificate, so the BLOB is used;
            // but the operator checks it and updates the pins.
            tracing::warn!(no = catalog.no, keys = ?chain_keys, "the FIDO metadata BLOB's signer key matches none of webauthn.metadata.signer_key_pins: check the new certificate and update the pins");
        }
        let compromised: Vec<CompromisedModel> = catalog
            .compromised()
            .filter_map(|model| {
                model
                    .compromise_reason(catalog.no)
                    .map(|reason| CompromisedModel {
                        aaguid: model.aaguid.to_string(),
                        reason,
                    })
            })
            .collect();
        let anchors = Arc::new(catalog.anchors());
        self.metadata.set(LoadedMetadata {
            catalog,
            anchors,
            source,
            load_time,
            key_pin,
            signer_keys: chain_keys,
        });
        let flagged = self
            .store
            .flag_compromised(&compromised, self.revoke_compromised, self.clock.now())
            .await?;
        if flagged > 0 {
            tracing::warn!(
                flagged,
                "devices of compromised authenticator models flagged"
            );
        }
        Ok(flagged)
    }

    /// The first load, before the server reports SERVING: the database's BLOB, then one
    /// download. Failures are logged; the server starts all the same.
    pub async fn load_at_start(&self) {
        if let Err(error) = self.sync_from_store().await {
            tracing::warn!(%error, "cannot read the stored FIDO metadata BLOB");
        }
        self.log_refresh(self.refresh().await);
    }

    fn log_refresh(&self, outcome: Result<Refreshed, RefreshError>) {
        match outcome {
            Ok(Refreshed::Loaded { .. }) => {}
            Ok(Refreshed::Unchanged { no }) => {
                tracing::debug!(no, "FIDO metadata BLOB unchanged");
            }
            Err(error) => {
                let current = self.metadata.no();
                tracing::warn!(%error, ?current, "FIDO metadata refresh failed; the last good BLOB stays in use");
            }
        }
    }

    /// Refreshes every `refresh_interval` (and at once when woken: an accepted jump) and
    /// looks for other replicas' BLOBs more often, until `stop`.
    pub async fn keep_fresh(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let tick = self.refresh_interval.min(STORE_SYNC_INTERVAL);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_fetch = tokio::time::Instant::now();
        let wake = self.metadata.wake.clone();
        loop {
            let woken = tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => false,
                _ = wake.notified() => true,
            };
            if let Err(error) = self.sync_from_store().await {
                tracing::warn!(%error, "cannot read the stored FIDO metadata BLOB");
            }
            if woken || last_fetch.elapsed() >= self.refresh_interval {
                last_fetch = tokio::time::Instant::now();
                self.log_refresh(self.refresh().await);
            }
        }
    }
}

/// Why a refresh did not load a BLOB.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Not fetched, or not verified (the message says which).
    #[error("{0}")]
    Blob(String),
    #[error("refused FIDO metadata BLOB no {no}: older than the one in use (no {current})")]
    Older { no: u64, current: u64 },
    #[error(
        "refused FIDO metadata BLOB no {no}: more than {max} (webauthn.metadata.max_no_jump) above the one in use (no {current}); check it and accept it with `enrollctl metadata accept --no {no}`"
    )]
    Jump { no: u64, current: u64, max: u64 },
    #[error(transparent)]
    Store(#[from] DeviceError),
}

/// The FIDO metadata gauges (kept here: the metrics module knows nothing of metadata).
impl FidoMetadata {
    /// Registers the FIDO metadata gauges on `meters`: the BLOB number in use, whether it
    /// is stale, whether its signer's key matches no pin, whether a jump waits.
    pub fn register_gauges(
        meters: &enroll_shared::metrics::Meters,
        metadata: FidoMetadata,
        clock: SharedClock,
    ) {
        let status = move || metadata.status(clock.now().date_naive());
        let read = status.clone();
        meters.gauge(
            "enroll.device.fido_metadata.no",
            "",
            "The number of the FIDO metadata BLOB in use (absent before one is loaded)",
            move || {
                read()
                    .no
                    .map(|no| vec![(no as f64, Vec::new())])
                    .unwrap_or_default()
            },
        );
        for (name, description, flag) in [
            (
                "enroll.device.fido_metadata.stale",
                "1 while the FIDO metadata BLOB in use is past its nextUpdate (still used), else 0",
                (|status: &MetadataStatus| status.stale) as fn(&MetadataStatus) -> bool,
            ),
            (
                "enroll.device.fido_metadata.pin_mismatch",
                "1 while the FIDO metadata BLOB in use was signed under none of webauthn.metadata.signer_key_pins (a renewed signer certificate: check it, update the pins), else 0",
                |status| status.signer_key_changed,
            ),
            (
                "enroll.device.fido_metadata.jump_pending",
                "1 while a verified FIDO metadata BLOB waits for an operator's acceptance (its number jumps beyond webauthn.metadata.max_no_jump), else 0",
                |status| status.pending_jump.is_some(),
            ),
        ] {
            let read = status.clone();
            meters.gauge(name, "", description, move || {
                vec![(f64::from(u8::from(flag(&read()))), Vec::new())]
            });
        }
    }
}
