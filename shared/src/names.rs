//! The one normalisation of realm and user names, used by both services: the device service
//! when it parses a request's realm and user, the policy service when it matches them and
//! when it stores a policy's realm and user patterns.
//!
//! Two names are the same name exactly when they normalise to the same string, so the rule
//! must never merge two names an identity provider keeps apart. Full Unicode case folding
//! does: the Kelvin sign `K` (U+212A) lowercases to ASCII `k`, `ſ` and `ı` uppercase to
//! ASCII letters, `ß` uppercases to `SS`. Hence:
//!
//! 1. Trim surrounding whitespace.
//! 2. Refuse an empty name and one longer than [`MAX_NAME_CHARS`] characters.
//! 3. Refuse whitespace and control characters anywhere.
//! 4. Refuse a non-ASCII character unless it is a letter or digit that is already lowercase
//!    and case-stable: lowercasing it gives itself, and uppercasing then lowercasing gives
//!    itself back (`é`, `ж`, `中` pass; `É`, `K`, `Ω`, `İ`, `ı`, `ß`, `ς`, `Ａ` do not).
//!    Punctuation, symbols and invisible formatting characters outside ASCII are refused.
//! 5. Refuse a name that is not in Unicode normalization form NFKC (decomposed accents,
//!    fullwidth and other compatibility forms), so no two accepted names differ only in
//!    how the same text is encoded.
//! 6. Fold ASCII letters to lowercase (`KATE` and `kate` are one name); nothing else folds.
//!
//! Every accepted name is therefore lowercase ASCII plus characters that no case mapping or
//! normalisation changes, and two distinct accepted names never normalise to the same one.
use std::fmt;

/// The longest realm or user name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Why a realm or user name was refused (the caller names the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// Whitespace or a control character.
    Whitespace(char),
    /// A non-ASCII character that is not a lowercase, case-stable letter or digit.
    Refused(char),
    /// Not in Unicode normalization form NFKC.
    NotNormalized,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("is empty"),
            NameError::TooLong => write!(f, "is longer than {MAX_NAME_CHARS} characters"),
            NameError::Whitespace(ch) => write!(
                f,
                "may not contain whitespace or control characters (U+{:04X})",
                u32::from(*ch)
            ),
            NameError::Refused(ch) => write!(
                f,
                "may not contain U+{:04X}: outside ASCII only lowercase, case-stable letters \
                 and digits are allowed (case folds ASCII letters only)",
                u32::from(*ch)
            ),
            NameError::NotNormalized => f.write_str(
                "is not in Unicode normalization form NFKC (use composed characters, no \
                 fullwidth or other compatibility forms)",
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// Normalises a realm or user name (see the module documentation for the rule).
pub fn normalize_name(raw: &str) -> Result<String, NameError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    for ch in name.chars() {
        if ch.is_whitespace() || ch.is_control() {
            return Err(NameError::Whitespace(ch));
        }
        let allowed = ch.is_ascii() || (ch.is_alphanumeric() && is_case_stable(ch));
        if !allowed {
            return Err(NameError::Refused(ch));
        }
    }
    if !unicode_normalization::is_nfkc(name) {
        return Err(NameError::NotNormalized);
    }
    Ok(fold_case(name))
}

/// The case folding of names: ASCII letters only. For a name [`normalize_name`] accepted,
/// this is the identity on everything but ASCII capitals.
pub fn fold_case(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Lowercase already, and uppercasing then lowercasing gives it back: no case mapping can
/// turn another character into it or it into another.
fn is_case_stable(ch: char) -> bool {
    let mut lower = ch.to_lowercase();
    if lower.next() != Some(ch) || lower.next().is_some() {
        return false;
    }
    let mut round_trip = ch.to_uppercase().flat_map(char::to_lowercase);
    round_trip.next() == Some(ch) && round_trip.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_case_folds_and_surrounding_space_is_trimmed() {
        assert_eq!(normalize_name(" KaTe ").unwrap(), "kate");
        assert_eq!(normalize_name("Corp.EU-1_x@y").unwrap(), "corp.eu-1_x@y");
        assert_eq!(
            normalize_name("KATE").unwrap(),
            normalize_name("kate").unwrap()
        );
    }

    #[test]
    fn kelvin_sign_is_refused_not_folded_to_k() {
        assert_eq!(
            normalize_name("\u{212A}ate"),
            Err(NameError::Refused('\u{212A}'))
        );
    }

    #[test]
    fn characters_whose_case_maps_elsewhere_are_refused() {
        for (name, refused) in [
            ("\u{2126}mega", '\u{2126}'),     // OHM SIGN lowercases to Greek omega
            ("\u{0130}stanbul", '\u{0130}'),  // Turkish dotted capital I
            ("\u{0131}stanbul", '\u{0131}'),  // dotless i uppercases to ASCII I
            ("stra\u{00DF}e", '\u{00DF}'),    // ß uppercases to SS
            ("\u{017F}am", '\u{017F}'),       // long s uppercases to ASCII S
            ("\u{FF21}dmin", '\u{FF21}'),     // fullwidth A
            ("m\u{00DC}ller", '\u{00DC}'),    // uppercase non-ASCII letter
            ("\u{03C3}\u{03C2}", '\u{03C2}'), // final sigma uppercases to Σ, lowercases to σ
        ] {
            assert_eq!(
                normalize_name(name),
                Err(NameError::Refused(refused)),
                "{name}"
            );
        }
    }

    #[test]
    fn compatibility_and_decomposed_forms_are_refused() {
        // Fullwidth lowercase a is case-stable but NFKC maps it to ASCII `a`.
        assert_eq!(
            normalize_name("\u{FF41}dmin"),
            Err(NameError::NotNormalized)
        );
        // e + combining acute: NFKC composes it to é.
        assert_eq!(
            normalize_name("jose\u{0301}"),
            Err(NameError::Refused('\u{0301}'))
        );
    }

    #[test]
    fn lowercase_case_stable_letters_are_kept_as_they_are() {
        assert_eq!(normalize_name("m\u{00FC}ller").unwrap(), "m\u{00FC}ller");
        assert_eq!(normalize_name("José").unwrap(), "josé");
        assert_eq!(normalize_name("иван").unwrap(), "иван");
        assert_eq!(normalize_name("王").unwrap(), "王");
    }

    #[test]
    fn empty_long_whitespace_and_invisible_are_refused() {
        assert_eq!(normalize_name("  "), Err(NameError::Empty));
        assert_eq!(
            normalize_name(&"x".repeat(MAX_NAME_CHARS)).unwrap().len(),
            MAX_NAME_CHARS
        );
        assert_eq!(
            normalize_name(&"x".repeat(MAX_NAME_CHARS + 1)),
            Err(NameError::TooLong)
        );
        assert_eq!(normalize_name("a b"), Err(NameError::Whitespace(' ')));
        assert_eq!(
            normalize_name("a\u{00A0}b"),
            Err(NameError::Whitespace('\u{00A0}'))
        );
        assert_eq!(
            normalize_name("ka\u{200B}te"),
            Err(NameError::Refused('\u{200B}'))
        );
        assert_eq!(
            normalize_name("kate\u{00AD}"),
            Err(NameError::Refused('\u{00AD}'))
        );
    }

    #[test]
    fn errors_name_the_code_point() {
        let message = NameError::Refused('\u{212A}').to_string();
        assert!(message.contains("U+212A"), "{message}");
    }
}

/// Property tests: arbitrary text never panics, normalisation is idempotent, accepted names
/// are stable under ASCII case and surrounding whitespace. Case count: proptest's default
/// (256), raised with `PROPTEST_CASES`.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    /// Mostly name-like text, with the characters the rule singles out mixed in.
    fn name_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9._@-]{0,20}",
            "[a-zA-Z0-9 éÉжKΩİıßςＡ\u{301}\u{200b}\t]{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn normalize_is_idempotent_and_accepted_names_are_stable(raw in name_like()) {
            if let Ok(name) = normalize_name(&raw) {
                prop_assert_eq!(normalize_name(&name), Ok(name.clone()));
                prop_assert_eq!(normalize_name(&name.to_ascii_uppercase()), Ok(name.clone()));
                prop_assert_eq!(normalize_name(&format!(" {name}\t")), Ok(name.clone()));
                prop_assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS);
                prop_assert!(!name.chars().any(|ch| ch.is_ascii_uppercase() || ch.is_whitespace()));
                prop_assert_eq!(fold_case(&name), name);
            }
        }

        #[test]
        fn names_that_differ_after_folding_never_merge(a in name_like(), b in name_like()) {
            if let (Ok(left), Ok(right)) = (normalize_name(&a), normalize_name(&b)) {
                prop_assert_eq!(left == right, a.trim().eq_ignore_ascii_case(b.trim()));
            }
        }
    }
}
