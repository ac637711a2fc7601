//! Errors of the page's endpoints: the use case's error, mapped to its gRPC status exactly
//! as over gRPC, then to an HTTP status and a JSON body.
use super::*;

/// An error answer: `{"code": "FAILED_PRECONDITION", "message": "..."}`; the page shows the
/// message.
#[derive(Debug, Clone)]
pub(super) struct WebError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

impl WebError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn code(&self) -> &'static str {
        self.code
    }

    pub(super) fn message(&self) -> &str {
        &self.message
    }

    /// The use case's refusal of a link that can never be used again: FAILED_PRECONDITION
    /// from begin is a used, revoked or expired link (and, rarely, a policy precondition,
    /// which is then also repeated for the rest of the window rather than re-audited).
    pub(super) fn is_dead_link(&self) -> bool {
        self.code == "FAILED_PRECONDITION"
    }

    /// The use case's answer to a secret that names no link (NOT_FOUND from begin).
    pub(super) fn is_unknown_link(&self) -> bool {
        self.code == "NOT_FOUND"
    }

    pub(super) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "something went wrong on our side; please try again later",
        )
    }
}

impl From<Status> for WebError {
    fn from(status: Status) -> Self {
        let http = http_status(status.code());
        if http == StatusCode::INTERNAL_SERVER_ERROR {
            // Internal messages are for operators, not for an anonymous page visitor.
            tracing::error!(code = ?status.code(), message = status.message(), "enrollment page call failed");
            let mut error = Self::internal();
            error.code = code_name(status.code());
            return error;
        }
        Self::new(http, code_name(status.code()), status.message())
    }
}

impl From<DeviceError> for WebError {
    fn from(error: DeviceError) -> Self {
        // One mapping for both edges: the page answers with the code a gRPC caller gets.
        Self::from(Status::from(error))
    }
}

impl From<JsonRejection> for WebError {
    fn from(rejection: JsonRejection) -> Self {
        // The rejection text names the serde problem, never echoes the body.
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            rejection.body_text(),
        )
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code's canonical name (`FAILED_PRECONDITION`), stable for scripts and tests.
pub(super) fn code_name(code: Code) -> &'static str {
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
