//! RFC 8936 poll delivery on the page's port: `POST /events/poll/<stream id>` with
//! `Authorization: Bearer <the stream's token>` and a JSON poll request; the answer is
//! `{"sets": {jti: SET}, "moreAvailable": bool}` ([`crate::service::poll`] has the rules).
//!
//! Any failure to authenticate (no or a malformed header, an unknown stream, a stream that
//! is not a poll stream, a wrong token) is the same 401 with no detail, so an outsider
//! cannot tell which streams exist; each one counts against the client address's page rate
//! limit, and an address over it is refused (429) before anything is looked up. Nothing
//! here logs the header or the body.
use axum::body::Bytes;
use axum::extract::Path;

use super::*;
use crate::events::poll::PollRequest;
use crate::service::poll::PollRefusal;

pub(super) async fn poll<R>(
    State(state): State<WebState<R>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stream_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(events) = state.events.as_ref() else {
        return not_found().await.into_response();
    };
    let client = state.proxies.client(peer, &headers);
    if let Err(refused) = state.limiter.admit_failed(client, false) {
        return refused.into_response();
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let authenticated =
        tokio::time::timeout(state.timeout, events.poll.authenticate(&stream_id, bearer)).await;
    let stream = match authenticated {
        Ok(Ok(stream)) => stream,
        Ok(Err(refusal)) => return refusal_answer(&state, client, refusal),
        Err(_) => return unavailable(),
    };
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        PollRequest::default()
    } else {
        match serde_json::from_slice::<PollRequest>(&body) {
            Ok(request) => request,
            Err(error) => {
                return refusal_answer(
                    &state,
                    client,
                    PollRefusal::Invalid(format!("the body is not a poll request: {error}")),
                );
            }
        }
    };
    // The long poll's own bound (`events.poll_wait_secs`) comes on top of the page's
    // deadline for the lookups.
    let deadline = state.timeout + events.poll.wait_bound();
    match tokio::time::timeout(deadline, events.poll.poll(&stream, request)).await {
        Ok(Ok(answer)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&answer).unwrap_or_default(),
        )
            .into_response(),
        Ok(Err(refusal)) => refusal_answer(&state, client, refusal),
        Err(_) => unavailable(),
    }
}

/// RFC 8935/8936 error bodies: `{"err": ..., "description": ...}`.
fn refusal_answer<R>(
    state: &WebState<R>,
    client: std::net::IpAddr,
    refusal: PollRefusal,
) -> Response {
    match refusal {
        PollRefusal::Unauthenticated => {
            let _ = state.limiter.admit_failed(client, true);
            (
                StatusCode::UNAUTHORIZED,
                [
                    (header::WWW_AUTHENTICATE, "Bearer"),
                    (header::CONTENT_TYPE, "application/json"),
                ],
                r#"{"err":"authentication_failed","description":"authentication failed"}"#,
            )
                .into_response()
        }
        PollRefusal::Invalid(description) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"err": "invalid_request", "description": description}).to_string(),
        )
            .into_response(),
        PollRefusal::Failed(error) => WebError::from(error).into_response(),
    }
}

fn unavailable() -> Response {
    WebError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "the request took too long; please try again",
    )
    .into_response()
}
