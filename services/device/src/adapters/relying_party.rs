//! The WebAuthn relying party: ceremonies through webauthn-rs, with the trusted attestation
//! roots `enclave_only` devices must chain to (see `attestation_trust`). Ceremony state goes
//! out as JSON so it can be stored in the database and finished on any replica.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use enroll_shared::time::SharedClock;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AttestationFormat, AttestedPasskeyRegistration, Credential, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use super::attestation_trust::AttestationTrust;
use super::tpm_sha1;
use crate::config::WebauthnConfig;
use crate::domain::attestation::VerifiedAttestation;
use crate::domain::devices::DeviceKind;
use crate::error::DeviceError;
use crate::service::ports::{Authenticated, Challenge, RegisteredCredential, RelyingParty};

/// The server half of a registration, stored between Begin and Finish.
#[derive(Serialize, Deserialize)]
enum RegistrationState {
    Any(PasskeyRegistration),
    EnclaveOnly(AttestedPasskeyRegistration),
}

/// The attestation formats `enclave_only` asks browsers for (WebAuthn L3
/// `attestationFormats`, in preference order): every platform format webauthn-rs verifies.
/// `fido-u2f` (security keys only) and `none` would be refused anyway.
const ENCLAVE_ATTESTATION_FORMATS: [&str; 4] = ["apple", "android-key", "tpm", "packed"];
/// Every format whose statement webauthn-rs verifies, for `any` devices whose model matters.
const ANY_ATTESTATION_FORMATS: [&str; 5] = ["packed", "tpm", "apple", "android-key", "fido-u2f"];

/// The relying party of webauthn-rs with the configured trust anchors.
pub struct WebauthnRelyingParty {
    webauthn: Webauthn,
    trust: AttestationTrust,
    clock: SharedClock,
    /// `webauthn.accept_sha1_tpm_attestation`: verify RS1 `tpm` statements ourselves.
    accept_sha1_tpm: bool,
}

fn invalid_config(message: String) -> String {
    format!("webauthn: {message}")
}

impl WebauthnRelyingParty {
    /// `clock` is the instant attestation certificate chains are verified at.
    pub fn new(config: &WebauthnConfig, clock: SharedClock) -> Result<Self, String> {
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
        Ok(Self {
            webauthn,
            trust: AttestationTrust::load(config)?,
            clock,
            accept_sha1_tpm: config.accept_sha1_tpm_attestation,
        })
    }

    fn now(&self) -> std::time::SystemTime {
        self.clock.now().into()
    }

    /// Also trusts the attestation roots of certified models from the FIDO metadata, each
    /// for its own model (AAGUID) only.
    pub fn with_anchors(
        mut self,
        anchors: std::sync::Arc<dyn crate::service::ports::AttestationAnchors>,
    ) -> Self {
        self.trust = self
            .trust
            .with_metadata(super::metadata_anchors::MetadataAnchors::new(anchors));
        self
    }
}

/// The passkey ceremony inside an attested one. Finishing through it has webauthn-rs verify
/// everything (challenge, origin, user verification, the attestation statement's signature,
/// backup eligibility) except the certificate chain, which `AttestationTrust` verifies
/// against the configured roots at the service clock's instant. The roots stored in the
/// state are never used: whoever can write the database must not choose them.
fn without_roots(state: &AttestedPasskeyRegistration) -> Result<PasskeyRegistration, DeviceError> {
    let mut value = serde_json::to_value(state)
        .map_err(|error| DeviceError::corrupt("registration ceremony", error))?;
    let ceremony = value
        .get_mut("rs")
        .map(serde_json::Value::take)
        .ok_or_else(|| DeviceError::corrupt("registration ceremony", "no rs"))?;
    serde_json::from_value(serde_json::json!({ "rs": ceremony }))
        .map_err(|error| DeviceError::corrupt("registration ceremony", error))
}

impl WebauthnRelyingParty {
    /// An `enclave_only` registration whose `tpm` statement is signed with RS1 (Windows
    /// Hello), with `webauthn.accept_sha1_tpm_attestation` on: webauthn-rs verifies the
    /// ceremony (challenge, origin, RP id hash, flags, user verification, key algorithm,
    /// backup eligibility) with the statement replaced by `none`; `tpm_sha1` verifies the
    /// original statement; the chain and the `enclave_only` rules are those of every format.
    fn finish_rs1_tpm(
        &self,
        credential: &RegisterPublicKeyCredential,
        ceremony: &PasskeyRegistration,
    ) -> Result<(Passkey, VerifiedAttestation), DeviceError> {
        let statement_refused = |problem: String| DeviceError::Refused {
            reason: "ATTESTATION_NOT_TRUSTED",
            message: format!(
                "enclave_only refused this authenticator: its TPM attestation statement (RS1) does not verify: {problem}"
            ),
        };
        let mut stripped = credential.clone();
        stripped.response.attestation_object =
            tpm_sha1::without_statement(&credential.response.attestation_object)
                .map_err(statement_refused)?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&stripped, ceremony)
            .map_err(registration_refused)?;
        let mut inner = Credential::from(passkey);
        inner.attestation = tpm_sha1::verify_statement(
            &credential.response.attestation_object,
            &credential.response.client_data_json,
        )
        .map_err(statement_refused)?;
        inner.attestation_format = AttestationFormat::Tpm;
        let attestation = self.trust.require_enclave(&inner, credential, self.now())?;
        Ok((Passkey::from(inner), attestation))
    }
}

/// Asks for every platform attestation format and hints at the device's own authenticator.
fn ask_for_platform_attestation(options: &mut serde_json::Value) {
    if let Some(public_key) = options.get_mut("publicKey") {
        public_key["attestation"] = "direct".into();
        public_key["attestationFormats"] = ENCLAVE_ATTESTATION_FORMATS.to_vec().into();
        public_key["hints"] = vec!["client-device"].into();
    }
}

/// Asks for the authenticator's attestation in any verifiable format, without hinting at
/// a kind of authenticator (an `any` device may be a security key).
fn ask_for_any_attestation(options: &mut serde_json::Value) {
    if let Some(public_key) = options.get_mut("publicKey") {
        public_key["attestation"] = "direct".into();
        public_key["attestationFormats"] = ANY_ATTESTATION_FORMATS.to_vec().into();
    }
}

impl RelyingParty for WebauthnRelyingParty {
    /// Starts a registration; `exclude` lists the user's credential ids (base64url) so an
    /// authenticator is not registered twice.
    fn start_registration(
        &self,
        kind: DeviceKind,
        want_attestation: bool,
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
                let mut options = serde_json::to_value(&options).map_err(|error| {
                    DeviceError::Unavailable(format!("ceremony options encoding: {error}"))
                })?;
                if want_attestation {
                    ask_for_any_attestation(&mut options);
                }
                (serialize(&options)?, RegistrationState::Any(state))
            }
            DeviceKind::EnclaveOnly => {
                let roots = self.trust.roots().map(|roots| roots.into_owned()).ok_or_else(|| {
                    DeviceError::FailedPrecondition(
                        "enclave_only devices need trusted attestation roots: configure webauthn.vendor_roots or webauthn.trusted_roots (or webauthn.metadata with certified models)".to_owned(),
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
                let mut options = serde_json::to_value(&options).map_err(|error| {
                    DeviceError::Unavailable(format!("ceremony options encoding: {error}"))
                })?;
                ask_for_platform_attestation(&mut options);
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
        let (passkey, attestation) = match &state {
            RegistrationState::Any(state) => {
                let passkey = self
                    .webauthn
                    .finish_passkey_registration(&credential, state)
                    .map_err(registration_refused)?;
                let inner = Credential::from(passkey.clone());
                let attestation = self.trust.observe(&inner, &credential, self.now());
                (passkey, attestation)
            }
            RegistrationState::EnclaveOnly(state)
                if self.accept_sha1_tpm
                    && tpm_sha1::is_rs1_tpm(&credential.response.attestation_object) =>
            {
                self.finish_rs1_tpm(&credential, &without_roots(state)?)?
            }
            RegistrationState::EnclaveOnly(state) => {
                let passkey = self
                    .webauthn
                    .finish_passkey_registration(&credential, &without_roots(state)?)
                    .map_err(registration_refused)?;
                let inner = Credential::from(passkey.clone());
                let attestation = self
                    .trust
                    .require_enclave(&inner, &credential, self.now())?;
                (passkey, attestation)
            }
        };
        Ok(RegisteredCredential {
            credential_id: URL_SAFE_NO_PAD.encode::<&[u8]>(passkey.cred_id().as_ref()),
            passkey_json: serialize(&passkey)?,
            aaguid: attestation.aaguid.clone(),
            backup_eligible: attestation.backup_eligible,
            attestation,
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

fn backup_eligible_refused() -> DeviceError {
    DeviceError::Refused {
        reason: "BACKUP_ELIGIBLE_REFUSED",
        message: "enclave_only refused this authenticator: credential is backup eligible (synced): register a device-bound platform authenticator".to_owned(),
    }
}

fn registration_refused(error: WebauthnError) -> DeviceError {
    match error {
        WebauthnError::CredentialMayNotBeHardwareBound => backup_eligible_refused(),
        // Windows Hello signs TPM attestations with RS1; webauthn-rs refuses SHA-1.
        WebauthnError::CredentialInsecureCryptography => DeviceError::Refused {
            reason: "ATTESTATION_NOT_TRUSTED",
            message:
                "the attestation is signed with SHA-1 (RS1), which webauthn-rs refuses as insecure"
                    .to_owned(),
        },
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

    fn clock() -> SharedClock {
        std::sync::Arc::new(enroll_shared::time::SystemClock)
    }

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
            WebauthnRelyingParty::new(&empty, clock())
                .err()
                .unwrap()
                .contains("rp_origins")
        );
        let mut bad = config();
        bad.rp_origins = vec!["not a url".to_owned()];
        assert!(
            WebauthnRelyingParty::new(&bad, clock())
                .err()
                .unwrap()
                .contains("rp_origins")
        );
        let mut missing = config();
        missing.trusted_roots = vec!["/nonexistent/root.pem".into()];
        assert!(
            WebauthnRelyingParty::new(&missing, clock())
                .err()
                .unwrap()
                .contains("trusted_roots")
        );
    }

    #[test]
    fn enclave_only_without_roots_cannot_begin_and_any_can() {
        let party = WebauthnRelyingParty::new(&config(), clock()).unwrap();
        let handle = Uuid::new_v4();
        let refused = party
            .start_registration(DeviceKind::EnclaveOnly, true, handle, "alice@acme", &[])
            .unwrap_err();
        assert!(refused.to_string().contains("trusted_roots"));
        let challenge = party
            .start_registration(DeviceKind::Any, false, handle, "alice@acme", &[])
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

    #[test]
    fn any_asks_for_attestation_only_when_the_model_matters() {
        let party = WebauthnRelyingParty::new(&config(), clock()).unwrap();
        let options = |want: bool| -> serde_json::Value {
            let challenge = party
                .start_registration(DeviceKind::Any, want, Uuid::new_v4(), "alice@acme", &[])
                .unwrap();
            serde_json::from_str(&challenge.options_json).unwrap()
        };
        let plain = options(false);
        assert_ne!(plain["publicKey"]["attestation"], "direct");
        let attested = options(true);
        assert_eq!(attested["publicKey"]["attestation"], "direct");
        let formats = attested["publicKey"]["attestationFormats"]
            .as_array()
            .unwrap();
        for format in ["packed", "tpm", "apple", "android-key", "fido-u2f"] {
            assert!(formats.iter().any(|f| f == format), "{format} asked for");
        }
        // An `any` device may be a security key: no hint towards the platform's own.
        assert!(
            attested["publicKey"]
                .get("hints")
                .is_none_or(|h| h.is_null())
        );
    }
}
