//! The `[events]` section: the enrollment-event outbox's stamper, the gRPC watch, and the
//! delivery of events to streams (Shared Signals / CAEP, Standard Webhooks).
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// How often committed events get their delivery order (ms, 20..=5000; default 200):
    /// the delay before a new event can be read.
    #[serde(default = "default_stamp_interval_ms")]
    pub stamp_interval_ms: u64,
    /// WatchEnrollmentEvents streams open at once, on this instance (default 16).
    #[serde(default = "default_max_watchers")]
    pub max_watchers: usize,
    /// Events a watch stream holds for a slow reader before it waits for it (default 256).
    #[serde(default = "default_watch_buffer")]
    pub watch_buffer: usize,
    /// The `iss` of security event tokens and the issuer of `/.well-known/ssf-configuration`
    /// (an https URL naming this service, e.g. `https://enroll.example.com`). Default: the
    /// origin of `webauthn.enrollment_base_url`.
    #[serde(default)]
    pub issuer: String,
    /// How long a stream retries an event before it goes to the dead letters (s; default
    /// 259200, 3 days).
    #[serde(default = "default_dead_letter_after_secs")]
    pub dead_letter_after_secs: u64,
    /// The deadline of one delivery (s; default 10).
    #[serde(default = "default_delivery_timeout_secs")]
    pub delivery_timeout_secs: u64,
    /// The first retry's delay (ms; default 1000); each later one doubles, with jitter, up
    /// to `retry_max_secs`. A receiver's `Retry-After` is honoured when longer.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// The longest delay between two retries (s; default 300).
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// How long an instance holds a stream's delivery lease (s; default 30): another
    /// instance takes the stream over this long after the holder died.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Requests in flight to one stream's receiver at most (1..=64; default 8): events of
    /// different users go out side by side, each user's in order.
    #[serde(default = "default_delivery_concurrency")]
    pub delivery_concurrency: usize,
    /// How often an instance looks for streams with events to deliver (ms; default 500).
    #[serde(default = "default_delivery_poll_ms")]
    pub delivery_poll_ms: u64,
    /// How often expired, unused enrollment links are written as `link.expired` and
    /// `otp_link.expired` events (s, 1..=3600; default 60): the bound on how late such an
    /// event comes after the link's end.
    #[serde(default = "default_expiry_scan_secs")]
    pub expiry_scan_secs: u64,
    /// Realms whose users have mail addresses: realm -> mail domain (`corp = "example.com"`
    /// makes `alice` of `corp` `alice@example.com`; a user name holding an `@` is taken as
    /// the address). CAEP streams with the `email` subject format name these users by
    /// address, and users of other realms by `iss_sub`.
    #[serde(default)]
    pub realm_email_domains: std::collections::BTreeMap<String, String>,
    /// How long an RFC 8936 poll with `returnImmediately` false waits for an event before
    /// it answers with none (s, 0..=300; default 30).
    #[serde(default = "default_poll_wait_secs")]
    pub poll_wait_secs: u64,
    /// The most security event tokens one poll returns, and the number when the request
    /// names none (1..=1000; default 100).
    #[serde(default = "default_poll_max_events")]
    pub poll_max_events: u64,
    /// Development only: allow `http://` receivers on loopback addresses. Never in
    /// production: receivers must be https on public addresses.
    #[serde(default)]
    pub allow_loopback_http: bool,
    /// How often the policy service's history is read for `policy.*` events when no new
    /// policy-set version was announced (s, 1..=3600; default 30): the bound on how late a
    /// policy event comes when a WatchPolicySet notification was missed.
    #[serde(default = "default_policy_relay_secs")]
    pub policy_relay_secs: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            stamp_interval_ms: default_stamp_interval_ms(),
            max_watchers: default_max_watchers(),
            watch_buffer: default_watch_buffer(),
            issuer: String::new(),
            dead_letter_after_secs: default_dead_letter_after_secs(),
            delivery_timeout_secs: default_delivery_timeout_secs(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_secs: default_retry_max_secs(),
            lease_secs: default_lease_secs(),
            delivery_concurrency: default_delivery_concurrency(),
            delivery_poll_ms: default_delivery_poll_ms(),
            expiry_scan_secs: default_expiry_scan_secs(),
            realm_email_domains: Default::default(),
            poll_wait_secs: default_poll_wait_secs(),
            poll_max_events: default_poll_max_events(),
            allow_loopback_http: false,
            policy_relay_secs: default_policy_relay_secs(),
        }
    }
}

impl EventsConfig {
    pub fn stamp_interval(&self) -> Duration {
        Duration::from_millis(self.stamp_interval_ms.clamp(20, 5_000))
    }

    pub fn max_watchers(&self) -> usize {
        self.max_watchers.max(1)
    }

    pub fn watch_buffer(&self) -> usize {
        self.watch_buffer.clamp(1, 65_536)
    }

    pub fn dead_letter_after(&self) -> Duration {
        Duration::from_secs(self.dead_letter_after_secs.max(1))
    }

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_secs(self.delivery_timeout_secs.clamp(1, 120))
    }

    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.retry_base_ms.max(1))
    }

    pub fn retry_max(&self) -> Duration {
        Duration::from_secs(self.retry_max_secs.max(1))
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.clamp(2, 3_600))
    }

    pub fn expiry_scan(&self) -> Duration {
        Duration::from_secs(self.expiry_scan_secs.clamp(1, 3_600))
    }

    /// The realm -> mail domain map with realm names folded to lowercase (as realms are
    /// stored) and domains trimmed; an empty domain or one holding `@` or spaces is an
    /// error naming the realm.
    pub fn email_domains(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        self.realm_email_domains
            .iter()
            .map(|(realm, domain)| {
                let domain = domain.trim().to_ascii_lowercase();
                if domain.is_empty()
                    || domain.contains('@')
                    || domain.contains(char::is_whitespace)
                    || !domain.contains('.')
                {
                    return Err(format!(
                        "events.realm_email_domains.{realm}: `{domain}` is not a mail domain"
                    ));
                }
                Ok((realm.trim().to_ascii_lowercase(), domain))
            })
            .collect()
    }

    pub fn delivery_concurrency(&self) -> usize {
        self.delivery_concurrency.clamp(1, 64)
    }

    pub fn poll_wait(&self) -> Duration {
        Duration::from_secs(self.poll_wait_secs.min(300))
    }

    pub fn poll_max_events(&self) -> u64 {
        self.poll_max_events.clamp(1, 1_000)
    }

    pub fn policy_relay(&self) -> Duration {
        Duration::from_secs(self.policy_relay_secs.clamp(1, 3_600))
    }

    pub fn delivery_poll(&self) -> Duration {
        Duration::from_millis(self.delivery_poll_ms.clamp(20, 60_000))
    }
}

fn default_stamp_interval_ms() -> u64 {
    200
}

fn default_max_watchers() -> usize {
    16
}

fn default_watch_buffer() -> usize {
    256
}

fn default_dead_letter_after_secs() -> u64 {
    3 * 24 * 3_600
}

fn default_delivery_timeout_secs() -> u64 {
    10
}

fn default_retry_base_ms() -> u64 {
    1_000
}

fn default_retry_max_secs() -> u64 {
    300
}

fn default_delivery_concurrency() -> usize {
    8
}

fn default_lease_secs() -> u64 {
    30
}

fn default_delivery_poll_ms() -> u64 {
    500
}

fn default_expiry_scan_secs() -> u64 {
    60
}

fn default_poll_wait_secs() -> u64 {
    30
}

fn default_poll_max_events() -> u64 {
    100
}

fn default_policy_relay_secs() -> u64 {
    30
}
