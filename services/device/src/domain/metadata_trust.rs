//! What makes a FIDO metadata BLOB trusted beyond its signature chain: the signer's name, the
//! optional pins on its keys, the bound on how far its number may jump, and whether it is
//! past its `nextUpdate`. Pure rules; the adapter and the refresher apply them.
use chrono::NaiveDate;

/// A BLOB whose chain and signature verified and whose signer carries the pinned name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBlob {
    pub payload: Vec<u8>,
    /// SHA-256 digests (base64) of the chain's public keys, the signer's first.
    pub chain_keys: Vec<String>,
    pub key_pin: KeyPinCheck,
}

/// What the configured key pins said of a verified BLOB's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPinCheck {
    /// No `signer_key_pins` configured.
    NotPinned,
    /// A pinned key signed or certified the BLOB.
    Matched,
    /// None of the pinned keys is in the chain (the signer's certificate was renewed, or
    /// worse): the operator checks the chain's keys and updates the pins.
    Changed,
}

impl KeyPinCheck {
    /// Compares the chain's key digests (leaf first, then intermediates) with `pins`.
    pub fn of(pins: &[String], seen: &[String]) -> Self {
        if pins.is_empty() {
            Self::NotPinned
        } else if seen.iter().any(|digest| pins.contains(digest)) {
            Self::Matched
        } else {
            Self::Changed
        }
    }

    pub fn changed(&self) -> bool {
        matches!(self, Self::Changed)
    }
}

/// Why a BLOB was not verified: a closed `reason` (a metric label) and a message for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether a certificate named `names` (its subject CN and DNS SANs) is the pinned signer
/// `expected`: DNS names compare case-insensitively, and a wildcard never stands for it
/// (the pin names one host, not a domain someone else may hold certificates in).
pub fn signer_name_matches(expected: &str, names: &[String]) -> bool {
    let expected = expected.trim().trim_end_matches('.');
    !expected.is_empty()
        && names.iter().any(|name| {
            name.trim()
                .trim_end_matches('.')
                .eq_ignore_ascii_case(expected)
        })
}

/// Whether moving from BLOB `current` to `next` jumps further than `max_jump`. Nothing
/// loaded yet is no jump: the first BLOB has nothing to compare with.
pub fn is_jump(current: Option<u64>, next: u64, max_jump: u64) -> bool {
    current.is_some_and(|current| next.saturating_sub(current) > max_jump)
}

/// Whether a BLOB with `next_update` (MDS3: `YYYY-MM-DD`) is past it on `today`. An
/// unreadable date counts as stale: nobody can say it is current.
pub fn is_stale(next_update: &str, today: NaiveDate) -> bool {
    NaiveDate::parse_from_str(next_update.trim(), "%Y-%m-%d")
        .map_or(true, |next_update| next_update < today)
}

/// Checks a configured key pin: the base64 of a SHA-256 digest (32 bytes).
pub fn parse_key_pin(raw: &str) -> Result<String, String> {
    use base64::Engine;
    let raw = raw.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|error| format!("`{raw}` is not base64: {error}"))?;
    if bytes.len() != 32 {
        return Err(format!(
            "`{raw}` is {} bytes, not a SHA-256 digest (32)",
            bytes.len()
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pinned_name_signs() {
        let names = vec![
            "Metadata signer".to_owned(),
            "MDS.FidoAlliance.org".to_owned(),
        ];
        assert!(signer_name_matches("mds.fidoalliance.org", &names));
        assert!(signer_name_matches("mds.fidoalliance.org.", &names));
        assert!(!signer_name_matches(
            "mds.fidoalliance.org",
            &["evil.example".to_owned()]
        ));
        assert!(!signer_name_matches(
            "mds.fidoalliance.org",
            &["*.fidoalliance.org".to_owned()]
        ));
        assert!(!signer_name_matches("", &names));
        assert!(!signer_name_matches("mds.fidoalliance.org", &[]));
    }

    #[test]
    fn key_pins_match_any_key_of_the_chain() {
        let seen = vec!["leaf".to_owned(), "intermediate".to_owned()];
        assert_eq!(KeyPinCheck::of(&[], &seen), KeyPinCheck::NotPinned);
        assert_eq!(
            KeyPinCheck::of(&["intermediate".to_owned()], &seen),
            KeyPinCheck::Matched
        );
        let changed = KeyPinCheck::of(&["old".to_owned()], &seen);
        assert_eq!(changed, KeyPinCheck::Changed);
        assert!(changed.changed());
    }

    #[test]
    fn jumps_are_measured_from_the_blob_in_use() {
        assert!(!is_jump(None, 1_000_000, 1000));
        assert!(!is_jump(Some(10), 11, 1000));
        assert!(!is_jump(Some(10), 1010, 1000));
        assert!(is_jump(Some(10), 1011, 1000));
        assert!(!is_jump(Some(10), 5, 1000), "older is refused elsewhere");
        assert!(is_jump(Some(0), u64::MAX, 1000));
    }

    #[test]
    fn past_next_update_is_stale() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert!(!is_stale("2026-03-01", today));
        assert!(!is_stale("2026-04-01", today));
        assert!(is_stale("2026-02-28", today));
        assert!(is_stale("soon", today));
    }

    #[test]
    fn key_pins_are_base64_sha256_digests() {
        let pin = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(parse_key_pin(pin).unwrap(), pin);
        assert!(parse_key_pin("not base64!").is_err());
        assert!(parse_key_pin("AAAA").unwrap_err().contains("3 bytes"));
    }
}
