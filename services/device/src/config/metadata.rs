//! `[webauthn.metadata]`: the FIDO Metadata Service (MDS3) BLOB. Off unless `source` is set.
use std::time::Duration;

use serde::Deserialize;

/// The name the FIDO Alliance's BLOB signing certificate carries.
pub const DEFAULT_SIGNER_NAME: &str = "mds.fidoalliance.org";

/// Where the FIDO metadata BLOB comes from and how it is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// `https://mds3.fidoalliance.org/`, another https URL, or `file:///path` of a
    /// downloaded BLOB. Empty (default): no FIDO metadata is used.
    #[serde(default)]
    pub source: String,
    /// PEM file of the FIDO root the BLOB's `x5c` chain must lead to (for the FIDO Alliance's
    /// BLOB: GlobalSign Root CA - R3). Required with `source`.
    #[serde(default)]
    pub root_ca: Option<std::path::PathBuf>,
    /// The name the BLOB's signing certificate must carry (its subject CN or a DNS SAN).
    /// The root is a public TLS root: without this pin any certificate under it would sign
    /// metadata.
    #[serde(default = "default_signer_name")]
    pub signer_name: String,
    /// Optional SHA-256 digests (base64) of the subject public key info of the signing
    /// certificate or of an intermediate in its chain. A BLOB whose chain holds none of them
    /// is still used when the name matches (a renewed certificate), but raises an alert.
    #[serde(default)]
    pub signer_key_pins: Vec<String>,
    /// The largest step of the BLOB number (`no`) taken without an operator's acceptance
    /// (default 1000; MDS publishes about monthly, one number at a time).
    #[serde(default = "default_max_no_jump")]
    pub max_no_jump: u64,
    /// How often the BLOB is fetched again (s; default 86400, at least 1).
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_secs: u64,
    /// Revoke, not only flag, the devices of a model a later BLOB marks compromised.
    #[serde(default)]
    pub revoke_compromised: bool,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            source: String::new(),
            root_ca: None,
            signer_name: default_signer_name(),
            signer_key_pins: Vec::new(),
            max_no_jump: default_max_no_jump(),
            refresh_interval_secs: default_refresh_interval(),
            revoke_compromised: false,
        }
    }
}

impl MetadataConfig {
    pub fn enabled(&self) -> bool {
        !self.source.trim().is_empty()
    }

    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_interval_secs.max(1))
    }
}

fn default_refresh_interval() -> u64 {
    86_400
}

fn default_signer_name() -> String {
    DEFAULT_SIGNER_NAME.to_owned()
}

fn default_max_no_jump() -> u64 {
    1000
}
