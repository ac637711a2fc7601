//! The attestation roots shipped with the service, enabled by `webauthn.vendor_roots`:
//! operators need not hunt for them. Sources and fingerprints: docs/attestation.md.

/// One shipped root certificate.
pub struct VendorRoot {
    /// The `webauthn.vendor_roots` entry that enables it.
    pub set: &'static str,
    pub file: &'static str,
    pub pem: &'static [u8],
    /// SHA-256 of the DER certificate, lowercase hex (as in docs/attestation.md).
    pub sha256: &'static str,
}

/// The names `webauthn.vendor_roots` accepts.
pub const VENDOR_ROOT_SETS: &[&str] = &["apple", "microsoft-tpm", "google-android"];

pub const VENDOR_ROOTS: &[VendorRoot] = &[
    VendorRoot {
        set: "apple",
        file: "apple-webauthn-root-ca.pem",
        pem: include_bytes!("../../roots/apple-webauthn-root-ca.pem"),
        sha256: "0915dd5c07a28db549d1f677bb5a75d4bfbe9561a773424327762e9e02f9bb29",
    },
    VendorRoot {
        set: "microsoft-tpm",
        file: "microsoft-tpm-root-ca-2014.pem",
        pem: include_bytes!("../../roots/microsoft-tpm-root-ca-2014.pem"),
        sha256: "870c7a35ceab3d59979f2c6a524042d404cb71518004350925fb2ced79a999da",
    },
    VendorRoot {
        set: "google-android",
        file: "google-hardware-attestation-root-2.pem",
        pem: include_bytes!("../../roots/google-hardware-attestation-root-2.pem"),
        sha256: "1ef1a04b8ba58ab94589ac498c8982a783f24ea7307e0159a0c3a73b377d87cc",
    },
    VendorRoot {
        set: "google-android",
        file: "google-hardware-attestation-root-3.pem",
        pem: include_bytes!("../../roots/google-hardware-attestation-root-3.pem"),
        sha256: "ab6641178a36e179aa0c1cdddf9a16eb45fa20943e2b8cd7c7c05c26cf8b487a",
    },
    VendorRoot {
        set: "google-android",
        file: "google-hardware-attestation-root-4.pem",
        pem: include_bytes!("../../roots/google-hardware-attestation-root-4.pem"),
        sha256: "cedb1cb6dc896ae5ec797348bce9286753c2b38ee71ce0fbe34a9a1248800dfc",
    },
];

/// The roots of the named sets; an unknown name is a configuration error naming the setting.
pub fn vendor_roots(sets: &[String]) -> Result<Vec<&'static VendorRoot>, String> {
    if let Some(unknown) = sets
        .iter()
        .find(|set| !VENDOR_ROOT_SETS.contains(&set.as_str()))
    {
        return Err(format!(
            "webauthn: vendor_roots: unknown root set `{unknown}` (known: {})",
            VENDOR_ROOT_SETS.join(", ")
        ));
    }
    Ok(VENDOR_ROOTS
        .iter()
        .filter(|root| sets.iter().any(|set| set == root.set))
        .collect())
}

#[cfg(test)]
mod tests {
    use crypto_glue::der::DecodePem;
    use crypto_glue::x509::{Certificate, x509_digest_cert_sha256};
    use webauthn_rs::prelude::AttestationCaList;

    use super::*;

    #[test]
    fn every_shipped_root_parses_and_matches_its_documented_fingerprint() {
        let docs = include_str!("../../../../docs/attestation.md");
        for root in VENDOR_ROOTS {
            let certificate = Certificate::from_pem(root.pem).unwrap();
            let digest = hex::encode(x509_digest_cert_sha256(&certificate).unwrap());
            assert_eq!(digest, root.sha256, "{}", root.file);
            assert!(docs.contains(root.sha256), "{} not in docs", root.file);
            assert!(docs.contains(root.file), "{} not in docs", root.file);
            let list = AttestationCaList::try_from(root.pem).unwrap();
            assert_eq!(list.len(), 1, "{}", root.file);
        }
        for set in VENDOR_ROOT_SETS {
            assert!(docs.contains(&format!("`{set}`")), "{set} not in docs");
        }
    }

    #[test]
    fn sets_select_their_roots_and_unknown_names_are_refused() {
        let google = vendor_roots(&["google-android".to_owned()]).unwrap();
        assert_eq!(google.len(), 3);
        assert!(google.iter().all(|root| root.set == "google-android"));
        assert_eq!(vendor_roots(&[]).unwrap().len(), 0);
        let all: Vec<String> = VENDOR_ROOT_SETS.iter().map(|set| set.to_string()).collect();
        assert_eq!(vendor_roots(&all).unwrap().len(), VENDOR_ROOTS.len());
        let error = vendor_roots(&["yubico".to_owned()]).err().unwrap();
        assert!(error.contains("webauthn: vendor_roots") && error.contains("yubico"));
    }
}
