//! The transmitter's public documents on the page's port: the JWKS of the security event
//! tokens' signing keys (every key still published, so tokens signed before a rotation
//! verify during the overlap), and the Shared Signals transmitter configuration
//! (`/.well-known/ssf-configuration`). RFC 8936 polls are answered next to them
//! (`web::poll`).
use super::*;
use crate::events::caep::{SsfEndpoints, ssf_configuration};
use crate::service::poll::EventPoll;
use crate::service::streams::EventKeys;

/// Where the JWKS is served (the SSF configuration's `jwks_uri`).
pub const JWKS_PATH: &str = "/.well-known/enroll-events/jwks.json";
pub const SSF_CONFIGURATION_PATH: &str = "/.well-known/ssf-configuration";
/// Where poll receivers poll (RFC 8936): `POST /events/poll/<stream id>`.
pub const POLL_PATH: &str = "/events/poll";

/// What the documents are made of.
#[derive(Clone)]
pub struct EventsHttp {
    pub keys: EventKeys,
    /// The tokens' `iss`; the JWKS URL is under it.
    pub issuer: String,
    /// RFC 8936 poll delivery.
    pub poll: EventPoll,
}

pub(super) async fn jwks<R>(State(state): State<WebState<R>>) -> Result<Response, WebError> {
    let events = events_of(&state)?;
    let jwks = call(state.timeout, events.keys.jwks()).await?;
    Ok(json_document(jwks, "application/jwk-set+json"))
}

pub(super) async fn ssf_configuration_document<R>(
    State(state): State<WebState<R>>,
) -> Result<Response, WebError> {
    let events = events_of(&state)?;
    let document = ssf_configuration(
        &events.issuer,
        &format!("{}{JWKS_PATH}", events.issuer),
        &SsfEndpoints::default(),
    );
    Ok(json_document(document, "application/json"))
}

fn events_of<R>(state: &WebState<R>) -> Result<&EventsHttp, WebError> {
    state
        .events
        .as_ref()
        .ok_or_else(|| WebError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such page"))
}

/// A public JSON document (the page's headers, `no-store` included, are added to it).
fn json_document(value: Value, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], value.to_string()).into_response()
}
