//! Authenticator model rules: the values of `webauthn_aaguid_allow`, `webauthn_aaguid_deny`
//! and `webauthn_min_certification`, and how equal-priority policies combine them.
//!
//! A list entry names an authenticator model either by AAGUID or by its FIDO metadata
//! (MDS3) description. An entry made only of hexadecimal digits and hyphens (optionally in
//! braces or after `urn:uuid:`) is taken as an AAGUID and must be in the canonical
//! 8-4-4-4-12 form (stored lowercase); anything else is a model name. So a mistyped AAGUID
//! is refused instead of silently becoming a model name that never matches.
use std::fmt;

use uuid::Uuid;

/// Longest model name (MDS descriptions are far shorter).
pub const MAX_MODEL_NAME_CHARS: usize = 200;
/// Most entries in one list.
pub const MAX_ENTRIES: usize = 256;

/// One list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEntry {
    Aaguid(Uuid),
    /// Trimmed, inner whitespace runs collapsed to one space, case kept for display.
    ModelName(String),
}

impl ModelEntry {
    /// Parses one trimmed, non-empty entry; the error says what is wrong with it.
    fn parse(item: &str) -> Result<ModelEntry, String> {
        let bare = item
            .strip_prefix('{')
            .and_then(|inner| inner.strip_suffix('}'))
            .or_else(|| {
                item.get(..9)
                    .filter(|prefix| prefix.eq_ignore_ascii_case("urn:uuid:"))
                    .map(|_| &item[9..])
            })
            .unwrap_or(item);
        if bare.chars().all(|ch| ch.is_ascii_hexdigit() || ch == '-') {
            return canonical_uuid(item).map(ModelEntry::Aaguid).ok_or_else(|| {
                format!(
                    "`{item}` is not an AAGUID in canonical form (8-4-4-4-12 hexadecimal digits, e.g. `cb69481e-8ff7-4039-93ec-0a2729a154a8`)"
                )
            });
        }
        if item.chars().any(char::is_control) {
            return Err(format!(
                "model name `{}` contains a control character",
                item.escape_debug()
            ));
        }
        let name = item.split_whitespace().collect::<Vec<_>>().join(" ");
        if name.chars().count() > MAX_MODEL_NAME_CHARS {
            return Err(format!(
                "model name `{name}` is longer than {MAX_MODEL_NAME_CHARS} characters"
            ));
        }
        Ok(ModelEntry::ModelName(name))
    }

    /// Equality as matching sees it: AAGUIDs exactly, model names ignoring case.
    fn same_as(&self, other: &ModelEntry) -> bool {
        match (self, other) {
            (ModelEntry::Aaguid(a), ModelEntry::Aaguid(b)) => a == b,
            (ModelEntry::ModelName(a), ModelEntry::ModelName(b)) => {
                a.to_lowercase() == b.to_lowercase()
            }
            _ => false,
        }
    }
}

/// The canonical hyphenated form only (either case).
fn canonical_uuid(item: &str) -> Option<Uuid> {
    let hyphens_in_place = item.len() == 36
        && item
            .char_indices()
            .all(|(index, ch)| matches!(index, 8 | 13 | 18 | 23) == (ch == '-'));
    hyphens_in_place
        .then(|| Uuid::try_parse(item).ok())
        .flatten()
}

impl fmt::Display for ModelEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Lowercase hyphenated.
            ModelEntry::Aaguid(aaguid) => write!(f, "{aaguid}"),
            ModelEntry::ModelName(name) => f.write_str(name),
        }
    }
}

/// A list of models, without duplicates, in the order written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelList(Vec<ModelEntry>);

impl ModelList {
    /// Parses a comma list; an empty value is the empty list. The error names the bad item.
    pub fn parse(value: &str) -> Result<ModelList, String> {
        let mut list = ModelList::default();
        if value.trim().is_empty() {
            return Ok(list);
        }
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err("an item is empty (two commas in a row, or a trailing comma)".into());
            }
            list.push(ModelEntry::parse(item)?);
        }
        if list.0.len() > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} items"));
        }
        Ok(list)
    }

    fn push(&mut self, entry: ModelEntry) {
        if !self.contains(&entry) {
            self.0.push(entry);
        }
    }

    fn contains(&self, entry: &ModelEntry) -> bool {
        self.0.iter().any(|mine| mine.same_as(entry))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.0
    }

    /// The entries in both lists, compared as written: the policy service has no metadata,
    /// so an AAGUID in one list never meets a model name in the other (the result may be
    /// stricter than "passes both lists", never looser).
    pub fn intersection(&self, other: &ModelList) -> ModelList {
        ModelList(
            self.0
                .iter()
                .filter(|entry| other.contains(entry))
                .cloned()
                .collect(),
        )
    }

    /// The entries in either list.
    pub fn union(&self, other: &ModelList) -> ModelList {
        let mut union = self.clone();
        for entry in &other.0 {
            union.push(entry.clone());
        }
        union
    }
}

impl fmt::Display for ModelList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, entry) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// An allow list: which models may register.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowList {
    /// No allow-list restriction (the default, and an empty action value).
    #[default]
    Unrestricted,
    /// Only these models. Empty only as the intersection of disjoint lists of equal-priority
    /// policies: then no model may register (never read as "unrestricted").
    Only(ModelList),
}

impl AllowList {
    pub fn parse(value: &str) -> Result<AllowList, String> {
        let list = ModelList::parse(value)?;
        Ok(if list.is_empty() {
            AllowList::Unrestricted
        } else {
            AllowList::Only(list)
        })
    }

    /// Both restrictions at once: each list narrows the other.
    pub fn intersection(&self, other: &AllowList) -> AllowList {
        match (self, other) {
            (AllowList::Unrestricted, any) | (any, AllowList::Unrestricted) => any.clone(),
            (AllowList::Only(a), AllowList::Only(b)) => AllowList::Only(a.intersection(b)),
        }
    }
}

impl fmt::Display for AllowList {
    /// The stored form; `Only(empty)` never is stored (it comes from combination only).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowList::Unrestricted => Ok(()),
            AllowList::Only(list) => write!(f, "{list}"),
        }
    }
}

/// The FIDO certification levels, in the order of the MDS3 status names; ordered from no
/// certification to the highest level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum CertificationLevel {
    #[default]
    NotFidoCertified,
    FidoCertified,
    FidoCertifiedL1,
    FidoCertifiedL1Plus,
    FidoCertifiedL2,
    FidoCertifiedL2Plus,
    FidoCertifiedL3,
    FidoCertifiedL3Plus,
}

impl CertificationLevel {
    pub const ALL: [CertificationLevel; 8] = [
        CertificationLevel::NotFidoCertified,
        CertificationLevel::FidoCertified,
        CertificationLevel::FidoCertifiedL1,
        CertificationLevel::FidoCertifiedL1Plus,
        CertificationLevel::FidoCertifiedL2,
        CertificationLevel::FidoCertifiedL2Plus,
        CertificationLevel::FidoCertifiedL3,
        CertificationLevel::FidoCertifiedL3Plus,
    ];

    /// The MDS3 `AuthenticatorStatus` name.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificationLevel::NotFidoCertified => "NOT_FIDO_CERTIFIED",
            CertificationLevel::FidoCertified => "FIDO_CERTIFIED",
            CertificationLevel::FidoCertifiedL1 => "FIDO_CERTIFIED_L1",
            CertificationLevel::FidoCertifiedL1Plus => "FIDO_CERTIFIED_L1plus",
            CertificationLevel::FidoCertifiedL2 => "FIDO_CERTIFIED_L2",
            CertificationLevel::FidoCertifiedL2Plus => "FIDO_CERTIFIED_L2plus",
            CertificationLevel::FidoCertifiedL3 => "FIDO_CERTIFIED_L3",
            CertificationLevel::FidoCertifiedL3Plus => "FIDO_CERTIFIED_L3plus",
        }
    }

    /// Parses an MDS3 status name, ignoring case.
    pub fn parse(value: &str) -> Option<CertificationLevel> {
        let value = value.trim();
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(value))
    }

    /// The rank used to combine equal-priority policies (higher is stricter).
    pub fn rank(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for CertificationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YUBIKEY_5: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
    const WINDOWS_HELLO: &str = "08987058-cadc-4b81-b6e1-30de50dcbe96";

    #[test]
    fn aaguids_are_stored_lowercase_and_other_uuid_forms_are_refused() {
        let list =
            ModelList::parse(" CB69481E-8FF7-4039-93EC-0A2729A154A8 , YubiKey  5 Series").unwrap();
        assert_eq!(list.to_string(), format!("{YUBIKEY_5},YubiKey 5 Series"));
        for bad in [
            "cb69481e8ff7403993ec0a2729a154a8",
            "{cb69481e-8ff7-4039-93ec-0a2729a154a8}",
            "urn:uuid:cb69481e-8ff7-4039-93ec-0a2729a154a8",
            "cb69481e-8ff7-4039-93ec-0a2729a154a",
            "cb69481e8-ff7-4039-93ec-0a2729a154a8",
        ] {
            let message = ModelList::parse(&format!("Feitian ePass, {bad}")).unwrap_err();
            assert!(
                message.contains(bad) && message.contains("canonical"),
                "{message}"
            );
        }
    }

    #[test]
    fn model_names_are_bounded_and_printable() {
        assert!(
            ModelList::parse("Key A,,Key B")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            ModelList::parse("Key\u{7}Bell")
                .unwrap_err()
                .contains("control character")
        );
        let long = "x".repeat(MAX_MODEL_NAME_CHARS + 1);
        assert!(ModelList::parse(&long).unwrap_err().contains("longer than"));
        let too_many = (0..=MAX_ENTRIES)
            .map(|n| format!("model {n}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            ModelList::parse(&too_many)
                .unwrap_err()
                .contains("more than")
        );
        // Duplicates (names ignoring case) are dropped; the first spelling stays.
        assert_eq!(
            ModelList::parse("YubiKey 5,yubikey 5").unwrap().to_string(),
            "YubiKey 5"
        );
    }

    #[test]
    fn allow_lists_intersect_and_an_empty_intersection_allows_nothing() {
        let allow = |value: &str| AllowList::parse(value).unwrap();
        assert_eq!(allow(""), AllowList::Unrestricted);
        assert_eq!(allow("").intersection(&allow(YUBIKEY_5)), allow(YUBIKEY_5));
        let both = allow(&format!("{YUBIKEY_5},Titan Key"))
            .intersection(&allow(&format!("titan key,{WINDOWS_HELLO},{YUBIKEY_5}")));
        assert_eq!(both.to_string(), format!("{YUBIKEY_5},Titan Key"));
        let disjoint = allow(YUBIKEY_5).intersection(&allow(WINDOWS_HELLO));
        assert_eq!(disjoint, AllowList::Only(ModelList::default()));
        // An AAGUID never meets a model name: stricter, never looser.
        assert_eq!(
            allow(YUBIKEY_5).intersection(&allow("YubiKey 5 Series")),
            AllowList::Only(ModelList::default())
        );
    }

    #[test]
    fn deny_lists_unite() {
        let a = ModelList::parse(&format!("{YUBIKEY_5},Titan Key")).unwrap();
        let b = ModelList::parse(&format!("TITAN KEY,{WINDOWS_HELLO}")).unwrap();
        assert_eq!(
            a.union(&b).to_string(),
            format!("{YUBIKEY_5},Titan Key,{WINDOWS_HELLO}")
        );
    }

    #[test]
    fn certification_levels_parse_ignoring_case_and_are_ordered() {
        assert_eq!(
            CertificationLevel::parse("fido_certified_l1PLUS"),
            Some(CertificationLevel::FidoCertifiedL1Plus)
        );
        assert_eq!(CertificationLevel::parse("L1"), None);
        assert_eq!(CertificationLevel::default().as_str(), "NOT_FIDO_CERTIFIED");
        assert!(
            CertificationLevel::ALL
                .windows(2)
                .all(|pair| pair[0] < pair[1])
        );
        for level in CertificationLevel::ALL {
            assert_eq!(CertificationLevel::parse(level.as_str()), Some(level));
        }
    }
}
