//! The device service's errors and their one mapping to gRPC statuses.
use enroll_shared::status::{MAX_MESSAGE_CHARS, bounded, with_reason};
use tonic::{Code, Status};

use crate::domain::decision::{PolicyError, Rejection};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The policy service denied the action.
    #[error("{action} denied by policy: {message}")]
    Denied {
        action: &'static str,
        code: String,
        message: String,
        policy: String,
    },
    /// A token limit is reached.
    #[error("{limit} {value} reached{}", policy_suffix(.policy))]
    LimitReached {
        limit: &'static str,
        value: u32,
        policy: String,
    },
    /// A WebAuthn ceremony or device was refused (verification failed, wrong device type).
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
    /// The request is valid but the subject is not in a state that allows it (a device
    /// pending approval); the stable `reason` goes into the ErrorInfo.
    #[error("{message}")]
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// A request id used before, by this caller on this RPC, with other parameters.
    #[error(
        "request_id `{request_id}` was used for another {rpc} request (other parameters); \
         use a new request_id for a new request"
    )]
    RequestIdReused {
        rpc: &'static str,
        request_id: String,
    },
    /// Too many attempts.
    #[error("{0}")]
    RateLimited(String),
    /// A position (`field`) before what is kept: the retention purge deleted what it names.
    #[error("{field}: {message}")]
    OutOfRange {
        field: &'static str,
        message: String,
        /// The first position still kept.
        first_kept: i64,
    },
    /// No policy decision could be had, or the policy service refused the question.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Unavailable(String),
    /// A stored row this service cannot read back (corrupt, or written by something else):
    /// the caller did nothing wrong, so it is INTERNAL, logged with the row.
    #[error("stored data is unreadable")]
    Corrupt(String),
    /// Its message is the classified one (`DbFailure::message`), never the database's.
    #[error("{}", enroll_shared::db_errors::classify(.0).message())]
    Database(#[from] sea_orm::DbErr),
}

fn policy_suffix(policy: &str) -> String {
    if policy.is_empty() {
        String::new()
    } else {
        format!(" (policy {policy})")
    }
}

impl DeviceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DeviceError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A stored value that does not parse: `row` names the row (never a secret).
    pub fn corrupt(row: impl std::fmt::Display, problem: impl std::fmt::Display) -> Self {
        DeviceError::Corrupt(format!("{row}: {problem}"))
    }

    /// A short reason for audit events (never a secret: messages are built from names).
    pub fn audit_reason(&self) -> String {
        self.to_string()
    }
}

impl From<DeviceError> for Status {
    fn from(error: DeviceError) -> Self {
        // Bounded: the message travels in an HTTP/2 header (see `status::bounded`).
        let message = bounded(error.to_string(), MAX_MESSAGE_CHARS);
        match error {
            DeviceError::InvalidArgument { field, .. } => with_reason(
                Code::InvalidArgument,
                message,
                "INVALID_FIELD",
                [("field".to_owned(), field)],
            ),
            DeviceError::NotFound(_) => Status::not_found(message),
            DeviceError::OutOfRange {
                field, first_kept, ..
            } => with_reason(
                Code::OutOfRange,
                message,
                "PURGED_BY_RETENTION",
                [
                    ("field".to_owned(), field.to_owned()),
                    ("first_kept".to_owned(), first_kept.to_string()),
                ],
            ),
            DeviceError::FailedPrecondition(_) => Status::failed_precondition(message),
            DeviceError::AlreadyExists(_) => Status::already_exists(message),
            DeviceError::Denied { code, policy, .. } => with_reason(
                Code::PermissionDenied,
                message,
                &code,
                [("policy".to_owned(), policy)],
            ),
            DeviceError::LimitReached {
                limit,
                value,
                policy,
            } => with_reason(
                Code::ResourceExhausted,
                message,
                &limit.to_ascii_uppercase(),
                [
                    ("limit".to_owned(), value.to_string()),
                    ("policy".to_owned(), policy),
                ],
            ),
            DeviceError::Refused { reason, .. } => {
                with_reason(Code::PermissionDenied, message, reason, [])
            }
            DeviceError::Blocked { reason, .. } => {
                with_reason(Code::FailedPrecondition, message, reason, [])
            }
            DeviceError::RequestIdReused { .. } => with_reason(
                Code::FailedPrecondition,
                message,
                "IDEMPOTENCY_KEY_REUSED",
                [("field".to_owned(), "request_id".to_owned())],
            ),
            DeviceError::RateLimited(_) => {
                with_reason(Code::ResourceExhausted, message, "RATE_LIMITED", [])
            }
            DeviceError::Policy(PolicyError::Rejected {
                rejection,
                reason,
                field,
                ..
            }) => {
                let code = match rejection {
                    Rejection::InvalidArgument => Code::InvalidArgument,
                    Rejection::FailedPrecondition => Code::FailedPrecondition,
                    Rejection::NotFound => Code::NotFound,
                    Rejection::ResourceExhausted => Code::ResourceExhausted,
                };
                // The field the policy service named is the caller's to fix: named here too.
                let field = field.map(|field| ("field".to_owned(), field));
                match (reason, field) {
                    (Some(reason), field) => with_reason(code, message, &reason, field),
                    (None, Some(field)) => with_reason(code, message, "INVALID_FIELD", [field]),
                    (None, None) => Status::new(code, message),
                }
            }
            DeviceError::Policy(_) | DeviceError::Unavailable(_) => Status::unavailable(message),
            DeviceError::Corrupt(detail) => {
                tracing::error!(row = %detail, "unreadable stored data");
                Status::internal(message)
            }
            // Classified by SQLSTATE / SQLite code: only outages are UNAVAILABLE.
            DeviceError::Database(source) => enroll_shared::db_errors::to_status(&source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enroll_shared::status::reason;

    #[test]
    fn every_error_maps_to_its_code() {
        let cases: Vec<(DeviceError, Code, Option<&str>)> = vec![
            (
                DeviceError::invalid("digits", "must be 6 or 8"),
                Code::InvalidArgument,
                Some("INVALID_FIELD"),
            ),
            (
                DeviceError::NotFound("token X".into()),
                Code::NotFound,
                None,
            ),
            (
                DeviceError::FailedPrecondition("no key".into()),
                Code::FailedPrecondition,
                None,
            ),
            (
                DeviceError::Denied {
                    action: "enroll",
                    code: "TOKEN_TYPE_NOT_ALLOWED".into(),
                    message: "m".into(),
                    policy: "p".into(),
                },
                Code::PermissionDenied,
                Some("TOKEN_TYPE_NOT_ALLOWED"),
            ),
            (
                DeviceError::LimitReached {
                    limit: "max_token_per_user",
                    value: 3,
                    policy: "p".into(),
                },
                Code::ResourceExhausted,
                Some("MAX_TOKEN_PER_USER"),
            ),
            (
                DeviceError::AlreadyExists("credential".into()),
                Code::AlreadyExists,
                None,
            ),
            (
                DeviceError::Refused {
                    reason: "BACKUP_ELIGIBLE_REFUSED",
                    message: "m".into(),
                },
                Code::PermissionDenied,
                Some("BACKUP_ELIGIBLE_REFUSED"),
            ),
            (
                DeviceError::Policy(PolicyError::Rejected {
                    rejection: Rejection::FailedPrecondition,
                    message: "x".into(),
                    reason: Some("POLICY_CONFLICT".into()),
                    field: None,
                }),
                Code::FailedPrecondition,
                Some("POLICY_CONFLICT"),
            ),
            (
                DeviceError::Policy(PolicyError::Rejected {
                    rejection: Rejection::InvalidArgument,
                    message: "x".into(),
                    reason: None,
                    field: None,
                }),
                Code::InvalidArgument,
                None,
            ),
            (
                DeviceError::Policy(PolicyError::Unreachable("deadline".into())),
                Code::Unavailable,
                None,
            ),
            (
                DeviceError::Policy(PolicyError::KeyRefused),
                Code::Unavailable,
                None,
            ),
            (
                DeviceError::Blocked {
                    reason: "DEVICE_PENDING_APPROVAL",
                    message: "m".into(),
                },
                Code::FailedPrecondition,
                Some("DEVICE_PENDING_APPROVAL"),
            ),
            (
                DeviceError::RequestIdReused {
                    rpc: "EnrollToken",
                    request_id: "r1".into(),
                },
                Code::FailedPrecondition,
                Some("IDEMPOTENCY_KEY_REUSED"),
            ),
            (
                DeviceError::Unavailable("policy down".into()),
                Code::Unavailable,
                None,
            ),
            (
                DeviceError::corrupt("device `d`", "detail"),
                Code::Internal,
                None,
            ),
            (
                DeviceError::Database(sea_orm::DbErr::ConnectionAcquire(
                    sea_orm::ConnAcquireErr::Timeout,
                )),
                Code::Unavailable,
                None,
            ),
            // Not an outage: a defect, so not retryable.
            (
                DeviceError::Database(sea_orm::DbErr::Custom("detail".into())),
                Code::Internal,
                None,
            ),
            (
                DeviceError::Database(sea_orm::DbErr::Type("detail".into())),
                Code::Internal,
                None,
            ),
        ];
        for (error, code, expected) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(reason(&status).as_deref(), expected);
            assert!(!status.message().contains("detail"));
        }
    }

    #[test]
    fn limit_messages_name_limit_and_policy() {
        let status = Status::from(DeviceError::LimitReached {
            limit: "max_token_per_user",
            value: 3,
            policy: "corp".into(),
        });
        assert_eq!(
            status.message(),
            "max_token_per_user 3 reached (policy corp)"
        );
    }
}
