//! PIN rules: length bounds and required character classes.
use std::collections::BTreeMap;

use super::actions::{ActionName, SPECIALS};
use super::settings::Settings;

/// Whether a class is required, how to name it, and how to recognise it.
type ClassCheck = (bool, &'static str, fn(char) -> bool);

/// Every rule `pin` breaks, with the deciding policy. Messages never contain the PIN.
pub fn pin_violations(
    pin: &str,
    settings: &Settings,
    decided_by: &BTreeMap<&'static str, String>,
) -> Vec<String> {
    let source = |action: ActionName| match decided_by.get(action.settings_field()) {
        Some(policy) => format!(" (policy {policy})"),
        None => " (default)".to_owned(),
    };
    let mut violations = Vec::new();
    let length = pin.chars().count() as u32;
    if length < settings.otp_pin_minlength {
        violations.push(format!(
            "PIN is shorter than otp_pin_minlength {}{}",
            settings.otp_pin_minlength,
            source(ActionName::OtpPinMinLength)
        ));
    }
    if length > settings.otp_pin_maxlength {
        violations.push(format!(
            "PIN is longer than otp_pin_maxlength {}{}",
            settings.otp_pin_maxlength,
            source(ActionName::OtpPinMaxLength)
        ));
    }
    let required = settings.otp_pin_contents;
    let checks: [ClassCheck; 4] = [
        (required.lowercase, "a lowercase letter (c)", |ch| {
            ch.is_ascii_lowercase()
        }),
        (required.uppercase, "an uppercase letter (C)", |ch| {
            ch.is_ascii_uppercase()
        }),
        (required.digits, "a digit (n)", |ch| ch.is_ascii_digit()),
        (required.specials, "a special character (s)", |ch| {
            SPECIALS.contains(ch)
        }),
    ];
    for (wanted, what, is_class) in checks {
        if wanted && !pin.chars().any(is_class) {
            violations.push(format!(
                "PIN must contain {what} as otp_pin_contents requires{}",
                source(ActionName::OtpPinContents)
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::CharClasses;

    #[test]
    fn lists_every_violation_without_the_pin() {
        let settings = Settings {
            otp_pin_minlength: 6,
            otp_pin_maxlength: 8,
            otp_pin_contents: CharClasses::parse("cns").unwrap(),
            ..Settings::default()
        };
        let decided_by = BTreeMap::from([("otp_pin_minlength", "pins".to_owned())]);
        let violations = pin_violations("AB1", &settings, &decided_by);
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations[0].contains("otp_pin_minlength 6 (policy pins)"));
        assert!(violations.iter().any(|v| v.contains("lowercase")));
        assert!(violations.iter().any(|v| v.contains("special")));
        assert!(violations.iter().all(|v| !v.contains("AB1")));
        assert!(pin_violations("ab1!cdef", &settings, &decided_by).is_empty());
        assert_eq!(
            pin_violations("ab1!cdefgh", &settings, &decided_by).len(),
            1
        );
    }

    #[test]
    fn defaults_accept_any_pin_up_to_64() {
        let settings = Settings::default();
        assert!(pin_violations("", &settings, &BTreeMap::new()).is_empty());
        assert_eq!(
            pin_violations(&"x".repeat(65), &settings, &BTreeMap::new()).len(),
            1
        );
    }
}
