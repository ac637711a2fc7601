//! Helpers to build gRPC statuses with `google.rpc.ErrorInfo` details.
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every status the services attach details to.
pub const ERROR_DOMAIN: &str = "enroll";

/// A status carrying an `ErrorInfo` with a stable `reason` and metadata.
pub fn with_reason(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> Status {
    let details = ErrorDetails::with_error_info(
        reason,
        ERROR_DOMAIN,
        metadata
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    Status::with_error_details(code, message, details)
}

/// The `ErrorInfo` reason of a status, if it has one.
pub fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// The `field` an INVALID_ARGUMENT status's `ErrorInfo` names, if any.
pub fn field(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .and_then(|mut info| info.metadata.remove("field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_round_trips() {
        let status = with_reason(
            Code::FailedPrecondition,
            "conflict",
            "POLICY_CONFLICT",
            [("policies".to_owned(), "a,b".to_owned())],
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status).as_deref(), Some("POLICY_CONFLICT"));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["policies"], "a,b");
    }
}
