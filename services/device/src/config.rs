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
    #[serde(default)]
    pub webauthn: WebauthnConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
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
        }
    }
}

/// The WebAuthn relying party and the enrollment links.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebauthnConfig {
    /// Relying-party id: the host of the enrollment page (or a parent domain of it).
    #[serde(default = "default_rp_id")]
    pub rp_id: String,
    /// Relying-party name shown by authenticators.
    #[serde(default = "default_rp_name")]
    pub rp_name: String,
    /// Origins allowed to run the ceremonies (the proxy's and this service's page).
    #[serde(default = "default_rp_origins")]
    pub rp_origins: Vec<String>,
    /// Accept any port on the configured origins (development and tests).
    #[serde(default)]
    pub allow_any_port: bool,
    /// Link URLs are this base followed by the link secret.
    #[serde(default = "default_enrollment_base_url")]
    pub enrollment_base_url: String,
    /// Redirect URLs a link may carry: each entry is a URL prefix (scheme, host, port and
    /// optionally a path). Empty: links carry no redirect URL.
    #[serde(default)]
    pub redirect_allow_list: Vec<String>,
    /// PEM files of the attestation roots `enclave_only` devices must chain to (Apple
    /// WebAuthn root, Microsoft TPM roots, Android roots). Empty: `enclave_only` devices
    /// cannot be registered.
    #[serde(default)]
    pub trusted_roots: Vec<std::path::PathBuf>,
    /// Lifetime of a registration or authentication ceremony (s).
    #[serde(default = "default_ceremony_ttl")]
    pub ceremony_ttl_secs: u64,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        Self {
            rp_id: default_rp_id(),
            rp_name: default_rp_name(),
            rp_origins: default_rp_origins(),
            allow_any_port: false,
            enrollment_base_url: default_enrollment_base_url(),
            redirect_allow_list: Vec::new(),
            trusted_roots: Vec::new(),
            ceremony_ttl_secs: default_ceremony_ttl(),
        }
    }
}

impl WebauthnConfig {
    pub fn ceremony_ttl(&self) -> Duration {
        Duration::from_secs(self.ceremony_ttl_secs.clamp(1, 3_600))
    }
}

fn default_rp_id() -> String {
    "localhost".to_owned()
}

fn default_rp_name() -> String {
    "enroll".to_owned()
}

fn default_rp_origins() -> Vec<String> {
    vec!["http://localhost:8080".to_owned()]
}

fn default_enrollment_base_url() -> String {
    "http://localhost:8080/enroll/".to_owned()
}

fn default_ceremony_ttl() -> u64 {
    300
}

/// The enrollment page this service serves over HTTP (the page enrollment links point
/// to when no proxy serves one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address of the page's HTTP listener (plain HTTP/1.1: put TLS in front of it unless
    /// the page is only used on localhost; port 0 picks a free port). `""` or `"off"`
    /// disables the page (TOML has no null, so a sentinel string stands for "none").
    #[serde(
        default = "default_web_listen",
        deserialize_with = "deserialize_listen"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// Addresses and CIDRs (`10.0.0.0/8`, `2001:db8::/32`) of the proxies in front of the
    /// page (ingress, load balancer). Only when the TCP peer is one of them is
    /// `X-Forwarded-For` read: its right-most address that is not a trusted proxy is the
    /// client. Empty (default): the TCP peer is the client and forwarding headers are
    /// ignored, since anyone can send them.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// How long a connection may take to send a request's headers (s; default 10). The
    /// same clock runs while a kept-alive connection waits for its next request, so it is
    /// also the idle timeout.
    #[serde(default = "default_web_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// How long a request may take to send its body (s; default 10).
    #[serde(default = "default_web_body_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// Connections served at once (default 1024); further clients wait in the listen
    /// backlog until one closes.
    #[serde(default = "default_web_max_connections")]
    pub max_connections: usize,
    /// The window of the rate limits below (s; default 600).
    #[serde(default = "default_web_rate_window")]
    pub rate_window_secs: u64,
    /// API calls (begin and finish) per client address and window (default 60; IPv6
    /// clients count per /64). Beyond: HTTP 429 RESOURCE_EXHAUSTED.
    #[serde(default = "default_web_requests_per_address")]
    pub requests_per_address: u32,
    /// Ceremonies begun per enrollment link and window (default 5). Beyond: HTTP 429.
    #[serde(default = "default_web_begins_per_link")]
    pub begins_per_link: u32,
    /// Client addresses and links each limiter remembers (default 10000); the oldest
    /// window is forgotten first, so memory stays bounded whatever the traffic.
    #[serde(default = "default_web_limiter_capacity")]
    pub limiter_capacity: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: default_web_listen(),
            trusted_proxies: Vec::new(),
            header_read_timeout_secs: default_web_header_read_timeout(),
            body_read_timeout_secs: default_web_body_read_timeout(),
            max_connections: default_web_max_connections(),
            rate_window_secs: default_web_rate_window(),
            requests_per_address: default_web_requests_per_address(),
            begins_per_link: default_web_begins_per_link(),
            limiter_capacity: default_web_limiter_capacity(),
        }
    }
}

fn default_web_header_read_timeout() -> u64 {
    10
}

fn default_web_body_read_timeout() -> u64 {
    10
}

fn default_web_max_connections() -> usize {
    1024
}

fn default_web_rate_window() -> u64 {
    600
}

fn default_web_requests_per_address() -> u32 {
    60
}

fn default_web_begins_per_link() -> u32 {
    5
}

fn default_web_limiter_capacity() -> usize {
    10_000
}

fn deserialize_listen<'de, D>(deserializer: D) -> Result<Option<std::net::SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "web.listen: `{text}` is not an address like 127.0.0.1:8080 (or \"off\")"
        ))
    })
}

/// Next to the default `webauthn.enrollment_base_url` (`http://localhost:8080/enroll/`).
fn default_web_listen() -> Option<std::net::SocketAddr> {
    Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
}

/// How long the first response to a request id is kept and replayed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// Responses without a secret (s; default 24 h).
    #[serde(default = "default_idempotency_ttl")]
    pub ttl_secs: u64,
    /// Responses that carry a secret returned once: the seed of `EnrollToken`, the
    /// temporary password of `ReportLostToken`, the link URL of `CreateEnrollmentLink`
    /// (s; default 10 min, never longer than `ttl_secs`). A retry comes within seconds;
    /// longer would only keep the secret replayable.
    #[serde(default = "default_idempotency_secret_ttl")]
    pub secret_ttl_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl_secs: default_idempotency_ttl(),
            secret_ttl_secs: default_idempotency_secret_ttl(),
        }
    }
}

/// At most 30 days: a stored response is for retries, not an archive.
const MAX_IDEMPOTENCY_TTL_SECS: u64 = 30 * 24 * 3_600;

impl IdempotencyConfig {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs.clamp(1, MAX_IDEMPOTENCY_TTL_SECS))
    }

    pub fn secret_ttl(&self) -> Duration {
        Duration::from_secs(self.secret_ttl_secs.max(1)).min(self.ttl())
    }
}

fn default_idempotency_ttl() -> u64 {
    24 * 3_600
}

fn default_idempotency_secret_ttl() -> u64 {
    600
}

/// How Validate treats one-time codes and failures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Failed validations in a row a token takes without backing off.
    #[serde(default = "default_backoff_free_failures")]
    pub backoff_free_failures: u32,
    /// The first back-off (ms), doubling with each further failure: while it lasts the
    /// token refuses every pass (the answer of a wrong pass; no failure is counted).
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// The longest back-off (s).
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: u64,
    /// Failures in a row after which a token is locked until an admin enables it again.
    /// Off by default: a permanent lock lets anyone who knows a user name lock them out.
    #[serde(default)]
    pub permanent_lock_after: Option<u32>,
    /// TOTP steps accepted on either side of now.
    #[serde(default = "default_totp_window")]
    pub totp_window_steps: u64,
    /// HOTP counters accepted ahead of the next unused one.
    #[serde(default = "default_hotp_look_ahead")]
    pub hotp_look_ahead: u64,
    /// Autoassignment attempts (first or confirming codes) one user may make per
    /// `autoassign_window_secs`, counted in the database across every replica.
    #[serde(default = "default_user_attempts")]
    pub autoassign_attempts_per_user: u32,
    /// Autoassignment attempts one client address may make per window (IPv6: per /64);
    /// requests without `client_ip` share one budget.
    #[serde(default = "default_client_attempts")]
    pub autoassign_attempts_per_client: u32,
    /// Autoassignment attempts a whole realm may take per window, whatever the user names
    /// and addresses: the bound on guessing that rotation cannot get around.
    #[serde(default = "default_realm_attempts")]
    pub autoassign_attempts_per_realm: u32,
    /// The autoassignment budgets' window (s; 1 to 86,400).
    #[serde(default = "default_autoassign_window")]
    pub autoassign_window_secs: u64,
    /// How long a matched first code waits for the confirming next code (s; 1 to 600).
    #[serde(default = "default_challenge_ttl")]
    pub autoassign_challenge_secs: u64,
    /// Validate calls one client address may make per `validate_window_secs` (IPv6: per
    /// /64; requests without `client_ip` share one budget): throttles guessing against
    /// users who hold tokens, across users and replicas.
    #[serde(default = "default_validate_attempts")]
    pub validate_attempts_per_client: u32,
    /// The Validate budget's window (s; 1 to 86,400).
    #[serde(default = "default_validate_window")]
    pub validate_window_secs: u64,
}

impl ValidationConfig {
    pub fn autoassign_window(&self) -> Duration {
        Duration::from_secs(self.autoassign_window_secs.clamp(1, 86_400))
    }

    pub fn challenge_ttl(&self) -> Duration {
        Duration::from_secs(self.autoassign_challenge_secs.clamp(1, 600))
    }

    pub fn validate_window(&self) -> Duration {
        Duration::from_secs(self.validate_window_secs.clamp(1, 86_400))
    }
}

fn default_user_attempts() -> u32 {
    10
}

fn default_client_attempts() -> u32 {
    30
}

fn default_realm_attempts() -> u32 {
    300
}

fn default_autoassign_window() -> u64 {
    3_600
}

fn default_challenge_ttl() -> u64 {
    120
}

fn default_validate_attempts() -> u32 {
    600
}

fn default_validate_window() -> u64 {
    60
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            backoff_free_failures: default_backoff_free_failures(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_secs: default_backoff_max_secs(),
            permanent_lock_after: None,
            totp_window_steps: default_totp_window(),
            hotp_look_ahead: default_hotp_look_ahead(),
            autoassign_attempts_per_user: default_user_attempts(),
            autoassign_attempts_per_client: default_client_attempts(),
            autoassign_attempts_per_realm: default_realm_attempts(),
            autoassign_window_secs: default_autoassign_window(),
            autoassign_challenge_secs: default_challenge_ttl(),
            validate_attempts_per_client: default_validate_attempts(),
            validate_window_secs: default_validate_window(),
        }
    }
}

impl ValidationConfig {
    /// How long a token backs off after its `failures`-th failure in a row: nothing within
    /// the free failures, then the base doubling per failure, capped at the maximum.
    pub fn backoff(&self, failures: u32) -> Duration {
        let Some(beyond) = failures.checked_sub(self.backoff_free_failures.saturating_add(1))
        else {
            return Duration::ZERO;
        };
        let max = Duration::from_secs(self.backoff_max_secs);
        // 2^63 ms is far past any maximum: stop doubling there instead of overflowing.
        let factor = 1u64.checked_shl(beyond.min(63)).unwrap_or(u64::MAX);
        Duration::from_millis(self.backoff_base_ms.saturating_mul(factor)).min(max)
    }

    /// Whether the `failures`-th failure in a row locks the token for good.
    pub fn locks_for_good(&self, failures: u32) -> bool {
        self.permanent_lock_after
            .is_some_and(|after| failures >= after.max(1))
    }
}

fn default_backoff_free_failures() -> u32 {
    3
}

fn default_backoff_base_ms() -> u64 {
    1_000
}

fn default_backoff_max_secs() -> u64 {
    900
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
        assert!(
            !config.locks_for_good(u32::MAX),
            "no permanent lock by default"
        );
        let strict = ValidationConfig {
            backoff_free_failures: 0,
            backoff_base_ms: 250,
            permanent_lock_after: Some(5),
            ..ValidationConfig::default()
        };
        assert_eq!(strict.backoff(1), Duration::from_millis(250));
        assert!(!strict.locks_for_good(4) && strict.locks_for_good(5));
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
        assert_eq!(config.policy_service.api_key, "topsecret");
        assert!(!format!("{config:?}").contains("topsecret"));
    }
}
