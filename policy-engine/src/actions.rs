//! The enrollment actions: their names, value types, ranges, defaults and how equal-priority
//! policies combine them.
use std::fmt;

use serde::{Deserialize, Serialize};

use super::authenticators::{AllowList, CertificationLevel, ModelList};

/// Every action a policy may set, in `EnrollmentSettings` field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActionName {
    MaxTokenPerUser,
    MaxTokenPerRealm,
    MaxActiveTokenPerUser,
    TokenLabel,
    TokenIssuer,
    Autoassignment,
    OtpPinRandom,
    OtpPinRandomContent,
    OtpPinEncrypt,
    OtpPinMinLength,
    OtpPinMaxLength,
    OtpPinContents,
    LostTokenPwLen,
    LostTokenPwContents,
    LostTokenValid,
    WebauthnDeviceType,
    RequireDeviceApproval,
    EnrollmentLinkTtlHours,
    TokenTypes,
    WebauthnAaguidAllow,
    WebauthnAaguidDeny,
    WebauthnMinCertification,
    OtpVerifyWindowMinutes,
    OtpVerifyAttempts,
    RequireIdentity,
}

/// How values of one action are written and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A non-negative token count.
    Limit,
    /// An integer in an inclusive range.
    Int { min: u32, max: u32 },
    /// `true`/`false`/`1`/`0`; an empty value means `true`.
    Bool,
    /// A template with the tags `<u>`, `<r>`, `<s>`.
    Template,
    /// Character classes from `cCns`.
    Classes,
    /// `any` or `enclave_only`.
    DeviceType,
    /// A comma list of token types.
    TokenTypes,
    /// A comma list of AAGUIDs and model names; empty = no allow-list restriction.
    AllowedModels,
    /// A comma list of AAGUIDs and model names; empty = none denied.
    DeniedModels,
    /// A FIDO MDS3 certification status name.
    Certification,
}

/// How policies of equal priority that both set the action combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The smallest value wins (upper bounds: token limits, link lifetime, PIN max length).
    Smallest,
    /// The largest value wins (lower bounds: PIN min length).
    Largest,
    /// Different values are a conflict.
    MustAgree,
    /// Lists that restrict what passes: the intersection (an authenticator must pass all).
    Intersect,
    /// Lists of what is refused: the union.
    Union,
}

impl ActionName {
    pub const ALL: [ActionName; 25] = [
        ActionName::MaxTokenPerUser,
        ActionName::MaxTokenPerRealm,
        ActionName::MaxActiveTokenPerUser,
        ActionName::TokenLabel,
        ActionName::TokenIssuer,
        ActionName::Autoassignment,
        ActionName::OtpPinRandom,
        ActionName::OtpPinRandomContent,
        ActionName::OtpPinEncrypt,
        ActionName::OtpPinMinLength,
        ActionName::OtpPinMaxLength,
        ActionName::OtpPinContents,
        ActionName::LostTokenPwLen,
        ActionName::LostTokenPwContents,
        ActionName::LostTokenValid,
        ActionName::WebauthnDeviceType,
        ActionName::RequireDeviceApproval,
        ActionName::EnrollmentLinkTtlHours,
        ActionName::TokenTypes,
        ActionName::WebauthnAaguidAllow,
        ActionName::WebauthnAaguidDeny,
        ActionName::WebauthnMinCertification,
        ActionName::OtpVerifyWindowMinutes,
        ActionName::OtpVerifyAttempts,
        ActionName::RequireIdentity,
    ];

    /// The name policies store it under (privacyIDEA spelling where one exists).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionName::MaxTokenPerUser => "max_token_per_user",
            ActionName::MaxTokenPerRealm => "max_token_per_realm",
            ActionName::MaxActiveTokenPerUser => "max_active_token_per_user",
            ActionName::TokenLabel => "tokenlabel",
            ActionName::TokenIssuer => "tokenissuer",
            ActionName::Autoassignment => "autoassignment",
            ActionName::OtpPinRandom => "otp_pin_random",
            ActionName::OtpPinRandomContent => "otp_pin_random_content",
            ActionName::OtpPinEncrypt => "otp_pin_encrypt",
            ActionName::OtpPinMinLength => "otp_pin_minlength",
            ActionName::OtpPinMaxLength => "otp_pin_maxlength",
            ActionName::OtpPinContents => "otp_pin_contents",
            ActionName::LostTokenPwLen => "lostTokenPWLen",
            ActionName::LostTokenPwContents => "lostTokenPWContents",
            ActionName::LostTokenValid => "lostTokenValid",
            ActionName::WebauthnDeviceType => "webauthn_device_type",
            ActionName::RequireDeviceApproval => "require_device_approval",
            ActionName::EnrollmentLinkTtlHours => "enrollment_link_ttl_hours",
            ActionName::TokenTypes => "token_types",
            ActionName::WebauthnAaguidAllow => "webauthn_aaguid_allow",
            ActionName::WebauthnAaguidDeny => "webauthn_aaguid_deny",
            ActionName::WebauthnMinCertification => "webauthn_min_certification",
            ActionName::OtpVerifyWindowMinutes => "otp_verify_window_minutes",
            ActionName::OtpVerifyAttempts => "otp_verify_attempts",
            ActionName::RequireIdentity => "require_identity",
        }
    }

    /// The `EnrollmentSettings` field it decides (the key of `decided_by`).
    pub fn settings_field(self) -> &'static str {
        match self {
            ActionName::TokenLabel => "token_label",
            ActionName::TokenIssuer => "token_issuer",
            ActionName::LostTokenPwLen => "lost_token_pw_len",
            ActionName::LostTokenPwContents => "lost_token_pw_contents",
            ActionName::LostTokenValid => "lost_token_valid_days",
            other => other.as_str(),
        }
    }

    /// Parses a stored action name. Names compare exactly, except that the privacyIDEA
    /// camel-case names are also accepted in lower case.
    pub fn parse(name: &str) -> Option<ActionName> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == name)
            .or_else(|| {
                Self::ALL
                    .into_iter()
                    .find(|action| action.as_str().eq_ignore_ascii_case(name))
            })
    }

    pub fn kind(self) -> ValueKind {
        match self {
            ActionName::MaxTokenPerUser
            | ActionName::MaxTokenPerRealm
            | ActionName::MaxActiveTokenPerUser => ValueKind::Limit,
            ActionName::TokenLabel | ActionName::TokenIssuer => ValueKind::Template,
            ActionName::Autoassignment
            | ActionName::OtpPinEncrypt
            | ActionName::RequireDeviceApproval
            | ActionName::RequireIdentity => ValueKind::Bool,
            ActionName::OtpPinRandom | ActionName::LostTokenPwLen => {
                ValueKind::Int { min: 1, max: 64 }
            }
            ActionName::OtpPinMinLength | ActionName::OtpPinMaxLength => {
                ValueKind::Int { min: 0, max: 64 }
            }
            ActionName::LostTokenValid => ValueKind::Int { min: 1, max: 365 },
            ActionName::EnrollmentLinkTtlHours => ValueKind::Int { min: 1, max: 720 },
            ActionName::OtpVerifyWindowMinutes => ValueKind::Int { min: 1, max: 1440 },
            ActionName::OtpVerifyAttempts => ValueKind::Int { min: 1, max: 20 },
            ActionName::OtpPinRandomContent
            | ActionName::OtpPinContents
            | ActionName::LostTokenPwContents => ValueKind::Classes,
            ActionName::WebauthnDeviceType => ValueKind::DeviceType,
            ActionName::TokenTypes => ValueKind::TokenTypes,
            ActionName::WebauthnAaguidAllow => ValueKind::AllowedModels,
            ActionName::WebauthnAaguidDeny => ValueKind::DeniedModels,
            ActionName::WebauthnMinCertification => ValueKind::Certification,
        }
    }

    pub fn merge(self) -> Merge {
        match self {
            ActionName::MaxTokenPerUser
            | ActionName::MaxTokenPerRealm
            | ActionName::MaxActiveTokenPerUser
            | ActionName::EnrollmentLinkTtlHours
            | ActionName::OtpVerifyWindowMinutes
            | ActionName::OtpVerifyAttempts
            | ActionName::OtpPinMaxLength => Merge::Smallest,
            ActionName::OtpPinMinLength | ActionName::WebauthnMinCertification => Merge::Largest,
            ActionName::WebauthnAaguidAllow => Merge::Intersect,
            ActionName::WebauthnAaguidDeny => Merge::Union,
            _ => Merge::MustAgree,
        }
    }

    /// The longest value a policy may store for it (lists of AAGUIDs need room).
    pub fn max_value_chars(self) -> usize {
        match self.kind() {
            ValueKind::AllowedModels | ValueKind::DeniedModels => 16_384,
            _ => 1024,
        }
    }

    /// Validates and normalizes a value. The error names the action and says what is valid.
    pub fn parse_value(self, raw: &str) -> Result<ActionValue, String> {
        let value = raw.trim();
        let name = self.as_str();
        match self.kind() {
            ValueKind::Limit => value
                .parse::<u32>()
                .map(ActionValue::Int)
                .map_err(|_| format!("action `{name}` must be an integer >= 0, got `{value}`")),
            ValueKind::Int { min, max } => match value.parse::<u32>() {
                Ok(number) if (min..=max).contains(&number) => Ok(ActionValue::Int(number)),
                _ => Err(format!(
                    "action `{name}` must be an integer in {min}..={max}, got `{value}`"
                )),
            },
            ValueKind::Bool => match value.to_ascii_lowercase().as_str() {
                "" | "true" | "1" => Ok(ActionValue::Bool(true)),
                "false" | "0" => Ok(ActionValue::Bool(false)),
                _ => Err(format!(
                    "action `{name}` must be true/false (or 1/0), got `{value}`"
                )),
            },
            ValueKind::Template => parse_template(name, value).map(ActionValue::Text),
            ValueKind::Classes => CharClasses::parse(value)
                .map(ActionValue::Classes)
                .map_err(|bad| {
                    format!(
                        "action `{name}` must be character classes from `cCns` (c lowercase, C uppercase, n digits, s specials), got `{bad}`"
                    )
                }),
            ValueKind::DeviceType => match value.to_ascii_lowercase().as_str() {
                "any" => Ok(ActionValue::DeviceType(DeviceType::Any)),
                "enclave_only" => Ok(ActionValue::DeviceType(DeviceType::EnclaveOnly)),
                _ => Err(format!(
                    "action `{name}` must be `any` or `enclave_only`, got `{value}`"
                )),
            },
            ValueKind::TokenTypes => TokenTypes::parse(value)
                .map(ActionValue::TokenTypes)
                .map_err(|bad| {
                    format!(
                        "action `{name}` must be a comma list of totp, hotp, webauthn, password; `{bad}` is not one"
                    )
                }),
            ValueKind::AllowedModels => AllowList::parse(value)
                .map(ActionValue::AllowedModels)
                .map_err(|bad| models_error(name, &bad)),
            ValueKind::DeniedModels => ModelList::parse(value)
                .map(ActionValue::DeniedModels)
                .map_err(|bad| models_error(name, &bad)),
            ValueKind::Certification => CertificationLevel::parse(value)
                .map(ActionValue::Certification)
                .ok_or_else(|| {
                    let levels: Vec<&str> = CertificationLevel::ALL
                        .into_iter()
                        .map(CertificationLevel::as_str)
                        .collect();
                    format!(
                        "action `{name}` must be one of {}, got `{value}`",
                        levels.join(", ")
                    )
                }),
        }
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn models_error(name: &str, problem: &str) -> String {
    format!(
        "action `{name}` must be a comma list of AAGUIDs (8-4-4-4-12) and FIDO metadata model names: {problem}"
    )
}

fn parse_template(name: &str, value: &str) -> Result<String, String> {
    if value.is_empty() || value.chars().count() > 256 {
        return Err(format!(
            "action `{name}` must be a template of 1..=256 characters"
        ));
    }
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let after = &rest[start..];
        let tag = after.get(..3).unwrap_or(after);
        if !matches!(tag, "<u>" | "<r>" | "<s>") {
            return Err(format!(
                "action `{name}` may only use the tags <u> (user), <r> (realm), <s> (serial); found `{tag}`"
            ));
        }
        rest = &after[3..];
    }
    Ok(value.to_owned())
}

/// A validated action value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionValue {
    Int(u32),
    Bool(bool),
    Text(String),
    Classes(CharClasses),
    DeviceType(DeviceType),
    TokenTypes(TokenTypes),
    AllowedModels(AllowList),
    DeniedModels(ModelList),
    Certification(CertificationLevel),
}

impl ActionValue {
    pub fn as_int(&self) -> Option<u32> {
        match self {
            ActionValue::Int(number) => Some(*number),
            _ => None,
        }
    }

    /// The order `Merge::Smallest` and `Merge::Largest` compare by.
    pub fn rank(&self) -> Option<u32> {
        match self {
            ActionValue::Certification(level) => Some(level.rank()),
            other => other.as_int(),
        }
    }

    /// The combination of two equal-priority values of a `Merge::Intersect` or
    /// `Merge::Union` action; `None` for any other kind.
    pub fn combine(&self, other: &ActionValue) -> Option<ActionValue> {
        match (self, other) {
            (ActionValue::AllowedModels(a), ActionValue::AllowedModels(b)) => {
                Some(ActionValue::AllowedModels(a.intersection(b)))
            }
            (ActionValue::DeniedModels(a), ActionValue::DeniedModels(b)) => {
                Some(ActionValue::DeniedModels(a.union(b)))
            }
            _ => None,
        }
    }
}

impl fmt::Display for ActionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionValue::Int(number) => write!(f, "{number}"),
            ActionValue::Bool(flag) => write!(f, "{flag}"),
            ActionValue::Text(text) => f.write_str(text),
            ActionValue::Classes(classes) => f.write_str(&classes.to_string()),
            ActionValue::DeviceType(device_type) => f.write_str(device_type.as_str()),
            ActionValue::TokenTypes(types) => f.write_str(&types.to_string()),
            ActionValue::AllowedModels(list) => write!(f, "{list}"),
            ActionValue::DeniedModels(list) => write!(f, "{list}"),
            ActionValue::Certification(level) => f.write_str(level.as_str()),
        }
    }
}

/// The WebAuthn device types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceType {
    #[default]
    Any,
    EnclaveOnly,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Any => "any",
            DeviceType::EnclaveOnly => "enclave_only",
        }
    }
}

/// Character classes: `c` lowercase, `C` uppercase, `n` digits, `s` specials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CharClasses {
    pub lowercase: bool,
    pub uppercase: bool,
    pub digits: bool,
    pub specials: bool,
}

/// The special characters of class `s` (privacyIDEA's set).
pub const SPECIALS: &str = "!#$%&()*+,-./:;<=>?@[]^_";

impl CharClasses {
    /// `cCn`, the default of generated PINs and passwords.
    pub const LETTERS_AND_DIGITS: CharClasses = CharClasses {
        lowercase: true,
        uppercase: true,
        digits: true,
        specials: false,
    };

    /// Parses a non-empty class string; the error is the offending input.
    pub fn parse(value: &str) -> Result<CharClasses, String> {
        if value.is_empty() {
            return Err(String::new());
        }
        let mut classes = CharClasses::default();
        for ch in value.chars() {
            match ch {
                'c' => classes.lowercase = true,
                'C' => classes.uppercase = true,
                'n' => classes.digits = true,
                's' => classes.specials = true,
                _ => return Err(value.to_owned()),
            }
        }
        Ok(classes)
    }

    pub fn is_empty(self) -> bool {
        self == CharClasses::default()
    }
}

impl fmt::Display for CharClasses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (present, ch) in [
            (self.lowercase, 'c'),
            (self.uppercase, 'C'),
            (self.digits, 'n'),
            (self.specials, 's'),
        ] {
            if present {
                write!(f, "{ch}")?;
            }
        }
        Ok(())
    }
}

/// The enrollable token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    Totp,
    Hotp,
    Webauthn,
    Password,
}

impl TokenType {
    pub const ALL: [TokenType; 4] = [
        TokenType::Totp,
        TokenType::Hotp,
        TokenType::Webauthn,
        TokenType::Password,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Totp => "totp",
            TokenType::Hotp => "hotp",
            TokenType::Webauthn => "webauthn",
            TokenType::Password => "password",
        }
    }

    pub fn parse(value: &str) -> Option<TokenType> {
        let value = value.trim();
        Self::ALL
            .into_iter()
            .find(|token_type| token_type.as_str().eq_ignore_ascii_case(value))
    }
}

/// A set of token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTypes(u8);

impl TokenTypes {
    pub const ALL: TokenTypes = TokenTypes(0b1111);

    fn bit(token_type: TokenType) -> u8 {
        1 << (token_type as u8)
    }

    /// Parses a non-empty comma list; the error is the offending item.
    pub fn parse(value: &str) -> Result<TokenTypes, String> {
        let mut set = 0;
        for item in value.split(',') {
            let token_type = TokenType::parse(item).ok_or_else(|| item.trim().to_owned())?;
            set |= Self::bit(token_type);
        }
        Ok(TokenTypes(set))
    }

    pub fn contains(self, token_type: TokenType) -> bool {
        self.0 & Self::bit(token_type) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = TokenType> {
        TokenType::ALL
            .into_iter()
            .filter(move |token_type| self.contains(*token_type))
    }
}

impl fmt::Display for TokenTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(TokenType::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_its_name() {
        for action in ActionName::ALL {
            assert_eq!(ActionName::parse(action.as_str()), Some(action));
        }
        assert_eq!(
            ActionName::parse("losttokenpwlen"),
            Some(ActionName::LostTokenPwLen)
        );
        assert_eq!(ActionName::parse("max_tokens"), None);
    }

    #[test]
    fn values_are_validated_by_type_and_range() {
        let cases: &[(ActionName, &str, Option<ActionValue>)] = &[
            (ActionName::MaxTokenPerUser, "0", Some(ActionValue::Int(0))),
            (
                ActionName::MaxTokenPerUser,
                " 3 ",
                Some(ActionValue::Int(3)),
            ),
            (ActionName::MaxTokenPerUser, "-1", None),
            (ActionName::MaxTokenPerUser, "many", None),
            (ActionName::OtpPinRandom, "0", None),
            (ActionName::OtpPinRandom, "64", Some(ActionValue::Int(64))),
            (ActionName::OtpPinRandom, "65", None),
            (
                ActionName::LostTokenValid,
                "365",
                Some(ActionValue::Int(365)),
            ),
            (ActionName::LostTokenValid, "366", None),
            (ActionName::EnrollmentLinkTtlHours, "721", None),
            (ActionName::OtpVerifyWindowMinutes, "0", None),
            (
                ActionName::OtpVerifyWindowMinutes,
                "1440",
                Some(ActionValue::Int(1440)),
            ),
            (ActionName::OtpVerifyWindowMinutes, "1441", None),
            (ActionName::OtpVerifyAttempts, "0", None),
            (
                ActionName::OtpVerifyAttempts,
                "20",
                Some(ActionValue::Int(20)),
            ),
            (ActionName::OtpVerifyAttempts, "21", None),
            (ActionName::OtpPinMinLength, "0", Some(ActionValue::Int(0))),
            (
                ActionName::Autoassignment,
                "",
                Some(ActionValue::Bool(true)),
            ),
            (
                ActionName::Autoassignment,
                "FALSE",
                Some(ActionValue::Bool(false)),
            ),
            (
                ActionName::OtpPinEncrypt,
                "1",
                Some(ActionValue::Bool(true)),
            ),
            (ActionName::OtpPinEncrypt, "2", None),
            (
                ActionName::TokenLabel,
                "<u>@<r>",
                Some(ActionValue::Text("<u>@<r>".into())),
            ),
            (ActionName::TokenLabel, "<x>", None),
            (ActionName::TokenLabel, "", None),
            (ActionName::TokenIssuer, "ACME <r", None),
            (
                ActionName::LostTokenPwContents,
                "cn",
                Some(ActionValue::Classes(CharClasses {
                    lowercase: true,
                    digits: true,
                    ..Default::default()
                })),
            ),
            (ActionName::LostTokenPwContents, "cx", None),
            (ActionName::LostTokenPwContents, "", None),
            (
                ActionName::WebauthnDeviceType,
                "Enclave_Only",
                Some(ActionValue::DeviceType(DeviceType::EnclaveOnly)),
            ),
            (ActionName::WebauthnDeviceType, "platform", None),
            (
                ActionName::TokenTypes,
                "totp, webauthn",
                Some(ActionValue::TokenTypes(
                    TokenTypes::parse("totp,webauthn").unwrap(),
                )),
            ),
            (ActionName::TokenTypes, "totp,sms", None),
            (ActionName::TokenTypes, "", None),
            (
                ActionName::WebauthnAaguidAllow,
                "",
                Some(ActionValue::AllowedModels(AllowList::Unrestricted)),
            ),
            (
                ActionName::WebauthnAaguidAllow,
                "CB69481E-8FF7-4039-93EC-0A2729A154A8, YubiKey 5 Series",
                Some(ActionValue::AllowedModels(
                    AllowList::parse("cb69481e-8ff7-4039-93ec-0a2729a154a8,YubiKey 5 Series")
                        .unwrap(),
                )),
            ),
            (ActionName::WebauthnAaguidAllow, "cb69481e8ff7", None),
            (
                ActionName::WebauthnAaguidDeny,
                "",
                Some(ActionValue::DeniedModels(ModelList::default())),
            ),
            (ActionName::WebauthnAaguidDeny, "Titan,\u{1b}[31m", None),
            (
                ActionName::WebauthnMinCertification,
                "fido_certified_l2",
                Some(ActionValue::Certification(
                    CertificationLevel::FidoCertifiedL2,
                )),
            ),
            (ActionName::WebauthnMinCertification, "", None),
            (ActionName::WebauthnMinCertification, "L2", None),
        ];
        for (action, raw, expected) in cases {
            let parsed = action.parse_value(raw);
            match expected {
                Some(value) => assert_eq!(parsed.as_ref(), Ok(value), "{action} = {raw:?}"),
                None => {
                    let message = parsed.expect_err(raw);
                    assert!(message.contains(action.as_str()), "{message}");
                }
            }
        }
    }

    #[test]
    fn model_list_errors_name_the_action_and_the_item() {
        let message = ActionName::WebauthnAaguidAllow
            .parse_value("YubiKey 5 Series, cb69481e8ff7403993ec0a2729a154a8")
            .unwrap_err();
        assert!(message.contains("`webauthn_aaguid_allow`"), "{message}");
        assert!(
            message.contains("`cb69481e8ff7403993ec0a2729a154a8`"),
            "{message}"
        );
        let message = ActionName::WebauthnMinCertification
            .parse_value("gold")
            .unwrap_err();
        assert!(
            message.contains("FIDO_CERTIFIED_L3plus") && message.contains("`gold`"),
            "{message}"
        );
        assert_eq!(
            ActionName::WebauthnAaguidDeny.merge(),
            Merge::Union,
            "deny lists unite"
        );
        assert_eq!(ActionName::WebauthnAaguidAllow.max_value_chars(), 16_384);
    }

    #[test]
    fn classes_and_token_types_print_canonically() {
        assert_eq!(CharClasses::parse("nsCc").unwrap().to_string(), "cCns");
        assert_eq!(
            TokenTypes::parse("password,totp").unwrap().to_string(),
            "totp,password"
        );
        assert!(TokenTypes::ALL.contains(TokenType::Webauthn));
    }
}
