//! The effective enrollment settings of one subject.
use super::actions::{ActionName, ActionValue, CharClasses, DeviceType, TokenTypes};
use super::authenticators::{AllowList, CertificationLevel, ModelList};

/// One field per action; defaults are what applies when no policy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_token_per_user: Option<u32>,
    pub max_token_per_realm: Option<u32>,
    pub max_active_token_per_user: Option<u32>,
    pub token_label: String,
    pub token_issuer: String,
    pub autoassignment: bool,
    pub otp_pin_random: Option<u32>,
    pub otp_pin_random_content: CharClasses,
    pub otp_pin_encrypt: bool,
    pub otp_pin_minlength: u32,
    pub otp_pin_maxlength: u32,
    pub otp_pin_contents: CharClasses,
    pub lost_token_pw_len: u32,
    pub lost_token_pw_contents: CharClasses,
    pub lost_token_valid_days: u32,
    pub webauthn_device_type: DeviceType,
    pub require_device_approval: bool,
    pub enrollment_link_ttl_hours: u32,
    pub token_types: TokenTypes,
    /// Which authenticator models may register; `Only(empty)` lets none.
    pub webauthn_aaguid_allow: AllowList,
    /// Which authenticator models may not register.
    pub webauthn_aaguid_deny: ModelList,
    /// The lowest FIDO certification a registering model must have.
    pub webauthn_min_certification: CertificationLevel,
    /// Minutes a verify-pending OTP enrollment waits for its first code.
    pub otp_verify_window_minutes: u32,
    /// Wrong first codes after which a verify-pending OTP enrollment fails.
    pub otp_verify_attempts: u32,
    /// Whether redeeming an OTP enrollment link needs the gate's verified identity of the
    /// link's user (otherwise the link is a bearer credential).
    pub require_identity: bool,
}

/// The label template when no policy sets one: the serial.
pub const DEFAULT_LABEL: &str = "<s>";
/// The issuer when no policy sets one.
pub const DEFAULT_ISSUER: &str = "enroll";

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_token_per_user: None,
            max_token_per_realm: None,
            max_active_token_per_user: None,
            token_label: DEFAULT_LABEL.to_owned(),
            token_issuer: DEFAULT_ISSUER.to_owned(),
            autoassignment: false,
            otp_pin_random: None,
            otp_pin_random_content: CharClasses::LETTERS_AND_DIGITS,
            otp_pin_encrypt: false,
            otp_pin_minlength: 0,
            otp_pin_maxlength: 64,
            otp_pin_contents: CharClasses::default(),
            lost_token_pw_len: 10,
            lost_token_pw_contents: CharClasses::LETTERS_AND_DIGITS,
            lost_token_valid_days: 10,
            webauthn_device_type: DeviceType::Any,
            require_device_approval: true,
            enrollment_link_ttl_hours: 24,
            token_types: TokenTypes::ALL,
            webauthn_aaguid_allow: AllowList::Unrestricted,
            webauthn_aaguid_deny: ModelList::default(),
            webauthn_min_certification: CertificationLevel::NotFidoCertified,
            otp_verify_window_minutes: 10,
            otp_verify_attempts: 5,
            require_identity: false,
        }
    }
}

impl Settings {
    /// Applies a decided value. Values were validated on write, so the kinds match; a
    /// mismatch (impossible by construction) leaves the default.
    pub fn apply(&mut self, action: ActionName, value: &ActionValue) {
        use ActionValue as V;
        match (action, value) {
            (ActionName::MaxTokenPerUser, V::Int(n)) => self.max_token_per_user = Some(*n),
            (ActionName::MaxTokenPerRealm, V::Int(n)) => self.max_token_per_realm = Some(*n),
            (ActionName::MaxActiveTokenPerUser, V::Int(n)) => {
                self.max_active_token_per_user = Some(*n)
            }
            (ActionName::TokenLabel, V::Text(t)) => self.token_label = t.clone(),
            (ActionName::TokenIssuer, V::Text(t)) => self.token_issuer = t.clone(),
            (ActionName::Autoassignment, V::Bool(b)) => self.autoassignment = *b,
            (ActionName::OtpPinRandom, V::Int(n)) => self.otp_pin_random = Some(*n),
            (ActionName::OtpPinRandomContent, V::Classes(c)) => self.otp_pin_random_content = *c,
            (ActionName::OtpPinEncrypt, V::Bool(b)) => self.otp_pin_encrypt = *b,
            (ActionName::OtpPinMinLength, V::Int(n)) => self.otp_pin_minlength = *n,
            (ActionName::OtpPinMaxLength, V::Int(n)) => self.otp_pin_maxlength = *n,
            (ActionName::OtpPinContents, V::Classes(c)) => self.otp_pin_contents = *c,
            (ActionName::LostTokenPwLen, V::Int(n)) => self.lost_token_pw_len = *n,
            (ActionName::LostTokenPwContents, V::Classes(c)) => self.lost_token_pw_contents = *c,
            (ActionName::LostTokenValid, V::Int(n)) => self.lost_token_valid_days = *n,
            (ActionName::WebauthnDeviceType, V::DeviceType(d)) => self.webauthn_device_type = *d,
            (ActionName::RequireDeviceApproval, V::Bool(b)) => self.require_device_approval = *b,
            (ActionName::EnrollmentLinkTtlHours, V::Int(n)) => self.enrollment_link_ttl_hours = *n,
            (ActionName::TokenTypes, V::TokenTypes(t)) => self.token_types = *t,
            (ActionName::WebauthnAaguidAllow, V::AllowedModels(l)) => {
                self.webauthn_aaguid_allow = l.clone()
            }
            (ActionName::WebauthnAaguidDeny, V::DeniedModels(l)) => {
                self.webauthn_aaguid_deny = l.clone()
            }
            (ActionName::WebauthnMinCertification, V::Certification(c)) => {
                self.webauthn_min_certification = *c
            }
            (ActionName::OtpVerifyWindowMinutes, V::Int(n)) => self.otp_verify_window_minutes = *n,
            (ActionName::OtpVerifyAttempts, V::Int(n)) => self.otp_verify_attempts = *n,
            (ActionName::RequireIdentity, V::Bool(b)) => self.require_identity = *b,
            _ => {}
        }
    }

    /// Renders `<u>`, `<r>` and, when a serial is known, `<s>` in label and issuer.
    pub fn render_templates(&mut self, user: &str, realm: &str, serial: Option<&str>) {
        for template in [&mut self.token_label, &mut self.token_issuer] {
            let mut rendered = template.replace("<u>", user).replace("<r>", realm);
            if let Some(serial) = serial {
                rendered = rendered.replace("<s>", serial);
            }
            *template = rendered;
        }
    }
}
