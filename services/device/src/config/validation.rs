//! The `[idempotency]` and `[validation]` sections: how long first responses are kept, and
//! how Validate treats codes, failures and attempt budgets.
use std::time::Duration;

use serde::Deserialize;

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
    /// Failed validations in a row one (user, client) pair makes without backing off.
    #[serde(default = "default_backoff_free_failures")]
    pub backoff_free_failures: u32,
    /// The pair's first back-off (ms), doubling with each further failure: while it lasts
    /// that client's passes for that user are refused (the answer of a wrong pass; no
    /// failure is counted). Other clients of the user are not affected.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// The longest back-off (s).
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: u64,
    /// Deprecated and ignored: failures no longer lock a token for everyone (an outsider
    /// who knows a user name could lock the user out). Still parsed so old files load; a
    /// warning at start-up says it has no effect.
    #[serde(default)]
    pub permanent_lock_after: Option<u32>,
    /// Days a client stays known for a user after the user passed from it (by its address,
    /// or by the device token issued on that success): a known client is never held back
    /// by other clients' failures (1 to 365).
    #[serde(default = "default_known_client_days")]
    pub known_client_days: u32,
    /// The key device tokens are signed with (64 hex characters). Unset: derived from the
    /// active seed key (`secrets.active_seed_key`), so rotating that key ends every device
    /// token. Prefer ENROLL_VALIDATION__DEVICE_TOKEN_KEY over the file.
    #[serde(default)]
    pub device_token_key: Option<DeviceTokenKey>,
    /// Failures in a row (its own, since its last success) after which a device token is no
    /// longer trusted: its client counts as unknown until the user passes again.
    #[serde(default = "default_device_token_max_failures")]
    pub device_token_max_failures: u32,
    /// Failures of unknown clients one user takes per `unknown_client_window_secs`; past
    /// them unknown clients are refused for that user until the window ends (known clients
    /// are not).
    #[serde(default = "default_unknown_client_failures_per_user")]
    pub unknown_client_failures_per_user: u32,
    /// The per-user window of unknown clients' failures (s; 1 to 86,400).
    #[serde(default = "default_failure_window")]
    pub unknown_client_window_secs: u64,
    /// Failures of unknown clients a whole realm takes per `realm_failure_window_secs`,
    /// whatever the user names and addresses: the bound on guessing across users. Past it
    /// unknown clients in the realm are refused until the window ends; known clients pass.
    #[serde(default = "default_realm_failures")]
    pub realm_failures_per_window: u32,
    /// The realm-wide failure window (s; 1 to 86,400).
    #[serde(default = "default_failure_window")]
    pub realm_failure_window_secs: u64,
    /// Accept Validate calls without `client_ip` (INVALID_ARGUMENT otherwise): such calls
    /// are one client per API key, which is never known by address (only a device token
    /// makes it known), so one proxy's missing addresses share one back-off and budget.
    #[serde(default)]
    pub allow_missing_client_ip: bool,
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
    /// How long an autoassignment challenge (real or decoy) waits for its answer, the
    /// token's next code (s; 1 to 600).
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
            known_client_days: default_known_client_days(),
            device_token_key: None,
            device_token_max_failures: default_device_token_max_failures(),
            unknown_client_failures_per_user: default_unknown_client_failures_per_user(),
            unknown_client_window_secs: default_failure_window(),
            realm_failures_per_window: default_realm_failures(),
            realm_failure_window_secs: default_failure_window(),
            allow_missing_client_ip: false,
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

    /// How long a client stays known for a user after the user passed from it.
    pub fn known_client_for(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.known_client_days.clamp(1, 365)))
    }

    pub fn unknown_client_window(&self) -> Duration {
        Duration::from_secs(self.unknown_client_window_secs.clamp(1, 86_400))
    }

    pub fn realm_failure_window(&self) -> Duration {
        Duration::from_secs(self.realm_failure_window_secs.clamp(1, 86_400))
    }
}

/// The device-token signing key: kept out of `Debug` output (configs are logged).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DeviceTokenKey(pub String);

impl std::fmt::Debug for DeviceTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn default_known_client_days() -> u32 {
    30
}

fn default_device_token_max_failures() -> u32 {
    10
}

fn default_unknown_client_failures_per_user() -> u32 {
    10
}

fn default_realm_failures() -> u32 {
    100
}

fn default_failure_window() -> u64 {
    3_600
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
