//! Per-request limits of the gRPC server shell, as one tower layer: a global cap on requests
//! in flight (shed, not queued, past it), the request deadline (the shorter of the server's
//! and the client's `grpc-timeout`; the work is dropped, so cancelled, when it passes) and
//! the code of a request body that is not valid protobuf.
use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

/// The gRPC health service's methods.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";
/// What prost's `DecodeError` says first; tonic-prost turns it into INTERNAL.
const DECODE_ERROR_PREFIX: &str = "failed to decode Protobuf message";

/// The server's in-flight limit as a handler sees it (in the request's extensions): a
/// response that outlives its call, a stream, takes over its request's permit and holds it
/// for its whole life, so long-lived streams count against `max_in_flight` like any
/// request (the layer alone would release it with the first message). And the client's
/// deadline, which the layer cannot apply to a stream's body.
#[derive(Clone)]
pub struct InFlight {
    /// The request's permit, until a handler takes it over.
    permit: Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>,
    semaphore: Arc<Semaphore>,
    max_in_flight: usize,
    client_deadline: Option<Duration>,
}

impl InFlight {
    /// The handle the limits layer put on `request`, if it went through one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&InFlight> {
        request.extensions().get::<InFlight>()
    }

    /// The request's permit, now held until dropped (a request exempt from the limit takes
    /// a free one); RESOURCE_EXHAUSTED when it has none and none is free.
    pub fn hold(&self) -> Result<OwnedSemaphorePermit, Status> {
        let taken = self
            .permit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(permit) = taken {
            return Ok(permit);
        }
        self.semaphore.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the server is busy ({} requests in flight): retry later",
                self.max_in_flight
            ))
        })
    }

    /// The client's `grpc-timeout`, if it sent one.
    pub fn client_deadline(&self) -> Option<Duration> {
        self.client_deadline
    }
}

#[derive(Clone)]
pub struct RequestLimitsLayer {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    server_timeout: Duration,
}

impl RequestLimitsLayer {
    /// `max_in_flight` requests at once across all connections (at least one);
    /// `server_timeout` bounds every request, a client's shorter deadline wins.
    pub fn new(max_in_flight: usize, server_timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            server_timeout,
        }
    }
}

impl<S> tower::Layer<S> for RequestLimitsLayer {
    type Service = RequestLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimits {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestLimits<S> {
    inner: S,
    limits: RequestLimitsLayer,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for RequestLimits<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Shed rather than queue: a queue past the limit only grows while the clients'
        // deadlines run out in it; the client retries with backoff instead.
        // Health checks are exempt: a probe failing under load would take a busy but
        // working replica out of rotation (or restart it) and move its load to the rest.
        let exempt = request.uri().path().starts_with(HEALTH_PATH);
        let permit = match self.limits.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if exempt => None,
            Err(_) => {
                let status = Status::resource_exhausted(format!(
                    "the server is busy ({} requests in flight): retry later",
                    self.limits.max_in_flight
                ));
                tracing::warn!(
                    max_in_flight = self.limits.max_in_flight,
                    "request shed: too many in flight"
                );
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let client = grpc_timeout(request.headers());
        let permit = Arc::new(std::sync::Mutex::new(permit));
        request.extensions_mut().insert(InFlight {
            permit: permit.clone(),
            semaphore: self.limits.in_flight.clone(),
            max_in_flight: self.limits.max_in_flight,
            client_deadline: client,
        });
        let deadline = client.map_or(self.limits.server_timeout, |client| {
            client.min(self.limits.server_timeout)
        });
        // The ready inner service is used for this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let response = inner.call(request);
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(deadline, response).await {
                Ok(Ok(response)) => Ok(invalid_body_as_invalid_argument(response)),
                Ok(Err(error)) => Err(error),
                // The request future is dropped here: the work stops at its next await
                // and an open transaction rolls back.
                Err(_) => {
                    let whose = if client.is_some_and(|client| client <= deadline) {
                        "the client's deadline"
                    } else {
                        "the server's request timeout"
                    };
                    tracing::info!(
                        deadline_ms = deadline.as_millis() as u64,
                        whose,
                        "request cancelled at its deadline"
                    );
                    Ok(Status::deadline_exceeded(format!(
                        "{whose} ({} ms) passed; the request was cancelled",
                        deadline.as_millis()
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// tonic-prost answers a request body that is not valid protobuf with INTERNAL, which reads
/// as a server fault; it is the caller's: INVALID_ARGUMENT. Only tonic's decode answer is
/// rewritten (a trailers-only response, code INTERNAL, prost's message), never the
/// services' own statuses, which never start with prost's words.
fn invalid_body_as_invalid_argument<B: Default>(response: http::Response<B>) -> http::Response<B> {
    match Status::from_header_map(response.headers()) {
        Some(status)
            if status.code() == Code::Internal
                && status.message().starts_with(DECODE_ERROR_PREFIX) =>
        {
            let detail = status
                .message()
                .trim_start_matches(DECODE_ERROR_PREFIX)
                .trim_start_matches(':')
                .trim();
            Status::invalid_argument(format!(
                "the request body is not a valid protobuf message of this method: {detail}"
            ))
            .into_http()
        }
        _ => response,
    }
}

/// The client's deadline from `grpc-timeout` (1 to 8 digits and a unit, per the gRPC over
/// HTTP/2 protocol); none when absent or malformed, so the server's timeout still holds.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeout_units_parse() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout_of("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout_of("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn malformed_grpc_timeout_is_ignored() {
        for value in ["", "m", "123", "123456789m", "-5m", "5x", "1.5S", "+5S"] {
            assert_eq!(timeout_of(value), None, "{value:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn only_the_decode_answer_becomes_invalid_argument() {
        let decode: http::Response<()> =
            Status::internal("failed to decode Protobuf message: invalid wire type").into_http();
        let mapped =
            Status::from_header_map(invalid_body_as_invalid_argument(decode).headers()).unwrap();
        assert_eq!(mapped.code(), Code::InvalidArgument);
        assert!(
            mapped.message().ends_with(": invalid wire type"),
            "{mapped:?}"
        );

        let own: http::Response<()> = Status::internal("database unavailable").into_http();
        let kept =
            Status::from_header_map(invalid_body_as_invalid_argument(own).headers()).unwrap();
        assert_eq!(kept.code(), Code::Internal);

        let ok = http::Response::new(());
        assert!(Status::from_header_map(invalid_body_as_invalid_argument(ok).headers()).is_none());
    }
}
