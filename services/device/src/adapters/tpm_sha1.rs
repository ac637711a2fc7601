//! Windows Hello `tpm` attestation statements signed with RS1 (RSASSA-PKCS1-v1_5 with SHA-1),
//! which webauthn-rs refuses as insecure. When `webauthn.accept_sha1_tpm_attestation` is on,
//! webauthn-rs verifies the ceremony with the statement replaced by `none` (`without_statement`)
//! and this module verifies the original statement following WebAuthn §8.3 (`verify_statement`);
//! the chain and the `enclave_only` rules then go through `AttestationTrust` as for any other
//! attestation. Why accepting SHA-1 here is a bounded risk: docs/attestation.md.
use std::collections::BTreeMap;

use crypto_glue::der::Decode;
use crypto_glue::rsa::RS256PublicKey;
use crypto_glue::sha1::Sha1;
use crypto_glue::traits::{Digest, OwnedToRef};
use crypto_glue::x509::{
    BasicConstraints, Certificate, ExtendedKeyUsage, GeneralName, ObjectIdentifier, SubjectAltName,
    Version,
};
use serde_cbor_2::Value;
use webauthn_rs::prelude::{AttestationMetadata, ParsedAttestation, ParsedAttestationData, Uuid};
use webauthn_rs_core::attestation::{FidoGenCeAaguid, validate_extension};
use webauthn_rs_core::internals::{AuthenticatorData, Tpm2bName, TpmSt, TpmsAttest, TpmuAttest};
use webauthn_rs_core::proto::{COSEEC2Key, COSEKey, COSEKeyType, ECDSACurve, Registration};

/// COSE algorithm RS1 (RFC 8812): RSASSA-PKCS1-v1_5 with SHA-1.
const RS1: i128 = -65535;
/// The DigestInfo prefix of a SHA-1 hash in a PKCS#1 v1.5 signature (RFC 8017 §9.2, note 1).
const SHA1_DIGEST_INFO: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
/// tcg-kp-AIKCertificate: the extended key usage of a TPM attestation identity key.
const TCG_KP_AIK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.3");
/// The TPM device attributes of the AIK certificate's subject alternative name
/// (TCG EK Credential Profile §3.2.9): manufacturer, model, firmware version.
const TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
const TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
const TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");

// TPM_ALG_ID values (TPM 2.0 Part 2 §6.3).
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA1: u16 = 0x0004;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_SHA384: u16 = 0x000C;
const TPM_ALG_SHA512: u16 = 0x000D;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_ECC: u16 = 0x0023;
// TPMA_OBJECT bits (TPM 2.0 Part 2 §8.3.2) that say where the key was made and that it
// cannot leave the TPM: fixedTPM (bit 1), fixedParent (bit 4), sensitiveDataOrigin (bit 5).
const FIXED_TPM: u32 = 1 << 1;
const FIXED_PARENT: u32 = 1 << 4;
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
// TPM_ECC_CURVE values (TPM 2.0 Part 2 §6.4).
const TPM_ECC_NIST_P256: u16 = 0x0003;
const TPM_ECC_NIST_P384: u16 = 0x0004;
const TPM_ECC_NIST_P521: u16 = 0x0005;

/// Why an RS1 TPM statement was refused (for the refusal message).
pub(super) type Refusal = String;

fn object_map(attestation_object: &[u8]) -> Option<BTreeMap<Value, Value>> {
    match serde_cbor_2::from_slice(attestation_object).ok()? {
        Value::Map(map) => Some(map),
        _ => None,
    }
}

fn text(key: &str) -> Value {
    Value::Text(key.to_owned())
}

/// Whether the attestation object carries a `tpm` statement signed with RS1.
pub(super) fn is_rs1_tpm(attestation_object: &[u8]) -> bool {
    let Some(object) = object_map(attestation_object) else {
        return false;
    };
    let is_tpm = object.get(&text("fmt")) == Some(&text("tpm"));
    let alg = match object.get(&text("attStmt")) {
        Some(Value::Map(statement)) => statement.get(&text("alg")).cloned(),
        _ => None,
    };
    is_tpm && alg == Some(Value::Integer(RS1))
}

/// The same attestation object with the statement replaced by `fmt: "none"`, `attStmt: {}`
/// and authData untouched, so webauthn-rs verifies everything of the ceremony but the
/// statement.
pub(super) fn without_statement(attestation_object: &[u8]) -> Result<Vec<u8>, Refusal> {
    let mut object = object_map(attestation_object)
        .ok_or_else(|| "the attestation object is not a CBOR map".to_owned())?;
    object.insert(text("fmt"), text("none"));
    object.insert(text("attStmt"), Value::Map(BTreeMap::new()));
    serde_cbor_2::to_vec(&Value::Map(object))
        .map_err(|error| format!("cannot re-encode the attestation object: {error}"))
}

/// Verifies a `tpm` statement signed with RS1 (WebAuthn §8.3 with alg RS1) over the
/// authenticator data and `client_data_json`; the trust path (x5c) and the TPM metadata for
/// the chain check.
pub(super) fn verify_statement(
    attestation_object: &[u8],
    client_data_json: &[u8],
) -> Result<ParsedAttestation, Refusal> {
    let object = object_map(attestation_object)
        .ok_or_else(|| "the attestation object is not a CBOR map".to_owned())?;
    let auth_data_bytes = bytes(&object, "authData")?;
    let Some(Value::Map(statement)) = object.get(&text("attStmt")) else {
        return Err("attStmt is not a map".to_owned());
    };
    if statement.get(&text("ver")) != Some(&text("2.0")) {
        return Err("ver is not 2.0".to_owned());
    }
    if statement.get(&text("alg")) != Some(&Value::Integer(RS1)) {
        return Err("alg is not RS1".to_owned());
    }
    let cert_info_bytes = bytes(statement, "certInfo")?;
    let pub_area_bytes = bytes(statement, "pubArea")?;
    let signature = bytes(statement, "sig")?;
    let chain = match statement.get(&text("x5c")) {
        Some(Value::Array(certificates)) => certificates
            .iter()
            .map(|certificate| match certificate {
                Value::Bytes(der) => Certificate::from_der(der)
                    .map_err(|error| format!("an x5c certificate does not parse: {error}")),
                _ => Err("an x5c entry is not a byte string".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("x5c is missing".to_owned()),
    };
    let aik = chain.first().ok_or_else(|| "x5c is empty".to_owned())?;

    let auth_data = AuthenticatorData::<Registration>::try_from(auth_data_bytes)
        .map_err(|error| format!("authData does not parse: {error}"))?;
    let credential_data = auth_data
        .acd
        .ok_or_else(|| "authData has no attested credential".to_owned())?;
    let credential_key = COSEKey::try_from(&credential_data.credential_pk)
        .map_err(|error| format!("the credential public key does not parse: {error}"))?;

    // pubArea's key is the credential public key in authData.
    let pub_area = parse_pub_area(pub_area_bytes)
        .ok_or_else(|| "pubArea is not a TPMT_PUBLIC the service reads".to_owned())?;
    check_key_origin(&pub_area)?;
    if !pub_area.key.matches(&credential_key) {
        return Err("pubArea's key is not the credential public key".to_owned());
    }

    // certInfo: magic TPM_GENERATED_VALUE (checked by the parser), type TPM_ST_ATTEST_CERTIFY.
    let cert_info = TpmsAttest::try_from(cert_info_bytes)
        .map_err(|_| "certInfo is not a TPMS_ATTEST made by a TPM".to_owned())?;
    if cert_info.type_ != TpmSt::AttestCertify {
        return Err("certInfo is not TPM_ST_ATTEST_CERTIFY".to_owned());
    }
    // extraData is the hash, with alg's hash (SHA-1), of authData || clientDataHash.
    let client_data_hash = crypto_glue::s256::Sha256::digest(client_data_json);
    let mut to_be_signed = auth_data_bytes.to_vec();
    to_be_signed.extend_from_slice(&client_data_hash);
    if cert_info.extra_data.as_deref() != Some(Sha1::digest(&to_be_signed).as_slice()) {
        return Err(
            "certInfo's extraData is not the hash of authData and clientDataHash".to_owned(),
        );
    }
    // attested.name is pubArea's Name: its nameAlg, then pubArea hashed with it.
    let TpmuAttest::AttestCertify(Tpm2bName::Digest(name), qualified_name) =
        &cert_info.typeattested
    else {
        return Err("certInfo does not certify a named key".to_owned());
    };
    // Nothing after the structure: every signed byte is one the TPM put there.
    let marshalled_length = 4
        + 2
        + name_length(&cert_info.qualified_signer)
        + 2
        + cert_info.extra_data.as_ref().map_or(0, Vec::len)
        + CLOCK_INFO_LENGTH
        + 8
        + 2
        + name.len()
        + name_length(qualified_name);
    if cert_info_bytes.len() != marshalled_length {
        return Err("certInfo carries bytes after its TPMS_ATTEST".to_owned());
    }
    if name.starts_with(&TPM_ALG_SHA1.to_be_bytes()) {
        return Err("certInfo's attested name is a SHA-1 name".to_owned());
    }
    let expected_name = name_of(pub_area.name_alg, pub_area_bytes)
        .ok_or_else(|| "pubArea's nameAlg is not a hash the service knows".to_owned())?;
    if *name != expected_name {
        return Err("certInfo's attested name is not pubArea's name".to_owned());
    }

    // The signature over certInfo, with the AIK certificate's RSA key, PKCS#1 v1.5 SHA-1.
    let aik_key = RS256PublicKey::try_from(
        aik.tbs_certificate()
            .subject_public_key_info()
            .owned_to_ref(),
    )
    .map_err(|_| "the AIK certificate's key is not RSA".to_owned())?;
    let scheme = rsa::Pkcs1v15Sign {
        hash_len: Some(20),
        prefix: SHA1_DIGEST_INFO.to_vec().into_boxed_slice(),
    };
    aik_key
        .verify(scheme, &Sha1::digest(cert_info_bytes), signature)
        .map_err(|_| {
            "the signature over certInfo does not verify with the AIK certificate".to_owned()
        })?;

    check_aik_certificate(aik)?;
    // If the AIK certificate names a model (id-fido-gen-ce-aaguid), it is authData's.
    validate_extension::<FidoGenCeAaguid>(aik, &credential_data.aaguid)
        .map_err(|_| "the AIK certificate's AAGUID is not authData's".to_owned())?;

    Ok(ParsedAttestation {
        data: ParsedAttestationData::AttCa(chain),
        metadata: AttestationMetadata::Tpm {
            aaguid: Uuid::from_bytes(credential_data.aaguid),
            firmware_version: cert_info.firmware_version,
        },
    })
}

/// TPMS_CLOCK_INFO: clock (8), resetCount (4), restartCount (4), safe (1).
const CLOCK_INFO_LENGTH: usize = 17;

/// The marshalled length of a TPM2B_NAME, its size field included.
fn name_length(name: &Tpm2bName) -> usize {
    2 + match name {
        Tpm2bName::None => 0,
        Tpm2bName::Handle(_) => 4,
        Tpm2bName::Digest(digest) => digest.len(),
    }
}

fn bytes<'a>(map: &'a BTreeMap<Value, Value>, key: &str) -> Result<&'a [u8], Refusal> {
    match map.get(&text(key)) {
        Some(Value::Bytes(bytes)) => Ok(bytes),
        _ => Err(format!("{key} is missing")),
    }
}

/// What the statement's `pubArea` must say of the credential key: it is named with SHA-256
/// or better (its name is what binds the key to the SHA-1-signed `certInfo`, so it must not
/// be SHA-1 too), and the TPM made it and keeps it: fixedTPM, fixedParent and
/// sensitiveDataOrigin. Without them the key may have been imported into the TPM or be
/// duplicable out of it, so the TPM's signature would prove nothing about where it lives.
fn check_key_origin(pub_area: &PubArea) -> Result<(), Refusal> {
    if pub_area.name_alg == TPM_ALG_SHA1 {
        return Err(
            "pubArea's nameAlg is SHA-1: the key's name must be SHA-256 or better".to_owned(),
        );
    }
    if !matches!(
        pub_area.name_alg,
        TPM_ALG_SHA256 | TPM_ALG_SHA384 | TPM_ALG_SHA512
    ) {
        return Err("pubArea's nameAlg is not a hash the service knows".to_owned());
    }
    let missing: Vec<&str> = [
        (FIXED_TPM, "fixedTPM"),
        (FIXED_PARENT, "fixedParent"),
        (SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    ]
    .into_iter()
    .filter(|(bit, _)| pub_area.object_attributes & bit == 0)
    .map(|(_, name)| name)
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "pubArea's objectAttributes lack {}: the TPM did not make this key or it can leave the TPM",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// The TPM Name of an object: its nameAlg (big-endian) then the object hashed with it.
/// SHA-1 names are refused before (`check_key_origin`).
fn name_of(name_alg: u16, pub_area: &[u8]) -> Option<Vec<u8>> {
    use crypto_glue::{s256::Sha256, s384::Sha384, s512::Sha512};
    let digest = match name_alg {
        TPM_ALG_SHA256 => Sha256::digest(pub_area).to_vec(),
        TPM_ALG_SHA384 => Sha384::digest(pub_area).to_vec(),
        TPM_ALG_SHA512 => Sha512::digest(pub_area).to_vec(),
        _ => return None,
    };
    let mut name = name_alg.to_be_bytes().to_vec();
    name.extend(digest);
    Some(name)
}

/// The AIK certificate requirements (WebAuthn §8.3.1).
fn check_aik_certificate(aik: &Certificate) -> Result<(), Refusal> {
    let tbs = aik.tbs_certificate();
    let unmet = |what: &str| format!("the AIK certificate does not meet §8.3.1: {what}");
    if tbs.version() != Version::V3 {
        return Err(unmet("not version 3"));
    }
    if !tbs.subject().is_empty() {
        return Err(unmet("its subject is not empty"));
    }
    let san = tbs
        .get_extension::<SubjectAltName>()
        .ok()
        .flatten()
        // Critical, since the subject is empty (TCG EK Credential Profile §3.2.9, RFC 5280).
        .and_then(|(critical, san)| critical.then_some(san))
        .ok_or_else(|| unmet("no critical subject alternative name"))?;
    let attribute = |oid: ObjectIdentifier| {
        san.0.iter().find_map(|name| match name {
            GeneralName::DirectoryName(directory) => directory
                .iter()
                .find(|attribute| attribute.oid == oid)
                .and_then(|attribute| std::str::from_utf8(attribute.value.value()).ok())
                .filter(|value| !value.is_empty()),
            _ => None,
        })
    };
    // The manufacturer is a TCG vendor id: "id:" and eight hex digits.
    let manufacturer = attribute(TPM_MANUFACTURER)
        .ok_or_else(|| unmet("no TPM manufacturer in its subject alternative name"))?;
    let vendor_id = manufacturer.strip_prefix("id:").unwrap_or_default();
    if vendor_id.len() != 8 || !vendor_id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(unmet("the TPM manufacturer is not a TCG vendor id"));
    }
    if attribute(TPM_MODEL).is_none() || attribute(TPM_VERSION).is_none() {
        return Err(unmet(
            "no TPM model or version in its subject alternative name",
        ));
    }
    let eku = tbs
        .get_extension::<ExtendedKeyUsage>()
        .ok()
        .flatten()
        .map(|(_, eku)| eku)
        .ok_or_else(|| unmet("no extended key usage"))?;
    if !eku.0.contains(&TCG_KP_AIK_CERTIFICATE) {
        return Err(unmet("its extended key usage lacks tcg-kp-AIKCertificate"));
    }
    let constraints = tbs
        .get_extension::<BasicConstraints>()
        .ok()
        .flatten()
        .map(|(_, constraints)| constraints)
        .ok_or_else(|| unmet("no basic constraints"))?;
    if constraints.ca {
        return Err(unmet("it is a CA certificate"));
    }
    Ok(())
}

/// The key of a TPMT_PUBLIC (TPM 2.0 Part 2 §12.2.4).
enum TpmKey {
    Rsa { modulus: Vec<u8>, exponent: u32 },
    Ecc { curve: u16, x: Vec<u8>, y: Vec<u8> },
}

impl TpmKey {
    fn matches(&self, credential: &COSEKey) -> bool {
        match (self, &credential.key) {
            (Self::Rsa { modulus, exponent }, COSEKeyType::RSA(rsa)) => {
                // An exponent of zero is the TPM's default, 2^16 + 1.
                let exponent = if *exponent == 0 { 65537 } else { *exponent };
                let cose_exponent = rsa
                    .e
                    .iter()
                    .fold(0u32, |value, byte| (value << 8) | u32::from(*byte));
                *modulus == rsa.n && exponent == cose_exponent
            }
            (
                Self::Ecc { curve, x, y },
                COSEKeyType::EC_EC2(COSEEC2Key {
                    curve: cose,
                    x: cx,
                    y: cy,
                }),
            ) => {
                let same_curve = matches!(
                    (cose, *curve),
                    (ECDSACurve::SECP256R1, TPM_ECC_NIST_P256)
                        | (ECDSACurve::SECP384R1, TPM_ECC_NIST_P384)
                        | (ECDSACurve::SECP521R1, TPM_ECC_NIST_P521)
                );
                same_curve && x.as_slice() == cx.as_slice() && y.as_slice() == cy.as_slice()
            }
            _ => false,
        }
    }
}

struct PubArea {
    name_alg: u16,
    /// TPMA_OBJECT.
    object_attributes: u32,
    key: TpmKey,
}

/// Big-endian TPM marshalling, read front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A TPM2B: a 16-bit size, then that many bytes.
    fn sized(&mut self) -> Option<&'a [u8]> {
        let size = self.u16()?;
        self.take(usize::from(size))
    }
    /// A scheme (TPMT_RSA_SCHEME, TPMT_ECC_SCHEME, TPMT_KDF_SCHEME): an algorithm, then its
    /// hash algorithm unless the algorithm is TPM_ALG_NULL.
    fn scheme(&mut self) -> Option<()> {
        if self.u16()? != TPM_ALG_NULL {
            self.u16()?;
        }
        Some(())
    }
}

/// TPMT_PUBLIC of an RSA or ECC signing key (a credential key has no symmetric algorithm).
fn parse_pub_area(bytes: &[u8]) -> Option<PubArea> {
    let mut reader = Reader(bytes);
    let key_type = reader.u16()?;
    let name_alg = reader.u16()?;
    let object_attributes = reader.u32()?;
    let _auth_policy = reader.sized()?;
    if reader.u16()? != TPM_ALG_NULL {
        return None;
    }
    let key = match key_type {
        TPM_ALG_RSA => {
            reader.scheme()?;
            let _key_bits = reader.u16()?;
            let exponent = reader.u32()?;
            let modulus = reader.sized()?.to_vec();
            TpmKey::Rsa { modulus, exponent }
        }
        TPM_ALG_ECC => {
            reader.scheme()?;
            let curve = reader.u16()?;
            reader.scheme()?;
            let x = reader.sized()?.to_vec();
            let y = reader.sized()?.to_vec();
            TpmKey::Ecc { curve, x, y }
        }
        _ => return None,
    };
    reader.0.is_empty().then_some(PubArea {
        name_alg,
        object_attributes,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RSA TPMT_PUBLIC as Windows Hello makes it (attributes 0x00060432: fixedTPM,
    /// fixedParent, sensitiveDataOrigin, userWithAuth, noDA... as in the genuine vectors),
    /// with `name_alg` and `attributes` as given.
    fn rsa_pub_area(name_alg: u16, attributes: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend(TPM_ALG_RSA.to_be_bytes());
        bytes.extend(name_alg.to_be_bytes());
        bytes.extend(attributes.to_be_bytes());
        bytes.extend(0u16.to_be_bytes()); // authPolicy: empty
        bytes.extend(TPM_ALG_NULL.to_be_bytes()); // symmetric
        bytes.extend(TPM_ALG_NULL.to_be_bytes()); // scheme
        bytes.extend(2048u16.to_be_bytes()); // keyBits
        bytes.extend(0u32.to_be_bytes()); // exponent: the default
        bytes.extend(4u16.to_be_bytes());
        bytes.extend([0xc0, 0xff, 0xee, 0x01]); // modulus (its size does not matter here)
        bytes
    }

    const GENUINE_ATTRIBUTES: u32 = 0x0006_0432;

    fn origin(name_alg: u16, attributes: u32) -> Result<(), Refusal> {
        let pub_area = parse_pub_area(&rsa_pub_area(name_alg, attributes)).unwrap();
        check_key_origin(&pub_area)
    }

    #[test]
    fn a_sha256_named_key_the_tpm_made_passes() {
        for name_alg in [TPM_ALG_SHA256, TPM_ALG_SHA384, TPM_ALG_SHA512] {
            assert_eq!(
                origin(name_alg, GENUINE_ATTRIBUTES),
                Ok(()),
                "{name_alg:#x}"
            );
        }
    }

    #[test]
    fn a_sha1_name_is_refused() {
        let refusal = origin(TPM_ALG_SHA1, GENUINE_ATTRIBUTES).unwrap_err();
        assert!(refusal.contains("nameAlg is SHA-1"), "{refusal}");
        // And the name is never computed with it.
        assert_eq!(name_of(TPM_ALG_SHA1, b"pubArea"), None);
        let unknown = origin(0x0012, GENUINE_ATTRIBUTES).unwrap_err();
        assert!(unknown.contains("nameAlg"), "{unknown}");
    }

    #[test]
    fn each_missing_key_origin_attribute_is_refused_by_name() {
        for (bit, name) in [
            (FIXED_TPM, "fixedTPM"),
            (FIXED_PARENT, "fixedParent"),
            (SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        ] {
            let refusal = origin(TPM_ALG_SHA256, GENUINE_ATTRIBUTES & !bit).unwrap_err();
            assert!(
                refusal.contains("objectAttributes lack") && refusal.contains(name),
                "{refusal}"
            );
        }
        let none = origin(TPM_ALG_SHA256, 0).unwrap_err();
        assert!(
            none.contains("fixedTPM, fixedParent, sensitiveDataOrigin"),
            "{none}"
        );
    }
}
