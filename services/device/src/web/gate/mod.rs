//! The gate's HTTP listener, reached only by the proxy: the forward-auth endpoints and the
//! sign-in page the proxy serves under `gate.path_prefix` of every protected host.
//!
//! - `/auth-request` answers only 2xx, 401 or 403 (nginx `auth_request` treats anything
//!   else as an error); the shipped nginx configuration sends 401 on to `/forward-auth`
//!   with `error_page`, which redirects browsers.
//! - `/forward-auth` answers 2xx, 302 (a browser navigation without a device session), 401,
//!   403 or 503 (Caddy `forward_auth`, Traefik `ForwardAuth`, nginx's `error_page`); also
//!   under `/forward-auth/<original path>` (Envoy's HTTP ext_authz, `path_prefix`).
//!
//! An allowed answer carries the identity for the app (`X-Enroll-User`, `-Realm`,
//! `-Device-Id`, `-Device-Type`), the request's cookies without the gate's own
//! (`X-Enroll-Cookie`, which the configurations put back as `Cookie`), and a refreshed
//! session cookie when one is due (`Set-Cookie`).
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Deserialize;
use serde_json::json;

use super::limits::{Limiter, RateLimits};
use crate::gate::hosts::{OriginalUrl, is_navigation};
use crate::gate::{
    DEVICE_ID_HEADER, DEVICE_TYPE_HEADER, Gate, ProtectedRequest, REALM_HEADER, RefusalAnswer,
    USER_HEADER, Verdict,
};

mod page;

/// The header carrying the app's cookies without the gate's.
pub const APP_COOKIE_HEADER: &str = "x-enroll-cookie";
/// The refusal's code, for proxies that read headers of the check's answer.
pub const ERROR_HEADER: &str = "x-enroll-gate-error";

#[derive(Clone)]
struct GateState {
    gate: Arc<Gate>,
    limiter: Arc<Limiter>,
    timeout: std::time::Duration,
}

#[derive(Debug, Deserialize)]
struct CheckQuery {
    device_type: Option<String>,
}

/// What the check endpoint may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answering {
    /// nginx `auth_request`: 2xx, 401, 403 only.
    AuthRequest,
    /// Everything else: redirects browsers itself.
    ForwardAuth,
}

pub fn router(gate: Arc<Gate>, limits: RateLimits, timeout: std::time::Duration) -> Router {
    let prefix = gate.path_prefix().to_owned();
    let state = GateState {
        gate,
        limiter: Arc::new(Limiter::new(limits)),
        timeout,
    };
    let check_routes = Router::new()
        .route("/auth-request", any(auth_request))
        .route("/forward-auth", any(forward_auth))
        .route("/forward-auth/", any(forward_auth_prefixed))
        .route("/forward-auth/{*original}", any(forward_auth_prefixed))
        .with_state(state.clone());
    check_routes
        .merge(page::routes(&prefix, state))
        .fallback(not_found)
        .layer(axum::middleware::map_response(super::security_headers))
}

async fn not_found() -> Response {
    let body = json!({"error": "NOT_FOUND", "reason": "no such page"}).to_string();
    json_answer(StatusCode::NOT_FOUND, "NOT_FOUND", body)
}

async fn auth_request(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<CheckQuery>,
    headers: HeaderMap,
) -> Response {
    check(state, peer, query, headers, Answering::AuthRequest).await
}

async fn forward_auth(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<CheckQuery>,
    headers: HeaderMap,
) -> Response {
    check(state, peer, query, headers, Answering::ForwardAuth).await
}

/// Envoy's HTTP ext_authz (Istio's `envoyExtAuthzHttp`) appends the original path and
/// query to its path prefix: `/forward-auth/<original path>?<original query>`. That query
/// is the client's, never the check's parameters (a client would choose its device type);
/// the original URL is `Host` and that path unless the proxy sent `X-Original-URL`.
async fn forward_auth_prefixed(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let original = uri
        .path_and_query()
        .map(|path| path.as_str())
        .and_then(|path| path.strip_prefix("/forward-auth"))
        .unwrap_or("/");
    let url = OriginalUrl::from_forwarded(&headers)
        .filter(|_| headers.contains_key("x-original-url"))
        .or_else(|| {
            let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
            let scheme = text("x-forwarded-proto").unwrap_or("https");
            OriginalUrl::parse(&format!("{scheme}://{}{original}", text("host")?))
        });
    let query = CheckQuery { device_type: None };
    check_url(state, peer, query, headers, url, Answering::ForwardAuth).await
}

async fn check(
    state: GateState,
    peer: SocketAddr,
    query: CheckQuery,
    headers: HeaderMap,
    answering: Answering,
) -> Response {
    let url = OriginalUrl::from_forwarded(&headers);
    check_url(state, peer, query, headers, url, answering).await
}

async fn check_url(
    state: GateState,
    peer: SocketAddr,
    query: CheckQuery,
    headers: HeaderMap,
    url: Option<OriginalUrl>,
    answering: Answering,
) -> Response {
    let gate = &state.gate;
    let device_type = headers
        .get(gate.device_type_header())
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or(query.device_type);
    let client_ip = gate.proxies().client(peer, &headers).to_canonical();
    let request = ProtectedRequest {
        peer: peer.ip().to_canonical(),
        client_ip: Some(client_ip),
        headers: &headers,
        url,
        device_type: device_type.as_deref(),
    };
    let verdict = match tokio::time::timeout(state.timeout, gate.check(&request)).await {
        Ok(verdict) => verdict,
        Err(_) => Verdict::Unavailable {
            reason: "the gate did not decide in time".to_owned(),
        },
    };
    let navigation = is_navigation(&headers);
    verdict_response(gate, verdict, &headers, answering, navigation)
}

fn verdict_response(
    gate: &Gate,
    verdict: Verdict,
    headers: &HeaderMap,
    answering: Answering,
    navigation: bool,
) -> Response {
    let code = verdict.code();
    match verdict {
        Verdict::Allow(allowed) => {
            let mut response = StatusCode::OK.into_response();
            let out = response.headers_mut();
            let mut put = |name: &'static str, value: &str| {
                if let Ok(value) = HeaderValue::from_str(value) {
                    out.insert(name, value);
                }
            };
            put(USER_HEADER, &allowed.user);
            put(REALM_HEADER, &allowed.realm);
            put(DEVICE_ID_HEADER, &allowed.device_id);
            put(DEVICE_TYPE_HEADER, allowed.device_type);
            let app_cookies = gate.sessions().strip(
                headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|value| value.to_str().ok()),
            );
            put(APP_COOKIE_HEADER, &app_cookies);
            if let Some(cookie) = allowed.set_cookie
                && let Ok(value) = HeaderValue::from_str(&cookie)
            {
                out.insert(header::SET_COOKIE, value);
            }
            response
        }
        Verdict::SignIn(sign_in) if navigation && answering == Answering::ForwardAuth => {
            let mut response = StatusCode::FOUND.into_response();
            if let Ok(location) = HeaderValue::from_str(&sign_in.location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            with_cleared_cookie(response, sign_in.clear_cookie)
        }
        refused => {
            let clear = match &refused {
                Verdict::SignIn(sign_in) => sign_in.clear_cookie.clone(),
                _ => None,
            };
            let Some(RefusalAnswer { status, body }) = refused.refusal() else {
                return StatusCode::FORBIDDEN.into_response();
            };
            // nginx takes only 2xx, 401 and 403 from a check.
            let status = match (status, answering) {
                (503, Answering::AuthRequest) => StatusCode::FORBIDDEN,
                _ => StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            };
            with_cleared_cookie(json_answer(status, code, body), clear)
        }
    }
}

fn with_cleared_cookie(mut response: Response, clear: Option<String>) -> Response {
    if let Some(clear) = clear
        && let Ok(value) = HeaderValue::from_str(&clear)
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A refusal's JSON body, with its code in a header too.
fn json_answer(status: StatusCode, code: &str, body: String) -> Response {
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(code) {
        response.headers_mut().insert(ERROR_HEADER, value);
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Enroll-Gate"),
        );
    }
    response
}

/// Serves the gate on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gate: Arc<Gate>,
    settings: super::PageSettings,
    requests_per_address: u32,
    timeout: std::time::Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "gate listening");
    }
    let mut limits = settings.limits.clone();
    limits.requests_per_address = requests_per_address.max(1);
    let app = router(gate, limits, timeout)
        .layer(axum::extract::DefaultBodyLimit::max(super::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            settings.body_read_timeout,
            super::read_body_in_time,
        ));
    super::serve::serve_app(
        listener,
        app,
        settings.max_connections,
        settings.header_read_timeout,
        stop,
    )
    .await;
}
