//! WebAuthn device rules that know nothing of gRPC, the database or webauthn-rs: device
//! types, link secrets, the redirect allow-list and the user handle.
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::names::{Realm, UserName};
use chrono::{DateTime, Utc};

/// Which authenticators a link or a registration accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceKind {
    /// Any WebAuthn authenticator, synced passkeys included.
    Any,
    /// A platform authenticator whose attestation chains to a trusted root and whose
    /// credential is not backup-eligible.
    EnclaveOnly,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Any => "any",
            DeviceKind::EnclaveOnly => "enclave_only",
        }
    }

    /// The stored or policy spelling (`any`, `enclave_only`).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "any" | "" => Some(DeviceKind::Any),
            "enclave_only" => Some(DeviceKind::EnclaveOnly),
            _ => None,
        }
    }

    /// Whether a device of this kind satisfies a requirement of `required`.
    pub fn satisfies(self, required: DeviceKind) -> bool {
        self == DeviceKind::EnclaveOnly || required == DeviceKind::Any
    }
}

/// The lifecycle of a registered device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceState {
    /// Self-registered under a policy that asks for approval: never enrolled until approved.
    PendingApproval,
    Approved,
    /// Never authenticates again and stops counting toward limits.
    Revoked,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::PendingApproval => "pending_approval",
            DeviceState::Approved => "approved",
            DeviceState::Revoked => "revoked",
        }
    }
}

/// The stored lifecycle of an enrollment link (expiry is computed from its expire time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinkState {
    Active,
    Used,
    Revoked,
}

/// What a caller sees of a link's lifecycle: an active link past its expire time is expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinkStatus {
    Active,
    Expired,
    Used,
    Revoked,
}

impl LinkStatus {
    pub fn of(state: LinkState, expire_time: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        match state {
            LinkState::Used => LinkStatus::Used,
            LinkState::Revoked => LinkStatus::Revoked,
            LinkState::Active if expire_time <= now => LinkStatus::Expired,
            LinkState::Active => LinkStatus::Active,
        }
    }
}

/// A registered device as callers see it (the stored credential stays in the store).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    pub id: String,
    pub realm: Realm,
    pub user: UserName,
    pub credential_id: String,
    pub kind: DeviceKind,
    pub state: DeviceState,
    pub aaguid: String,
    pub backup_eligible: bool,
    pub user_agent: String,
    pub enrollment_link_id: Option<String>,
    pub create_time: DateTime<Utc>,
    pub last_used_time: Option<DateTime<Utc>>,
    pub approved_by: String,
    /// The model's description in the FIDO metadata at registration; empty when unknown.
    pub model: String,
    /// The model's FIDO certification level at registration; empty when none is known.
    pub certification_level: String,
    /// The attestation statement format (`packed`, `tpm`, `apple`, ...); empty if unknown.
    pub attestation_format: String,
    /// The trusted root (configured, shipped vendor roots, or the FIDO metadata) the
    /// attestation chain was verified to; `None` when it was not verified.
    pub attestation_root: Option<String>,
    /// Whether the attestation certificate binds `aaguid` (FIDO AAGUID extension, or a root
    /// the FIDO metadata gives for that model alone): only then do allow-lists and minimum
    /// certification trust the model. Recorded at registration; devices registered before
    /// it was recorded keep the old rule (a verified chain).
    pub aaguid_verified: bool,
    /// Why the FIDO metadata marks the model compromised, once a BLOB does.
    pub model_compromise: Option<String>,
}

/// Whether a device is acceptable for a required device type, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    pub required: DeviceKind,
    pub acceptable: bool,
    pub reason: String,
}

impl Device {
    /// The model as people read it: the metadata's description, else the AAGUID.
    pub fn model_name(&self) -> String {
        match (self.model.is_empty(), self.aaguid.is_empty()) {
            (false, _) => self.model.clone(),
            (true, false) => format!("AAGUID {}", self.aaguid),
            (true, true) => "an unknown model".to_owned(),
        }
    }

    /// Whether this device counts as an enrolled device of type `required`. A device of a
    /// model the FIDO metadata marks compromised never does, whatever its type (fail-safe:
    /// the user must enroll another authenticator).
    pub fn acceptance(&self, required: DeviceKind) -> Acceptance {
        let not = |reason: String| Acceptance {
            required,
            acceptable: false,
            reason,
        };
        let model = self.model_name();
        if self.state == DeviceState::Revoked {
            return not(format!("{model}: not acceptable, the device is revoked"));
        }
        if let Some(compromise) = &self.model_compromise {
            return not(format!("not acceptable: {compromise}"));
        }
        if !self.kind.satisfies(required) {
            return not(format!(
                "{model}: not acceptable for {}: registered as {} (its attestation was not \
                 verified against a trusted root as a device-bound credential)",
                required.as_str(),
                self.kind.as_str()
            ));
        }
        if self.state == DeviceState::PendingApproval {
            return not(format!(
                "{model}: not acceptable until an administrator approves it"
            ));
        }
        let certification = if self.certification_level.is_empty() {
            String::new()
        } else {
            format!(", {}", self.certification_level)
        };
        let attestation = match &self.attestation_root {
            Some(root) if self.aaguid_verified => {
                format!("attestation verified to {root}, model bound by its certificate")
            }
            Some(root) => format!("attestation verified to {root}, model only claimed"),
            None => "attestation not verified".to_owned(),
        };
        Acceptance {
            required,
            acceptable: true,
            reason: format!(
                "{model}{certification}: acceptable for {} ({attestation}, registered as {})",
                required.as_str(),
                self.kind.as_str()
            ),
        }
    }
}

/// An enrollment link as callers see it. `url` carries the secret and is only set in the
/// response that created the link.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub id: String,
    pub realm: Realm,
    pub user: UserName,
    pub kind: DeviceKind,
    pub redirect_url: String,
    pub url: Option<String>,
    pub expire_time: DateTime<Utc>,
    pub status: LinkStatus,
    pub created_by: String,
    pub create_time: DateTime<Utc>,
    pub device_id: Option<String>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("id", &self.id)
            .field("realm", &self.realm)
            .field("user", &self.user)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// What CheckEnrollment answers about a user's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentStatus {
    Enrolled,
    PendingApproval,
    NotEnrolled,
    TypeMismatch,
    Revoked,
}

/// CheckEnrollment's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentCheck {
    pub status: EnrollmentStatus,
    pub device: Option<Device>,
    pub can_self_enroll: bool,
    pub reasons: Vec<String>,
}

/// A begun registration: the options for `navigator.credentials.create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationChallenge {
    pub ceremony_id: String,
    pub options_json: String,
    pub expire_time: DateTime<Utc>,
    pub realm: Realm,
    pub user: UserName,
    pub kind: DeviceKind,
}

/// A finished registration: the device and where the browser goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredDevice {
    pub device: Device,
    pub redirect_url: String,
}

/// A begun authentication: the options for `navigator.credentials.get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationChallenge {
    pub ceremony_id: String,
    pub options_json: String,
    pub expire_time: DateTime<Utc>,
}

/// A link secret: 256 random bits, base64url. Only its hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkSecret(String);

impl LinkSecret {
    pub fn generate(rng: &mut impl RngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A secret as received from a caller; anything but 43 base64url characters cannot be a
    /// secret this service issued.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let decoded = URL_SAFE_NO_PAD.decode(raw).ok()?;
        (decoded.len() == 32).then(|| Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database keeps: a fast hash suffices for 256 random bits.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret(<redacted>)")
    }
}

/// The link URL: the configured base, then the secret as the fragment
/// (`<base>#<secret>`). Browsers never send a fragment to a server, so the secret stays out
/// of ingress access logs and proxies; the page's script reads it and removes it from the
/// address bar and history. A fragment already in the base is dropped: a URL has one.
pub fn link_url(base: &str, secret: &LinkSecret) -> String {
    let base = base.split_once('#').map_or(base, |(before, _)| before);
    format!("{base}#{}", secret.expose())
}

/// Redirect URLs a link may carry: each entry is a URL prefix compared by scheme, host,
/// port and path segments, so `https://app.example.com/` never admits
/// `https://app.example.com.evil.test/`.
#[derive(Debug, Clone, Default)]
pub struct RedirectAllowList {
    prefixes: Vec<url::Url>,
}

impl RedirectAllowList {
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let prefixes = entries
            .iter()
            .map(|entry| {
                url::Url::parse(entry)
                    .map_err(|error| format!("webauthn.redirect_allow_list `{entry}`: {error}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { prefixes })
    }

    /// The normalized URL when `raw` is an http(s) URL under an allowed prefix.
    pub fn check(&self, raw: &str) -> Result<String, String> {
        let url = url::Url::parse(raw.trim()).map_err(|error| format!("not a URL: {error}"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err("must be an http or https URL".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("may not carry credentials".to_owned());
        }
        let allowed = self.prefixes.iter().any(|prefix| {
            prefix.scheme() == url.scheme()
                && prefix.host_str() == url.host_str()
                && prefix.port_or_known_default() == url.port_or_known_default()
                && path_under(prefix.path(), url.path())
        });
        if allowed {
            Ok(url.to_string())
        } else {
            Err(
                "is not on the configured redirect allow-list (webauthn.redirect_allow_list)"
                    .to_owned(),
            )
        }
    }
}

fn path_under(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix || path.starts_with(&format!("{prefix}/"))
    }
}

/// The WebAuthn user handle of a user: stable per realm and name, so authenticators
/// recognise the same account, and revealing nothing but an opaque id.
pub fn user_handle(realm: &str, user: &str) -> uuid::Uuid {
    let digest = Sha256::digest(format!("enroll-user\0{realm}\0{user}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Filters of ListDevices.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub realm: Option<Realm>,
    pub user: Option<UserName>,
    pub kind: Option<DeviceKind>,
    pub state: Option<DeviceState>,
}

/// Filters of ListEnrollmentLinks. `expired` selects active links past their expire time.
#[derive(Debug, Clone, Default)]
pub struct LinkFilter {
    pub realm: Option<Realm>,
    pub user: Option<UserName>,
    pub state: Option<LinkState>,
    pub expired: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclave_only_satisfies_both_and_any_only_any() {
        assert!(DeviceKind::EnclaveOnly.satisfies(DeviceKind::Any));
        assert!(DeviceKind::EnclaveOnly.satisfies(DeviceKind::EnclaveOnly));
        assert!(DeviceKind::Any.satisfies(DeviceKind::Any));
        assert!(!DeviceKind::Any.satisfies(DeviceKind::EnclaveOnly));
        assert_eq!(
            DeviceKind::parse("ENCLAVE_ONLY"),
            Some(DeviceKind::EnclaveOnly)
        );
        assert_eq!(DeviceKind::parse("tpm"), None);
    }

    #[test]
    fn secrets_are_256_bits_hashed_and_redacted() {
        let secret = LinkSecret::generate(&mut rand::rng());
        assert_eq!(secret.expose().len(), 43);
        assert_eq!(LinkSecret::parse(secret.expose()), Some(secret.clone()));
        assert_eq!(LinkSecret::parse("short"), None);
        assert_eq!(secret.hash().len(), 64);
        assert_ne!(secret.hash(), secret.expose());
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }

    #[test]
    fn link_urls_carry_the_secret_in_the_fragment_only() {
        let secret = LinkSecret::generate(&mut rand::rng());
        let exposed = secret.expose();
        for (base, expected) in [
            (
                "https://proxy/enroll",
                format!("https://proxy/enroll#{exposed}"),
            ),
            (
                "https://proxy/enroll/",
                format!("https://proxy/enroll/#{exposed}"),
            ),
            (
                "https://proxy/enroll?x=1",
                format!("https://proxy/enroll?x=1#{exposed}"),
            ),
            (
                "https://proxy/enroll#old",
                format!("https://proxy/enroll#{exposed}"),
            ),
        ] {
            let url = link_url(base, &secret);
            assert_eq!(url, expected);
            // What a browser sends (everything before the fragment) never holds the secret.
            let parsed = url::Url::parse(&url).unwrap();
            assert_eq!(parsed.fragment(), Some(exposed));
            let mut sent = parsed.clone();
            sent.set_fragment(None);
            assert!(!sent.as_str().contains(exposed), "{sent}");
        }
    }

    #[test]
    fn redirects_must_match_scheme_host_port_and_path() {
        let list = RedirectAllowList::new(&[
            "https://app.example.com/".to_owned(),
            "https://console.example.com/done".to_owned(),
        ])
        .unwrap();
        assert!(list.check("https://app.example.com/welcome?x=1").is_ok());
        assert!(list.check("https://console.example.com/done").is_ok());
        assert!(list.check("https://console.example.com/done/ok").is_ok());
        for bad in [
            "https://app.example.com.evil.test/",
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "https://console.example.com/donewrong",
            "https://user:pw@app.example.com/",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(list.check(bad).is_err(), "{bad} must be refused");
        }
        assert!(
            RedirectAllowList::default()
                .check("https://app.example.com/")
                .is_err()
        );
    }

    #[test]
    fn user_handles_are_stable_and_distinct() {
        assert_eq!(user_handle("acme", "alice"), user_handle("acme", "alice"));
        assert_ne!(user_handle("acme", "alice"), user_handle("acme", "bob"));
        assert_ne!(user_handle("acme", "alice"), user_handle("other", "alice"));
    }
}
