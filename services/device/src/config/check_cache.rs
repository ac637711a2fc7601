//! The `[check_cache]` section: CheckEnrollment's caches of policy decisions and of users'
//! device rows, and how fast the device rows cache learns of other replicas' changes.
use std::time::Duration;

use serde::Deserialize;

/// CheckEnrollment answers from memory while the caches are known to be current; every
/// change (any replica's device change, any policy change) reaches them within 1 s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckCacheConfig {
    /// Whether CheckEnrollment caches at all (false: every call reads the database and asks
    /// the policy service).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Entries kept in each cache (decisions; users' device lists); when full, a new entry
    /// evicts one not read lately (CLOCK), so frequently checked users stay.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// How often the device change counter is read (ms, 10..=500; default 250). It is the
    /// only change signal on SQLite and the fallback when PostgreSQL notifications drop.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

impl Default for CheckCacheConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            max_entries: default_max_entries(),
            poll_interval_ms: default_poll_interval_ms(),
        }
    }
}

impl CheckCacheConfig {
    /// Clamped so a poll plus its query always fits the 1 s propagation bound.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.clamp(10, 500))
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries.max(1)
    }
}

fn default_enabled() -> bool {
    true
}

fn default_max_entries() -> usize {
    20_000
}

fn default_poll_interval_ms() -> u64 {
    250
}
