//! The FIDO metadata's certified models as attestation roots: each model's
//! `attestationRootCertificates`, bound to its AAGUID (a root vouches only for the models
//! that list it), rebuilt when a new BLOB is in use.
use std::sync::{Arc, Mutex};

use webauthn_rs::prelude::{AttestationCaList, AttestationCaListBuilder};

use crate::service::ports::AttestationAnchors;

/// The name verified attestations report for a root from the metadata.
pub const METADATA_ROOT: &str = "fido-metadata";

pub struct MetadataAnchors {
    source: Arc<dyn AttestationAnchors>,
    /// The anchors as a CA list, with the BLOB number it was built from.
    cache: Mutex<Option<(u64, Arc<AttestationCaList>)>>,
}

impl MetadataAnchors {
    pub fn new(source: Arc<dyn AttestationAnchors>) -> Self {
        Self {
            source,
            cache: Mutex::new(None),
        }
    }

    /// The current anchors; `None` before a BLOB is loaded or when it certifies no model
    /// with roots.
    pub fn list(&self) -> Option<Arc<AttestationCaList>> {
        let (no, anchors) = self.source.current()?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((built, list)) = cache.as_ref()
            && *built == no
        {
            return Some(list.clone()).filter(|list| !list.is_empty());
        }
        let mut builder = AttestationCaListBuilder::new();
        for anchor in anchors.iter() {
            for der in &anchor.roots_der {
                if let Err(error) = builder.insert_device_der(
                    der,
                    anchor.aaguid,
                    anchor.description.clone(),
                    Default::default(),
                ) {
                    tracing::warn!(aaguid = %anchor.aaguid, ?error, "FIDO metadata attestation root skipped");
                }
            }
        }
        let list = Arc::new(builder.build());
        *cache = Some((no, list.clone()));
        Some(list).filter(|list| !list.is_empty())
    }
}
