//! The CLI's errors, their exit codes and how they are shown (text or JSON).
use std::collections::BTreeMap;
use std::error::Error as _;

use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Exit codes scripts can test. Kept in one place with [`EXIT_CODES_HELP`].
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Anything not listed below (INTERNAL, UNKNOWN, local I/O failures).
    pub const GENERIC: i32 = 1;
    /// Bad command line, configuration or input file.
    pub const USAGE: i32 = 2;
    /// NOT_FOUND.
    pub const NOT_FOUND: i32 = 3;
    /// UNAUTHENTICATED or PERMISSION_DENIED (including policy denials).
    pub const AUTH: i32 = 4;
    /// UNAVAILABLE or DEADLINE_EXCEEDED; no connection (refused, TLS handshake failed); a
    /// health check that is not SERVING.
    pub const UNAVAILABLE: i32 = 5;
    /// ALREADY_EXISTS, ABORTED, FAILED_PRECONDITION, RESOURCE_EXHAUSTED; policy conflicts
    /// that `policy apply` refuses.
    pub const CONFLICT: i32 = 6;
    /// INVALID_ARGUMENT or OUT_OF_RANGE.
    pub const INVALID_ARGUMENT: i32 = 7;
    /// Partly done: some items failed (rows of `token import`).
    pub const PARTIAL: i32 = 8;
}

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  generic failure (INTERNAL, UNKNOWN, local I/O)
  2  usage: bad flags, configuration or input file
  3  not found (NOT_FOUND)
  4  authentication or permission (UNAUTHENTICATED, PERMISSION_DENIED, policy denials)
  5  unavailable (UNAVAILABLE, DEADLINE_EXCEEDED, no connection or TLS handshake,
     health not SERVING)
  6  conflict or precondition (ALREADY_EXISTS, ABORTED, FAILED_PRECONDITION,
     RESOURCE_EXHAUSTED; policy conflicts refused by `policy apply`)
  7  invalid argument (INVALID_ARGUMENT, OUT_OF_RANGE)
  8  partly done: some items failed (rows of `token import`)";

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Bad flags, configuration or input.
    Usage(String),
    /// A gRPC call failed.
    Grpc {
        /// `policy service` or `device service`.
        service: &'static str,
        address: String,
        status: Status,
    },
    /// The command ran but its outcome is a failure with this exit code (conflicts refused,
    /// rows rejected, a service not serving); the details were already printed.
    Outcome { code: i32, message: String },
    /// A local failure (I/O, an output that could not be written).
    Local(String),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    pub fn local(message: impl Into<String>) -> Self {
        Self::Local(message.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Grpc { status, .. } if is_transport_failure(status) => exit::UNAVAILABLE,
            Self::Grpc { status, .. } => code_exit(status.code()),
            Self::Outcome { code, .. } => *code,
            Self::Local(_) => exit::GENERIC,
        }
    }

    /// The message for humans: the code, the server's message, the ErrorInfo reason and
    /// metadata, other details, and a hint for the usual causes.
    pub fn render_text(&self) -> String {
        match self {
            Self::Usage(message) => format!("error: {message}\n"),
            Self::Outcome { message, .. } | Self::Local(message) => format!("error: {message}\n"),
            Self::Grpc {
                service,
                address,
                status,
            } => render_status(service, address, status),
        }
    }

    /// The same as one JSON object, for `--output json` (written to stderr).
    pub fn render_json(&self) -> Value {
        let body = match self {
            Self::Usage(message) => json!({"kind": "usage", "message": message}),
            Self::Outcome { message, .. } => json!({"kind": "outcome", "message": message}),
            Self::Local(message) => json!({"kind": "local", "message": message}),
            Self::Grpc {
                service,
                address,
                status,
            } => {
                let mut body = json!({
                    "kind": "grpc",
                    "service": service,
                    "address": address,
                    "code": code_name(status.code()),
                    "message": status_message(status),
                });
                if let Some(info) = status.get_details_error_info() {
                    body["reason"] = json!(info.reason);
                    body["domain"] = json!(info.domain);
                    body["metadata"] = json!(info.metadata.into_iter().collect::<BTreeMap<_, _>>());
                }
                body
            }
        };
        json!({"error": body, "exit_code": self.exit_code()})
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        Self::Local(format!("writing output: {error}"))
    }
}

/// A call that never reached the service: tonic reports a failed connection or TLS
/// handshake (a refused client certificate, an unknown CA) as UNKNOWN "transport error",
/// or as CANCELLED when the server closes the connection right after the handshake (TLS
/// 1.3 refuses a missing client certificate only then).
fn is_transport_failure(status: &Status) -> bool {
    matches!(status.code(), Code::Unknown | Code::Cancelled)
        && status_message(status).contains("transport error")
}

/// The exit code of a gRPC status code.
pub fn code_exit(code: Code) -> i32 {
    match code {
        Code::Ok => exit::OK,
        Code::NotFound => exit::NOT_FOUND,
        Code::Unauthenticated | Code::PermissionDenied => exit::AUTH,
        Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
        Code::AlreadyExists
        | Code::Aborted
        | Code::FailedPrecondition
        | Code::ResourceExhausted => exit::CONFLICT,
        Code::InvalidArgument | Code::OutOfRange => exit::INVALID_ARGUMENT,
        Code::Cancelled | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
            exit::GENERIC
        }
    }
}

/// The canonical name of a code, as in the proto comments (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status message with the transport's cause appended (tonic's own message for a
/// refused connection is only "tcp connect error").
fn status_message(status: &Status) -> String {
    let mut message = status.message().to_owned();
    let mut source = status.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

fn render_status(service: &str, address: &str, status: &Status) -> String {
    let mut text = format!(
        "error: {service} ({address}): {}: {}\n",
        code_name(status.code()),
        status_message(status)
    );
    let details = status.get_error_details();
    if let Some(info) = details.error_info() {
        text.push_str(&format!("  reason: {}", info.reason));
        if !info.domain.is_empty() {
            text.push_str(&format!(" (domain {})", info.domain));
        }
        text.push('\n');
        let metadata: BTreeMap<_, _> = info.metadata.iter().collect();
        for (key, value) in metadata {
            text.push_str(&format!("  {key}: {value}\n"));
        }
    }
    if let Some(bad_request) = details.bad_request() {
        for violation in &bad_request.field_violations {
            text.push_str(&format!(
                "  field {}: {}\n",
                violation.field, violation.description
            ));
        }
    }
    if let Some(retry) = details.retry_info()
        && let Some(delay) = retry.retry_delay
    {
        text.push_str(&format!("  retry after: {} ms\n", delay.as_millis()));
    }
    let hint = if is_transport_failure(status) {
        Some(format!(
            "no connection to {address}: check the address and, for https, the CA (--ca), \
             the client certificate and key (--cert, --key) and --server-name"
        ))
    } else {
        hint(status.code(), service, address)
    };
    if let Some(hint) = hint {
        text.push_str(&format!("  hint: {hint}\n"));
    }
    text
}

/// What usually causes a code, when the server's message alone may not say.
fn hint(code: Code, service: &str, address: &str) -> Option<String> {
    match code {
        Code::Unauthenticated => Some(
            "check the API key (--api-key-file, ENROLLCTL_API_KEY or api_key_file in the config)"
                .to_owned(),
        ),
        Code::Unavailable => Some(format!(
            "is the {service} running and reachable at {address}? (its address: --{}-addr)",
            service.split(' ').next().unwrap_or(service)
        )),
        Code::DeadlineExceeded => Some("the call took longer than --timeout".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enroll_shared::status::with_reason;

    fn grpc(status: Status) -> CliError {
        CliError::Grpc {
            service: "policy service",
            address: "http://127.0.0.1:50051".to_owned(),
            status,
        }
    }

    #[test]
    fn error_info_reason_and_metadata_are_shown() {
        let error = grpc(with_reason(
            Code::FailedPrecondition,
            "policy conflict: a and b disagree",
            "POLICY_CONFLICT",
            [
                ("policies".to_owned(), "a,b".to_owned()),
                ("action".to_owned(), "tokenlabel".to_owned()),
            ],
        ));
        assert_eq!(error.exit_code(), exit::CONFLICT);
        assert_eq!(
            error.render_text(),
            "error: policy service (http://127.0.0.1:50051): FAILED_PRECONDITION: policy \
             conflict: a and b disagree\n  reason: POLICY_CONFLICT (domain enroll)\n  \
             action: tokenlabel\n  policies: a,b\n"
        );
        let json = error.render_json();
        assert_eq!(json["exit_code"], 6);
        assert_eq!(json["error"]["code"], "FAILED_PRECONDITION");
        assert_eq!(json["error"]["reason"], "POLICY_CONFLICT");
        assert_eq!(json["error"]["metadata"]["policies"], "a,b");
    }

    #[test]
    fn a_status_without_details_gets_a_hint() {
        let error = grpc(Status::unavailable("tcp connect error"));
        assert_eq!(error.exit_code(), exit::UNAVAILABLE);
        let text = error.render_text();
        assert!(text.starts_with(
            "error: policy service (http://127.0.0.1:50051): UNAVAILABLE: tcp connect error\n"
        ));
        assert!(text.contains("hint: is the policy service running and reachable at http://127.0.0.1:50051? (its address: --policy-addr)"));
        let json = error.render_json();
        assert!(json["error"].get("reason").is_none());
    }

    #[test]
    fn a_failed_tls_handshake_is_unavailable_with_a_tls_hint() {
        let error = grpc(Status::unknown(
            "transport error: connection error: received fatal alert: CertificateRequired",
        ));
        assert_eq!(error.exit_code(), exit::UNAVAILABLE);
        assert!(error.render_text().contains("(--cert, --key)"));
        assert_eq!(grpc(Status::unknown("boom")).exit_code(), exit::GENERIC);
    }

    #[test]
    fn every_code_has_a_documented_exit_code() {
        let cases = [
            (Code::NotFound, 3),
            (Code::Unauthenticated, 4),
            (Code::PermissionDenied, 4),
            (Code::Unavailable, 5),
            (Code::DeadlineExceeded, 5),
            (Code::AlreadyExists, 6),
            (Code::Aborted, 6),
            (Code::ResourceExhausted, 6),
            (Code::InvalidArgument, 7),
            (Code::Internal, 1),
        ];
        for (code, expected) in cases {
            assert_eq!(code_exit(code), expected, "{code:?}");
            assert!(
                EXIT_CODES_HELP.contains(code_name(code)) || expected == 1,
                "{code:?} is documented"
            );
        }
        assert_eq!(CliError::usage("x").exit_code(), 2);
    }
}
