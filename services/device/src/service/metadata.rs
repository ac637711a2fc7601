//! The FIDO metadata in use: the last verified BLOB, loaded from the database (where every
//! replica and restart finds the same version) and refreshed from its source on a schedule.
//! A BLOB is used only after its signature chain verified against the configured FIDO root;
//! an older serial number than the one in use is refused; a failed refresh keeps the last
//! good BLOB. Loading a BLOB flags the devices of the models it marks compromised.
use std::sync::{Arc, RwLock};
use std::time::Duration;

use enroll_shared::time::SharedClock;

use super::ports::MetadataBlobs;
use crate::domain::metadata::{MetadataCatalog, ModelAnchor};
use crate::error::DeviceError;
use crate::store::metadata::{CompromisedModel, MetadataStore, StoredBlob};

/// How often a replica looks in the database for a BLOB another replica stored, at most.
const STORE_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// The metadata the use cases read: the catalog of the BLOB in use, if any.
#[derive(Clone, Default)]
pub struct FidoMetadata {
    current: Arc<RwLock<Option<Arc<LoadedMetadata>>>>,
}

/// A verified BLOB's catalog with the anchors derived from it.
pub struct LoadedMetadata {
    pub catalog: MetadataCatalog,
    pub anchors: Arc<Vec<ModelAnchor>>,
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

    fn set(&self, catalog: MetadataCatalog) {
        let anchors = Arc::new(catalog.anchors());
        let loaded = Arc::new(LoadedMetadata { catalog, anchors });
        match self.current.write() {
            Ok(mut current) => *current = Some(loaded),
            Err(poisoned) => *poisoned.into_inner() = Some(loaded),
        }
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

/// Keeps [`FidoMetadata`] current.
pub struct MetadataRefresher {
    metadata: FidoMetadata,
    store: MetadataStore,
    blobs: Arc<dyn MetadataBlobs>,
    clock: SharedClock,
    revoke_compromised: bool,
    refresh_interval: Duration,
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

    /// Verifies a BLOB with the injected clock and parses its payload.
    fn verify(&self, jwt: &str) -> Result<MetadataCatalog, String> {
        let now = std::time::SystemTime::from(self.clock.now());
        let payload = self.blobs.verify(jwt, now)?;
        let (catalog, skipped) = MetadataCatalog::parse(&payload)?;
        for entry in skipped {
            tracing::warn!(entry = %entry, "FIDO metadata entry skipped");
        }
        Ok(catalog)
    }

    /// Takes a newer BLOB another replica stored (verified again: whoever can write the
    /// database must not choose the metadata).
    pub async fn sync_from_store(&self) -> Result<Option<Refreshed>, DeviceError> {
        let Some(stored) = self.store.latest().await? else {
            return Ok(None);
        };
        if self.metadata.no().is_some_and(|no| no >= stored.no) {
            return Ok(None);
        }
        match self.verify(&stored.blob) {
            Ok(catalog) if catalog.no == stored.no => {
                let no = catalog.no;
                let flagged = self.adopt(catalog).await?;
                tracing::info!(no, next_update = %stored.next_update, "FIDO metadata BLOB loaded from the database");
                Ok(Some(Refreshed::Loaded { no, flagged }))
            }
            Ok(catalog) => {
                tracing::error!(
                    stored = stored.no,
                    payload = catalog.no,
                    "stored FIDO metadata BLOB's number does not match its payload; ignored"
                );
                Ok(None)
            }
            Err(error) => {
                tracing::error!(%error, no = stored.no, "stored FIDO metadata BLOB does not verify; ignored");
                Ok(None)
            }
        }
    }

    /// Fetches the BLOB from its source; a newer one is stored and used.
    pub async fn refresh(&self) -> Result<Refreshed, RefreshError> {
        let jwt = self.blobs.fetch().await.map_err(RefreshError::Blob)?;
        let catalog = self.verify(&jwt).map_err(RefreshError::Blob)?;
        let no = catalog.no;
        let next_update = catalog.next_update.clone();
        match self.metadata.no() {
            Some(current) if no < current => {
                return Err(RefreshError::Older { no, current });
            }
            Some(current) if no == current => return Ok(Refreshed::Unchanged { no }),
            _ => {}
        }
        let stored = StoredBlob {
            no,
            blob: jwt,
            next_update: next_update.clone(),
            source: self.blobs.source(),
            load_time: self.clock.now(),
        };
        if !self.store.save_if_newer(&stored).await? {
            // Another replica stored this one or a newer one: take what the database holds.
            return match self.sync_from_store().await? {
                Some(refreshed) => Ok(refreshed),
                None => Ok(Refreshed::Unchanged { no }),
            };
        }
        let flagged = self.adopt(catalog).await?;
        tracing::info!(no, next_update = %next_update, source = %self.blobs.source(), flagged, "FIDO metadata BLOB loaded");
        Ok(Refreshed::Loaded { no, flagged })
    }

    /// Uses `catalog` and flags the devices of its compromised models.
    async fn adopt(&self, catalog: MetadataCatalog) -> Result<usize, DeviceError> {
        // A BLOB past its nextUpdate is still the best there is; operators should know.
        let today = self.clock.now().date_naive();
        if chrono::NaiveDate::parse_from_str(&catalog.next_update, "%Y-%m-%d")
            .is_ok_and(|next_update| next_update < today)
        {
            tracing::warn!(no = catalog.no, next_update = %catalog.next_update, "the FIDO metadata BLOB in use is past its nextUpdate: check webauthn.metadata.source");
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
        self.metadata.set(catalog);
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

    /// Refreshes every `refresh_interval` and looks for other replicas' BLOBs more often,
    /// until `stop`.
    pub async fn keep_fresh(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let tick = self.refresh_interval.min(STORE_SYNC_INTERVAL);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_fetch = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.sync_from_store().await {
                tracing::warn!(%error, "cannot read the stored FIDO metadata BLOB");
            }
            if last_fetch.elapsed() >= self.refresh_interval {
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
    #[error(transparent)]
    Store(#[from] DeviceError),
}
