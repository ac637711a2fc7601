//! Every genuine attestation of `services/device/tests/attestation_corpus/` (public test
//! vectors, each naming its source) through the relying party's `enclave_only` ceremony,
//! against the shipped vendor roots, at the instant the vector's certificates were valid.
//! The ceremony state is the one the adapter makes; only its challenge (and, for vectors
//! recorded without user verification, its policy) is set to what the vector was made for.
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use enroll_shared::time::Clock;
use serde::Deserialize;
use webauthn_rs::prelude::Uuid;

use super::relying_party::WebauthnRelyingParty;
use crate::config::WebauthnConfig;
use crate::domain::devices::DeviceKind;
use crate::error::DeviceError;
use crate::service::ports::RelyingParty;

#[derive(Deserialize)]
struct Vector {
    name: String,
    source: serde_json::Value,
    format: String,
    aaguid: String,
    rp_id: String,
    origin: String,
    challenge: String,
    user_verification: String,
    verify_at: DateTime<Utc>,
    credential: serde_json::Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    vendor_roots: Vec<String>,
    expect: String,
    #[serde(default)]
    root: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    verify_at: Option<DateTime<Utc>>,
    /// `webauthn.accept_sha1_tpm_attestation` for this case.
    #[serde(default)]
    accept_sha1_tpm_attestation: bool,
}

struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

fn corpus() -> Vec<Vector> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/attestation_corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
        .collect()
}

/// Runs one case; the verified attestation or the refusal.
fn run(
    vector: &Vector,
    case: &Case,
) -> Result<crate::domain::attestation::VerifiedAttestation, DeviceError> {
    let config = WebauthnConfig {
        rp_id: vector.rp_id.clone(),
        rp_origins: vec![vector.origin.clone()],
        vendor_roots: case.vendor_roots.clone(),
        accept_sha1_tpm_attestation: case.accept_sha1_tpm_attestation,
        ..Default::default()
    };
    let instant = case.verify_at.unwrap_or(vector.verify_at);
    let party = WebauthnRelyingParty::new(&config, Arc::new(FixedClock(instant))).unwrap();
    let challenge = party
        .start_registration(DeviceKind::EnclaveOnly, true, Uuid::new_v4(), "corpus", &[])
        .unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&challenge.state_json).unwrap();
    let ceremony = &mut state["EnclaveOnly"]["rs"];
    assert!(ceremony.get("challenge").is_some(), "state shape: {state}");
    ceremony["challenge"] = vector.challenge.clone().into();
    ceremony["policy"] = vector.user_verification.clone().into();
    party
        .finish_registration(&state.to_string(), &vector.credential.to_string())
        .map(|registered| registered.attestation)
}

#[test]
fn every_corpus_vector_meets_its_expected_outcome() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "corpus has {} vectors", corpus.len());
    let mut cases = 0;
    for vector in &corpus {
        assert!(
            vector.source.get("repository").is_some(),
            "{}: no source",
            vector.name
        );
        for case in &vector.cases {
            cases += 1;
            let label = format!(
                "{} with {:?} (sha1 tpm {})",
                vector.name, case.vendor_roots, case.accept_sha1_tpm_attestation
            );
            match (case.expect.as_str(), run(vector, case)) {
                ("accepted", Ok(attestation)) => {
                    assert_eq!(attestation.format, vector.format, "{label}");
                    let aaguid = vector.aaguid.trim_start_matches(['0', '-']);
                    assert_eq!(attestation.aaguid.is_empty(), aaguid.is_empty(), "{label}");
                    assert_eq!(attestation.trusted_root, case.root, "{label}");
                    assert!(!attestation.backup_eligible, "{label}");
                    // Every accepted vector chains to a blanket vendor root and none of
                    // their attestation certificates carries the FIDO AAGUID extension:
                    // the hardware is proved, the model (android-key, Windows Hello tpm:
                    // authenticator data built by software) is only a claim.
                    assert!(!attestation.aaguid_bound, "{label}");
                    assert_eq!(attestation.verified_aaguid(), None, "{label}");
                }
                ("refused", Err(DeviceError::Refused { message, .. })) => {
                    let reason = case.reason.as_deref().unwrap_or_default();
                    assert!(
                        message.contains(reason),
                        "{label}: `{message}` lacks `{reason}`"
                    );
                }
                (expected, outcome) => panic!("{label}: expected {expected}, got {outcome:?}"),
            }
        }
    }
    assert!(cases >= 18, "{cases} cases");
}

#[test]
fn the_corpus_covers_every_platform_format_and_each_refusal() {
    let corpus = corpus();
    for format in ["apple", "tpm", "android-key", "packed", "none"] {
        assert!(
            corpus.iter().any(|v| v.format == format),
            "no {format} vector"
        );
    }
    let reasons: Vec<&str> = corpus
        .iter()
        .flat_map(|v| v.cases.iter().filter_map(|c| c.reason.as_deref()))
        .collect();
    for needle in [
        "security keys are not enclave-bound",
        "credential is backup eligible (synced)",
        "attestation chains to no configured root",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no case for {needle}"
        );
    }
}

#[test]
fn an_any_registration_reports_a_verified_chain_without_refusing() {
    let corpus = corpus();
    let apple = corpus
        .iter()
        .find(|v| v.name == "apple-touchid-anonymous")
        .unwrap();
    let config = WebauthnConfig {
        rp_id: apple.rp_id.clone(),
        rp_origins: vec![apple.origin.clone()],
        vendor_roots: vec!["apple".to_owned()],
        ..Default::default()
    };
    let party = WebauthnRelyingParty::new(&config, Arc::new(FixedClock(apple.verify_at))).unwrap();
    let challenge = party
        .start_registration(DeviceKind::Any, false, Uuid::new_v4(), "corpus", &[])
        .unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&challenge.state_json).unwrap();
    state["Any"]["rs"]["challenge"] = apple.challenge.clone().into();
    let registered = party
        .finish_registration(&state.to_string(), &apple.credential.to_string())
        .unwrap();
    assert_eq!(
        registered.attestation.trusted_root.as_deref(),
        Some("apple")
    );
    assert_eq!(registered.attestation.format, "apple");
}

#[test]
fn enclave_only_asks_for_every_platform_format_and_vendor_roots_alone_suffice() {
    let config = WebauthnConfig {
        rp_id: "example.com".to_owned(),
        rp_origins: vec!["https://enroll.example.com".to_owned()],
        vendor_roots: vec!["apple".to_owned(), "google-android".to_owned()],
        ..Default::default()
    };
    let party = WebauthnRelyingParty::new(&config, Arc::new(FixedClock(Utc::now()))).unwrap();
    let challenge = party
        .start_registration(
            DeviceKind::EnclaveOnly,
            true,
            Uuid::new_v4(),
            "alice@acme",
            &[],
        )
        .unwrap();
    let options: serde_json::Value = serde_json::from_str(&challenge.options_json).unwrap();
    let public_key = &options["publicKey"];
    assert_eq!(public_key["attestation"], "direct");
    assert_eq!(
        public_key["attestationFormats"],
        serde_json::json!(["apple", "android-key", "tpm", "packed"])
    );
    assert_eq!(public_key["hints"], serde_json::json!(["client-device"]));
    let unknown = WebauthnConfig {
        vendor_roots: vec!["yubico".to_owned()],
        ..config
    };
    let error = WebauthnRelyingParty::new(&unknown, Arc::new(FixedClock(Utc::now())))
        .err()
        .unwrap();
    assert!(error.contains("vendor_roots"), "{error}");
}

/// `webauthn.accept_sha1_tpm_attestation` changes the outcome of no vector but the RS1
/// `tpm` ones (those with cases for the option): every other keeps webauthn-rs's path.
#[test]
fn the_sha1_tpm_option_changes_nothing_else() {
    let corpus = corpus();
    let others: Vec<&Vector> = corpus
        .iter()
        .filter(|v| !v.cases.iter().any(|c| c.accept_sha1_tpm_attestation))
        .collect();
    assert!(others.len() >= 8, "{} other vectors", others.len());
    for vector in others {
        for case in vector
            .cases
            .iter()
            .filter(|c| !c.accept_sha1_tpm_attestation)
        {
            let with_option = Case {
                vendor_roots: case.vendor_roots.clone(),
                expect: case.expect.clone(),
                root: case.root.clone(),
                reason: case.reason.clone(),
                verify_at: case.verify_at,
                accept_sha1_tpm_attestation: true,
            };
            let label = format!("{} with {:?}", vector.name, case.vendor_roots);
            match (run(vector, case), run(vector, &with_option)) {
                (Ok(off), Ok(on)) => assert_eq!(off, on, "{label}"),
                (Err(off), Err(on)) => assert_eq!(off.to_string(), on.to_string(), "{label}"),
                (off, on) => panic!("{label}: {off:?} without the option, {on:?} with it"),
            }
        }
    }
}

mod tampered_windows_hello {
    //! The genuine Windows Hello RS1 vector with one thing changed, each refused with the
    //! option on and every vendor root (so only the tampering can fail it).
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_cbor_2::Value;

    use super::*;

    fn windows_hello() -> Vector {
        corpus()
            .into_iter()
            .find(|v| v.name == "tpm-windows-hello-lenovo-x1")
            .unwrap()
    }

    fn accepting() -> Case {
        Case {
            vendor_roots: vec![
                "apple".to_owned(),
                "microsoft-tpm".to_owned(),
                "google-android".to_owned(),
            ],
            expect: "accepted".to_owned(),
            root: Some("microsoft-tpm".to_owned()),
            reason: None,
            verify_at: None,
            accept_sha1_tpm_attestation: true,
        }
    }

    fn field<'a>(map: &'a mut Value, key: &str) -> &'a mut Vec<u8> {
        let Value::Map(map) = map else {
            panic!("not a map")
        };
        match map.get_mut(&Value::Text(key.to_owned())).unwrap() {
            Value::Bytes(bytes) => bytes,
            other => panic!("{key} is {other:?}"),
        }
    }

    /// The vector with `change` applied to its decoded attestation object.
    fn tampered(change: impl FnOnce(&mut Value)) -> Vector {
        let mut vector = windows_hello();
        let response = &mut vector.credential["response"];
        let encoded = response["attestationObject"].as_str().unwrap();
        let mut object: Value =
            serde_cbor_2::from_slice(&URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap();
        change(&mut object);
        response["attestationObject"] = URL_SAFE_NO_PAD
            .encode(serde_cbor_2::to_vec(&object).unwrap())
            .into();
        vector
    }

    fn statement(object: &mut Value) -> &mut Value {
        let Value::Map(map) = object else {
            panic!("not a map")
        };
        map.get_mut(&Value::Text("attStmt".to_owned())).unwrap()
    }

    fn refusal(vector: &Vector) -> String {
        match run(vector, &accepting()) {
            Err(DeviceError::Refused { reason, message }) => {
                assert_eq!(reason, "ATTESTATION_NOT_TRUSTED", "{message}");
                message
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Registers the Windows Hello vector as an `any` device asked for its attestation.
    fn register_any(
        accept_sha1: bool,
    ) -> Result<crate::domain::attestation::VerifiedAttestation, DeviceError> {
        let vector = windows_hello();
        let config = WebauthnConfig {
            rp_id: vector.rp_id.clone(),
            rp_origins: vec![vector.origin.clone()],
            vendor_roots: vec!["microsoft-tpm".to_owned()],
            accept_sha1_tpm_attestation: accept_sha1,
            ..Default::default()
        };
        let party =
            WebauthnRelyingParty::new(&config, Arc::new(FixedClock(vector.verify_at))).unwrap();
        let challenge = party
            .start_registration(DeviceKind::Any, true, Uuid::new_v4(), "corpus", &[])
            .unwrap();
        let mut state: serde_json::Value = serde_json::from_str(&challenge.state_json).unwrap();
        state["Any"]["rs"]["challenge"] = vector.challenge.clone().into();
        state["Any"]["rs"]["policy"] = vector.user_verification.clone().into();
        party
            .finish_registration(&state.to_string(), &vector.credential.to_string())
            .map(|registered| registered.attestation)
    }

    #[test]
    fn an_any_windows_hello_registers_verified_only_with_the_option() {
        // Off: registered (an `any` device is never refused for its attestation), with no
        // verified chain, so model rules treat its AAGUID as a claim.
        let unverified = register_any(false).expect("an any device registers");
        assert_eq!(unverified.trusted_root, None, "{unverified:?}");
        // On: the statement and the chain are verified.
        let verified = register_any(true).expect("an any device registers");
        assert_eq!(verified.format, "tpm");
        assert_eq!(verified.trusted_root.as_deref(), Some("microsoft-tpm"));
    }

    #[test]
    fn the_untampered_vector_is_accepted() {
        let registered = run(&windows_hello(), &accepting()).unwrap();
        assert_eq!(registered.format, "tpm");
        assert_eq!(registered.aaguid, "9ddd1817-af5a-4672-a2b9-3e3dd95000a9");
        assert_eq!(registered.trusted_root.as_deref(), Some("microsoft-tpm"));
    }

    #[test]
    fn a_flipped_byte_in_cert_info_breaks_the_signature() {
        let vector = tampered(|object| {
            let cert_info = field(statement(object), "certInfo");
            let last = cert_info.len() - 1;
            cert_info[last] ^= 0x01;
        });
        let message = refusal(&vector);
        assert!(
            message.contains("the signature over certInfo does not verify"),
            "{message}"
        );
    }

    #[test]
    fn a_flipped_byte_in_the_signature_is_refused() {
        let vector = tampered(|object| field(statement(object), "sig")[17] ^= 0x80);
        let message = refusal(&vector);
        assert!(
            message.contains("the signature over certInfo does not verify"),
            "{message}"
        );
    }

    #[test]
    fn a_flipped_byte_in_the_credential_key_is_refused() {
        let vector = tampered(|object| {
            let auth_data = field(object, "authData");
            // rpIdHash, flags, counter, aaguid, then the credential id's length and the id;
            // 40 bytes into the COSE key is inside the RSA modulus.
            let id_length = usize::from(u16::from_be_bytes([auth_data[53], auth_data[54]]));
            auth_data[55 + id_length + 40] ^= 0x01;
        });
        let message = refusal(&vector);
        assert!(
            message.contains("pubArea's key is not the credential public key"),
            "{message}"
        );
    }

    #[test]
    fn other_client_data_than_the_tpm_signed_is_refused() {
        // Same challenge and origin (webauthn-rs accepts it), another clientDataHash.
        let mut vector = windows_hello();
        let response = &mut vector.credential["response"];
        let client_data = URL_SAFE_NO_PAD
            .decode(response["clientDataJSON"].as_str().unwrap())
            .unwrap();
        let client_data = String::from_utf8(client_data)
            .unwrap()
            .replace("do not compare", "Do not compare");
        response["clientDataJSON"] = URL_SAFE_NO_PAD.encode(client_data).into();
        let message = refusal(&vector);
        assert!(message.contains("extraData"), "{message}");
    }

    #[test]
    fn a_tampered_extra_data_is_refused() {
        let vector = tampered(|object| {
            // certInfo: magic (4), type (2), qualifiedSigner (2 + size), extraData (2 + 20).
            let cert_info = field(statement(object), "certInfo");
            let signer = usize::from(u16::from_be_bytes([cert_info[6], cert_info[7]]));
            cert_info[8 + signer + 2] ^= 0x01;
        });
        let message = refusal(&vector);
        assert!(message.contains("extraData"), "{message}");
    }

    /// The genuine Windows Hello vectors name their keys with SHA-256 and carry fixedTPM,
    /// fixedParent and sensitiveDataOrigin (so refusing anything else keeps them); the
    /// same pubArea named with SHA-1, or without one of those attributes, is refused for
    /// that (before its name is compared with the one the TPM certified).
    #[test]
    fn a_sha1_named_or_non_tpm_made_key_is_refused() {
        let vector = tampered(|object| {
            field(statement(object), "pubArea")[2..4].copy_from_slice(&[0x00, 0x04]);
        });
        let message = refusal(&vector);
        assert!(message.contains("nameAlg is SHA-1"), "{message}");
        for (bit, name) in [
            (1u32 << 1, "fixedTPM"),
            (1 << 4, "fixedParent"),
            (1 << 5, "sensitiveDataOrigin"),
        ] {
            let vector = tampered(|object| {
                let pub_area = field(statement(object), "pubArea");
                let attributes = u32::from_be_bytes(pub_area[4..8].try_into().unwrap());
                assert_ne!(attributes & bit, 0, "the genuine vector has {name}");
                pub_area[4..8].copy_from_slice(&(attributes & !bit).to_be_bytes());
            });
            let message = refusal(&vector);
            assert!(
                message.contains("objectAttributes lack") && message.contains(name),
                "{message}"
            );
        }
    }

    #[test]
    fn bytes_appended_to_cert_info_are_refused() {
        let vector = tampered(|object| field(statement(object), "certInfo").push(0));
        let message = refusal(&vector);
        assert!(message.contains("bytes after its TPMS_ATTEST"), "{message}");
    }

    #[test]
    fn an_rs1_statement_claiming_another_version_is_refused() {
        let vector = tampered(|object| {
            let Value::Map(statement) = statement(object) else {
                panic!("attStmt is not a map")
            };
            statement.insert(Value::Text("ver".to_owned()), Value::Text("1.2".to_owned()));
        });
        let message = refusal(&vector);
        assert!(message.contains("ver is not 2.0"), "{message}");
    }
}
