//! The device service's own enrollment page, served over HTTP at the URL an enrollment link
//! carries: a static HTML page and script that run `navigator.credentials.create` through
//! two JSON endpoints wrapping the registration use cases.
//!
//! Link URLs carry the secret in the fragment (`/enroll#<secret>`), which browsers never
//! send to a server: the script reads it, removes it from the address bar and history, and
//! sends it only in the body of the begin call. Old path links (`/enroll/<secret>`) still
//! get the page during a transition period; the script takes the secret from the path and
//! removes it the same way. Nothing here logs request paths or bodies, the page is never
//! cached, and it sends no Referer anywhere.
//!
//! The endpoints call the use cases directly as the actor `enrollment-page` (no API key:
//! the link secret is the credential): begin accepts only a link secret, and finish
//! completes only ceremonies begun from a link ([`Finisher::Page`]), so anyone who can
//! reach the page cannot use it to self-register.
//!
//! The page is anonymous and public, so it is bounded on its own (per replica, in memory):
//! rate limits per client address and per link, a remembered refusal per dead link (one
//! audit event per window), a deadline for request headers and bodies, and a connection
//! limit ([`serve`]); the client address comes from `X-Forwarded-For` only when the TCP
//! peer is a configured trusted proxy ([`TrustedProxies`]).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::{Code, Status};

use crate::domain::actor::Actor;
use crate::domain::devices::{LinkSecret, RegisteredDevice, RegistrationChallenge};
use crate::error::DeviceError;
use crate::service::devices::{Devices, Finisher, Registrant};

mod api;

mod error;
mod events;
pub mod gate;
mod limits;
mod otp;
mod poll;
mod serve;
#[cfg(test)]
#[path = "tests.rs"]
mod tests;

pub use crate::forwarding::TrustedProxies;
use api::{begin, call, finish};
use error::WebError;
pub use events::{EventsHttp, JWKS_PATH, POLL_PATH, SSF_CONFIGURATION_PATH};
use limits::Limiter;
pub use limits::RateLimits;
pub use otp::{OtpEnroller, OtpPage};
pub use serve::{PageSettings, serve};

const PAGE: &str = include_str!("enroll.html");
const SCRIPT: &str = include_str!("enroll.js");
/// The OTP-link part of the page, loaded before its main script.
const OTP_SCRIPT: &str = include_str!("otp.js");
/// The WebAuthn helpers both pages load before their own script.
const WEBAUTHN_SCRIPT: &str = include_str!("webauthn.js");
const STYLE: &str = include_str!("enroll.css");

/// The actor name of the page's calls (audit events name it).
pub const PAGE_CALLER: &str = "enrollment-page";

/// Requests are small JSON documents; a credential with its attestation certificates is a
/// few kilobytes. The limit keeps an anonymous endpoint from buffering large bodies.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Script, styles and API calls from this origin only; nothing inline, no framing (the page
/// triggers a credential ceremony, so it must not be clickjacked), no form posts elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The two use cases the page wraps, in domain types. A seam so the HTTP layer is testable
/// without a database. The signatures are the page's rules: begin takes a link secret and
/// nothing else (no realm or user: no self-service through an anonymous page), and finish
/// has no way to say it is an authenticated caller.
#[async_trait::async_trait]
pub trait Registrar: Send + Sync + 'static {
    async fn begin(
        &self,
        actor: &Actor,
        secret: LinkSecret,
    ) -> Result<RegistrationChallenge, DeviceError>;

    async fn finish(
        &self,
        actor: &Actor,
        ceremony_id: &str,
        credential_json: String,
        user_agent: &str,
    ) -> Result<RegisteredDevice, DeviceError>;
}

#[async_trait::async_trait]
impl Registrar for Devices {
    async fn begin(
        &self,
        actor: &Actor,
        secret: LinkSecret,
    ) -> Result<RegistrationChallenge, DeviceError> {
        self.begin_registration(actor, Registrant::Link(secret))
            .await
    }

    async fn finish(
        &self,
        actor: &Actor,
        ceremony_id: &str,
        credential_json: String,
        user_agent: &str,
    ) -> Result<RegisteredDevice, DeviceError> {
        // Page: a ceremony begun without a link (self-service by an authenticated caller)
        // is refused, whoever learned its id.
        self.finish_registration(
            actor,
            ceremony_id,
            credential_json,
            user_agent,
            Finisher::Page,
        )
        .await
    }
}

struct WebState<R> {
    registrar: Arc<R>,
    /// The deadline of one in-process call, like the gRPC server's request timeout (the
    /// in-process call does not pass through that server's timeout layer).
    timeout: Duration,
    limiter: Arc<Limiter>,
    proxies: Arc<TrustedProxies>,
    /// OTP enrollment by link, when this page serves it.
    otp: Option<OtpPage>,
    /// The event transmitter's JWKS and SSF configuration, when served.
    events: Option<EventsHttp>,
}

impl<R> Clone for WebState<R> {
    fn clone(&self) -> Self {
        Self {
            registrar: self.registrar.clone(),
            timeout: self.timeout,
            limiter: self.limiter.clone(),
            proxies: self.proxies.clone(),
            otp: self.otp.clone(),
            events: self.events.clone(),
        }
    }
}

/// The enrollment page's routes. Requests must carry the TCP peer as
/// `ConnectInfo<SocketAddr>` (as [`serve`] does): the client address goes into the rate
/// limits and the policy decision.
pub fn router<R: Registrar>(
    registrar: Arc<R>,
    otp: Option<OtpPage>,
    events: Option<EventsHttp>,
    settings: &PageSettings,
    timeout: Duration,
) -> Router {
    let state = WebState {
        registrar,
        timeout,
        limiter: Arc::new(Limiter::new(settings.limits.clone())),
        proxies: Arc::new(settings.proxies.clone()),
        otp,
        events,
    };
    Router::new()
        // Link URLs are `<base>#<secret>`: the secret never reaches this server.
        .route("/enroll", get(page))
        .route("/enroll/", get(page))
        // Deprecated path links (`/enroll/<secret>`, issued before fragment links): still
        // answered with the same page during the transition, whose script removes the
        // secret from the address bar. Nothing logs the path.
        .route("/enroll/{secret}", get(page))
        .route("/enroll/assets/webauthn.js", get(webauthn_script))
        .route("/enroll/assets/enroll.js", get(script))
        .route("/enroll/assets/otp.js", get(otp_script))
        .route("/enroll/assets/enroll.css", get(style))
        .route("/enroll/api/begin", post(begin::<R>))
        .route("/enroll/api/finish", post(finish::<R>))
        .route("/enroll/api/otp/redeem", post(otp::redeem::<R>))
        .route("/enroll/api/otp/resume", post(otp::resume::<R>))
        .route("/enroll/api/otp/finish", post(otp::finish::<R>))
        .route(JWKS_PATH, get(events::jwks::<R>))
        .route(
            SSF_CONFIGURATION_PATH,
            get(events::ssf_configuration_document::<R>),
        )
        .route("/events/poll/{stream}", post(poll::poll::<R>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            settings.body_read_timeout,
            read_body_in_time,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Reads the whole body under a deadline before any handler runs: a client trickling its
/// body would otherwise hold its connection (and a connection slot) for as long as it
/// likes.
async fn read_body_in_time(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        Ok(Err(_)) => WebError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_ARGUMENT",
            "the request body is too large or incomplete",
        )
        .into_response(),
        Err(_) => WebError::new(
            StatusCode::REQUEST_TIMEOUT,
            "DEADLINE_EXCEEDED",
            "the request body took too long to arrive",
        )
        .into_response(),
    }
}

/// Headers every response carries, errors included.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    // The page URL and the API answers are tied to one secret and one ceremony: no cache
    // (browser or shared) may keep them.
    set(headers, header::CACHE_CONTROL, "no-store");
    // A link URL holds the secret (in the fragment, which is never sent; or in the path of
    // a deprecated link): send no Referer to anyone (redirect, subresource).
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    response
}

/// The page itself, the same bytes for every URL; its script reads the secret from
/// `location.hash` (or a deprecated link's path), so the secret is never templated into HTML.
async fn page() -> Response {
    static_asset(PAGE, "text/html; charset=utf-8")
}

async fn script() -> Response {
    static_asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn otp_script() -> Response {
    static_asset(OTP_SCRIPT, "text/javascript; charset=utf-8")
}

async fn webauthn_script() -> Response {
    static_asset(WEBAUTHN_SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    static_asset(STYLE, "text/css; charset=utf-8")
}

fn static_asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn not_found() -> Response {
    WebError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such page").into_response()
}
