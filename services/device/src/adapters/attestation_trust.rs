//! The trust decision on a registration's attestation. webauthn-rs verifies the attestation
//! statement (its signature over the credential); this module verifies the certificate
//! chain against the configured roots at the service clock's instant (webauthn-rs would use
//! the system time, and vendor leaf certificates live days), applies the same AAGUID-vs-CA
//! rule webauthn-rs does, and says what `enclave_only` refuses, naming what failed.
use std::collections::BTreeMap;
use std::time::SystemTime;

use crypto_glue::der::Decode;
use crypto_glue::der::asn1::BitString;
use crypto_glue::x509::{Certificate, ObjectIdentifier};
use webauthn_rs::prelude::{
    AttestationCaList, AttestationMetadata, Credential, ParsedAttestationData,
    RegisterPublicKeyCredential, Uuid,
};
use webauthn_rs_core::attestation::verify_attestation_ca_chain;
use webauthn_rs_core::internals::AuthenticatorData;
use webauthn_rs_core::proto::Registration;

use super::metadata_anchors::{METADATA_ROOT, MetadataAnchors};
use super::vendor_roots::vendor_roots;
use crate::config::WebauthnConfig;
use crate::domain::attestation::VerifiedAttestation;
use crate::error::DeviceError;

/// id-fido-u2f-ce-transports: the transports the vendor certifies the authenticator has.
const FIDO_TRANSPORTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.2.1.1");
/// Its bits, in order (FIDO U2F Authenticator Transports Extension).
const TRANSPORT_BITS: [&str; 5] = ["bluetooth", "ble", "usb", "nfc", "usb-internal"];
/// Transports only a roaming authenticator (a security key) has.
const ROAMING: [&str; 4] = ["bluetooth", "ble", "usb", "nfc"];

/// The configured roots (operator PEM files and shipped vendor roots), each with the name
/// verified attestations report.
pub struct AttestationTrust {
    roots: Option<AttestationCaList>,
    names: BTreeMap<Vec<u8>, String>,
    /// Certified models' roots from the FIDO metadata, when it is configured.
    metadata: Option<MetadataAnchors>,
}

impl AttestationTrust {
    /// Loads `webauthn.trusted_roots` and `webauthn.vendor_roots`; errors name the setting.
    pub fn load(config: &WebauthnConfig) -> Result<Self, String> {
        let mut trust = Self {
            roots: None,
            names: BTreeMap::new(),
            metadata: None,
        };
        for path in &config.trusted_roots {
            let pem = std::fs::read(path)
                .map_err(|error| format!("webauthn: trusted_roots {}: {error}", path.display()))?;
            let list = AttestationCaList::try_from(pem.as_slice()).map_err(|error| {
                format!("webauthn: trusted_roots {}: {error:?}", path.display())
            })?;
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            trust.add(list, format!("trusted_roots:{file}"));
        }
        for root in vendor_roots(&config.vendor_roots)? {
            let list = AttestationCaList::try_from(root.pem).map_err(|error| {
                format!(
                    "webauthn: vendor_roots `{}` ({}): {error:?}",
                    root.set, root.file
                )
            })?;
            trust.add(list, root.set.to_owned());
        }
        Ok(trust)
    }

    fn add(&mut self, list: AttestationCaList, name: String) {
        for kid in list.cas().keys() {
            self.names.insert(kid.to_vec(), name.clone());
        }
        match &mut self.roots {
            Some(roots) => roots.union(&list),
            None => self.roots = Some(list),
        }
    }

    /// Also trusts the certified models' roots of the FIDO metadata in use.
    pub fn with_metadata(mut self, anchors: MetadataAnchors) -> Self {
        self.metadata = Some(anchors);
        self
    }

    /// The configured roots and the metadata's certified models' roots.
    pub fn roots(&self) -> Option<std::borrow::Cow<'_, AttestationCaList>> {
        use std::borrow::Cow;
        let metadata = self.metadata.as_ref().and_then(MetadataAnchors::list);
        match (&self.roots, metadata) {
            (Some(roots), None) => Some(Cow::Borrowed(roots)),
            (None, Some(metadata)) => Some(Cow::Owned(metadata.as_ref().clone())),
            (Some(roots), Some(metadata)) => {
                let mut union = roots.clone();
                union.union(&metadata);
                Some(Cow::Owned(union))
            }
            (None, None) => None,
        }
    }

    /// What an `any` registration's attestation proves: a chain is verified when one is
    /// present and reaches a configured root; nothing is refused.
    pub fn observe(
        &self,
        credential: &Credential,
        registration: &RegisterPublicKeyCredential,
        now: SystemTime,
    ) -> VerifiedAttestation {
        let mut attestation = describe(credential, registration);
        attestation.trusted_root = self.verified_root(credential, now).ok();
        attestation
    }

    /// The `enclave_only` decision: an attestation chained to a configured root, from an
    /// authenticator that is neither a security key nor synced.
    pub fn require_enclave(
        &self,
        credential: &Credential,
        registration: &RegisterPublicKeyCredential,
        now: SystemTime,
    ) -> Result<VerifiedAttestation, DeviceError> {
        let mut attestation = describe(credential, registration);
        let what = format!(
            "format {}, aaguid {}",
            attestation.format,
            display_aaguid(&attestation.aaguid)
        );
        if credential.backup_eligible || credential.backup_state {
            return Err(refused(
                "BACKUP_ELIGIBLE_REFUSED",
                format!(
                    "credential is backup eligible (synced) ({what}): enclave_only needs a device-bound platform authenticator"
                ),
            ));
        }
        match &credential.attestation.data {
            ParsedAttestationData::None => {
                return Err(not_trusted(format!(
                    "no attestation ({what}): nothing proves the key lives in a platform enclave"
                )));
            }
            ParsedAttestationData::Self_ => {
                return Err(not_trusted(format!(
                    "self attestation ({what}): signed by the credential key itself, so nothing proves who made the authenticator"
                )));
            }
            _ => {}
        }
        // A security key's own certificate says so; refusing on that claim before the chain
        // is checked only ever refuses more.
        let roaming = roaming_transports(&credential.attestation.data);
        if attestation.format == "fido-u2f" || !roaming.is_empty() {
            let transports = if roaming.is_empty() {
                "u2f".to_owned()
            } else {
                roaming.join(", ")
            };
            return Err(not_trusted(format!(
                "security keys are not enclave-bound ({what}, transports {transports}): register a platform authenticator"
            )));
        }
        attestation.trusted_root = Some(
            self.verified_root(credential, now)
                .map_err(|(problem, detail)| not_trusted(format!("{problem} ({what}){detail}")))?,
        );
        Ok(attestation)
    }

    /// The name of the configured root the attestation chain reaches at `now`.
    fn verified_root(
        &self,
        credential: &Credential,
        now: SystemTime,
    ) -> Result<String, (&'static str, String)> {
        const UNCHAINED: &str = "attestation chains to no configured root";
        let roots = self
            .roots()
            .ok_or((UNCHAINED, ": no roots are configured".to_owned()))?;
        let ca = verify_attestation_ca_chain(&credential.attestation.data, &roots, now)
            .map_err(|error| (UNCHAINED, format!(": {error}")))?
            .ok_or((UNCHAINED, String::new()))?;
        // The rule webauthn-rs applies: a root limited to some models vouches only for them.
        if !ca.blanket_allow() {
            let vouched = match &credential.attestation.metadata {
                AttestationMetadata::Packed { aaguid }
                | AttestationMetadata::Tpm { aaguid, .. } => ca.aaguids().contains_key(aaguid),
                _ => false,
            };
            if !vouched {
                return Err((
                    "the attestation's root does not vouch for this model",
                    String::new(),
                ));
            }
        }
        let kid = ca
            .get_kid()
            .map_err(|error| ("unreadable root", format!(": {error:?}")))?;
        Ok(self
            .names
            .get(kid.as_slice())
            .cloned()
            .unwrap_or_else(|| METADATA_ROOT.to_owned()))
    }
}

/// Format, AAGUID and backup eligibility, before any chain is verified.
fn describe(
    credential: &Credential,
    registration: &RegisterPublicKeyCredential,
) -> VerifiedAttestation {
    let format = serde_json::to_value(&credential.attestation_format)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    VerifiedAttestation {
        format,
        aaguid: authenticator_aaguid(registration),
        trusted_root: None,
        backup_eligible: credential.backup_eligible,
    }
}

/// The AAGUID in the authenticator data webauthn-rs verified ("" when absent or zero).
fn authenticator_aaguid(registration: &RegisterPublicKeyCredential) -> String {
    let object: Option<serde_cbor_2::Value> =
        serde_cbor_2::from_slice(&registration.response.attestation_object).ok();
    let Some(serde_cbor_2::Value::Map(object)) = object else {
        return String::new();
    };
    let Some(serde_cbor_2::Value::Bytes(auth_data)) =
        object.get(&serde_cbor_2::Value::Text("authData".to_owned()))
    else {
        return String::new();
    };
    AuthenticatorData::<Registration>::try_from(auth_data.as_slice())
        .ok()
        .and_then(|data| data.acd)
        .map(|acd| Uuid::from_bytes(acd.aaguid))
        .filter(|aaguid| !aaguid.is_nil())
        .map(|aaguid| aaguid.to_string())
        .unwrap_or_default()
}

/// The roaming transports the attestation leaf certificate declares.
fn roaming_transports(data: &ParsedAttestationData) -> Vec<&'static str> {
    let leaf: Option<&Certificate> = match data {
        ParsedAttestationData::Basic(chain)
        | ParsedAttestationData::AttCa(chain)
        | ParsedAttestationData::AnonCa(chain) => chain.first(),
        _ => None,
    };
    let Some(extension) = leaf
        .and_then(|leaf| leaf.tbs_certificate().extensions())
        .and_then(|extensions| extensions.iter().find(|ext| ext.extn_id == FIDO_TRANSPORTS))
    else {
        return Vec::new();
    };
    let Ok(bits) = BitString::from_der(extension.extn_value.as_bytes()) else {
        return Vec::new();
    };
    bits.bits()
        .zip(TRANSPORT_BITS)
        .filter(|(set, name)| *set && ROAMING.contains(name))
        .map(|(_, name)| name)
        .collect()
}

fn display_aaguid(aaguid: &str) -> &str {
    if aaguid.is_empty() { "none" } else { aaguid }
}

fn not_trusted(detail: String) -> DeviceError {
    refused(
        "ATTESTATION_NOT_TRUSTED",
        format!("enclave_only refused this authenticator: {detail}"),
    )
}

fn refused(reason: &'static str, message: String) -> DeviceError {
    DeviceError::Refused { reason, message }
}
