//! The `[webauthn]` (relying party, links, ceremonies) and `[web]` (the enrollment page)
//! sections.
use std::time::Duration;

use serde::Deserialize;

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
    /// PEM files of attestation roots `enclave_only` devices may chain to, in addition to
    /// `vendor_roots`. With both empty, `enclave_only` devices cannot be registered.
    #[serde(default)]
    pub trusted_roots: Vec<std::path::PathBuf>,
    /// Shipped vendor roots to trust: `apple` (Apple WebAuthn Root CA), `microsoft-tpm`
    /// (Microsoft TPM Root CA 2014), `google-android` (Google hardware attestation roots).
    /// See docs/attestation.md.
    #[serde(default)]
    pub vendor_roots: Vec<String>,
    /// Accept `tpm` attestation statements signed with RS1 (RSASSA-PKCS1-v1_5 with SHA-1),
    /// as Windows Hello signs them: the service verifies the statement itself (webauthn-rs
    /// refuses SHA-1). Off by default: see docs/attestation.md for the risk.
    #[serde(default)]
    pub accept_sha1_tpm_attestation: bool,
    /// Lifetime of a registration or authentication ceremony (s).
    #[serde(default = "default_ceremony_ttl")]
    pub ceremony_ttl_secs: u64,
    /// The FIDO Metadata Service BLOB (`[webauthn.metadata]`); off by default.
    #[serde(default)]
    pub metadata: super::metadata::MetadataConfig,
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
            vendor_roots: Vec::new(),
            accept_sha1_tpm_attestation: false,
            ceremony_ttl_secs: default_ceremony_ttl(),
            metadata: Default::default(),
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
    deserialize_optional_listen(deserializer)
}

/// A listen address, or `""`/`"off"` for none.
pub(super) fn deserialize_optional_listen<'de, D>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error>
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
            "`{text}` is not a listen address like 127.0.0.1:8080 (or \"off\")"
        ))
    })
}

/// Next to the default `webauthn.enrollment_base_url` (`http://localhost:8080/enroll/`).
fn default_web_listen() -> Option<std::net::SocketAddr> {
    Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
}
