//! The device service's configuration (`--config` TOML plus `ENROLL_*` overrides).
use std::fmt;
use std::time::Duration;

use enroll_shared::config::{AuthConfig, DatabaseConfig, ServerConfig, TelemetryConfig};
use enroll_shared::metrics::MetricsConfig;
use serde::Deserialize;

mod check_cache;
mod events;
mod gate;
mod metadata;
mod retention;
mod validation;
mod web;

pub use check_cache::CheckCacheConfig;
pub use events::EventsConfig;
pub use gate::{GateConfig, GateIdentityConfig, GateSessionConfig, IdentityMode};
pub use metadata::MetadataConfig;
pub use retention::RetentionConfig;
pub use validation::{DeviceTokenKey, IdempotencyConfig, ValidationConfig};
pub use web::{WebConfig, WebauthnConfig};

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
    #[serde(default)]
    pub webauthn: WebauthnConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    /// The Prometheus endpoint (`GET /metrics`), on its own port (not the page's).
    #[serde(default = "default_metrics")]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub check_cache: CheckCacheConfig,
    #[serde(default)]
    pub gate: GateConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
}

impl Default for DeviceConfig {
    /// What an empty configuration file gives.
    fn default() -> Self {
        Self {
            server: default_server(),
            database: default_database(),
            telemetry: Default::default(),
            auth: Default::default(),
            policy_service: Default::default(),
            secrets: Default::default(),
            validation: Default::default(),
            webauthn: Default::default(),
            web: Default::default(),
            idempotency: Default::default(),
            metrics: default_metrics(),
            check_cache: Default::default(),
            gate: Default::default(),
            events: Default::default(),
            retention: Default::default(),
        }
    }
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
    /// `http://host:port`, or `https://host:port` with `[policy_service.tls]` (each needs
    /// the other: TLS is never silently skipped).
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
    /// TLS to the policy service: the CA its certificate chains to, and this service's
    /// certificate and key when the policy service requires mutual TLS.
    #[serde(default)]
    pub tls: Option<enroll_shared::config::ClientTls>,
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
            .field("tls", &self.tls)
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
            tls: None,
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

/// The device service's Prometheus port (the policy service's is 9464).
pub const DEFAULT_METRICS_PORT: u16 = 9465;

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
    fn web_listener_defaults_on_and_can_be_turned_off() {
        let config: DeviceConfig = enroll_shared::config::load_with_env(None, vec![]).unwrap();
        assert_eq!(
            config.web.listen,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        for off in ["off", ""] {
            let config: DeviceConfig = enroll_shared::config::load_with_env(
                None,
                vec![("ENROLL_WEB__LISTEN".to_owned(), off.to_owned())],
            )
            .unwrap();
            assert_eq!(config.web.listen, None, "{off:?}");
        }
        let config: DeviceConfig = enroll_shared::config::load_with_env(
            None,
            vec![("ENROLL_WEB__LISTEN".to_owned(), "[::1]:0".to_owned())],
        )
        .unwrap();
        assert_eq!(config.web.listen, Some("[::1]:0".parse().unwrap()));
        // As the production overlay sets it (deploy/k8s/overlays/production).
        let config: DeviceConfig = enroll_shared::config::load_with_env(
            None,
            vec![(
                "ENROLL_WEB__TRUSTED_PROXIES".to_owned(),
                r#"["10.0.0.0/8"]"#.to_owned(),
            )],
        )
        .unwrap();
        assert_eq!(config.web.trusted_proxies, ["10.0.0.0/8"]);
        let error = enroll_shared::config::load_with_env::<DeviceConfig>(
            None,
            vec![("ENROLL_WEB__LISTEN".to_owned(), "nowhere".to_owned())],
        )
        .unwrap_err();
        assert!(error.to_string().contains("web.listen"), "{error}");
    }

    #[test]
    fn backoff_doubles_beyond_the_free_failures_up_to_the_cap() {
        let config = ValidationConfig::default();
        let secs = |failures| config.backoff(failures).as_secs();
        assert_eq!([secs(0), secs(1), secs(3)], [0, 0, 0]);
        assert_eq!([secs(4), secs(5), secs(6), secs(13)], [1, 2, 4, 512]);
        assert_eq!([secs(14), secs(100), secs(u32::MAX)], [900, 900, 900]);
        let strict = ValidationConfig {
            backoff_free_failures: 0,
            backoff_base_ms: 250,
            ..ValidationConfig::default()
        };
        assert_eq!(strict.backoff(1), Duration::from_millis(250));
    }

    #[test]
    fn the_deprecated_permanent_lock_still_parses_and_the_device_token_key_is_redacted() {
        let config: DeviceConfig = enroll_shared::config::load_with_env(
            None,
            vec![
                (
                    "ENROLL_VALIDATION__PERMANENT_LOCK_AFTER".to_owned(),
                    "5".to_owned(),
                ),
                (
                    "ENROLL_VALIDATION__DEVICE_TOKEN_KEY".to_owned(),
                    "ab".repeat(32),
                ),
            ],
        )
        .unwrap();
        assert_eq!(config.validation.permanent_lock_after, Some(5));
        assert!(!format!("{config:?}").contains(&"ab".repeat(32)));
        assert_eq!(
            config.validation.known_client_for(),
            chrono::Duration::days(30)
        );
        assert!(!config.validation.allow_missing_client_ip);
    }

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
        // The endpoint has no authentication: loopback unless a deployment says otherwise.
        assert_eq!(
            config.metrics.listen(),
            Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9465))))
        );
        assert_eq!(config.policy_service.api_key, "topsecret");
        assert!(!format!("{config:?}").contains("topsecret"));
    }
}
