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
    assert!(corpus.len() >= 9, "corpus has {} vectors", corpus.len());
    let mut cases = 0;
    for vector in &corpus {
        assert!(
            vector.source.get("repository").is_some(),
            "{}: no source",
            vector.name
        );
        for case in &vector.cases {
            cases += 1;
            let label = format!("{} with {:?}", vector.name, case.vendor_roots);
            match (case.expect.as_str(), run(vector, case)) {
                ("accepted", Ok(attestation)) => {
                    assert_eq!(attestation.format, vector.format, "{label}");
                    let aaguid = vector.aaguid.trim_start_matches(['0', '-']);
                    assert_eq!(attestation.aaguid.is_empty(), aaguid.is_empty(), "{label}");
                    assert_eq!(attestation.trusted_root, case.root, "{label}");
                    assert!(!attestation.backup_eligible, "{label}");
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
    assert!(cases >= 12, "{cases} cases");
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
