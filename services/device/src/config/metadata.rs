//! `[webauthn.metadata]`: the FIDO Metadata Service (MDS3) BLOB. Off unless `source` is set.
use std::time::Duration;

use serde::Deserialize;

/// Where the FIDO metadata BLOB comes from and how it is checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// `https://mds3.fidoalliance.org/`, another http(s) URL, or `file:///path` of a
    /// downloaded BLOB. Empty (default): no FIDO metadata is used.
    #[serde(default)]
    pub source: String,
    /// PEM file of the FIDO root the BLOB's `x5c` chain must lead to (for the FIDO Alliance's
    /// BLOB: GlobalSign Root CA - R3). Required with `source`.
    #[serde(default)]
    pub root_ca: Option<std::path::PathBuf>,
    /// How often the BLOB is fetched again (s; default 86400, at least 1).
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_secs: u64,
    /// Revoke, not only flag, the devices of a model a later BLOB marks compromised.
    #[serde(default)]
    pub revoke_compromised: bool,
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
