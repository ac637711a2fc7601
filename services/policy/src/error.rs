//! The policy service's errors and their one mapping to gRPC statuses.
use enroll_shared::status::{MAX_MESSAGE_CHARS, bounded, with_reason};
use tonic::{Code, Status};

use crate::cache::Unservable;
use crate::domain::engine::Conflict;
use crate::domain::policy::InvalidField;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("policy `{0}` not found")]
    NotFound(String),
    #[error("policy `{0}` already exists")]
    AlreadyExists(String),
    #[error(
        "policy `{name}` was changed by someone else: the etag `{given}` is not the current one; read it again and retry"
    )]
    EtagMismatch { name: String, given: String },
    #[error("policy conflict: {0}")]
    Conflict(Conflict),
    /// Classified by SQLSTATE / SQLite code: only outages are UNAVAILABLE; its message is
    /// the classified one, never the database's.
    #[error("{}", enroll_shared::db_errors::classify(.0).message())]
    Database(sea_orm::DbErr),
    #[error("{}", unservable_message(.0))]
    Unservable(Unservable),
    #[error(
        "stored policy `{name}` is unreadable ({reason}); delete it (DeletePolicy) and create it again"
    )]
    UnreadablePolicy { name: String, reason: String },
}

fn unservable_message(unservable: &Unservable) -> String {
    match unservable {
        Unservable::NotLoaded => "the policy set is not loaded yet; retry shortly".to_owned(),
        Unservable::Unreadable(policies) => {
            let listed: Vec<String> = policies
                .iter()
                .map(|policy| format!("`{}` ({})", policy.name, policy.reason))
                .collect();
            let (noun, verb) = if policies.len() == 1 {
                ("policy", "is")
            } else {
                ("policies", "are")
            };
            format!(
                "decisions are refused: stored {noun} {} {verb} unreadable; an admin must \
                 repair (UpdatePolicy) or delete (DeletePolicy) it",
                listed.join(", ")
            )
        }
        Unservable::Stale { age, max } => format!(
            "decisions are refused: the policy set was last confirmed against the database \
             {} ms ago, more than cache.max_staleness ({} ms); retry shortly",
            age.as_millis(),
            max.as_millis()
        ),
    }
}

impl PolicyError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<InvalidField> for PolicyError {
    fn from(invalid: InvalidField) -> Self {
        PolicyError::InvalidArgument {
            field: invalid.field,
            message: invalid.message,
        }
    }
}

impl From<StoreError> for PolicyError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AlreadyExists(name) => PolicyError::AlreadyExists(name),
            StoreError::NotFound(name) => PolicyError::NotFound(name),
            StoreError::EtagMismatch { name, given, .. } => {
                PolicyError::EtagMismatch { name, given }
            }
            StoreError::Corrupt { name, reason } => PolicyError::UnreadablePolicy { name, reason },
            StoreError::Database(error) => PolicyError::Database(error),
        }
    }
}

impl From<PolicyError> for Status {
    fn from(error: PolicyError) -> Self {
        // Bounded: the message travels in an HTTP/2 header (see `status::bounded`).
        let message = bounded(error.to_string(), MAX_MESSAGE_CHARS);
        match error {
            PolicyError::InvalidArgument { field, .. } => with_reason(
                Code::InvalidArgument,
                message,
                "INVALID_FIELD",
                [("field".to_owned(), field)],
            ),
            PolicyError::NotFound(name) => with_reason(
                Code::NotFound,
                message,
                "POLICY_NOT_FOUND",
                [("policy".to_owned(), name)],
            ),
            PolicyError::AlreadyExists(name) => with_reason(
                Code::AlreadyExists,
                message,
                "POLICY_EXISTS",
                [("policy".to_owned(), name)],
            ),
            PolicyError::EtagMismatch { name, .. } => with_reason(
                Code::Aborted,
                message,
                "ETAG_MISMATCH",
                [("policy".to_owned(), name)],
            ),
            PolicyError::Conflict(conflict) => with_reason(
                Code::FailedPrecondition,
                message,
                "POLICY_CONFLICT",
                [
                    ("action".to_owned(), conflict.action.to_string()),
                    (
                        "policies".to_owned(),
                        format!("{},{}", conflict.first, conflict.second),
                    ),
                ],
            ),
            PolicyError::Unservable(Unservable::NotLoaded) => Status::unavailable(message),
            PolicyError::Unservable(Unservable::Unreadable(policies)) => {
                let names: Vec<String> = policies.into_iter().map(|policy| policy.name).collect();
                with_reason(
                    Code::Unavailable,
                    message,
                    "POLICY_UNREADABLE",
                    [("policies".to_owned(), names.join(","))],
                )
            }
            PolicyError::Unservable(Unservable::Stale { age, max }) => with_reason(
                Code::Unavailable,
                message,
                "POLICY_SET_STALE",
                [
                    ("age_ms".to_owned(), age.as_millis().to_string()),
                    ("max_staleness_ms".to_owned(), max.as_millis().to_string()),
                ],
            ),
            // The row is there but cannot be shown: the admin must delete it.
            PolicyError::UnreadablePolicy { name, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                "POLICY_UNREADABLE",
                [("policy".to_owned(), name)],
            ),
            PolicyError::Database(source) => enroll_shared::db_errors::to_status(&source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::domain::actions::ActionName;
    use crate::domain::policy::UnreadablePolicy;
    use enroll_shared::status::reason;

    #[test]
    fn every_error_maps_to_its_code_and_reason() {
        let cases: Vec<(PolicyError, Code, Option<&str>)> = vec![
            (
                PolicyError::invalid("policy.name", "empty"),
                Code::InvalidArgument,
                Some("INVALID_FIELD"),
            ),
            (
                PolicyError::NotFound("p".into()),
                Code::NotFound,
                Some("POLICY_NOT_FOUND"),
            ),
            (
                PolicyError::AlreadyExists("p".into()),
                Code::AlreadyExists,
                Some("POLICY_EXISTS"),
            ),
            (
                PolicyError::EtagMismatch {
                    name: "p".into(),
                    given: "1".into(),
                },
                Code::Aborted,
                Some("ETAG_MISMATCH"),
            ),
            (
                PolicyError::Conflict(Conflict {
                    action: ActionName::TokenLabel,
                    first: "a".into(),
                    second: "b".into(),
                }),
                Code::FailedPrecondition,
                Some("POLICY_CONFLICT"),
            ),
            (
                PolicyError::Unservable(Unservable::Unreadable(vec![UnreadablePolicy {
                    name: "p".into(),
                    active: true,
                    reason: "realms: expected value".into(),
                }])),
                Code::Unavailable,
                Some("POLICY_UNREADABLE"),
            ),
            (
                PolicyError::Unservable(Unservable::Stale {
                    age: Duration::from_secs(31),
                    max: Duration::from_secs(30),
                }),
                Code::Unavailable,
                Some("POLICY_SET_STALE"),
            ),
            (
                PolicyError::Unservable(Unservable::NotLoaded),
                Code::Unavailable,
                None,
            ),
            (
                PolicyError::from(StoreError::Corrupt {
                    name: "p".into(),
                    reason: "users: expected value".into(),
                }),
                Code::FailedPrecondition,
                Some("POLICY_UNREADABLE"),
            ),
            (
                PolicyError::from(StoreError::Database(sea_orm::DbErr::ConnectionAcquire(
                    sea_orm::ConnAcquireErr::Timeout,
                ))),
                Code::Unavailable,
                None,
            ),
            (
                PolicyError::from(StoreError::Database(sea_orm::DbErr::Custom(
                    "secret detail".into(),
                ))),
                Code::Internal,
                None,
            ),
        ];
        for (error, code, expected_reason) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(reason(&status).as_deref(), expected_reason);
            assert!(!status.message().contains("secret detail"));
        }
    }

    #[test]
    fn messages_name_the_field_and_both_policies() {
        let status = Status::from(PolicyError::invalid("policy.clients[1]", "bad CIDR"));
        assert!(status.message().contains("policy.clients[1]"));
        let status = Status::from(PolicyError::Conflict(Conflict {
            action: ActionName::TokenLabel,
            first: "alpha".into(),
            second: "beta".into(),
        }));
        assert!(status.message().contains("alpha") && status.message().contains("beta"));
        let status = Status::from(PolicyError::Unservable(Unservable::Unreadable(vec![
            UnreadablePolicy {
                name: "garbled".into(),
                active: true,
                reason: "realms: expected value".into(),
            },
        ])));
        assert!(
            status
                .message()
                .contains("`garbled` (realms: expected value) is unreadable"),
            "{}",
            status.message()
        );
    }
}
