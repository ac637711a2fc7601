//! Property tests of the policy language: arbitrary action names and values, name and client
//! patterns and whole policies never panic; what is accepted round-trips (a normalised value
//! or policy validates to itself). Case count: proptest's default (256), raised with
//! `PROPTEST_CASES` for a longer run.
use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use super::actions::ActionName;
use super::patterns::{Cidr, ClientPatterns, NamePatterns, parse_client_ip};
use super::policy::PolicySpec;

/// Text that is sometimes arbitrary and often close to what the parsers look for.
fn pattern_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "!?[a-zA-Z0-9*.@_-]{0,12}",
        "[ !*,a-zKé\u{212a}\u{301}]{0,8}",
    ]
}

fn client_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "!?[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{0,3})?",
        "!?[0-9a-f:]{0,20}(/[0-9+-]{0,4})?",
        Just("*".to_owned()),
    ]
}

fn action_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::sample::select(ActionName::ALL.to_vec()).prop_map(|action| action.to_string()),
        proptest::sample::select(ActionName::ALL.to_vec())
            .prop_map(|action| format!(" {} ", action.as_str().to_ascii_uppercase())),
    ]
}

fn action_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{1,11}",
        "(true|false|1|0|TRUE|yes|)",
        "[cCnsx]{0,5}",
        "(totp|hotp|webauthn|password|sms)(, ?(totp|hotp|webauthn|password|x))*",
        "(any|enclave_only|ANY)",
        "[a-z<>urs]{0,12}",
    ]
}

proptest! {
    #[test]
    fn every_action_value_parses_or_names_its_action(name in action_name(), value in action_value()) {
        let Some(action) = ActionName::parse(name.trim()) else {
            return Ok(());
        };
        match action.parse_value(&value) {
            // The stored form of a value parses back to the same value.
            Ok(parsed) => prop_assert_eq!(action.parse_value(&parsed.to_string()), Ok(parsed)),
            Err(message) => prop_assert!(message.contains(action.as_str())),
        }
    }

    #[test]
    fn action_names_round_trip(action in proptest::sample::select(ActionName::ALL.to_vec())) {
        prop_assert_eq!(ActionName::parse(action.as_str()), Some(action));
    }

    #[test]
    fn name_patterns_normalise_idempotently(raw in pattern_like()) {
        if let Ok(normalized) = NamePatterns::normalize(&raw) {
            prop_assert_eq!(NamePatterns::normalize(&normalized), Ok(normalized));
        }
    }

    #[test]
    fn name_patterns_never_panic_and_exact_names_match_themselves(
        patterns in vec(pattern_like(), 0..6),
        name in pattern_like(),
    ) {
        if let Ok(parsed) = NamePatterns::parse(&patterns) {
            let _ = parsed.matches(&name);
            let _ = parsed.may_overlap(&parsed);
        }
        if let Ok(exact) = enroll_shared::names::normalize_name(&name) && !exact.contains(['*', '!', ',']) {
            let only = NamePatterns::parse(std::slice::from_ref(&name));
            prop_assert!(only.map(|p| p.matches(&exact)).unwrap_or(false));
            // `! name` is refused as a typo, so the exclusion is written without the space.
            let excluded = NamePatterns::parse(&[format!("!{}", name.trim())]);
            prop_assert!(excluded.map(|p| !p.matches(&exact)).unwrap_or(false));
        }
    }

    #[test]
    fn globs_match_what_they_spell(
        head in "[a-z0-9.]{0,6}",
        middle in "[a-z0-9.]{0,6}",
        tail in "[a-z0-9.]{0,6}",
    ) {
        let name = format!("{head}{middle}{tail}");
        prop_assume!(!name.is_empty());
        let pattern = NamePatterns::parse(&[format!("{head}*{tail}")]);
        prop_assert!(pattern.map(|p| p.matches(&name)).unwrap_or(false));
        let star = NamePatterns::parse(&["*".to_owned()]);
        prop_assert!(star.map(|p| p.matches(&name)).unwrap_or(false));
    }

    #[test]
    fn client_patterns_never_panic(patterns in vec(client_like(), 0..6), client in client_like()) {
        let address = parse_client_ip(&client);
        if let Ok(parsed) = ClientPatterns::parse(&patterns) {
            let _ = parsed.matches(address);
            prop_assert!(parsed.may_overlap(&parsed) || !parsed.matches(address));
        }
    }

    #[test]
    fn networks_contain_their_addresses(address in any::<IpAddr>(), prefix in 0u8..=128) {
        let max = if address.is_ipv4() { 32 } else { 128 };
        let cidr = Cidr::parse(&format!("{address}/{prefix}"));
        if prefix <= max {
            prop_assert!(cidr.map(|c| c.contains(address)).unwrap_or(false));
        } else {
            prop_assert!(cidr.is_none());
        }
        prop_assert_eq!(parse_client_ip(&format!(" {address} ")), Some(address.to_canonical()));
    }

    #[test]
    fn policies_validate_or_name_a_field_and_normalise_idempotently(
        name in prop_oneof![any::<String>(), "[a-z0-9_-]{1,20}"],
        scope in prop_oneof![any::<String>(), "( ?enrollment ?|ENROLLMENT|)"],
        realms in vec(pattern_like(), 0..4),
        users in vec(pattern_like(), 0..4),
        clients in vec(client_like(), 0..4),
        actions in btree_map(action_name(), action_value(), 0..5),
        priority in any::<u32>(),
        description in any::<String>(),
    ) {
        let spec = PolicySpec {
            name,
            scope,
            realms,
            users,
            clients,
            actions: actions.into_iter().collect::<BTreeMap<_, _>>(),
            priority,
            active: true,
            description,
        };
        match spec.validate() {
            Ok((normalized, _)) => {
                let again = normalized.clone().validate().map(|(spec, _)| spec);
                prop_assert_eq!(again, Ok(normalized));
            }
            Err(invalid) => prop_assert!(invalid.field.starts_with("policy.")),
        }
    }
}
