//! The FIDO metadata's certified models as attestation roots: each model's
//! `attestationRootCertificates`, bound to its AAGUID (a root vouches only for the models
//! that list it), rebuilt when a new BLOB is in use. Every such root binds its model's
//! AAGUID; only a model the metadata describes as an internal authenticator with
//! hardware-protected keys ([`crate::domain::metadata::ModelAnchor::enclave`]) counts for `enclave_only`.
use std::sync::{Arc, Mutex};

use webauthn_rs::prelude::{AttestationCaList, AttestationCaListBuilder, Uuid};

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

    /// Whether the metadata in use describes every one of `aaguids` (the models a root is
    /// given for) as an internal authenticator with hardware-protected keys. A root shared
    /// with a software or roaming model proves no enclave: its keys could claim either.
    pub fn all_enclave<'a>(&self, mut aaguids: impl Iterator<Item = &'a Uuid>) -> bool {
        let Some((_, anchors)) = self.source.current() else {
            return false;
        };
        aaguids.all(|aaguid| {
            anchors
                .iter()
                .any(|anchor| anchor.aaguid == *aaguid && anchor.enclave)
        })
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

#[cfg(test)]
mod tests {
    use crate::domain::metadata::ModelAnchor;

    use super::*;

    struct Fixed(Option<Vec<ModelAnchor>>);

    impl AttestationAnchors for Fixed {
        fn current(&self) -> Option<(u64, Arc<Vec<ModelAnchor>>)> {
            self.0.clone().map(|anchors| (1, Arc::new(anchors)))
        }
    }

    fn anchor(aaguid: Uuid, enclave: bool) -> ModelAnchor {
        ModelAnchor {
            aaguid,
            description: "model".to_owned(),
            roots_der: Vec::new(),
            enclave,
        }
    }

    #[test]
    fn a_root_counts_for_enclave_only_when_every_model_it_vouches_for_is_one() {
        let (platform, software, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let anchors = MetadataAnchors::new(Arc::new(Fixed(Some(vec![
            anchor(platform, true),
            anchor(software, false),
        ]))));
        assert!(anchors.all_enclave([platform].iter()));
        // keyProtection software or attachmentHint external (domain::metadata decides).
        assert!(!anchors.all_enclave([software].iter()));
        // Shared with a software model: a software key under it could claim the platform.
        assert!(!anchors.all_enclave([platform, software].iter()));
        assert!(!anchors.all_enclave([unknown].iter()));
        let none = MetadataAnchors::new(Arc::new(Fixed(None)));
        assert!(!none.all_enclave([platform].iter()));
    }
}
