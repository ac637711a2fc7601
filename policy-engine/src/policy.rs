//! A policy as admins write it, and its validated, compiled form.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::actions::{ActionName, ActionValue};
use super::patterns::{ClientPatterns, NamePatterns};

/// The only scope there is.
pub const ENROLLMENT_SCOPE: &str = "enrollment";

/// A policy's content, as written by an admin (and stored, after normalization).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub name: String,
    pub scope: String,
    pub realms: Vec<String>,
    pub users: Vec<String>,
    pub clients: Vec<String>,
    pub actions: BTreeMap<String, String>,
    pub priority: u32,
    pub active: bool,
    pub description: String,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub spec: PolicySpec,
    pub etag: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// A stored policy that cannot be read back (a row that does not parse, or a policy that no
/// longer validates, e.g. after an edit outside the service or a stricter rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadablePolicy {
    pub name: String,
    /// Whether the row says it is active: an inactive policy decides nothing, so only an
    /// active one stops decisions.
    pub active: bool,
    pub reason: String,
}

/// A field of a policy that fails validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// The field path, e.g. `policy.actions.max_token_per_user` or `policy.clients[1]`.
    pub field: String,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A policy ready for matching: patterns parsed, action values typed.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub name: String,
    pub priority: u32,
    pub active: bool,
    pub realms: NamePatterns,
    pub users: NamePatterns,
    pub clients: ClientPatterns,
    /// Sorted by action.
    pub actions: Vec<(ActionName, ActionValue)>,
}

const MAX_PATTERNS: usize = 256;

impl PolicySpec {
    /// Validates every field; returns the normalized spec (canonical action names and
    /// values, default scope and priority) and its compiled form.
    pub fn validate(mut self) -> Result<(PolicySpec, CompiledPolicy), InvalidField> {
        self.name = self.name.trim().to_owned();
        validate_name(&self.name)?;
        self.scope = match self.scope.trim() {
            "" => ENROLLMENT_SCOPE.to_owned(),
            scope if scope.eq_ignore_ascii_case(ENROLLMENT_SCOPE) => ENROLLMENT_SCOPE.to_owned(),
            other => {
                return Err(InvalidField::new(
                    "policy.scope",
                    format!("unknown scope `{other}`: the only scope is `enrollment`"),
                ));
            }
        };
        if self.priority == 0 {
            self.priority = 1;
        }
        enroll_shared::text::check_storable(&self.description, 1024)
            .map_err(|message| InvalidField::new("policy.description", message))?;
        for (field, patterns) in [
            ("realms", &self.realms),
            ("users", &self.users),
            ("clients", &self.clients),
        ] {
            if patterns.len() > MAX_PATTERNS {
                return Err(InvalidField::new(
                    format!("policy.{field}"),
                    format!("more than {MAX_PATTERNS} patterns"),
                ));
            }
        }
        let pattern_error = |field: &'static str| {
            move |(index, message): (usize, String)| {
                InvalidField::new(format!("policy.{field}[{index}]"), message)
            }
        };
        // Realm and user patterns are stored normalised, as the names they match are.
        for (field, list) in [("realms", &mut self.realms), ("users", &mut self.users)] {
            for (index, pattern) in list.iter_mut().enumerate() {
                *pattern = NamePatterns::normalize(pattern)
                    .map_err(|message| pattern_error(field)((index, message)))?;
            }
        }
        let realms = NamePatterns::parse(&self.realms).map_err(pattern_error("realms"))?;
        let users = NamePatterns::parse(&self.users).map_err(pattern_error("users"))?;
        let clients = ClientPatterns::parse(&self.clients).map_err(pattern_error("clients"))?;
        for pattern in self.clients.iter_mut() {
            *pattern = pattern.trim().to_owned();
        }

        let mut normalized = BTreeMap::new();
        let mut typed = Vec::with_capacity(self.actions.len());
        for (raw_name, raw_value) in &self.actions {
            // Values are stored as given (templates): none may hold what PostgreSQL cannot.
            let max_chars =
                ActionName::parse(raw_name.trim()).map_or(1024, |action| action.max_value_chars());
            enroll_shared::text::check_storable(raw_value, max_chars).map_err(|message| {
                InvalidField::new(
                    format!("policy.actions.{}", raw_name.escape_debug()),
                    message,
                )
            })?;
            let action = ActionName::parse(raw_name.trim()).ok_or_else(|| {
                InvalidField::new(
                    format!("policy.actions.{raw_name}"),
                    format!("unknown action `{raw_name}` (see the action reference)"),
                )
            })?;
            let value = action.parse_value(raw_value).map_err(|message| {
                InvalidField::new(format!("policy.actions.{action}"), message)
            })?;
            if normalized
                .insert(action.as_str().to_owned(), value.to_string())
                .is_some()
            {
                return Err(InvalidField::new(
                    format!("policy.actions.{action}"),
                    format!("action `{action}` is set twice"),
                ));
            }
            typed.push((action, value));
        }
        typed.sort_by_key(|(action, _)| *action);
        let int = |wanted: ActionName| {
            typed
                .iter()
                .find(|(action, _)| *action == wanted)
                .and_then(|(_, value)| value.as_int())
        };
        if let (Some(min), Some(max)) = (
            int(ActionName::OtpPinMinLength),
            int(ActionName::OtpPinMaxLength),
        ) && min > max
        {
            return Err(InvalidField::new(
                "policy.actions.otp_pin_minlength",
                format!("otp_pin_minlength {min} is greater than otp_pin_maxlength {max}"),
            ));
        }
        self.actions = normalized;

        let compiled = CompiledPolicy {
            name: self.name.clone(),
            priority: self.priority,
            active: self.active,
            realms,
            users,
            clients,
            actions: typed,
        };
        Ok((self, compiled))
    }
}

/// Policy names: 1..=64 of letters, digits, `-`, `_`, `.`.
pub fn validate_name(name: &str) -> Result<(), InvalidField> {
    if name.is_empty() {
        return Err(InvalidField::new("policy.name", "must not be empty"));
    }
    if name.len() > 64
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        return Err(InvalidField::new(
            "policy.name",
            format!("`{name}` must be 1..=64 characters of letters, digits, `-`, `_`, `.`"),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec for tests: `actions` as pairs.
    pub fn spec(name: &str, priority: u32, actions: &[(&str, &str)]) -> PolicySpec {
        PolicySpec {
            name: name.into(),
            scope: String::new(),
            realms: vec![],
            users: vec![],
            clients: vec![],
            actions: actions
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            priority,
            active: true,
            description: String::new(),
        }
    }

    #[test]
    fn normalizes_names_values_scope_and_priority() {
        let (normalized, compiled) = spec(
            "p1",
            0,
            &[("LOSTTOKENPWLEN", " 12 "), ("autoassignment", "")],
        )
        .validate()
        .unwrap();
        assert_eq!(normalized.scope, "enrollment");
        assert_eq!(normalized.priority, 1);
        assert_eq!(normalized.actions["lostTokenPWLen"], "12");
        assert_eq!(normalized.actions["autoassignment"], "true");
        assert_eq!(compiled.actions.len(), 2);
    }

    #[test]
    fn realm_and_user_patterns_are_stored_normalised() {
        let (normalized, _) = PolicySpec {
            realms: vec![" CORP ".into()],
            users: vec!["*".into(), "!Bob".into(), "m\u{00FC}ller".into()],
            clients: vec![" 10.0.0.0/8 ".into()],
            ..spec("p", 1, &[])
        }
        .validate()
        .unwrap();
        assert_eq!(normalized.realms, ["corp"]);
        assert_eq!(normalized.users, ["*", "!bob", "m\u{00FC}ller"]);
        assert_eq!(normalized.clients, ["10.0.0.0/8"]);
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases: Vec<(PolicySpec, &str)> = vec![
            (spec("", 1, &[]), "policy.name"),
            (spec("bad name", 1, &[]), "policy.name"),
            (
                spec("p", 1, &[("max_tokens", "1")]),
                "policy.actions.max_tokens",
            ),
            (
                spec("p", 1, &[("max_token_per_user", "-1")]),
                "policy.actions.max_token_per_user",
            ),
            (
                spec(
                    "p",
                    1,
                    &[("otp_pin_minlength", "8"), ("otp_pin_maxlength", "4")],
                ),
                "policy.actions.otp_pin_minlength",
            ),
            (
                spec("p", 1, &[("tokenlabel", "a"), ("TOKENLABEL", "b")]),
                "policy.actions.tokenlabel",
            ),
            (
                PolicySpec {
                    clients: vec!["10.0.0.0/8".into(), "10.0.0.0/99".into()],
                    ..spec("p", 1, &[])
                },
                "policy.clients[1]",
            ),
            (
                PolicySpec {
                    realms: vec!["!".into()],
                    ..spec("p", 1, &[])
                },
                "policy.realms[0]",
            ),
            (
                PolicySpec {
                    users: vec!["a b".into()],
                    ..spec("p", 1, &[])
                },
                "policy.users[0]",
            ),
            (
                PolicySpec {
                    users: vec!["kate".into(), "\u{212A}ate".into()],
                    ..spec("p", 1, &[])
                },
                "policy.users[1]",
            ),
            (
                PolicySpec {
                    realms: vec!["\u{FF21}cme".into()],
                    ..spec("p", 1, &[])
                },
                "policy.realms[0]",
            ),
            (
                PolicySpec {
                    scope: "admin".into(),
                    ..spec("p", 1, &[])
                },
                "policy.scope",
            ),
        ];
        for (spec, field) in cases {
            let error = spec.clone().validate().unwrap_err();
            assert_eq!(error.field, field, "{spec:?}: {}", error.message);
        }
    }
}
