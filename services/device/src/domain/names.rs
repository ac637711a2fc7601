//! Newtypes for the names requests carry, parsed once at the edge.
use std::fmt;

use enroll_shared::names::{NameError as NormalizeError, normalize_name};

/// Why a name was refused (the caller adds the field).
pub type NameError = String;

/// Realms and users follow the one rule both services share
/// ([`enroll_shared::names::normalize_name`]): trimmed, ASCII case folded, and any character
/// whose case maps to another refused, so two names the identity provider keeps apart
/// (`kate` and `\u{212A}ate` with a Kelvin sign) never share one user's devices.
fn parse_name(raw: &str, what: &str) -> Result<String, NameError> {
    normalize_name(raw).map_err(|error| match error {
        NormalizeError::Empty => "required".to_owned(),
        other => format!("{what} {other}"),
    })
}

macro_rules! name_type {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(raw: String) -> Result<Self, NameError> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, NameError> {
                parse_name(raw, $what).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(Realm, "a realm");
name_type!(UserName, "a user name");

/// A token serial: type prefix plus random hex (`TOTP3F9A12C4`), or an imported serial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Serial(String);

impl Serial {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let serial = raw.trim();
        if serial.is_empty() {
            return Err("required".to_owned());
        }
        if serial.len() > 64
            || !serial
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            return Err(format!(
                "`{serial}` must be 1..=64 characters of letters, digits, `-`, `_`, `.`"
            ));
        }
        Ok(Self(serial.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_lowercased_and_checked() {
        assert_eq!(Realm::parse(" Corp ").unwrap().as_str(), "corp");
        assert_eq!(UserName::parse("").unwrap_err(), "required");
        assert!(UserName::parse("a b").is_err());
        assert!(UserName::parse(&"x".repeat(129)).is_err());
        assert_eq!(Serial::parse("TOTP00AB").unwrap().as_str(), "TOTP00AB");
        assert!(Serial::parse("bad serial").is_err());
    }

    #[test]
    fn only_ascii_case_folds() {
        assert_eq!(
            UserName::parse("KATE").unwrap(),
            UserName::parse("kate").unwrap()
        );
        let refused = UserName::parse("\u{212A}ate").unwrap_err();
        assert!(
            refused.starts_with("a user name") && refused.contains("U+212A"),
            "{refused}"
        );
        assert!(Realm::parse("\u{FF21}cme").is_err());
        assert_eq!(
            Realm::parse("m\u{00FC}nchen").unwrap().as_str(),
            "m\u{00FC}nchen"
        );
    }
}
