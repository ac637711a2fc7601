//! Policy decisions as the device service uses them: the question it asks, the settings a
//! decision carries and the limits they set. The policy service's wire types stay in the
//! adapter that talks to it.
use std::collections::HashMap;

use uuid::Uuid;

use super::devices::DeviceKind;
use super::names::{Realm, UserName};

/// The action a decision is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    Enroll,
    Assign,
    Autoassign,
    SetPin,
    LostToken,
    CreateLink,
    RegisterDevice,
    /// Enable, disable, unassign, delete a token; approve or revoke a device; revoke a link.
    Manage,
}

impl PolicyAction {
    /// Whether an admin takes this action for a user (from the console), as opposed to the
    /// end user's own path through the proxy (registering a device, autoassignment).
    pub fn is_admins(self) -> bool {
        !matches!(
            self,
            PolicyAction::RegisterDevice | PolicyAction::Autoassign
        )
    }
}

/// One decision request.
#[derive(Debug, Clone)]
pub struct PolicyQuestion<'a> {
    pub action: PolicyAction,
    /// The audit action a denial is recorded under.
    pub audit_action: &'static str,
    pub realm: &'a Realm,
    pub user: Option<&'a UserName>,
    /// What a denial's audit event names (serial, link or device id).
    pub subject: &'a str,
    pub token_type: &'a str,
    /// The serial the policy renders labels with; empty for devices.
    pub serial: &'a str,
}

impl<'a> PolicyQuestion<'a> {
    /// A question about a token (or the pool, without a user).
    pub fn token(
        action: PolicyAction,
        audit_action: &'static str,
        realm: &'a Realm,
        user: Option<&'a UserName>,
        token_type: &'a str,
        serial: &'a str,
    ) -> Self {
        Self {
            action,
            audit_action,
            realm,
            user,
            subject: serial,
            token_type,
            serial,
        }
    }

    /// A question about a WebAuthn device or link.
    pub fn webauthn(
        action: PolicyAction,
        audit_action: &'static str,
        realm: &'a Realm,
        user: &'a UserName,
        subject: &'a str,
    ) -> Self {
        Self {
            action,
            audit_action,
            realm,
            user: Some(user),
            subject,
            token_type: "webauthn",
            serial: "",
        }
    }
}

/// Why the policy refuses an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// A stable code such as `TOKEN_TYPE_NOT_ALLOWED`.
    pub code: String,
    pub message: String,
    /// The deciding policy ("" for a default).
    pub policy: String,
}

/// The effective settings of a decision (see the policy reference in DESIGN.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_token_per_user: Option<u32>,
    pub max_token_per_realm: Option<u32>,
    pub max_active_token_per_user: Option<u32>,
    /// Rendered, with the serial tag (`<s>`) left for the device service.
    pub token_label: String,
    pub token_issuer: String,
    pub autoassignment: bool,
    /// Generate a PIN of this length.
    pub otp_pin_random: Option<u32>,
    pub otp_pin_random_content: String,
    /// Store PINs encrypted instead of hashed.
    pub otp_pin_encrypt: bool,
    pub lost_token_pw_len: u32,
    pub lost_token_pw_contents: String,
    pub lost_token_valid_days: u32,
    pub webauthn_device_type: DeviceKind,
    pub require_device_approval: bool,
    pub enrollment_link_ttl_hours: u32,
    /// `webauthn_aaguid_allow`: None = no allow-list restriction; Some(empty) = no model
    /// may register (equal-priority policies whose allow lists have nothing in common).
    pub webauthn_aaguid_allow: Option<AaguidList>,
    /// `webauthn_aaguid_deny`: models that may not register (deny wins over allow).
    pub webauthn_aaguid_deny: AaguidList,
    /// `webauthn_min_certification`: `NotFidoCertified` = no minimum.
    pub webauthn_min_certification: CertificationLevel,
    /// `otp_verify_window_minutes`: how long a verify-pending OTP token waits for its first code.
    pub otp_verify_window_minutes: u32,
    /// `otp_verify_attempts`: wrong first codes before a verify-pending enrollment fails.
    pub otp_verify_attempts: u32,
    /// `otp_pin_minlength`: above 0, a PIN is required where the user sets one (the OTP
    /// enrollment page); the rules themselves are checked by ValidatePin.
    pub otp_pin_minlength: u32,
    /// `require_identity`: redeeming an OTP enrollment link needs the gate's verified
    /// identity of the link's user.
    pub require_identity: bool,
}

impl Settings {
    /// Whether a policy rule depends on the authenticator's model (AAGUID lists or a
    /// minimum certification), so a registration must ask for the model's attestation.
    pub fn has_model_rules(&self) -> bool {
        self.webauthn_aaguid_allow.is_some()
            || !self.webauthn_aaguid_deny.is_empty()
            || self.webauthn_min_certification > CertificationLevel::NotFidoCertified
    }
}

impl Default for Settings {
    /// The settings of "no matching policy".
    fn default() -> Self {
        Self {
            max_token_per_user: None,
            max_token_per_realm: None,
            max_active_token_per_user: None,
            token_label: "<s>".to_owned(),
            token_issuer: "enroll".to_owned(),
            autoassignment: false,
            otp_pin_random: None,
            otp_pin_random_content: "cCn".to_owned(),
            otp_pin_encrypt: false,
            lost_token_pw_len: 10,
            lost_token_pw_contents: "cCn".to_owned(),
            lost_token_valid_days: 10,
            webauthn_device_type: DeviceKind::Any,
            require_device_approval: true,
            enrollment_link_ttl_hours: 24,
            webauthn_aaguid_allow: None,
            webauthn_aaguid_deny: AaguidList::default(),
            webauthn_min_certification: CertificationLevel::NotFidoCertified,
            otp_verify_window_minutes: 10,
            otp_verify_attempts: 5,
            otp_pin_minlength: 0,
            require_identity: false,
        }
    }
}

/// Authenticator models a policy list names: AAGUIDs and FIDO metadata (MDS3) model names.
/// The policy service sends AAGUIDs in canonical lowercase form; every other entry is a
/// model name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AaguidList {
    pub aaguids: Vec<Uuid>,
    /// As the policy wrote them (for messages); matched through [`model_key`].
    pub model_names: Vec<String>,
}

impl AaguidList {
    /// Sorts the entries of a decision; an empty or control-character entry is refused
    /// (the policy service never sends one).
    pub fn from_entries(entries: Vec<String>) -> Result<AaguidList, String> {
        let mut list = AaguidList::default();
        for entry in entries {
            // 36 characters: the hyphenated form only (not simple, braced or urn).
            let canonical = entry.len() == 36;
            match Uuid::try_parse(&entry) {
                Ok(aaguid) if canonical => list.aaguids.push(aaguid),
                _ if entry.trim().is_empty() || entry.chars().any(char::is_control) => {
                    return Err(format!("model entry `{}`", entry.escape_debug()));
                }
                _ => list.model_names.push(entry),
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.aaguids.is_empty() && self.model_names.is_empty()
    }

    /// Whether the list names the authenticator: by its AAGUID, or by its metadata model
    /// name (ignoring case and runs of whitespace). Callers pass only a verified AAGUID and
    /// a name from metadata; an unverified AAGUID must never pass an allow list.
    pub fn matches(&self, aaguid: Uuid, model_name: Option<&str>) -> bool {
        self.aaguids.contains(&aaguid)
            || model_name.is_some_and(|name| {
                let key = model_key(name);
                self.model_names
                    .iter()
                    .any(|listed| model_key(listed) == key)
            })
    }
}

/// The form model names compare in: whitespace runs as one space, lowercase.
pub fn model_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// FIDO certification levels (MDS3 status names), ordered from none to the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum CertificationLevel {
    #[default]
    NotFidoCertified,
    FidoCertified,
    FidoCertifiedL1,
    FidoCertifiedL1Plus,
    FidoCertifiedL2,
    FidoCertifiedL2Plus,
    FidoCertifiedL3,
    FidoCertifiedL3Plus,
}

impl CertificationLevel {
    /// The MDS3 `AuthenticatorStatus` name.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificationLevel::NotFidoCertified => "NOT_FIDO_CERTIFIED",
            CertificationLevel::FidoCertified => "FIDO_CERTIFIED",
            CertificationLevel::FidoCertifiedL1 => "FIDO_CERTIFIED_L1",
            CertificationLevel::FidoCertifiedL1Plus => "FIDO_CERTIFIED_L1plus",
            CertificationLevel::FidoCertifiedL2 => "FIDO_CERTIFIED_L2",
            CertificationLevel::FidoCertifiedL2Plus => "FIDO_CERTIFIED_L2plus",
            CertificationLevel::FidoCertifiedL3 => "FIDO_CERTIFIED_L3",
            CertificationLevel::FidoCertifiedL3Plus => "FIDO_CERTIFIED_L3plus",
        }
    }
}

/// A decision: the denials (none when allowed), the settings and, per setting field, the
/// policy that decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub denials: Vec<Denial>,
    pub settings: Settings,
    pub decided_by: HashMap<String, String>,
    /// The policy set it was made with (a cached decision is tied to it).
    pub policy_set_version: i64,
}

impl Decision {
    /// The policy that decided a setting ("" for the default).
    pub fn decided(&self, field: &str) -> String {
        self.decided_by.get(field).cloned().unwrap_or_default()
    }

    /// A link's lifetime within `enrollment_link_ttl_hours` (the default and the longest;
    /// device and OTP links alike); the error says what is wrong with `asked` (the `ttl`).
    pub fn link_lifetime(
        &self,
        asked: Option<std::time::Duration>,
    ) -> Result<std::time::Duration, String> {
        let max_hours = match self.settings.enrollment_link_ttl_hours {
            0 => 24,
            hours => hours,
        };
        let max = std::time::Duration::from_secs(u64::from(max_hours) * 3_600);
        match asked {
            None => Ok(max),
            Some(ttl) if ttl.is_zero() => Err("must be positive".to_owned()),
            Some(ttl) if ttl > max => {
                let policy = self.decided("enrollment_link_ttl_hours");
                let by = if policy.is_empty() {
                    "the default".to_owned()
                } else {
                    format!("policy {policy}")
                };
                Err(format!("longer than the {max_hours} h that {by} allows"))
            }
            Some(ttl) => Ok(ttl),
        }
    }

    /// The limits the decision sets, each with the policy that set it.
    pub fn limits(&self) -> Limits {
        let limit =
            |value: Option<u32>, field: &str| value.map(|limit| (limit, self.decided(field)));
        Limits {
            per_user: limit(self.settings.max_token_per_user, "max_token_per_user"),
            active_per_user: limit(
                self.settings.max_active_token_per_user,
                "max_active_token_per_user",
            ),
            per_realm: limit(self.settings.max_token_per_realm, "max_token_per_realm"),
        }
    }
}

/// The limits that apply to an enrollment, each with the policy that set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_user: Option<(u32, String)>,
    pub active_per_user: Option<(u32, String)>,
    pub per_realm: Option<(u32, String)>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.per_user.is_some() || self.active_per_user.is_some() || self.per_realm.is_some()
    }
}

/// The policy service's verdict on a proposed PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinVerdict {
    pub valid: bool,
    pub violations: Vec<String>,
}

/// Why no decision could be had from the policy service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Unreachable, timed out, or failed on its side: fail closed.
    #[error("policy service unreachable ({0}); nothing was changed")]
    Unreachable(String),
    /// The policy service refused this service's API key: fail closed.
    #[error(
        "the device service's policy_service.api_key was refused by the policy service; nothing was changed"
    )]
    KeyRefused,
    /// An answer this service cannot use (a setting it does not know): fail closed.
    #[error("the policy service's answer is unusable ({0}); nothing was changed")]
    BadAnswer(String),
    /// The policy service refused the question itself (bad input, conflicting policies).
    #[error("policy service: {message}")]
    Rejected {
        rejection: Rejection,
        message: String,
        /// The `ErrorInfo` reason the policy service gave, passed on to the caller.
        reason: Option<String>,
        /// The request field it named (`ErrorInfo` metadata `field`), e.g. `client_ip`.
        field: Option<String>,
    },
}

/// The kinds of refusal the policy service answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    InvalidArgument,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_match_aaguids_and_model_names() {
        let yubikey: Uuid = "cb69481e-8ff7-4039-93ec-0a2729a154a8".parse().unwrap();
        let hello: Uuid = "08987058-cadc-4b81-b6e1-30de50dcbe96".parse().unwrap();
        let list =
            AaguidList::from_entries(vec![yubikey.to_string(), "YubiKey 5 Series".to_owned()])
                .unwrap();
        assert_eq!(list.aaguids, [yubikey]);
        assert!(list.matches(yubikey, None));
        assert!(list.matches(hello, Some("yubikey  5 SERIES")));
        assert!(!list.matches(hello, Some("Windows Hello")));
        assert!(!list.matches(hello, None));
        assert!(AaguidList::from_entries(vec!["".to_owned()]).is_err());
        assert!(AaguidList::from_entries(vec!["a\nb".to_owned()]).is_err());
        assert!(CertificationLevel::FidoCertifiedL1 < CertificationLevel::FidoCertifiedL1Plus);
    }
}
