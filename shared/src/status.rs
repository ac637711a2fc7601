//! Helpers to build gRPC statuses with `google.rpc.ErrorInfo` details.
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every status the services attach details to.
pub const ERROR_DOMAIN: &str = "enroll";

/// The longest status message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;
/// The longest `ErrorInfo` metadata value, in characters.
pub const MAX_METADATA_CHARS: usize = 256;

/// Cuts text a status echoes from the request (a field path, a name) to `max` characters.
/// The message and the details travel in HTTP/2 headers: a refusal that echoed a 3 KB
/// action name outgrew the header list a client accepts, and the client saw INTERNAL
/// "h2 protocol error" instead of the INVALID_ARGUMENT it was sent (found by the wire fuzz).
pub fn bounded(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// A status carrying an `ErrorInfo` with a stable `reason` and metadata, message and
/// metadata values [`bounded`].
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
            .map(|(key, value)| (key, bounded(value, MAX_METADATA_CHARS)))
            .collect::<std::collections::HashMap<_, _>>(),
    );
    Status::with_error_details(code, bounded(message.into(), MAX_MESSAGE_CHARS), details)
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
    fn echoed_text_is_bounded_on_a_character_boundary() {
        assert_eq!(bounded("short".to_owned(), 10), "short");
        assert_eq!(bounded("éééé".to_owned(), 2), "éé…");
        let status = with_reason(
            Code::InvalidArgument,
            "x".repeat(20_000),
            "INVALID_FIELD",
            [("field".to_owned(), "y".repeat(20_000))],
        );
        assert_eq!(status.message().chars().count(), MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            field(&status).unwrap().chars().count(),
            MAX_METADATA_CHARS + 1
        );
    }

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
