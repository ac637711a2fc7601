//! The page's OTP enrollment endpoints, wrapping the OTP-link use cases as the actor
//! `enrollment-page`. Redeem takes the link secret (from the `#otp-` fragment) and answers
//! with the seed once, setting the redemption session as an HttpOnly cookie scoped to these
//! endpoints; resume shows the same seed to that cookie only (a reload), until the verify
//! window ends; finish takes the first code (and the PIN) and clears the cookie. Whoever
//! holds only the link, after the redemption, gets the same NOT_FOUND as for an unknown one.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::api::{call, page_actor};
use super::*;
use crate::domain::otp_links::{FinishedEnrollment, PendingEnrollment, VerifiedIdentity};
use crate::domain::tokens::TokenKind;
use crate::gate::Gate;
use crate::service::tokens::{NO_PENDING_ENROLLMENT, Tokens, UNUSABLE_LINK};

/// The redemption session's cookie: `__Secure-` (never set over plain http by a browser,
/// except on localhost), HttpOnly (no script reads it), SameSite=Strict, and sent only to
/// these endpoints.
pub(super) const SESSION_COOKIE: &str = "__Secure-enroll-otp";
const SESSION_PATH: &str = "/enroll/api/otp";
/// The longest PIN looked at (policies allow at most 64 characters).
const MAX_PIN_CHARS: usize = 256;

/// The three use cases the page wraps. A seam so the HTTP layer is testable without a
/// database.
#[async_trait::async_trait]
pub trait OtpEnroller: Send + Sync + 'static {
    async fn redeem(
        &self,
        actor: &Actor,
        secret: &LinkSecret,
        identity: Option<&VerifiedIdentity>,
    ) -> Result<PendingEnrollment, DeviceError>;

    async fn resume(
        &self,
        actor: &Actor,
        session: &LinkSecret,
    ) -> Result<PendingEnrollment, DeviceError>;

    async fn finish(
        &self,
        actor: &Actor,
        session: &LinkSecret,
        code: String,
        pin: Option<String>,
    ) -> Result<FinishedEnrollment, DeviceError>;
}

#[async_trait::async_trait]
impl OtpEnroller for Tokens {
    async fn redeem(
        &self,
        actor: &Actor,
        secret: &LinkSecret,
        identity: Option<&VerifiedIdentity>,
    ) -> Result<PendingEnrollment, DeviceError> {
        self.redeem_otp_link(actor, secret, identity).await
    }

    async fn resume(
        &self,
        actor: &Actor,
        session: &LinkSecret,
    ) -> Result<PendingEnrollment, DeviceError> {
        self.resume_otp_enrollment(actor, session).await
    }

    async fn finish(
        &self,
        actor: &Actor,
        session: &LinkSecret,
        code: String,
        pin: Option<String>,
    ) -> Result<FinishedEnrollment, DeviceError> {
        self.finish_otp_enrollment(actor, session, code, pin).await
    }
}

/// The OTP part of the page: the use cases, and the gate whose identity source says who
/// is signed in (for `require_identity`); without a gate nobody is.
#[derive(Clone)]
pub struct OtpPage {
    pub enroller: Arc<dyn OtpEnroller>,
    pub identity: Option<Arc<Gate>>,
}

/// The redeem call: the link secret (without the `otp-` prefix) and nothing else. No
/// `Debug`: it holds the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedeemBody {
    secret: String,
}

/// The finish call. No `Debug`: it holds the PIN.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FinishBody {
    code: String,
    #[serde(default)]
    pin: String,
}

/// What the redeeming browser is shown. No `Debug`: it holds the seed.
#[derive(Serialize)]
pub(super) struct PendingAnswer {
    realm: String,
    user: String,
    serial: String,
    label: String,
    token_type: &'static str,
    digits: u32,
    period: u32,
    algorithm: &'static str,
    otpauth_uri: String,
    secret: String,
    /// `data:image/png;base64,...`
    qr_png: String,
    verify_deadline: String,
    attempts_left: u32,
    pin_required: bool,
    pin_random: bool,
    pin_min_length: u32,
}

#[derive(Serialize)]
pub(super) struct FinishAnswer {
    serial: String,
    /// The random PIN, once; "" when none was made.
    pin: String,
}

fn pending_answer(pending: PendingEnrollment) -> PendingAnswer {
    let token = pending.token;
    PendingAnswer {
        realm: pending.realm.to_string(),
        user: pending.user.to_string(),
        serial: token.serial,
        label: token.label,
        token_type: match token.kind {
            TokenKind::Hotp => "hotp",
            _ => "totp",
        },
        digits: token.digits,
        period: token.period,
        algorithm: token.algorithm.as_str(),
        otpauth_uri: pending.otpauth_uri,
        secret: pending.secret_base32,
        qr_png: format!("data:image/png;base64,{}", STANDARD.encode(&pending.qr_png)),
        verify_deadline: pending.verify_deadline.to_rfc3339(),
        attempts_left: pending.attempts_left,
        pin_required: pending.pin.required,
        pin_random: pending.pin.random,
        pin_min_length: pending.pin.min_length,
    }
}

pub(super) async fn redeem<R>(
    State(state): State<WebState<R>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<RedeemBody>, JsonRejection>,
) -> Result<Response, WebError> {
    let otp = otp_page(&state)?;
    let actor = page_actor(&state, peer, &headers)?;
    let Json(body) = body.map_err(WebError::from)?;
    if body.secret.trim().is_empty() {
        return Err(DeviceError::invalid("secret", "required").into());
    }
    let secret = LinkSecret::parse(&body.secret)
        .ok_or_else(|| WebError::from(DeviceError::NotFound(UNUSABLE_LINK.to_owned())))?;
    // The same per-link limits as a device link's begin, keyed by the secret's hash.
    let ticket = state.limiter.admit_begin(secret.hash())?;
    let identity = match &otp.identity {
        Some(gate) => gate
            .identify(&headers, peer.ip())
            .await
            .ok()
            .map(|identity| VerifiedIdentity {
                realm: identity.realm,
                user: identity.user,
            }),
        None => None,
    };
    let redeemed = call(
        state.timeout,
        otp.enroller.redeem(&actor, &secret, identity.as_ref()),
    )
    .await;
    // Every answer but "try again later" counts against the link's window.
    match &redeemed {
        Err(error) if matches!(error.code(), "UNAVAILABLE" | "RESOURCE_EXHAUSTED") => {}
        _ => ticket.found(),
    }
    drop(ticket);
    let mut pending = redeemed?;
    let session = pending.session.take().ok_or_else(WebError::internal)?;
    let max_age = (pending.verify_deadline - chrono::Utc::now())
        .num_seconds()
        .max(1);
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path={SESSION_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict",
        session.expose()
    );
    Ok(with_cookie(
        Json(pending_answer(pending)).into_response(),
        &cookie,
    ))
}

pub(super) async fn resume<R>(
    State(state): State<WebState<R>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<PendingAnswer>, WebError> {
    let otp = otp_page(&state)?;
    let actor = page_actor(&state, peer, &headers)?;
    let session = session_of(&headers)?;
    let pending = call(state.timeout, otp.enroller.resume(&actor, &session)).await?;
    Ok(Json(pending_answer(pending)))
}

pub(super) async fn finish<R>(
    State(state): State<WebState<R>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Response, WebError> {
    let otp = otp_page(&state)?;
    let actor = page_actor(&state, peer, &headers)?;
    let session = session_of(&headers)?;
    let Json(body) = body.map_err(WebError::from)?;
    let code = body.code.trim().to_owned();
    if !(matches!(code.len(), 6 | 8) && code.bytes().all(|b| b.is_ascii_digit())) {
        return Err(
            DeviceError::invalid("code", "must be the 6 or 8 digits your app shows").into(),
        );
    }
    if body.pin.chars().count() > MAX_PIN_CHARS || body.pin.contains('\0') {
        return Err(DeviceError::invalid("pin", "too long").into());
    }
    let finished = call(
        state.timeout,
        otp.enroller.finish(&actor, &session, code, Some(body.pin)),
    )
    .await?;
    let cleared = format!(
        "{SESSION_COOKIE}=; Path={SESSION_PATH}; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    );
    let answer = FinishAnswer {
        serial: finished.token.serial,
        pin: finished.pin,
    };
    Ok(with_cookie(Json(answer).into_response(), &cleared))
}

fn otp_page<R>(state: &WebState<R>) -> Result<&OtpPage, WebError> {
    state.otp.as_ref().ok_or_else(|| {
        WebError::new(
            StatusCode::NOT_FOUND,
            "UNIMPLEMENTED",
            "OTP enrollment is not served here",
        )
    })
}

/// The redemption session from the cookie; none answers like an unknown one.
fn session_of(headers: &HeaderMap) -> Result<LinkSecret, WebError> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .and_then(|(_, value)| LinkSecret::parse(value))
        .ok_or_else(|| DeviceError::NotFound(NO_PENDING_ENROLLMENT.to_owned()).into())
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
