//! The device service's configuration (`--config` TOML plus `ENROLL_*` overrides).
use std::fmt;
use std::time::Duration;

use enroll_shared::config::{AuthConfig, DatabaseConfig, ServerConfig, TelemetryConfig};
use serde::Deserialize;

/// The device service's default port.
pub const DEFAULT_PORT: u16 = 50052;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    #[serde(default = "default_server")]
    pub server: ServerConfig,
    #[serde(default = "default_database")]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub policy_service: PolicyServiceConfig,
}

/// How the device service reaches the policy service.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyServiceConfig {
    /// `http://host:port` (or `https://` with TLS).
    #[serde(default = "default_policy_url")]
    pub url: String,
    /// The plaintext API key (role `service`) sent to the policy service. Prefer the
    /// ENROLL_POLICY_SERVICE__API_KEY environment variable over the file.
    #[serde(default)]
    pub api_key: String,
    /// Deadline of one policy call (ms); past it the mutation fails with UNAVAILABLE.
    #[serde(default = "default_policy_timeout_ms")]
    pub timeout_ms: u64,
    /// How often the policy service's health is checked (ms).
    #[serde(default = "default_health_interval_ms")]
    pub health_check_interval_ms: u64,
}

impl fmt::Debug for PolicyServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyServiceConfig")
            .field("url", &self.url)
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    "<unset>"
                } else {
                    "<redacted>"
                },
            )
            .field("timeout_ms", &self.timeout_ms)
            .field("health_check_interval_ms", &self.health_check_interval_ms)
            .finish()
    }
}

impl Default for PolicyServiceConfig {
    fn default() -> Self {
        Self {
            url: default_policy_url(),
            api_key: String::new(),
            timeout_ms: default_policy_timeout_ms(),
            health_check_interval_ms: default_health_interval_ms(),
        }
    }
}

impl PolicyServiceConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    pub fn health_check_interval(&self) -> Duration {
        Duration::from_millis(self.health_check_interval_ms.max(50))
    }
}

fn default_server() -> ServerConfig {
    ServerConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig::new("sqlite://enroll-device.db")
}

fn default_policy_url() -> String {
    "http://127.0.0.1:50051".to_owned()
}

fn default_policy_timeout_ms() -> u64 {
    2_000
}

fn default_health_interval_ms() -> u64 {
    1_000
}

impl enroll_shared::cli::HasTelemetry for DeviceConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_redacted_key() {
        let config: DeviceConfig = enroll_shared::config::load_with_env(
            None,
            vec![(
                "ENROLL_POLICY_SERVICE__API_KEY".to_owned(),
                "topsecret".to_owned(),
            )],
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), DEFAULT_PORT);
        assert_eq!(config.policy_service.api_key, "topsecret");
        assert!(!format!("{config:?}").contains("topsecret"));
    }
}
