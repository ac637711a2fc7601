//! The policy service's configuration (`--config` TOML plus `ENROLL_*` overrides).
use std::time::Duration;

use enroll_shared::config::{AuthConfig, DatabaseConfig, ServerConfig, TelemetryConfig};
use enroll_shared::metrics::MetricsConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_server")]
    pub server: ServerConfig,
    #[serde(default = "default_database")]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub watch: WatchConfig,
    /// The Prometheus endpoint (`GET /metrics`).
    #[serde(default = "default_metrics")]
    pub metrics: MetricsConfig,
}

/// How the in-memory policy set follows the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How often the stored policy-set version is compared with the cached one (ms).
    /// PostgreSQL notifications usually arrive sooner; this bounds staleness either way.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// The oldest policy set decisions are made on (ms): the time since the database last
    /// confirmed the cached version. Older, decisions are UNAVAILABLE and health is
    /// NOT_SERVING, so a replica cut off from its database stops deciding on policies that
    /// may have been tightened since. At least twice the poll interval.
    #[serde(default = "default_max_staleness_ms")]
    pub max_staleness_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: default_poll_interval_ms(),
            max_staleness_ms: default_max_staleness_ms(),
        }
    }
}

impl CacheConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }

    pub fn max_staleness(&self) -> Duration {
        Duration::from_millis(self.max_staleness_ms)
    }

    /// Refuses a maximum age that one slow poll would exceed: decisions would flap.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_staleness() < self.poll_interval() * 2 {
            return Err(format!(
                "cache.max_staleness_ms ({}) must be at least twice cache.poll_interval_ms ({})",
                self.max_staleness_ms,
                self.poll_interval().as_millis()
            ));
        }
        Ok(())
    }
}

/// WatchPolicySet's streams (the device services follow the policy set with them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Streams one API key may hold open at once (one per device-service replica).
    #[serde(default = "default_watchers_per_key")]
    pub max_per_key: usize,
    /// Streams open at once in all; each also holds one of `server.max_in_flight`.
    #[serde(default = "default_watchers_total")]
    pub max_total: usize,
    /// A stream ends after this long (s), or at the client's deadline if sooner; the
    /// watcher subscribes again and gets the whole set.
    #[serde(default = "default_watch_stream_secs")]
    pub max_stream_secs: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            max_per_key: default_watchers_per_key(),
            max_total: default_watchers_total(),
            max_stream_secs: default_watch_stream_secs(),
        }
    }
}

impl WatchConfig {
    pub fn max_stream(&self) -> Duration {
        Duration::from_secs(self.max_stream_secs.clamp(1, 86_400))
    }
}

fn default_watchers_per_key() -> usize {
    16
}

fn default_watchers_total() -> usize {
    64
}

fn default_watch_stream_secs() -> u64 {
    600
}

fn default_poll_interval_ms() -> u64 {
    500
}

fn default_max_staleness_ms() -> u64 {
    30_000
}

/// The policy service's default port.
pub const DEFAULT_PORT: u16 = 50051;

fn default_server() -> ServerConfig {
    ServerConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
}

/// The policy service's Prometheus port (the device service's is 9465).
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// Loopback, like the gRPC server's default: the endpoint has no authentication, so it is
/// reachable from elsewhere only where a deployment says so (the container and Kubernetes
/// configurations set `0.0.0.0`).
fn default_metrics() -> MetricsConfig {
    MetricsConfig::on(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        DEFAULT_METRICS_PORT,
    )))
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig::new("sqlite://enroll-policy.db")
}

impl enroll_shared::cli::HasTelemetry for PolicyConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_has_a_default() {
        let config: PolicyConfig = enroll_shared::config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(config.server.listen.port(), 50051);
        assert!(config.database.url.starts_with("sqlite://"));
        assert_eq!(config.cache.poll_interval_ms, 500);
        assert_eq!(config.cache.max_staleness(), Duration::from_secs(30));
        assert!(config.cache.validate().is_ok());
        // The endpoint has no authentication: loopback unless a deployment says otherwise.
        assert_eq!(
            config.metrics.listen(),
            Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))))
        );
        let off: PolicyConfig = enroll_shared::config::load_with_env(
            None,
            vec![("ENROLL_METRICS__LISTEN_ADDR".to_owned(), String::new())],
        )
        .unwrap();
        assert_eq!(off.metrics.listen(), Ok(None));
    }

    #[test]
    fn a_maximum_age_below_two_polls_is_refused() {
        let cache = CacheConfig {
            poll_interval_ms: 500,
            max_staleness_ms: 999,
        };
        assert!(cache.validate().unwrap_err().contains("max_staleness_ms"));
    }
}
