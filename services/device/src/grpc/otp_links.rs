//! The OTP enrollment-link RPCs: decode into domain values, call one use case, encode.
//! Secrets (the link's, the redemption session's) are parsed here and never echoed: a
//! malformed one answers like an unknown one.
use enroll_shared::proto::device::v1 as pb;
use tonic::{Request, Response, Status};

use super::decode::{
    actor, check_text, id, optional_realm, optional_user, page, realm, request_id, required_text,
    text, timestamp, user,
};
use super::tokens::{
    algorithm_to_proto, check_code, otp_parameters, token_kind, token_to_proto, token_type_to_proto,
};
use crate::domain::devices::LinkSecret;
use crate::domain::otp_links::OtpLinkFilter;
use crate::domain::otp_links::{OtpLink, OtpLinkStatus, PendingEnrollment, VerifiedIdentity};
use crate::domain::tokens::TokenKind;
use crate::error::DeviceError;
use crate::service::tokens::{NO_PENDING_ENROLLMENT, NewOtpLink, Tokens, UNUSABLE_LINK};

/// The longest account label a link may ask for.
const MAX_LABEL_CHARS: usize = 64;
/// The longest PIN looked at (policies allow at most 64 characters).
const MAX_PIN_CHARS: usize = 256;

fn status_to_proto(status: OtpLinkStatus) -> pb::OtpLinkState {
    match status {
        OtpLinkStatus::Issued => pb::OtpLinkState::Issued,
        OtpLinkStatus::Expired => pb::OtpLinkState::Expired,
        OtpLinkStatus::VerifyPending => pb::OtpLinkState::VerifyPending,
        OtpLinkStatus::Enrolled => pb::OtpLinkState::Enrolled,
        OtpLinkStatus::VerifyFailed => pb::OtpLinkState::VerifyFailed,
        OtpLinkStatus::VerifyExpired => pb::OtpLinkState::VerifyExpired,
        OtpLinkStatus::Revoked => pb::OtpLinkState::Revoked,
        OtpLinkStatus::Superseded => pb::OtpLinkState::Superseded,
        OtpLinkStatus::TokenDeleted => pb::OtpLinkState::TokenDeleted,
    }
}

fn status_from_proto(raw: i32) -> Result<Option<OtpLinkStatus>, DeviceError> {
    Ok(Some(match pb::OtpLinkState::try_from(raw) {
        Ok(pb::OtpLinkState::Unspecified) => return Ok(None),
        Ok(pb::OtpLinkState::Issued) => OtpLinkStatus::Issued,
        Ok(pb::OtpLinkState::Expired) => OtpLinkStatus::Expired,
        Ok(pb::OtpLinkState::VerifyPending) => OtpLinkStatus::VerifyPending,
        Ok(pb::OtpLinkState::Enrolled) => OtpLinkStatus::Enrolled,
        Ok(pb::OtpLinkState::VerifyFailed) => OtpLinkStatus::VerifyFailed,
        Ok(pb::OtpLinkState::VerifyExpired) => OtpLinkStatus::VerifyExpired,
        Ok(pb::OtpLinkState::Revoked) => OtpLinkStatus::Revoked,
        Ok(pb::OtpLinkState::Superseded) => OtpLinkStatus::Superseded,
        Ok(pb::OtpLinkState::TokenDeleted) => OtpLinkStatus::TokenDeleted,
        Err(_) => {
            return Err(DeviceError::invalid(
                "state",
                format!("unknown value {raw}"),
            ));
        }
    }))
}

/// A link as admins see it; `url` (which carries the secret) only when just created.
pub fn otp_link_to_proto(link: OtpLink) -> pb::OtpEnrollmentLink {
    let parameters = link.parameters;
    pb::OtpEnrollmentLink {
        id: link.id,
        realm: link.realm.to_string(),
        user: link.user.to_string(),
        r#type: token_type_to_proto(parameters.kind) as i32,
        digits: u32::from(parameters.digits),
        period: (parameters.period > 0).then(|| prost_types::Duration {
            seconds: i64::from(parameters.period),
            nanos: 0,
        }),
        algorithm: algorithm_to_proto(parameters.algorithm) as i32,
        label: link.label,
        description: link.description,
        url: link.url.unwrap_or_default(),
        create_time: timestamp(link.create_time),
        expire_time: timestamp(link.expire_time),
        created_by: link.created_by,
        state: status_to_proto(link.status) as i32,
        serial: link.serial.unwrap_or_default(),
        redeem_time: link.redeem_time.and_then(timestamp),
        verify_deadline: link.verify_deadline.and_then(timestamp),
    }
}

/// The pending enrollment as its session sees it.
pub fn pending_to_proto(pending: PendingEnrollment) -> pb::OtpEnrollment {
    pb::OtpEnrollment {
        session: pending
            .session
            .map(|session| session.expose().to_owned())
            .unwrap_or_default(),
        token: Some(token_to_proto(pending.token)),
        otpauth_uri: pending.otpauth_uri,
        secret_base32: pending.secret_base32,
        qr_png: pending.qr_png,
        verify_deadline: timestamp(pending.verify_deadline),
        attempts_left: pending.attempts_left,
        pin: Some(pb::OtpPinRule {
            required: pending.pin.required,
            random: pending.pin.random,
            min_length: pending.pin.min_length,
        }),
    }
}

/// An account label: free text without control characters or `:` (the otpauth label's
/// issuer separator).
fn label(raw: &str) -> Result<String, DeviceError> {
    let label = text("label", raw, MAX_LABEL_CHARS)?;
    if label.chars().any(|c| c.is_control() || c == ':') {
        return Err(DeviceError::invalid(
            "label",
            "may not hold control characters or `:`",
        ));
    }
    Ok(label)
}

/// A link secret from a bearer: a malformed one names no link, and answers as an unknown
/// one does.
pub fn link_secret(raw: &str) -> Result<LinkSecret, DeviceError> {
    if raw.trim().is_empty() {
        return Err(DeviceError::invalid("secret", "required"));
    }
    LinkSecret::parse(raw).ok_or_else(|| DeviceError::NotFound(UNUSABLE_LINK.to_owned()))
}

/// A redemption session's secret, likewise.
pub fn session_secret(raw: &str) -> Result<LinkSecret, DeviceError> {
    if raw.trim().is_empty() {
        return Err(DeviceError::invalid("session", "required"));
    }
    LinkSecret::parse(raw).ok_or_else(|| DeviceError::NotFound(NO_PENDING_ENROLLMENT.to_owned()))
}

pub async fn create_otp_enrollment_link(
    tokens: &Tokens,
    request: Request<pb::CreateOtpEnrollmentLinkRequest>,
) -> Result<Response<pb::OtpEnrollmentLink>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let kind = token_kind(request.r#type)?;
    if kind == TokenKind::Password {
        return Err(
            DeviceError::invalid("type", "required: TOKEN_TYPE_TOTP or TOKEN_TYPE_HOTP").into(),
        );
    }
    let ttl = match request.ttl {
        None => None,
        Some(ttl) if ttl.seconds < 0 || ttl.nanos < 0 => {
            return Err(DeviceError::invalid("ttl", "must be positive").into());
        }
        Some(ttl) => Some(std::time::Duration::new(
            ttl.seconds as u64,
            ttl.nanos as u32,
        )),
    };
    check_text("description", &request.description, 256)?;
    let link = NewOtpLink {
        realm: realm("realm", &request.realm)?,
        user: user("user", &request.user)?,
        parameters: otp_parameters(kind, request.digits, request.period, request.algorithm)?,
        label: label(&request.label)?,
        description: request.description.trim().to_owned(),
        ttl,
        created_by: required_text("created_by", &request.created_by, 128)?,
        request_id: request_id(&request.request_id)?,
    };
    Ok(Response::new(otp_link_to_proto(
        tokens.create_otp_link(&actor, link).await?,
    )))
}

pub async fn list_otp_enrollment_links(
    tokens: &Tokens,
    request: Request<pb::ListOtpEnrollmentLinksRequest>,
) -> Result<Response<pb::ListOtpEnrollmentLinksResponse>, Status> {
    let request = request.into_inner();
    let filter = OtpLinkFilter {
        realm: optional_realm("realm", &request.realm)?,
        user: optional_user("user", &request.user)?,
    };
    let status = status_from_proto(request.state)?;
    let page = tokens
        .list_otp_links(
            &filter,
            status,
            &page(request.page_size, &request.page_token)?,
        )
        .await?;
    Ok(Response::new(pb::ListOtpEnrollmentLinksResponse {
        links: page.items.into_iter().map(otp_link_to_proto).collect(),
        next_page_token: page.next_page_token,
    }))
}

pub async fn revoke_otp_enrollment_link(
    tokens: &Tokens,
    request: Request<pb::RevokeOtpEnrollmentLinkRequest>,
) -> Result<Response<pb::OtpEnrollmentLink>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let revoked_by = required_text("revoked_by", &request.revoked_by, 128)?;
    Ok(Response::new(otp_link_to_proto(
        tokens.revoke_otp_link(&actor, &id, &revoked_by).await?,
    )))
}

pub async fn redeem_otp_enrollment_link(
    tokens: &Tokens,
    request: Request<pb::RedeemOtpEnrollmentLinkRequest>,
) -> Result<Response<pb::OtpEnrollment>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let secret = link_secret(&request.secret)?;
    let identity = match (
        optional_realm("identity_realm", &request.identity_realm)?,
        optional_user("identity_user", &request.identity_user)?,
    ) {
        (Some(realm), Some(user)) => Some(VerifiedIdentity { realm, user }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(
                DeviceError::invalid("identity_user", "required with identity_realm").into(),
            );
        }
        (None, Some(_)) => {
            return Err(
                DeviceError::invalid("identity_realm", "required with identity_user").into(),
            );
        }
    };
    let pending = tokens
        .redeem_otp_link(&actor, &secret, identity.as_ref())
        .await?;
    Ok(Response::new(pending_to_proto(pending)))
}

pub async fn resume_otp_enrollment(
    tokens: &Tokens,
    request: Request<pb::ResumeOtpEnrollmentRequest>,
) -> Result<Response<pb::OtpEnrollment>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let session = session_secret(&request.get_ref().session)?;
    let pending = tokens.resume_otp_enrollment(&actor, &session).await?;
    Ok(Response::new(pending_to_proto(pending)))
}

pub async fn finish_otp_enrollment(
    tokens: &Tokens,
    request: Request<pb::FinishOtpEnrollmentRequest>,
) -> Result<Response<pb::FinishOtpEnrollmentResponse>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let session = session_secret(&request.session)?;
    let code = check_code("code", &request.code)?;
    if request.pin.chars().count() > MAX_PIN_CHARS || request.pin.contains('\0') {
        return Err(DeviceError::invalid("pin", "too long or not storable").into());
    }
    let finished = tokens
        .finish_otp_enrollment(&actor, &session, code, Some(request.pin))
        .await?;
    Ok(Response::new(pb::FinishOtpEnrollmentResponse {
        token: Some(token_to_proto(finished.token)),
        pin: finished.pin,
    }))
}
