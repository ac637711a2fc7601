//! The token RPCs: decode into domain values, call one use case, encode.
use enroll_shared::proto::device::v1 as pb;
use tonic::{Request, Response, Status};

use super::decode::{
    actor, check_text, optional_realm, optional_user, page, realm, request_id, serial, timestamp,
    user,
};
use crate::domain::import::ImportReport;
use crate::domain::tokens::{
    EnrolledToken, HashAlgorithm, LostTokenReplacement, OtpParameters, PassAttempt, Token,
    TokenKind, TokenState, Verdict,
};
use crate::domain::tokens::{TokenChange, TokenFilter};
use crate::domain::verify::EnrollmentState;
use crate::error::DeviceError;
use crate::service::tokens::{Enrollment, Tokens};

/// The largest CSV ImportTokens takes in one request.
const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
/// The device server's default request size cap (`server.max_decoding_message_size`):
/// the largest ImportTokens CSV plus room for the request's other fields.
pub const MAX_REQUEST_BYTES: usize = MAX_IMPORT_BYTES + 1024 * 1024;
/// The longest PIN or pass looked at (PINs are at most 64 characters by policy, codes 8,
/// temporary passwords 64).
const MAX_PASS_CHARS: usize = 256;

pub(super) fn algorithm(raw: i32) -> Result<HashAlgorithm, DeviceError> {
    match pb::HashAlgorithm::try_from(raw) {
        Ok(pb::HashAlgorithm::Unspecified | pb::HashAlgorithm::Sha1) => Ok(HashAlgorithm::Sha1),
        Ok(pb::HashAlgorithm::Sha256) => Ok(HashAlgorithm::Sha256),
        Ok(pb::HashAlgorithm::Sha512) => Ok(HashAlgorithm::Sha512),
        Err(_) => Err(DeviceError::invalid(
            "algorithm",
            format!("unknown value {raw}"),
        )),
    }
}

pub(super) fn token_kind(raw: i32) -> Result<TokenKind, DeviceError> {
    match pb::TokenType::try_from(raw) {
        Ok(pb::TokenType::Totp) => Ok(TokenKind::Totp),
        Ok(pb::TokenType::Hotp) => Ok(TokenKind::Hotp),
        Ok(pb::TokenType::Password) => Ok(TokenKind::Password),
        _ => Err(DeviceError::invalid(
            "type",
            "required: TOKEN_TYPE_TOTP or TOKEN_TYPE_HOTP",
        )),
    }
}

impl TryFrom<pb::EnrollTokenRequest> for Enrollment {
    type Error = DeviceError;

    fn try_from(request: pb::EnrollTokenRequest) -> Result<Self, Self::Error> {
        let parameters = otp_parameters(
            token_kind(request.r#type)?,
            request.digits,
            request.period,
            request.algorithm,
        )?;
        check_text("description", &request.description, 256)?;
        Ok(Enrollment {
            realm: realm("realm", &request.realm)?,
            user: optional_user("user", &request.user)?,
            parameters,
            description: request.description,
            include_qr_png: request.include_qr_png,
            verify: request.verify,
            request_id: request_id(&request.request_id)?,
        })
    }
}

/// The code parameters of a request, as EnrollToken takes them.
pub(super) fn otp_parameters(
    kind: TokenKind,
    digits: u32,
    period: Option<prost_types::Duration>,
    algorithm_raw: i32,
) -> Result<OtpParameters, DeviceError> {
    let period = match period {
        Some(period) if period.seconds < 0 || period.nanos != 0 => {
            return Err(DeviceError::invalid(
                "period",
                "must be a whole, positive number of seconds",
            ));
        }
        Some(period) => period.seconds as u64,
        None => 0,
    };
    OtpParameters::new(kind, digits, period, algorithm(algorithm_raw)?)
        .map_err(|(field, message)| DeviceError::invalid(field, message))
}

fn state_to_proto(state: TokenState) -> pb::TokenState {
    match state {
        TokenState::Enabled => pb::TokenState::Enabled,
        TokenState::Disabled => pb::TokenState::Disabled,
        TokenState::Locked => pb::TokenState::Locked,
        TokenState::Lost => pb::TokenState::Lost,
    }
}

pub(super) fn token_type_to_proto(kind: TokenKind) -> pb::TokenType {
    match kind {
        TokenKind::Totp => pb::TokenType::Totp,
        TokenKind::Hotp => pb::TokenType::Hotp,
        TokenKind::Password => pb::TokenType::Password,
    }
}

pub(super) fn algorithm_to_proto(algorithm: HashAlgorithm) -> pb::HashAlgorithm {
    match algorithm {
        HashAlgorithm::Sha1 => pb::HashAlgorithm::Sha1,
        HashAlgorithm::Sha256 => pb::HashAlgorithm::Sha256,
        HashAlgorithm::Sha512 => pb::HashAlgorithm::Sha512,
    }
}

/// A token as callers see it: never its seed or PIN.
pub fn token_to_proto(token: Token) -> pb::Token {
    pb::Token {
        serial: token.serial,
        r#type: token_type_to_proto(token.kind) as i32,
        realm: token.realm.to_string(),
        user: token.user.map(String::from).unwrap_or_default(),
        state: state_to_proto(token.state) as i32,
        label: token.label,
        digits: token.digits,
        period: (token.period > 0).then(|| prost_types::Duration {
            seconds: i64::from(token.period),
            nanos: 0,
        }),
        algorithm: algorithm_to_proto(token.algorithm) as i32,
        has_pin: token.has_pin,
        failure_count: token.failure_count,
        create_time: timestamp(token.create_time),
        expire_time: token.expire_time.and_then(timestamp),
        description: token.description,
        enrollment_state: match token.enrollment {
            EnrollmentState::Enrolled => pb::EnrollmentState::Enrolled,
            EnrollmentState::VerifyPending => pb::EnrollmentState::VerifyPending,
            EnrollmentState::VerifyFailed => pb::EnrollmentState::VerifyFailed,
            EnrollmentState::VerifyExpired => pb::EnrollmentState::VerifyExpired,
        } as i32,
    }
}

fn enrolled_to_proto(enrolled: EnrolledToken) -> pb::EnrollTokenResponse {
    pb::EnrollTokenResponse {
        token: Some(token_to_proto(enrolled.token)),
        otpauth_uri: enrolled.otpauth_uri,
        secret_base32: enrolled.secret_base32,
        pin: enrolled.pin,
        qr_png: enrolled.qr_png,
    }
}

fn list_filter(request: &pb::ListTokensRequest) -> Result<TokenFilter, DeviceError> {
    let kind = match pb::TokenType::try_from(request.r#type) {
        Ok(pb::TokenType::Unspecified) => None,
        Ok(kind) => Some(token_kind(kind as i32)?),
        Err(_) => {
            return Err(DeviceError::invalid(
                "type",
                format!("unknown value {}", request.r#type),
            ));
        }
    };
    let state = match pb::TokenState::try_from(request.state) {
        Ok(pb::TokenState::Unspecified) => None,
        Ok(pb::TokenState::Enabled) => Some(TokenState::Enabled),
        Ok(pb::TokenState::Disabled) => Some(TokenState::Disabled),
        Ok(pb::TokenState::Locked) => Some(TokenState::Locked),
        Ok(pb::TokenState::Lost) => Some(TokenState::Lost),
        Err(_) => {
            return Err(DeviceError::invalid(
                "state",
                format!("unknown value {}", request.state),
            ));
        }
    };
    Ok(TokenFilter {
        realm: optional_realm("realm", &request.realm)?,
        user: optional_user("user", &request.user)?,
        kind,
        assigned: request.assigned,
        state,
    })
}

pub async fn enroll_token(
    tokens: &Tokens,
    request: Request<pb::EnrollTokenRequest>,
) -> Result<Response<pb::EnrollTokenResponse>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let enrollment = Enrollment::try_from(request.into_inner())?;
    let enrolled = tokens.enroll(&actor, enrollment).await?;
    Ok(Response::new(enrolled_to_proto(enrolled)))
}

pub async fn verify_token(
    tokens: &Tokens,
    request: Request<pb::VerifyTokenRequest>,
) -> Result<Response<pb::Token>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let realm = realm("realm", &request.realm)?;
    let serial = serial(&request.serial)?;
    let code = check_code("code", &request.code)?;
    let token = tokens.verify(&actor, &realm, &serial, code).await?;
    Ok(Response::new(token_to_proto(token)))
}

/// A one-time code: 6 or 8 ASCII digits (the token's own length is checked against it).
pub(super) fn check_code(field: &'static str, raw: &str) -> Result<String, DeviceError> {
    if matches!(raw.len(), 6 | 8) && raw.bytes().all(|b| b.is_ascii_digit()) {
        Ok(raw.to_owned())
    } else {
        Err(DeviceError::invalid(
            field,
            "must be the token's 6 or 8 digits",
        ))
    }
}

pub async fn get_token(
    tokens: &Tokens,
    request: Request<pb::GetTokenRequest>,
) -> Result<Response<pb::Token>, Status> {
    let serial = serial(&request.get_ref().serial)?;
    Ok(Response::new(token_to_proto(tokens.get(&serial).await?)))
}

pub async fn list_tokens(
    tokens: &Tokens,
    request: Request<pb::ListTokensRequest>,
) -> Result<Response<pb::ListTokensResponse>, Status> {
    let request = request.into_inner();
    let filter = list_filter(&request)?;
    let page = tokens
        .list(&filter, &page(request.page_size, &request.page_token)?)
        .await?;
    Ok(Response::new(pb::ListTokensResponse {
        tokens: page.items.into_iter().map(token_to_proto).collect(),
        next_page_token: page.next_page_token,
    }))
}

pub async fn import_tokens(
    tokens: &Tokens,
    request: Request<pb::ImportTokensRequest>,
) -> Result<Response<pb::ImportTokensResponse>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let realm = realm("realm", &request.realm)?;
    if request.csv.len() > MAX_IMPORT_BYTES {
        return Err(DeviceError::invalid("csv", "larger than 16 MiB: split the import").into());
    }
    check_text("csv", &request.csv, MAX_IMPORT_BYTES)?;
    let request_id = request_id(&request.request_id)?;
    let report = tokens
        .import(&actor, &realm, &request.csv, request_id.as_ref())
        .await?;
    Ok(Response::new(report_to_proto(report)))
}

fn report_to_proto(report: ImportReport) -> pb::ImportTokensResponse {
    pb::ImportTokensResponse {
        imported: report.imported,
        errors: report
            .errors
            .into_iter()
            .map(|error| pb::ImportRowError {
                line: error.line,
                serial: error.serial,
                code: error.code,
                reason: error.reason,
            })
            .collect(),
    }
}

pub async fn assign_token(
    tokens: &Tokens,
    request: Request<pb::AssignTokenRequest>,
) -> Result<Response<pb::Token>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let serial = serial(&request.serial)?;
    let realm = realm("realm", &request.realm)?;
    let user = user("user", &request.user)?;
    let code = match request.code.as_str() {
        "" => None,
        raw => Some(check_code("code", raw)?),
    };
    let request_id = request_id(&request.request_id)?;
    let token = tokens
        .assign(&actor, &serial, &realm, &user, code, request_id.as_ref())
        .await?;
    Ok(Response::new(token_to_proto(token)))
}

/// Enable, disable, unassign and delete: the same shape of request.
async fn change_token<T>(
    tokens: &Tokens,
    request: &Request<T>,
    raw_serial: &str,
    change: TokenChange,
    raw_request_id: &str,
) -> Result<pb::Token, Status> {
    let actor = actor(request, "")?;
    let serial = serial(raw_serial)?;
    let request_id = request_id(raw_request_id)?;
    let token = tokens
        .manage(&actor, &serial, change, request_id.as_ref())
        .await?;
    Ok(token_to_proto(token))
}

pub async fn enable_token(
    tokens: &Tokens,
    request: Request<pb::EnableTokenRequest>,
) -> Result<Response<pb::Token>, Status> {
    let body = request.get_ref();
    let change = TokenChange::Enable;
    change_token(tokens, &request, &body.serial, change, &body.request_id)
        .await
        .map(Response::new)
}

pub async fn disable_token(
    tokens: &Tokens,
    request: Request<pb::DisableTokenRequest>,
) -> Result<Response<pb::Token>, Status> {
    let body = request.get_ref();
    let change = TokenChange::Disable;
    change_token(tokens, &request, &body.serial, change, &body.request_id)
        .await
        .map(Response::new)
}

pub async fn unassign_token(
    tokens: &Tokens,
    request: Request<pb::UnassignTokenRequest>,
) -> Result<Response<pb::Token>, Status> {
    let body = request.get_ref();
    let change = TokenChange::Unassign;
    change_token(tokens, &request, &body.serial, change, &body.request_id)
        .await
        .map(Response::new)
}

pub async fn delete_token(
    tokens: &Tokens,
    request: Request<pb::DeleteTokenRequest>,
) -> Result<Response<pb::DeleteTokenResponse>, Status> {
    let body = request.get_ref();
    let change = TokenChange::Delete;
    change_token(tokens, &request, &body.serial, change, &body.request_id).await?;
    Ok(Response::new(pb::DeleteTokenResponse {}))
}

pub async fn set_pin(
    tokens: &Tokens,
    request: Request<pb::SetPinRequest>,
) -> Result<Response<pb::Token>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let serial = serial(&request.serial)?;
    check_text("pin", &request.pin, MAX_PASS_CHARS)?;
    let request_id = request_id(&request.request_id)?;
    let token = tokens
        .set_pin(&actor, &serial, request.pin, request_id.as_ref())
        .await?;
    Ok(Response::new(token_to_proto(token)))
}

pub async fn validate(
    tokens: &Tokens,
    request: Request<pb::ValidateRequest>,
) -> Result<Response<pb::ValidateResponse>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let realm = realm("realm", &request.realm)?;
    let user = user("user", &request.user)?;
    if request.pass.is_empty() {
        return Err(DeviceError::invalid("pass", "required").into());
    }
    check_text("pass", &request.pass, MAX_PASS_CHARS)?;
    let attempt = PassAttempt {
        realm,
        user,
        pass: request.pass,
        transaction_id: optional_opaque("transaction_id", &request.transaction_id)?,
        device_token: optional_opaque("device_token", &request.device_token)?,
    };
    let response = match tokens.validate(&actor, &attempt).await? {
        Verdict::Accepted {
            serial,
            device_token,
        } => pb::ValidateResponse {
            ok: true,
            serial,
            autoassigned: false,
            message: String::new(),
            device_token: device_token.unwrap_or_default(),
            ..Default::default()
        },
        Verdict::Autoassigned {
            serial,
            device_token,
        } => pb::ValidateResponse {
            ok: true,
            serial,
            autoassigned: true,
            message: String::new(),
            device_token: device_token.unwrap_or_default(),
            ..Default::default()
        },
        Verdict::Refused { reason } => pb::ValidateResponse {
            ok: false,
            message: reason.to_owned(),
            ..Default::default()
        },
        Verdict::Challenged {
            transaction_id,
            message,
            expire_time,
        } => pb::ValidateResponse {
            ok: false,
            // Also in `message`, for a proxy that shows only that.
            message: message.to_owned(),
            challenge: Some(pb::ValidateChallenge {
                transaction_id,
                message: message.to_owned(),
                expire_time: timestamp(expire_time),
            }),
            ..Default::default()
        },
    };
    Ok(Response::new(response))
}

/// The longest transaction id or device token accepted (both are far shorter).
const MAX_OPAQUE_CHARS: usize = 512;

/// An opaque value the service handed out earlier (a transaction id, a device token):
/// none when empty; printable ASCII only, so it never carries anything a log could mangle.
fn optional_opaque(field: &str, raw: &str) -> Result<Option<String>, DeviceError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > MAX_OPAQUE_CHARS || !raw.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(DeviceError::invalid(
            field,
            format!(
                "not a value this service issued (printable ASCII, at most {MAX_OPAQUE_CHARS} characters)"
            ),
        ));
    }
    Ok(Some(raw.to_owned()))
}

pub async fn report_lost_token(
    tokens: &Tokens,
    request: Request<pb::ReportLostTokenRequest>,
) -> Result<Response<pb::ReportLostTokenResponse>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let serial = serial(&request.get_ref().serial)?;
    let request_id = request_id(&request.get_ref().request_id)?;
    let replacement: LostTokenReplacement = tokens
        .report_lost(&actor, &serial, request_id.as_ref())
        .await?;
    Ok(Response::new(pb::ReportLostTokenResponse {
        expire_time: replacement.expire_time.and_then(timestamp),
        token: Some(token_to_proto(replacement.token)),
        password: replacement.password,
    }))
}
