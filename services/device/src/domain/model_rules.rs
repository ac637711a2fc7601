//! The policy's authenticator model rules (`webauthn_aaguid_allow`, `webauthn_aaguid_deny`,
//! `webauthn_min_certification`) applied to one authenticator. An AAGUID counts for an
//! allow-list or a minimum certification only when the attestation certificate binds it (a
//! verified chain under a blanket vendor root proves the hardware, not the model); a deny-list match refuses even an unverified claim (claiming to be a denied model is
//! reason enough).
use uuid::Uuid;

use super::decision::{CertificationLevel as PolicyLevel, Settings};
use super::metadata::CertificationLevel;

/// What is known of an authenticator's model.
#[derive(Debug, Clone, Copy)]
pub struct ModelFacts<'a> {
    /// The AAGUID the authenticator reports ("" when none).
    pub aaguid: &'a str,
    /// Whether the attestation certificate binds that AAGUID (FIDO AAGUID extension, or a
    /// root the FIDO metadata gives for that model alone), as recorded at registration.
    pub verified: bool,
    /// The model's description in the FIDO metadata.
    pub model: Option<&'a str>,
    /// The model's certification level in the FIDO metadata.
    pub certification: Option<CertificationLevel>,
}

/// Which rule refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRefusal {
    /// The policy setting that refused (its deciding policy is in `decided_by`).
    pub setting: &'static str,
    pub message: String,
}

impl ModelFacts<'_> {
    fn aaguid(&self) -> Option<Uuid> {
        Uuid::parse_str(self.aaguid.trim())
            .ok()
            .filter(|aaguid| !aaguid.is_nil())
    }

    /// The model as a message names it.
    fn name(&self) -> String {
        match (self.model, self.aaguid()) {
            (Some(model), Some(aaguid)) if !model.is_empty() => format!("`{model}` ({aaguid})"),
            (_, Some(aaguid)) => format!("AAGUID {aaguid}"),
            _ => "an authenticator without an AAGUID".to_owned(),
        }
    }

    /// The AAGUID, when a verified chain vouches for it.
    fn verified_aaguid(&self) -> Option<Uuid> {
        self.aaguid().filter(|_| self.verified)
    }
}

/// The policy level of a metadata certification level.
fn policy_level(level: CertificationLevel) -> PolicyLevel {
    match level {
        CertificationLevel::L1 => PolicyLevel::FidoCertifiedL1,
        CertificationLevel::L1Plus => PolicyLevel::FidoCertifiedL1Plus,
        CertificationLevel::L2 => PolicyLevel::FidoCertifiedL2,
        CertificationLevel::L2Plus => PolicyLevel::FidoCertifiedL2Plus,
        CertificationLevel::L3 => PolicyLevel::FidoCertifiedL3,
        CertificationLevel::L3Plus => PolicyLevel::FidoCertifiedL3Plus,
    }
}

const UNVERIFIED: &str = "its model is not verified: no attestation certificate chained to a \
     trusted root binds its AAGUID (a blanket vendor root proves the hardware, not the model), \
     so its model is only a claim";

/// Whether the policy's model rules accept the authenticator.
pub fn check_model_rules(settings: &Settings, facts: &ModelFacts<'_>) -> Result<(), ModelRefusal> {
    let name = facts.name();
    if let Some(aaguid) = facts.aaguid()
        && settings.webauthn_aaguid_deny.matches(aaguid, facts.model)
    {
        return Err(ModelRefusal {
            setting: "webauthn_aaguid_deny",
            message: format!("{name} is on webauthn_aaguid_deny"),
        });
    }
    if let Some(allow) = &settings.webauthn_aaguid_allow {
        let allowed = facts
            .verified_aaguid()
            .is_some_and(|aaguid| allow.matches(aaguid, facts.model));
        if !allowed {
            let why = if facts.verified_aaguid().is_none() {
                UNVERIFIED.to_owned()
            } else {
                "it is not on the list".to_owned()
            };
            return Err(ModelRefusal {
                setting: "webauthn_aaguid_allow",
                message: format!("{name} is not allowed by webauthn_aaguid_allow: {why}"),
            });
        }
    }
    let minimum = settings.webauthn_min_certification;
    if minimum > PolicyLevel::NotFidoCertified {
        let level = facts
            .certification
            .filter(|_| facts.verified_aaguid().is_some());
        if level.is_none_or(|level| policy_level(level) < minimum) {
            let why = match (facts.verified_aaguid(), facts.certification) {
                (None, _) => UNVERIFIED.to_owned(),
                (Some(_), None) => "the FIDO metadata lists no certification for it".to_owned(),
                (Some(_), Some(level)) => format!("it is {level}"),
            };
            return Err(ModelRefusal {
                setting: "webauthn_min_certification",
                message: format!(
                    "{name} does not meet webauthn_min_certification {}: {why}",
                    minimum.as_str()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::AaguidList;

    const KEY: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";

    fn facts(verified: bool, certification: Option<CertificationLevel>) -> ModelFacts<'static> {
        ModelFacts {
            aaguid: KEY,
            verified,
            model: Some("YubiKey 5 Series"),
            certification,
        }
    }

    fn list(entries: &[&str]) -> AaguidList {
        AaguidList::from_entries(entries.iter().map(|entry| (*entry).to_owned()).collect()).unwrap()
    }

    #[test]
    fn no_rules_accept_anything() {
        let settings = Settings::default();
        assert!(check_model_rules(&settings, &facts(false, None)).is_ok());
        let none = ModelFacts {
            aaguid: "",
            verified: false,
            model: None,
            certification: None,
        };
        assert!(check_model_rules(&settings, &none).is_ok());
    }

    #[test]
    fn a_deny_list_refuses_even_an_unverified_claim() {
        let settings = Settings {
            webauthn_aaguid_deny: list(&[KEY]),
            ..Settings::default()
        };
        for verified in [true, false] {
            let refusal = check_model_rules(&settings, &facts(verified, None)).unwrap_err();
            assert_eq!(refusal.setting, "webauthn_aaguid_deny");
            assert!(refusal.message.contains("YubiKey 5 Series"), "{refusal:?}");
        }
        // By model name, too.
        let by_name = Settings {
            webauthn_aaguid_deny: list(&["yubikey 5 series"]),
            ..Settings::default()
        };
        assert!(check_model_rules(&by_name, &facts(false, None)).is_err());
    }

    #[test]
    fn an_allow_list_passes_only_a_verified_model() {
        for entry in [KEY, "YubiKey 5 Series"] {
            let settings = Settings {
                webauthn_aaguid_allow: Some(list(&[entry])),
                ..Settings::default()
            };
            assert!(check_model_rules(&settings, &facts(true, None)).is_ok());
            let refusal = check_model_rules(&settings, &facts(false, None)).unwrap_err();
            assert_eq!(refusal.setting, "webauthn_aaguid_allow");
            assert!(refusal.message.contains("not verified"), "{refusal:?}");
        }
        let other = Settings {
            webauthn_aaguid_allow: Some(list(&["08987058-cadc-4b81-b6e1-30de50dcbe96"])),
            ..Settings::default()
        };
        let refusal = check_model_rules(&other, &facts(true, None)).unwrap_err();
        assert!(refusal.message.contains("not on the list"), "{refusal:?}");
        // An empty allow-list (conflicting policies) admits nothing.
        let empty = Settings {
            webauthn_aaguid_allow: Some(AaguidList::default()),
            ..Settings::default()
        };
        assert!(check_model_rules(&empty, &facts(true, None)).is_err());
    }

    #[test]
    fn a_minimum_certification_needs_a_verified_certified_model() {
        let settings = Settings {
            webauthn_min_certification: PolicyLevel::FidoCertifiedL2,
            ..Settings::default()
        };
        assert!(check_model_rules(&settings, &facts(true, Some(CertificationLevel::L2))).is_ok());
        assert!(
            check_model_rules(&settings, &facts(true, Some(CertificationLevel::L3Plus))).is_ok()
        );
        for (facts, why) in [
            (
                facts(true, Some(CertificationLevel::L1Plus)),
                "FIDO_CERTIFIED_L1plus",
            ),
            (facts(true, None), "no certification"),
            (facts(false, Some(CertificationLevel::L3)), "not verified"),
        ] {
            let refusal = check_model_rules(&settings, &facts).unwrap_err();
            assert_eq!(refusal.setting, "webauthn_min_certification");
            assert!(
                refusal.message.contains(why) && refusal.message.contains("FIDO_CERTIFIED_L2"),
                "{refusal:?}"
            );
        }
    }
}
