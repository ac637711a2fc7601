//! The sign-in page under `gate.path_prefix` of a protected host: the person authenticates
//! with an enrolled device of the route's type (WebAuthn `get()`), registers one when the
//! policy lets them self-register, or learns why not. Every API call needs the identity
//! the proxy in front vouches for, comes from a protected host's own origin, and is rate
//! limited per client address.
use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::GateState;
use crate::domain::devices::{DeviceKind, DeviceState, EnrollmentStatus};
use crate::error::DeviceError;
use crate::gate::Gate;
use crate::gate::identity::Identity;
use crate::service::devices::{EnrollmentQuery, Finisher, Registrant};
use crate::web::call;
use crate::web::error::WebError;

const PAGE: &str = include_str!("gate.html");
const SCRIPT: &str = include_str!("gate.js");
const STYLE: &str = include_str!("gate.css");

pub(super) fn routes(prefix: &str, state: GateState) -> Router {
    Router::new()
        .route(&format!("{prefix}/"), get(page))
        .route(prefix, get(page))
        .route(
            &format!("{prefix}/assets/webauthn.js"),
            get(webauthn_script),
        )
        .route(&format!("{prefix}/assets/gate.js"), get(script))
        .route(&format!("{prefix}/assets/gate.css"), get(style))
        .route(&format!("{prefix}/api/status"), post(status))
        .route(
            &format!("{prefix}/api/authenticate/begin"),
            post(begin_authentication),
        )
        .route(
            &format!("{prefix}/api/authenticate/finish"),
            post(finish_authentication),
        )
        .route(
            &format!("{prefix}/api/register/begin"),
            post(begin_registration),
        )
        .route(
            &format!("{prefix}/api/register/finish"),
            post(finish_registration),
        )
        .route(&format!("{prefix}/api/signout"), post(sign_out))
        .with_state(state)
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn webauthn_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        crate::web::WEBAUTHN_SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// Who is calling: the rate limit first, then the page's own origin, then the identity.
struct Caller {
    identity: Identity,
    client_ip: std::net::IpAddr,
}

fn unauthenticated() -> WebError {
    WebError::new(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        crate::gate::NOT_SIGNED_IN,
    )
}

async fn caller(
    state: &GateState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Caller, WebError> {
    let gate = &state.gate;
    let client_ip = gate.proxies().client(peer, headers).to_canonical();
    state.limiter.admit_client(client_ip)?;
    check_origin(gate, peer, headers)?;
    let identity = gate
        .identify(headers, peer.ip().to_canonical())
        .await
        .map_err(|_| unauthenticated())?;
    Ok(Caller {
        identity,
        client_ip,
    })
}

/// The call must come from a script on a protected host's page: `Origin` present, its
/// host protected and the same as the host the request was made to (no cross-site POST,
/// no other protected app posting on this one's behalf).
fn check_origin(gate: &Gate, peer: SocketAddr, headers: &HeaderMap) -> Result<(), WebError> {
    let refused = || {
        WebError::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "the request does not come from this site's sign-in page",
        )
    };
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let origin = text("origin").ok_or_else(refused)?;
    let origin = url::Url::parse(origin).map_err(|_| refused())?;
    let origin_host = match (origin.host_str(), origin.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => return Err(refused()),
    };
    let request_host = request_host(gate, peer, headers).ok_or_else(refused)?;
    if !origin_host.eq_ignore_ascii_case(request_host.trim()) || !gate.hosts().allows(&origin_host)
    {
        return Err(refused());
    }
    if text("sec-fetch-site").is_some_and(|site| site == "cross-site") {
        return Err(refused());
    }
    Ok(())
}

fn required(gate: &Gate, sent: &str) -> Result<DeviceKind, WebError> {
    gate.required_type(Some(sent)).map_err(|verdict| {
        WebError::new(
            StatusCode::BAD_REQUEST,
            verdict.code(),
            match verdict {
                crate::gate::Verdict::Forbidden { reason, .. } => reason,
                _ => "the device type is not valid".to_owned(),
            },
        )
    })
}

/// The host the browser asked for: `X-Forwarded-Host` from a trusted proxy, else `Host`.
fn request_host<'a>(gate: &Gate, peer: SocketAddr, headers: &'a HeaderMap) -> Option<&'a str> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let forwarded = gate
        .proxies()
        .trusts(peer.ip().to_canonical())
        .then(|| text("x-forwarded-host"))
        .flatten();
    forwarded.or_else(|| text("host"))
}

/// The return URL: on a protected host, or refused. Empty means the host's root.
fn return_url(
    gate: &Gate,
    peer: SocketAddr,
    headers: &HeaderMap,
    sent: &str,
) -> Result<String, WebError> {
    let sent = sent.trim();
    if sent.is_empty() {
        let host = request_host(gate, peer, headers).unwrap_or_default();
        let scheme = match headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
        {
            Some("http") if gate.proxies().trusts(peer.ip().to_canonical()) => "http",
            _ => "https",
        };
        return gate
            .hosts()
            .return_url(&format!("{scheme}://{host}/"))
            .map(String::from)
            .ok_or_else(|| {
                WebError::new(
                    StatusCode::BAD_REQUEST,
                    "RETURN_URL_REFUSED",
                    "the page is not served on a host this gate protects",
                )
            });
    }
    gate.hosts()
        .return_url(sent)
        .map(String::from)
        .ok_or_else(|| {
            WebError::new(
                StatusCode::BAD_REQUEST,
                "RETURN_URL_REFUSED",
                "the return URL is not on a host this gate protects",
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    #[serde(default, rename = "type")]
    device_type: String,
    #[serde(default)]
    rd: String,
}

#[derive(Serialize)]
struct StatusAnswer {
    realm: String,
    user: String,
    device_type: &'static str,
    /// `authenticate`, `register`, `pending` or `ask_admin`.
    next: &'static str,
    status: &'static str,
    reasons: Vec<String>,
    return_url: String,
}

async fn status(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<StatusBody>, JsonRejection>,
) -> Result<Json<StatusAnswer>, WebError> {
    let caller = caller(&state, peer, &headers).await?;
    let Json(body) = body?;
    let gate = &state.gate;
    let required = required(gate, &body.device_type)?;
    let return_url = return_url(gate, peer, &headers, &body.rd)?;
    let query = EnrollmentQuery {
        realm: caller.identity.realm.clone(),
        user: caller.identity.user.clone(),
        credential_id: None,
        required,
    };
    let actor = Gate::page_actor(Some(caller.client_ip));
    let check = call(
        state.timeout,
        gate.devices().check_enrollment(&actor, &query),
    )
    .await?;
    let next = match check.status {
        EnrollmentStatus::Enrolled => "authenticate",
        EnrollmentStatus::PendingApproval => "pending",
        _ if check.can_self_enroll => "register",
        _ => "ask_admin",
    };
    Ok(Json(StatusAnswer {
        realm: caller.identity.realm.to_string(),
        user: caller.identity.user.to_string(),
        device_type: required.as_str(),
        next,
        status: status_name(check.status),
        reasons: check.reasons,
        return_url,
    }))
}

fn status_name(status: EnrollmentStatus) -> &'static str {
    match status {
        EnrollmentStatus::Enrolled => "ENROLLED",
        EnrollmentStatus::PendingApproval => "PENDING_APPROVAL",
        EnrollmentStatus::NotEnrolled => "NOT_ENROLLED",
        EnrollmentStatus::TypeMismatch => "TYPE_MISMATCH",
        EnrollmentStatus::Revoked => "REVOKED",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BeginBody {
    #[serde(rename = "type")]
    device_type: String,
}

#[derive(Serialize)]
struct BeginAnswer {
    ceremony_id: String,
    options: Value,
}

fn options(json: &str) -> Result<Value, WebError> {
    serde_json::from_str(json).map_err(|error| {
        tracing::error!(%error, "gate: the WebAuthn options are not JSON");
        WebError::internal()
    })
}

async fn begin_authentication(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<BeginBody>, JsonRejection>,
) -> Result<Json<BeginAnswer>, WebError> {
    let caller = caller(&state, peer, &headers).await?;
    let Json(body) = body?;
    let required = required(&state.gate, &body.device_type)?;
    let identity = &caller.identity;
    let challenge = call(
        state.timeout,
        state
            .gate
            .devices()
            .begin_authentication(&identity.realm, &identity.user, required),
    )
    .await?;
    Ok(Json(BeginAnswer {
        ceremony_id: challenge.ceremony_id,
        options: options(&challenge.options_json)?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FinishBody {
    ceremony_id: String,
    credential: Value,
    #[serde(rename = "type")]
    device_type: String,
    #[serde(default)]
    rd: String,
}

#[derive(Serialize)]
struct SignedIn {
    redirect: String,
}

fn ceremony_id(raw: &str) -> Result<String, WebError> {
    Ok(uuid::Uuid::parse_str(raw.trim())
        .map_err(|_| DeviceError::invalid("ceremony_id", "not a valid id"))?
        .to_string())
}

async fn finish_authentication(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Response, WebError> {
    let caller = caller(&state, peer, &headers).await?;
    let Json(body) = body?;
    let gate = &state.gate;
    let required = required(gate, &body.device_type)?;
    let return_url = return_url(gate, peer, &headers, &body.rd)?;
    let ceremony_id = ceremony_id(&body.ceremony_id)?;
    if body.credential.is_null() {
        return Err(DeviceError::invalid("credential", "required").into());
    }
    let actor = Gate::page_actor(Some(caller.client_ip));
    let identity = &caller.identity;
    let result = async {
        let device = call(
            state.timeout,
            gate.devices()
                .finish_authentication(&actor, &ceremony_id, body.credential.to_string()),
        )
        .await?;
        // The ceremony was begun for the signed-in user; a device of anyone else (a
        // ceremony id carried over from another session) never opens this one.
        if device.realm != identity.realm || device.user != identity.user {
            return Err(WebError::new(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "the device belongs to another user",
            ));
        }
        // The same question every later request asks: only an acceptable device starts
        // a session.
        let query = EnrollmentQuery {
            realm: identity.realm.clone(),
            user: identity.user.clone(),
            credential_id: Some(device.credential_id.clone()),
            required,
        };
        let check = call(
            state.timeout,
            gate.devices().check_enrollment(&actor, &query),
        )
        .await?;
        if check.status != EnrollmentStatus::Enrolled {
            return Err(WebError::new(
                StatusCode::FORBIDDEN,
                "DEVICE_NOT_ACCEPTED",
                check
                    .reasons
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "the device is not accepted".to_owned()),
            ));
        }
        Ok(device)
    }
    .await;
    let audited = match &result {
        Ok(device) => Ok(format!("signed in with device {}", device.id)),
        Err(error) => Err(DeviceError::Refused {
            reason: "GATE_SIGN_IN_REFUSED",
            message: error.message().to_owned(),
        }),
    };
    gate.record_page("gate_sign_in", identity, &audited);
    let device = result?;
    // Bound to what the device is (it satisfies `required`): an enclave_only device signed
    // in on an `any` route also opens enclave_only routes; every request still re-checks.
    let cookie = gate.start_session(identity, device.credential_id, device.kind);
    let mut response = Json(SignedIn {
        redirect: return_url,
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn begin_registration(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<BeginBody>, JsonRejection>,
) -> Result<Json<BeginAnswer>, WebError> {
    let caller = caller(&state, peer, &headers).await?;
    let Json(body) = body?;
    let required = required(&state.gate, &body.device_type)?;
    let actor = Gate::page_actor(Some(caller.client_ip));
    let registrant = Registrant::SelfService {
        realm: caller.identity.realm.clone(),
        user: caller.identity.user.clone(),
        kind: Some(required),
    };
    let challenge = call(
        state.timeout,
        state.gate.devices().begin_registration(&actor, registrant),
    )
    .await?;
    Ok(Json(BeginAnswer {
        ceremony_id: challenge.ceremony_id,
        options: options(&challenge.options_json)?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFinishBody {
    ceremony_id: String,
    credential: Value,
}

#[derive(Serialize)]
struct Registered {
    device_id: String,
    /// `pending_approval` or `approved`.
    state: &'static str,
}

async fn finish_registration(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<RegisterFinishBody>, JsonRejection>,
) -> Result<Json<Registered>, WebError> {
    let caller = caller(&state, peer, &headers).await?;
    let Json(body) = body?;
    let ceremony_id = ceremony_id(&body.ceremony_id)?;
    if body.credential.is_null() {
        return Err(DeviceError::invalid("credential", "required").into());
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let actor = Gate::page_actor(Some(caller.client_ip));
    let finisher = Finisher::Subject(caller.identity.realm.clone(), caller.identity.user.clone());
    let registered = call(
        state.timeout,
        state.gate.devices().finish_registration(
            &actor,
            &ceremony_id,
            body.credential.to_string(),
            &user_agent,
            finisher,
        ),
    )
    .await?;
    let device = registered.device;
    Ok(Json(Registered {
        device_id: device.id,
        state: match device.state {
            DeviceState::PendingApproval => "pending_approval",
            _ => "approved",
        },
    }))
}

/// Deletes the session cookie. Needs the page's origin (no cross-site sign-out), not an
/// identity: signing out must work whatever the identity provider says.
async fn sign_out(
    State(state): State<GateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let client_ip = state.gate.proxies().client(peer, &headers).to_canonical();
    state.limiter.admit_client(client_ip)?;
    check_origin(&state.gate, peer, &headers)?;
    let mut response = Json(serde_json::json!({"signed_out": true})).into_response();
    if let Ok(value) = HeaderValue::from_str(&state.gate.sessions().clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}
