//! The trust decision on a registration's attestation. webauthn-rs verifies the attestation
//! statement (its signature over the credential); this module verifies the certificate
//! chain against the configured roots at the service clock's instant (webauthn-rs would use
//! the system time, and vendor leaf certificates live days), applies the same AAGUID-vs-CA
//! rule webauthn-rs does, and says what `enclave_only` refuses, naming what failed.
//!
//! A verified chain proves who made the authenticator's key; it proves the *model* (AAGUID)
//! only when the attestation certificate binds it: the FIDO AAGUID extension in the leaf,
//! or a root the FIDO metadata gives for that one model. A blanket vendor root (Apple,
//! Microsoft TPM, Google Android, an operator's PEM file) signs keys of whatever software
//! built the authenticator data around them, so under it the AAGUID stays a claim.
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crypto_glue::der::Decode;
use crypto_glue::der::asn1::{BitString, OctetString};
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
/// id-fido-gen-ce-aaguid: the model (AAGUID) the vendor certifies the attestation key for.
const FIDO_AAGUID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

/// The root an attestation chain was verified to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChainRoot {
    /// The name verified attestations report (`apple`, `trusted_roots:<file>`,
    /// `fido-metadata`, ...).
    name: String,
    /// The models the root vouches for; `None` for a blanket root (any model).
    models: Option<BTreeSet<Uuid>>,
}

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
        if let Ok(root) = self.verified_root(credential, now) {
            attestation.aaguid_bound =
                aaguid_bound(&credential.attestation.data, &attestation.aaguid, &root);
            attestation.trusted_root = Some(root.name);
        }
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
        let root = self
            .verified_root(credential, now)
            .map_err(|(problem, detail)| not_trusted(format!("{problem} ({what}){detail}")))?;
        // A certified model's own root stands in for a vendor root only when the metadata
        // says the model keeps its keys in hardware inside the device, for every model the
        // root is given for (a key under a shared root may claim any of them).
        if root.name == METADATA_ROOT {
            let enclave = match (&root.models, &self.metadata) {
                (Some(models), Some(anchors)) => anchors.all_enclave(models.iter()),
                _ => false,
            };
            if !enclave {
                return Err(not_trusted(format!(
                    "the FIDO metadata does not describe this model as an internal authenticator with hardware-protected keys (keyProtection hardware or secure_element, attachmentHint internal) ({what})"
                )));
            }
        }
        attestation.aaguid_bound =
            aaguid_bound(&credential.attestation.data, &attestation.aaguid, &root);
        attestation.trusted_root = Some(root.name);
        Ok(attestation)
    }

    /// The configured root the attestation chain reaches at `now`.
    fn verified_root(
        &self,
        credential: &Credential,
        now: SystemTime,
    ) -> Result<ChainRoot, (&'static str, String)> {
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
        let name = self
            .names
            .get(kid.as_slice())
            .cloned()
            .unwrap_or_else(|| METADATA_ROOT.to_owned());
        let models = (!ca.blanket_allow()).then(|| ca.aaguids().keys().copied().collect());
        Ok(ChainRoot { name, models })
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
        aaguid_bound: false,
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

/// Whether the verified chain binds `aaguid` (as reported in authData, "" when none): the
/// leaf certificate's id-fido-gen-ce-aaguid is that AAGUID, or the root is given for that
/// model alone (a FIDO metadata anchor listed by no other model and not also a blanket
/// root). Under a blanket root without the extension, the model is only a claim.
fn aaguid_bound(data: &ParsedAttestationData, aaguid: &str, root: &ChainRoot) -> bool {
    let Ok(aaguid) = Uuid::parse_str(aaguid) else {
        return false;
    };
    if aaguid.is_nil() {
        return false;
    }
    let only_model = root
        .models
        .as_ref()
        .is_some_and(|models| models.len() == 1 && models.contains(&aaguid));
    only_model || certified_aaguid(data) == Some(aaguid)
}

/// The AAGUID the attestation leaf certificate's id-fido-gen-ce-aaguid extension names.
fn certified_aaguid(data: &ParsedAttestationData) -> Option<Uuid> {
    let extension = leaf(data)?
        .tbs_certificate()
        .extensions()?
        .iter()
        .find(|ext| ext.extn_id == FIDO_AAGUID)?;
    let value = OctetString::from_der(extension.extn_value.as_bytes()).ok()?;
    Uuid::from_slice(value.as_bytes()).ok()
}

/// The attestation certificate: the first of the trust path.
fn leaf(data: &ParsedAttestationData) -> Option<&Certificate> {
    match data {
        ParsedAttestationData::Basic(chain)
        | ParsedAttestationData::AttCa(chain)
        | ParsedAttestationData::AnonCa(chain) => chain.first(),
        _ => None,
    }
}

/// The roaming transports the attestation leaf certificate declares.
fn roaming_transports(data: &ParsedAttestationData) -> Vec<&'static str> {
    let Some(extension) = leaf(data)
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use crypto_glue::ecdsa_p256::{EcdsaP256DerSignature, EcdsaP256SigningKey};
    use crypto_glue::traits::Generate;
    use crypto_glue::x509::profile::cabf::Root;
    use crypto_glue::x509::{
        Builder, CertificateBuilder, Name, SerialNumber, SubjectPublicKeyInfoOwned, Validity,
    };

    use super::*;

    const MODEL: &str = "b93fd961-f2e6-462f-b122-82002247de78";
    const OTHER: &str = "08987058-cadc-4b81-b6e1-30de50dcbe96";

    /// An attestation certificate, with the FIDO AAGUID extension naming `aaguid` if given.
    fn attestation_certificate(aaguid: Option<&str>) -> Certificate {
        let key = EcdsaP256SigningKey::generate();
        let name = Name::from_str("CN=Attestation,O=test,C=AU").unwrap();
        let mut builder = CertificateBuilder::new(
            Root::new(false, name).unwrap(),
            SerialNumber::generate(&mut crypto_glue::rand::rng()),
            Validity::from_now(Duration::from_secs(3600)).unwrap(),
            SubjectPublicKeyInfoOwned::from_key(key.verifying_key()).unwrap(),
        )
        .unwrap();
        if let Some(aaguid) = aaguid {
            let value =
                OctetString::new(Uuid::parse_str(aaguid).unwrap().as_bytes().to_vec()).unwrap();
            builder.add_extension((FIDO_AAGUID, false, &value)).unwrap();
        }
        builder
            .build::<EcdsaP256SigningKey, EcdsaP256DerSignature>(&key)
            .unwrap()
    }

    fn chain(aaguid: Option<&str>) -> ParsedAttestationData {
        ParsedAttestationData::Basic(vec![attestation_certificate(aaguid)])
    }

    fn blanket(name: &str) -> ChainRoot {
        ChainRoot {
            name: name.to_owned(),
            models: None,
        }
    }

    fn metadata_root(models: &[&str]) -> ChainRoot {
        ChainRoot {
            name: METADATA_ROOT.to_owned(),
            models: Some(models.iter().map(|m| Uuid::parse_str(m).unwrap()).collect()),
        }
    }

    #[test]
    fn a_blanket_root_binds_the_model_only_through_the_aaguid_extension() {
        for root in [
            "google-android",
            "microsoft-tpm",
            "apple",
            "trusted_roots:ca.pem",
        ] {
            // No extension: software built the authenticator data, the model is a claim.
            assert!(!aaguid_bound(&chain(None), MODEL, &blanket(root)), "{root}");
            // The certificate names another model: nothing binds this one.
            assert!(
                !aaguid_bound(&chain(Some(OTHER)), MODEL, &blanket(root)),
                "{root}"
            );
            // The vendor certified the key for this model.
            assert!(
                aaguid_bound(&chain(Some(MODEL)), MODEL, &blanket(root)),
                "{root}"
            );
        }
        // No AAGUID (or a zero one) is never bound.
        let zero = "00000000-0000-0000-0000-000000000000";
        assert!(!aaguid_bound(&chain(Some(zero)), zero, &blanket("apple")));
        assert!(!aaguid_bound(&chain(Some(MODEL)), "", &blanket("apple")));
        // Nothing to read the extension from.
        assert!(!aaguid_bound(
            &ParsedAttestationData::None,
            MODEL,
            &blanket("apple")
        ));
    }

    #[test]
    fn a_metadata_root_binds_the_one_model_it_is_given_for() {
        assert!(aaguid_bound(&chain(None), MODEL, &metadata_root(&[MODEL])));
        // A root several models list binds none of them by itself: a key under it may
        // claim any; the extension still can.
        let shared = metadata_root(&[MODEL, OTHER]);
        assert!(!aaguid_bound(&chain(None), MODEL, &shared));
        assert!(aaguid_bound(&chain(Some(MODEL)), MODEL, &shared));
        assert!(!aaguid_bound(&chain(None), OTHER, &metadata_root(&[MODEL])));
    }

    #[test]
    fn the_extension_reads_back_as_the_aaguid() {
        assert_eq!(
            certified_aaguid(&chain(Some(MODEL))),
            Some(Uuid::parse_str(MODEL).unwrap())
        );
        assert_eq!(certified_aaguid(&chain(None)), None);
    }
}
