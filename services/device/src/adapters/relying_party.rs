//! The WebAuthn relying party: ceremonies through webauthn-rs, with the trusted attestation
//! roots `enclave_only` devices must chain to. Ceremony state goes out as JSON so it can be
//! stored in the database and finished on any replica.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, AttestationMetadata, AttestedPasskeyRegistration, Credential, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::config::WebauthnConfig;
use crate::domain::devices::DeviceKind;
use crate::error::DeviceError;
use crate::service::ports::{
    AttestationAnchors, Authenticated, Challenge, RegisteredCredential, RelyingParty,
};

/// The server half of a registration, stored between Begin and Finish.
#[derive(Serialize, Deserialize)]
enum RegistrationState {
    Any(PasskeyRegistration),
    EnclaveOnly(AttestedPasskeyRegistration),
}

/// The relying party of webauthn-rs with the configured trust anchors.
pub struct WebauthnRelyingParty {
    webauthn: Webauthn,
    trusted_roots: Option<AttestationCaList>,
    /// Roots of certified models from the FIDO metadata, each for its model's AAGUID only.
    anchors: Option<Arc<dyn AttestationAnchors>>,
    /// The anchors as a CA list, with the BLOB number they were built from.
    anchor_cache: Mutex<Option<(u64, AttestationCaList)>>,
}

fn invalid_config(message: String) -> String {
    format!("webauthn: {message}")
}

impl WebauthnRelyingParty {
    pub fn new(config: &WebauthnConfig) -> Result<Self, String> {
        let mut origins = config.rp_origins.iter().map(|origin| {
            Url::parse(origin)
                .map_err(|error| invalid_config(format!("rp_origins `{origin}`: {error}")))
        });
        let first = origins
            .next()
            .ok_or_else(|| invalid_config("rp_origins is empty".to_owned()))??;
        let mut builder = WebauthnBuilder::new(&config.rp_id, &first)
            .map_err(|error| invalid_config(format!("rp_id `{}`: {error}", config.rp_id)))?
            .rp_name(&config.rp_name)
            .allow_any_port(config.allow_any_port)
            .timeout(config.ceremony_ttl());
        for origin in origins {
            builder = builder.append_allowed_origin(&origin?);
        }
        let webauthn = builder
            .build()
            .map_err(|error| invalid_config(error.to_string()))?;
        let mut roots: Option<AttestationCaList> = None;
        for path in &config.trusted_roots {
            let pem = std::fs::read(path).map_err(|error| {
                invalid_config(format!("trusted_roots {}: {error}", path.display()))
            })?;
            let list = AttestationCaList::try_from(pem.as_slice()).map_err(|error| {
                invalid_config(format!("trusted_roots {}: {error:?}", path.display()))
            })?;
            match &mut roots {
                Some(roots) => roots.union(&list),
                None => roots = Some(list),
            }
        }
        Ok(Self {
            webauthn,
            trusted_roots: roots,
            anchors: None,
            anchor_cache: Mutex::new(None),
        })
    }

    /// Also trusts the attestation roots of certified models from the FIDO metadata.
    pub fn with_anchors(mut self, anchors: Arc<dyn AttestationAnchors>) -> Self {
        self.anchors = Some(anchors);
        self
    }

    /// The roots an `enclave_only` attestation may chain to: the configured ones and the
    /// metadata's certified models (bound to their AAGUIDs); `None` when there are none.
    fn roots(&self) -> Option<AttestationCaList> {
        let mut roots = self.trusted_roots.clone();
        if let Some((no, anchors)) = self.anchors.as_ref().and_then(|anchors| anchors.current()) {
            let mut cache = self
                .anchor_cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if cache.as_ref().is_none_or(|(built, _)| *built != no) {
                let mut builder = AttestationCaListBuilder::new();
                for anchor in anchors.iter() {
                    for der in &anchor.roots_der {
                        if let Err(error) = builder.insert_device_der(
                            der,
                            anchor.aaguid,
                            anchor.description.clone(),
                            Default::default(),
                        ) {
                            tracing::warn!(aaguid = %anchor.aaguid, ?error, "FIDO metadata attestation root skipped");
                        }
                    }
                }
                *cache = Some((no, builder.build()));
            }
            if let Some((_, list)) = cache.as_ref().filter(|(_, list)| !list.is_empty()) {
                match &mut roots {
                    Some(roots) => roots.union(list),
                    None => roots = Some(list.clone()),
                }
            }
        }
        roots
    }
}

impl WebauthnRelyingParty {
    /// The stored ceremony state with its trust anchors replaced by the configured ones:
    /// whoever can write the database must not choose the roots an attestation chains to.
    fn with_configured_roots(
        &self,
        state: &AttestedPasskeyRegistration,
    ) -> Result<AttestedPasskeyRegistration, DeviceError> {
        let roots = self.roots().ok_or_else(|| {
            DeviceError::FailedPrecondition(
                "enclave_only devices need webauthn.trusted_roots (or FIDO metadata with certified models)".to_owned(),
            )
        })?;
        let mut value = serde_json::to_value(state)
            .map_err(|error| DeviceError::corrupt("registration ceremony", error))?;
        let slot = value
            .get_mut("ca_list")
            .ok_or_else(|| DeviceError::corrupt("registration ceremony", "no ca_list"))?;
        *slot = serde_json::to_value(&roots)
            .map_err(|error| DeviceError::corrupt("trusted roots", error))?;
        serde_json::from_value(value)
            .map_err(|error| DeviceError::corrupt("registration ceremony", error))
    }
}

impl RelyingParty for WebauthnRelyingParty {
    /// Starts a registration; `exclude` lists the user's credential ids (base64url) so an
    /// authenticator is not registered twice.
    fn start_registration(
        &self,
        kind: DeviceKind,
        user_handle: Uuid,
        user_name: &str,
        exclude: &[String],
    ) -> Result<Challenge, DeviceError> {
        let exclude = exclude
            .iter()
            .filter_map(|id| URL_SAFE_NO_PAD.decode(id).ok())
            .collect::<Vec<_>>();
        let exclude = Some(exclude).filter(|ids| !ids.is_empty());
        let (options, state) = match kind {
            DeviceKind::Any => {
                let (options, state) = self
                    .webauthn
                    .start_passkey_registration(user_handle, user_name, user_name, exclude)
                    .map_err(ceremony_error)?;
                (serialize(&options)?, RegistrationState::Any(state))
            }
            DeviceKind::EnclaveOnly => {
                let roots = self.roots().ok_or_else(|| {
                    DeviceError::FailedPrecondition(
                        "enclave_only devices need trusted attestation roots: configure webauthn.trusted_roots (or webauthn.metadata)".to_owned(),
                    )
                })?;
                // No attachment hint: enclave_only is enforced by the attestation roots and
                // the backup-eligibility check, not by asking the browser.
                let (options, state) = self
                    .webauthn
                    .start_attested_passkey_registration(
                        user_handle,
                        user_name,
                        user_name,
                        exclude,
                        roots,
                        None,
                    )
                    .map_err(ceremony_error)?;
                (serialize(&options)?, RegistrationState::EnclaveOnly(state))
            }
        };
        Ok(Challenge {
            options_json: options,
            state_json: serialize(&state)?,
        })
    }

    /// Verifies the browser's credential against the stored state.
    fn finish_registration(
        &self,
        state_json: &str,
        credential_json: &str,
    ) -> Result<RegisteredCredential, DeviceError> {
        let state: RegistrationState = deserialize(state_json)?;
        let credential: RegisterPublicKeyCredential = serde_json::from_str(credential_json)
            .map_err(|error| {
                DeviceError::invalid(
                    "credential_json",
                    format!("not a WebAuthn registration credential: {error}"),
                )
            })?;
        let (passkey, attested) = match &state {
            RegistrationState::Any(state) => (
                self.webauthn
                    .finish_passkey_registration(&credential, state)
                    .map_err(registration_refused)?,
                false,
            ),
            RegistrationState::EnclaveOnly(state) => {
                let state = self.with_configured_roots(state)?;
                (
                    Passkey::from(
                        self.webauthn
                            .finish_attested_passkey_registration(&credential, &state)
                            .map_err(registration_refused)?,
                    ),
                    true,
                )
            }
        };
        let inner = Credential::from(passkey.clone());
        if attested && inner.backup_eligible {
            // webauthn-rs refuses these already; checked again because it is our guarantee.
            return Err(backup_eligible_refused());
        }
        Ok(RegisteredCredential {
            credential_id: URL_SAFE_NO_PAD.encode::<&[u8]>(passkey.cred_id().as_ref()),
            passkey_json: serialize(&passkey)?,
            aaguid: aaguid(&inner.attestation.metadata),
            backup_eligible: inner.backup_eligible,
            attestation_verified: attested,
        })
    }

    /// Starts an authentication with the given passkeys (JSON as stored).
    fn start_authentication(&self, passkeys: &[String]) -> Result<Challenge, DeviceError> {
        let passkeys = passkeys
            .iter()
            .map(|json| deserialize::<Passkey>(json))
            .collect::<Result<Vec<_>, _>>()?;
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(ceremony_error)?;
        Ok(Challenge {
            options_json: serialize(&options)?,
            state_json: serialize(&state)?,
        })
    }

    /// Verifies an assertion; `stored` maps the credential id used to its stored passkey.
    fn finish_authentication(
        &self,
        state_json: &str,
        assertion_json: &str,
        stored: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Authenticated, DeviceError> {
        let state: PasskeyAuthentication = deserialize(state_json)?;
        let assertion: PublicKeyCredential =
            serde_json::from_str(assertion_json).map_err(|error| {
                DeviceError::invalid(
                    "credential_json",
                    format!("not a WebAuthn assertion: {error}"),
                )
            })?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&assertion, &state)
            .map_err(|error| DeviceError::Refused {
                reason: "WEBAUTHN_VERIFICATION_FAILED",
                message: format!("the assertion was refused: {error}"),
            })?;
        let credential_id = URL_SAFE_NO_PAD.encode::<&[u8]>(result.cred_id().as_ref());
        let updated_passkey_json = match stored(&credential_id) {
            Some(json) => {
                let mut passkey: Passkey = deserialize(&json)?;
                match passkey.update_credential(&result) {
                    Some(true) => Some(serialize(&passkey)?),
                    _ => None,
                }
            }
            None => None,
        };
        Ok(Authenticated {
            credential_id,
            counter: result.counter(),
            backup_eligible: result.backup_eligible() || result.backup_state(),
            updated_passkey_json,
        })
    }
}

fn aaguid(metadata: &AttestationMetadata) -> String {
    match metadata {
        AttestationMetadata::Packed { aaguid } | AttestationMetadata::Tpm { aaguid, .. } => {
            aaguid.to_string()
        }
        _ => String::new(),
    }
}

fn backup_eligible_refused() -> DeviceError {
    DeviceError::Refused {
        reason: "BACKUP_ELIGIBLE_REFUSED",
        message: "enclave_only refuses backup-eligible (synced) credentials: register a device-bound platform authenticator".to_owned(),
    }
}

fn registration_refused(error: WebauthnError) -> DeviceError {
    match error {
        WebauthnError::CredentialMayNotBeHardwareBound => backup_eligible_refused(),
        WebauthnError::AttestationNotVerifiable
        | WebauthnError::AttestationUntrustedAaguid
        | WebauthnError::AttestationChainNotTrusted(_)
        | WebauthnError::AttestationTrustFailure
        | WebauthnError::AttestationNotSupported
        | WebauthnError::AttestationLeafCertMissing
        | WebauthnError::MissingAttestationCaList
        | WebauthnError::AttestationFormatMissingAaguid
        | WebauthnError::AttestationCertificateTrustStoreEmpty
        | WebauthnError::AttestationCertificateRequirementsNotMet => DeviceError::Refused {
            reason: "ATTESTATION_NOT_TRUSTED",
            message: format!(
                "enclave_only needs an attestation chained to a trusted root; this authenticator's was refused ({error})"
            ),
        },
        other => DeviceError::Refused {
            reason: "WEBAUTHN_VERIFICATION_FAILED",
            message: format!("the registration was refused: {other}"),
        },
    }
}

fn ceremony_error(error: WebauthnError) -> DeviceError {
    DeviceError::FailedPrecondition(format!("cannot start the WebAuthn ceremony: {error}"))
}

fn serialize(value: &impl Serialize) -> Result<String, DeviceError> {
    serde_json::to_string(value)
        .map_err(|error| DeviceError::Unavailable(format!("ceremony state encoding: {error}")))
}

fn deserialize<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, DeviceError> {
    serde_json::from_str(json).map_err(|error| {
        DeviceError::FailedPrecondition(format!("stored WebAuthn state is unreadable: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebauthnConfig {
        WebauthnConfig {
            rp_origins: vec!["https://enroll.example.com".to_owned()],
            rp_id: "example.com".to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn configuration_errors_name_the_setting() {
        let mut empty = config();
        empty.rp_origins.clear();
        assert!(
            WebauthnRelyingParty::new(&empty)
                .err()
                .unwrap()
                .contains("rp_origins")
        );
        let mut bad = config();
        bad.rp_origins = vec!["not a url".to_owned()];
        assert!(
            WebauthnRelyingParty::new(&bad)
                .err()
                .unwrap()
                .contains("rp_origins")
        );
        let mut missing = config();
        missing.trusted_roots = vec!["/nonexistent/root.pem".into()];
        assert!(
            WebauthnRelyingParty::new(&missing)
                .err()
                .unwrap()
                .contains("trusted_roots")
        );
    }

    #[test]
    fn enclave_only_without_roots_cannot_begin_and_any_can() {
        let party = WebauthnRelyingParty::new(&config()).unwrap();
        let handle = Uuid::new_v4();
        let refused = party
            .start_registration(DeviceKind::EnclaveOnly, handle, "alice@acme", &[])
            .unwrap_err();
        assert!(refused.to_string().contains("trusted_roots"));
        let challenge = party
            .start_registration(DeviceKind::Any, handle, "alice@acme", &[])
            .unwrap();
        let options: serde_json::Value = serde_json::from_str(&challenge.options_json).unwrap();
        assert_eq!(options["publicKey"]["rp"]["id"], "example.com");
        assert!(
            party
                .finish_registration(&challenge.state_json, "{}")
                .is_err()
        );
        assert!(matches!(
            party.finish_registration("not json", "{}"),
            Err(DeviceError::FailedPrecondition(_))
        ));
    }
}
