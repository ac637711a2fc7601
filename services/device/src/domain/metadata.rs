//! The FIDO Metadata Service (MDS3) BLOB's payload, as this service uses it: per authenticator
//! model (AAGUID) its description, its latest status report, its certification level and its
//! attestation roots. Parsing is lenient on purpose: the FIDO Alliance adds fields to the
//! BLOB, and an unknown field must not make the whole list of revoked models unreadable.
//! Only FIDO2 entries (those with an AAGUID) are kept; U2F and UAF entries are skipped.
use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use uuid::Uuid;

/// Statuses that make a model unacceptable: its keys or its user verification can no
/// longer be trusted, or the FIDO Alliance withdrew its certification.
const COMPROMISE_STATUSES: [&str; 4] = [
    "REVOKED",
    "ATTESTATION_KEY_COMPROMISE",
    "USER_VERIFICATION_BYPASS",
    "USER_KEY_REMOTE_COMPROMISE",
];

/// A FIDO certification level, ordered from lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertificationLevel {
    L1,
    L1Plus,
    L2,
    L2Plus,
    L3,
    L3Plus,
}

impl CertificationLevel {
    /// A status report's certification status (`FIDO_CERTIFIED` is level 1); `None` for
    /// any other status.
    pub fn parse(status: &str) -> Option<Self> {
        match status.trim().to_ascii_uppercase().as_str() {
            "FIDO_CERTIFIED" | "FIDO_CERTIFIED_L1" => Some(Self::L1),
            "FIDO_CERTIFIED_L1PLUS" => Some(Self::L1Plus),
            "FIDO_CERTIFIED_L2" => Some(Self::L2),
            "FIDO_CERTIFIED_L2PLUS" => Some(Self::L2Plus),
            "FIDO_CERTIFIED_L3" => Some(Self::L3),
            "FIDO_CERTIFIED_L3PLUS" => Some(Self::L3Plus),
            _ => None,
        }
    }

    /// The MDS3 spelling, e.g. `FIDO_CERTIFIED_L1plus`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "FIDO_CERTIFIED_L1",
            Self::L1Plus => "FIDO_CERTIFIED_L1plus",
            Self::L2 => "FIDO_CERTIFIED_L2",
            Self::L2Plus => "FIDO_CERTIFIED_L2plus",
            Self::L3 => "FIDO_CERTIFIED_L3",
            Self::L3Plus => "FIDO_CERTIFIED_L3plus",
        }
    }
}

impl fmt::Display for CertificationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status report of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The MDS3 status, e.g. `FIDO_CERTIFIED_L1`, `REVOKED`.
    pub status: String,
    /// ISO 8601 date from which it applies; empty when the BLOB gives none.
    pub effective_date: String,
}

/// One authenticator model of the BLOB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub aaguid: Uuid,
    /// The metadata statement's `description`, e.g. "YubiKey 5 Series".
    pub description: String,
    /// The latest status report (by effective date; the later one in the list on a tie).
    pub latest_status: Option<StatusReport>,
    /// The level of the latest certification report, when the model is certified.
    pub certification: Option<CertificationLevel>,
    /// The metadata statement's `attestationRootCertificates`, DER.
    pub attestation_roots: Vec<Vec<u8>>,
    /// The metadata statement's `keyProtection` (`software`, `hardware`, `tee`,
    /// `secure_element`, `remote_handle`), lowercase.
    pub key_protection: Vec<String>,
    /// The metadata statement's `attachmentHint` (`internal`, `external`, `wired`, ...),
    /// lowercase.
    pub attachment_hint: Vec<String>,
}

impl Model {
    /// Whether the metadata describes a platform authenticator whose keys the hardware
    /// protects: `keyProtection` names `hardware` or `secure_element` (not only `software`)
    /// and `attachmentHint` names `internal`. Only such a model's roots may stand in for a
    /// vendor root under `enclave_only`: a certified software or roaming authenticator is
    /// still not an enclave.
    pub fn is_enclave(&self) -> bool {
        let hardware = self
            .key_protection
            .iter()
            .any(|protection| protection == "hardware" || protection == "secure_element");
        let internal = self.attachment_hint.iter().any(|hint| hint == "internal");
        hardware && internal
    }

    /// The latest status report when it marks the model compromised.
    pub fn compromise(&self) -> Option<&StatusReport> {
        self.latest_status
            .as_ref()
            .filter(|report| COMPROMISE_STATUSES.contains(&report.status.as_str()))
    }

    /// Why a device of this model is unacceptable, for errors, audit events and the
    /// device's flag; `None` when it is not compromised.
    pub fn compromise_reason(&self, blob_no: u64) -> Option<String> {
        self.compromise().map(|report| {
            let since = if report.effective_date.is_empty() {
                String::new()
            } else {
                format!(" since {}", report.effective_date)
            };
            format!(
                "authenticator model `{}` ({}) is {}{since} in the FIDO metadata (BLOB no {blob_no})",
                self.description, self.aaguid, report.status
            )
        })
    }
}

/// A certified, uncompromised model's attestation roots: trust anchors for `enclave_only`
/// that vouch for this model (AAGUID) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelAnchor {
    pub aaguid: Uuid,
    pub description: String,
    pub roots_der: Vec<Vec<u8>>,
    /// [`Model::is_enclave`]: whether these roots count for `enclave_only` (they bind the
    /// model's AAGUID either way).
    pub enclave: bool,
}

/// A verified BLOB's payload, indexed by AAGUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataCatalog {
    /// The BLOB's serial number (`no`): strictly increasing from one BLOB to the next.
    pub no: u64,
    /// When the next BLOB is due at the latest (ISO 8601 date, as published).
    pub next_update: String,
    models: HashMap<Uuid, Model>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPayload {
    no: u64,
    #[serde(default)]
    next_update: String,
    #[serde(default)]
    entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    #[serde(default)]
    aaguid: Option<String>,
    #[serde(default)]
    metadata_statement: Option<RawStatement>,
    #[serde(default)]
    status_reports: Vec<RawStatusReport>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatement {
    #[serde(default)]
    aaguid: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    attestation_root_certificates: Vec<String>,
    /// Read as any JSON: MDS3 spells these as lists of strings, older statements as
    /// bit fields; anything but strings reads as nothing (never as hardware).
    #[serde(default)]
    key_protection: serde_json::Value,
    #[serde(default)]
    attachment_hint: serde_json::Value,
}

/// The strings of a metadata list (`["hardware", "tee"]`), lowercase; anything else, none.
fn names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str())
                .map(|item| item.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatusReport {
    status: String,
    #[serde(default)]
    effective_date: Option<String>,
}

impl MetadataCatalog {
    /// The BLOB payload (the JWT's verified JSON). Entries whose AAGUID or roots do not
    /// parse are skipped (logged by the caller from `skipped`), not fatal: one bad entry
    /// must not hide every other model's status.
    pub fn parse(payload: &[u8]) -> Result<(Self, Vec<String>), String> {
        let raw: RawPayload = serde_json::from_slice(payload)
            .map_err(|error| format!("the metadata BLOB payload is not MDS3 JSON: {error}"))?;
        let mut models = HashMap::new();
        let mut skipped = Vec::new();
        for (index, entry) in raw.entries.into_iter().enumerate() {
            let statement = entry.metadata_statement;
            let Some(aaguid_text) = entry.aaguid.clone().or_else(|| {
                statement
                    .as_ref()
                    .and_then(|statement| statement.aaguid.clone())
            }) else {
                // U2F (key identifiers) and UAF (AAID) entries: no WebAuthn model.
                continue;
            };
            let Ok(aaguid) = Uuid::parse_str(aaguid_text.trim()) else {
                skipped.push(format!(
                    "entry {index}: aaguid `{aaguid_text}` is not a UUID"
                ));
                continue;
            };
            let (description, roots, key_protection, attachment_hint) = match statement {
                Some(statement) => (
                    statement.description,
                    statement.attestation_root_certificates,
                    names(&statement.key_protection),
                    names(&statement.attachment_hint),
                ),
                None => (String::new(), Vec::new(), Vec::new(), Vec::new()),
            };
            let mut attestation_roots = Vec::with_capacity(roots.len());
            for root in roots {
                match STANDARD.decode(root.trim()) {
                    Ok(der) => attestation_roots.push(der),
                    Err(error) => skipped.push(format!(
                        "entry {index} ({aaguid}): an attestation root is not base64 ({error})"
                    )),
                }
            }
            let reports: Vec<StatusReport> = entry
                .status_reports
                .into_iter()
                .map(|report| StatusReport {
                    status: report.status.trim().to_owned(),
                    effective_date: report.effective_date.unwrap_or_default().trim().to_owned(),
                })
                .collect();
            let latest_status = latest(reports.iter()).cloned();
            let certification = latest(reports.iter().filter(|report| {
                CertificationLevel::parse(&report.status).is_some()
                    || report.status == "NOT_FIDO_CERTIFIED"
            }))
            .and_then(|report| CertificationLevel::parse(&report.status));
            models.insert(
                aaguid,
                Model {
                    aaguid,
                    description,
                    latest_status,
                    certification,
                    attestation_roots,
                    key_protection,
                    attachment_hint,
                },
            );
        }
        Ok((
            Self {
                no: raw.no,
                next_update: raw.next_update,
                models,
            },
            skipped,
        ))
    }

    /// The model of an AAGUID as a device records it (any UUID spelling).
    pub fn model(&self, aaguid: &str) -> Option<&Model> {
        let aaguid = Uuid::parse_str(aaguid.trim()).ok()?;
        self.models.get(&aaguid)
    }

    /// How many WebAuthn models the BLOB lists.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The models whose latest status marks them compromised.
    pub fn compromised(&self) -> impl Iterator<Item = &Model> {
        self.models
            .values()
            .filter(|model| model.compromise().is_some())
    }

    /// Attestation roots of the certified, uncompromised models: trust anchors for
    /// `enclave_only`, each bound to its model's AAGUID.
    pub fn anchors(&self) -> Vec<ModelAnchor> {
        let mut anchors: Vec<ModelAnchor> = self
            .models
            .values()
            .filter(|model| {
                model.certification.is_some()
                    && model.compromise().is_none()
                    && !model.attestation_roots.is_empty()
            })
            .map(|model| ModelAnchor {
                aaguid: model.aaguid,
                description: model.description.clone(),
                roots_der: model.attestation_roots.clone(),
                enclave: model.is_enclave(),
            })
            .collect();
        anchors.sort_by_key(|anchor| anchor.aaguid);
        anchors
    }
}

/// The latest report: the greatest effective date, the later one in the list on a tie
/// (ISO 8601 dates compare as text).
fn latest<'a>(reports: impl Iterator<Item = &'a StatusReport>) -> Option<&'a StatusReport> {
    reports.fold(None, |best: Option<&StatusReport>, report| match best {
        Some(best) if best.effective_date > report.effective_date => Some(best),
        _ => Some(report),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const YUBIKEY: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
    const BROKEN: &str = "0bb43545-fd2c-4185-87dd-feb0b2916ace";

    fn payload() -> serde_json::Value {
        serde_json::json!({
            "legalHeader": "test",
            "no": 7,
            "nextUpdate": "2026-12-01",
            "someFutureField": {"x": 1},
            "entries": [
                {
                    "aaguid": YUBIKEY,
                    "metadataStatement": {
                        "description": "YubiKey 5 Series",
                        "aaguid": YUBIKEY,
                        "attestationRootCertificates": ["AQID"],
                        "keyProtection": ["hardware", "secure_element"],
                        "attachmentHint": ["external", "wired"],
                        "newStatementField": true
                    },
                    "statusReports": [
                        {"status": "FIDO_CERTIFIED_L1", "effectiveDate": "2020-05-12"},
                        {"status": "FIDO_CERTIFIED_L2", "effectiveDate": "2021-01-02"},
                        {"status": "UPDATE_AVAILABLE", "effectiveDate": "2022-03-04"}
                    ],
                    "timeOfLastStatusChange": "2022-03-04"
                },
                {
                    "metadataStatement": {"description": "Broken key", "aaguid": BROKEN},
                    "statusReports": [
                        {"status": "FIDO_CERTIFIED", "effectiveDate": "2019-01-01"},
                        {"status": "ATTESTATION_KEY_COMPROMISE", "effectiveDate": "2023-06-01"}
                    ]
                },
                {"attestationCertificateKeyIdentifiers": ["abcd"], "statusReports": []},
                {"aaguid": "not-a-uuid", "statusReports": []}
            ]
        })
    }

    fn catalog() -> MetadataCatalog {
        let (catalog, skipped) = MetadataCatalog::parse(payload().to_string().as_bytes()).unwrap();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        catalog
    }

    #[test]
    fn parses_models_levels_and_latest_status_ignoring_unknown_fields() {
        let catalog = catalog();
        assert_eq!(
            (catalog.no, catalog.next_update.as_str()),
            (7, "2026-12-01")
        );
        assert_eq!(catalog.len(), 2, "U2F entry and bad AAGUID skipped");
        let yubikey = catalog.model(&YUBIKEY.to_uppercase()).unwrap();
        assert_eq!(yubikey.description, "YubiKey 5 Series");
        assert_eq!(yubikey.certification, Some(CertificationLevel::L2));
        assert_eq!(
            yubikey.latest_status.as_ref().unwrap().status,
            "UPDATE_AVAILABLE"
        );
        assert_eq!(yubikey.attestation_roots, vec![vec![1u8, 2, 3]]);
        assert!(yubikey.compromise().is_none());
        let broken = catalog.model(BROKEN).unwrap();
        let reason = broken.compromise_reason(catalog.no).unwrap();
        assert!(
            reason.contains("ATTESTATION_KEY_COMPROMISE since 2023-06-01"),
            "{reason}"
        );
        assert!(
            reason.contains("Broken key") && reason.contains("BLOB no 7"),
            "{reason}"
        );
        assert_eq!(catalog.compromised().count(), 1);
        // Only certified, uncompromised models with roots anchor enclave_only.
        let anchors = catalog.anchors();
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].aaguid.to_string(), YUBIKEY);
        assert!(catalog.model("nonsense").is_none());
    }

    #[test]
    fn every_compromise_status_counts_and_others_do_not() {
        for (status, compromised) in [
            ("REVOKED", true),
            ("ATTESTATION_KEY_COMPROMISE", true),
            ("USER_VERIFICATION_BYPASS", true),
            ("USER_KEY_REMOTE_COMPROMISE", true),
            ("USER_KEY_PHYSICAL_COMPROMISE", false),
            ("UPDATE_AVAILABLE", false),
            ("FIDO_CERTIFIED_L3plus", false),
        ] {
            let mut value = payload();
            value["entries"][0]["statusReports"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"status": status, "effectiveDate": "2025-01-01"}));
            let (catalog, _) = MetadataCatalog::parse(value.to_string().as_bytes()).unwrap();
            let model = catalog.model(YUBIKEY).unwrap();
            assert_eq!(model.compromise().is_some(), compromised, "{status}");
        }
    }

    #[test]
    fn a_later_report_wins_and_ties_go_to_the_later_entry() {
        let reports = [
            StatusReport {
                status: "REVOKED".into(),
                effective_date: "2024-01-01".into(),
            },
            StatusReport {
                status: "FIDO_CERTIFIED_L1".into(),
                effective_date: "2023-01-01".into(),
            },
            StatusReport {
                status: "UPDATE_AVAILABLE".into(),
                effective_date: "2024-01-01".into(),
            },
        ];
        assert_eq!(latest(reports.iter()).unwrap().status, "UPDATE_AVAILABLE");
        assert!(latest(std::iter::empty()).is_none());
    }

    #[test]
    fn levels_order_and_round_trip() {
        assert!(CertificationLevel::L1 < CertificationLevel::L1Plus);
        assert!(CertificationLevel::L2Plus < CertificationLevel::L3);
        for level in [
            CertificationLevel::L1,
            CertificationLevel::L1Plus,
            CertificationLevel::L2,
            CertificationLevel::L2Plus,
            CertificationLevel::L3,
            CertificationLevel::L3Plus,
        ] {
            assert_eq!(CertificationLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(
            CertificationLevel::parse("FIDO_CERTIFIED"),
            Some(CertificationLevel::L1)
        );
        assert_eq!(CertificationLevel::parse("NOT_FIDO_CERTIFIED"), None);
    }

    /// Only hardware-protected keys of an internal authenticator make a model's roots count
    /// for `enclave_only`; what the statement does not say (or says as a bit field) never
    /// reads as hardware.
    #[test]
    fn only_internal_hardware_models_anchor_enclave_only() {
        let yubikey = catalog();
        let yubikey = yubikey.model(YUBIKEY).unwrap();
        assert_eq!(yubikey.key_protection, ["hardware", "secure_element"]);
        assert_eq!(yubikey.attachment_hint, ["external", "wired"]);
        assert!(!yubikey.is_enclave(), "a roaming security key");
        for (protection, hint, enclave) in [
            (
                serde_json::json!(["hardware", "tee"]),
                serde_json::json!(["internal"]),
                true,
            ),
            (
                serde_json::json!(["Secure_Element"]),
                serde_json::json!(["internal"]),
                true,
            ),
            (
                serde_json::json!(["software"]),
                serde_json::json!(["internal"]),
                false,
            ),
            (
                serde_json::json!(["tee"]),
                serde_json::json!(["internal"]),
                false,
            ),
            (
                serde_json::json!(["hardware"]),
                serde_json::json!(["external"]),
                false,
            ),
            (serde_json::json!(10), serde_json::json!(1), false),
            (
                serde_json::Value::Null,
                serde_json::json!(["internal"]),
                false,
            ),
        ] {
            let mut value = payload();
            let statement = &mut value["entries"][0]["metadataStatement"];
            statement["keyProtection"] = protection.clone();
            statement["attachmentHint"] = hint.clone();
            let (catalog, skipped) = MetadataCatalog::parse(value.to_string().as_bytes()).unwrap();
            assert_eq!(skipped.len(), 1, "{protection} {hint}: {skipped:?}");
            let model = catalog.model(YUBIKEY).unwrap();
            assert_eq!(model.is_enclave(), enclave, "{protection} {hint}");
            assert_eq!(catalog.anchors()[0].enclave, enclave, "{protection} {hint}");
        }
    }

    #[test]
    fn a_payload_without_no_is_refused() {
        assert!(MetadataCatalog::parse(br#"{"entries": []}"#).is_err());
        assert!(MetadataCatalog::parse(b"not json").is_err());
    }
}
