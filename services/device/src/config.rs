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
    #[serde(default)]
    pub secrets: SecretsConfig,
    #[serde(default)]
    pub validation: ValidationConfig,
}

/// How Validate treats one-time codes and failures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Failed validations after which a token is locked (EnableToken unlocks).
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// TOTP steps accepted on either side of now.
    #[serde(default = "default_totp_window")]
    pub totp_window_steps: u64,
    /// HOTP counters accepted ahead of the next unused one.
    #[serde(default = "default_hotp_look_ahead")]
    pub hotp_look_ahead: u64,
    /// Autoassignment attempts a user may make per minute (per instance).
    #[serde(default = "default_user_attempts")]
    pub autoassign_attempts_per_user: u32,
    /// Autoassignment attempts one client address may make per minute (per instance).
    #[serde(default = "default_client_attempts")]
    pub autoassign_attempts_per_client: u32,
}

fn default_user_attempts() -> u32 {
    10
}

fn default_client_attempts() -> u32 {
    60
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_failures: default_max_failures(),
            totp_window_steps: default_totp_window(),
            hotp_look_ahead: default_hotp_look_ahead(),
            autoassign_attempts_per_user: default_user_attempts(),
            autoassign_attempts_per_client: default_client_attempts(),
        }
    }
}

fn default_max_failures() -> u32 {
    10
}

fn default_totp_window() -> u64 {
    1
}

fn default_hotp_look_ahead() -> u64 {
    10
}

/// Keys for secrets kept at rest (OTP seeds, encrypted PINs, sealed first responses).
/// Rotation: add a key under a new id, make it `active_seed_key`, restart; rows sealed with
/// older keys still decrypt as long as their key stays listed.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Key id -> 64 hex characters (AES-256). Prefer ENROLL_SECRETS__SEED_KEYS='{k1="..."}'.
    #[serde(default)]
    pub seed_keys: std::collections::BTreeMap<String, String>,
    /// The key id new secrets are encrypted with.
    #[serde(default)]
    pub active_seed_key: String,
}

impl fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsConfig")
            .field("seed_keys", &self.seed_keys.keys().collect::<Vec<_>>())
            .field("active_seed_key", &self.active_seed_key)
            .finish()
    }
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
