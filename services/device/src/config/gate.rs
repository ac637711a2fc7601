//! `[gate]`: device trust at the door. The proxies teams already run (nginx `auth_request`,
//! Caddy `forward_auth`, Traefik `ForwardAuth`, Envoy `ext_authz`) ask the gate whether a
//! request may pass; the gate knows the user from the proxy in front (a verified JWT, or a
//! plain header from a trusted proxy address) and the device from its own session cookie.
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The forward-auth and gate-page listener (plain HTTP/1.1). Meant for the proxy only,
    /// never for the public: the proxy sends its checks here and routes `path_prefix` of
    /// each protected host here. `""`/`"off"` (default): no gate. Envoy's `ext_authz`
    /// (gRPC) is served on the gRPC port whenever this is set.
    #[serde(default, deserialize_with = "super::web::deserialize_optional_listen")]
    pub listen: Option<std::net::SocketAddr>,
    /// The path under which the proxy serves the gate's page on every protected host
    /// (first-party cookie, as oauth2-proxy serves `/oauth2/`). Default `/.enroll-gate`.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Hosts the gate protects (`app.example.com`, `*.example.com`): a return URL must be
    /// on one of them (no open redirect) and the page's API calls must come from one
    /// (`Origin`). Add their origins to `webauthn.rp_origins` too.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The device type a route requires when the proxy sends none (`any`,
    /// `enclave_only`); `""` (default) refuses a check without one.
    #[serde(default)]
    pub default_device_type: String,
    /// The header the proxy's configuration sets to the route's required device type (a
    /// `device_type` query parameter on the check URL works too).
    #[serde(default = "default_device_type_header")]
    pub device_type_header: String,
    /// Addresses and CIDRs of the proxies that call the gate. Only their connections may
    /// assert an identity in a plain header, and only their `X-Forwarded-*` headers are
    /// read. Deliberately separate from `web.trusted_proxies`: an ingress in front of the
    /// enrollment page must not vouch for identities.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub identity: GateIdentityConfig,
    #[serde(default)]
    pub session: GateSessionConfig,
    /// Page API calls per client address and `web.rate_window_secs` window (default 60).
    #[serde(default = "default_requests_per_address")]
    pub requests_per_address: u32,
    /// Allowed decisions are audited once per (user, device, host) and this many seconds,
    /// with their count (s; default 60). Every refusal is audited on its own, at most one
    /// event per (reason, user) and second.
    #[serde(default = "default_audit_interval")]
    pub allowed_audit_interval_secs: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            listen: None,
            path_prefix: default_path_prefix(),
            hosts: Vec::new(),
            default_device_type: String::new(),
            device_type_header: default_device_type_header(),
            trusted_proxies: Vec::new(),
            identity: GateIdentityConfig::default(),
            session: GateSessionConfig::default(),
            requests_per_address: default_requests_per_address(),
            allowed_audit_interval_secs: default_audit_interval(),
        }
    }
}

/// Who the user is, as the proxy in front says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateIdentityConfig {
    /// `jwt` (default) or `header`.
    #[serde(default)]
    pub mode: IdentityMode,
    /// The header carrying the identity: the JWT (`X-Pomerium-Jwt-Assertion`;
    /// `Authorization` takes `Bearer <jwt>`) or the user name (`X-Forwarded-User`,
    /// `Remote-User`, `X-Auth-Request-User`).
    #[serde(default)]
    pub header: String,
    /// JWT: the signing keys, a JWKS file ...
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// ... or an `https://` URL, cached and fetched again when a token names an unknown
    /// `kid` (at most once per `jwks_refresh_min_secs`).
    #[serde(default)]
    pub jwks_url: String,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_min_secs: u64,
    /// The required `iss`.
    #[serde(default)]
    pub issuer: String,
    /// Accepted `aud` values (one must match).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted algorithms (asymmetric only; default RS256 and ES256). `none` and HMAC
    /// are refused at start.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp` and `nbf` (s; default 30, at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The claim holding the user name (default `email`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim holding the realm; `""`: every user is in `realm`.
    #[serde(default)]
    pub realm_claim: String,
    /// The realm of users whose token (or header request) names none.
    #[serde(default)]
    pub realm: String,
    /// Header mode: the header naming the realm (`""`: `realm` for everyone).
    #[serde(default)]
    pub realm_header: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    #[default]
    Jwt,
    Header,
}

/// The device-bound session cookie.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSessionConfig {
    /// Key id -> 64 hex characters (AES-256-GCM). Rotation: add a key, make it
    /// `active_key`; cookies sealed with a key still listed stay valid until they expire.
    /// Prefer ENROLL_GATE__SESSION__KEYS='{k1="..."}'.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    #[serde(default)]
    pub active_key: String,
    /// `""` (default): a host-only `__Host-enroll-gate` cookie. A domain
    /// (`example.com`): `__Secure-enroll-gate` for that domain and its subdomains.
    #[serde(default)]
    pub domain: String,
    /// A session unused this long ends (min; default 60). Proxies that pass the gate's
    /// `Set-Cookie` on (nginx, Envoy as shipped) keep an active session alive; elsewhere
    /// the session lasts this long from sign-in.
    #[serde(default = "default_idle_minutes")]
    pub idle_minutes: u64,
    /// A session ends this long after sign-in, however active (min; default 720).
    #[serde(default = "default_absolute_minutes")]
    pub absolute_minutes: u64,
}

impl Default for GateSessionConfig {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            active_key: String::new(),
            domain: String::new(),
            idle_minutes: default_idle_minutes(),
            absolute_minutes: default_absolute_minutes(),
        }
    }
}

impl fmt::Debug for GateSessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateSessionConfig")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("active_key", &self.active_key)
            .field("domain", &self.domain)
            .field("idle_minutes", &self.idle_minutes)
            .field("absolute_minutes", &self.absolute_minutes)
            .finish()
    }
}

fn default_path_prefix() -> String {
    "/.enroll-gate".to_owned()
}

fn default_device_type_header() -> String {
    "X-Enroll-Device-Type".to_owned()
}

fn default_requests_per_address() -> u32 {
    60
}

fn default_audit_interval() -> u64 {
    60
}

fn default_jwks_refresh() -> u64 {
    30
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned(), "ES256".to_owned()]
}

fn default_leeway() -> u64 {
    30
}

fn default_user_claim() -> String {
    "email".to_owned()
}

fn default_idle_minutes() -> u64 {
    60
}

fn default_absolute_minutes() -> u64 {
    720
}
