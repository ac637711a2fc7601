//! The gRPC edge of the device service: decode and validate requests into domain types,
//! call one use case, map errors through `From<DeviceError> for Status`.
//! The WebAuthn device and link RPCs are decoded in `device_edge`.
use enroll_shared::auth::caller;
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::time::to_timestamp;
use pb::device_service_server::DeviceService;
use tonic::{Request, Response, Status};

use crate::device_service::Devices;
use crate::domain::names::{Realm, Serial, UserName};
use crate::domain::tokens::{HashAlgorithm, OtpParameters, TokenKind};
use crate::error::DeviceError;
use crate::store::entities::tokens;
use crate::store::token_changes::TokenChange;
use crate::store::tokens::{AuditFilter, TokenFilter, TokenInfo};
use crate::token_service::{Actor, Enrollment, Tokens, Verdict};

/// Default and largest page sizes of the list RPCs.
const DEFAULT_PAGE_SIZE: u64 = 100;
const MAX_PAGE_SIZE: u64 = 1000;

pub struct DeviceGrpc {
    tokens: Tokens,
    devices: Devices,
}

impl DeviceGrpc {
    pub fn new(tokens: Tokens, devices: Devices) -> Self {
        Self { tokens, devices }
    }

    async fn manage(
        &self,
        actor: &Actor,
        raw_serial: &str,
        change: TokenChange,
        raw_request_id: &str,
    ) -> Result<Response<pb::Token>, Status> {
        let serial = serial(raw_serial)?;
        let request_id = request_id(raw_request_id)?;
        let token = self
            .tokens
            .manage(actor, &serial, change, request_id.as_deref())
            .await?;
        Ok(Response::new(token))
    }
}

fn serial(raw: &str) -> Result<Serial, DeviceError> {
    Serial::parse(raw).map_err(|message| DeviceError::invalid("serial", message))
}

pub(crate) fn actor<T>(request: &Request<T>, client_ip: &str) -> Result<Actor, Status> {
    Ok(Actor {
        name: caller(request)?.name.clone(),
        client_ip: client_ip.trim().to_owned(),
    })
}

pub(crate) fn realm(field: &str, raw: &str) -> Result<Realm, DeviceError> {
    Realm::parse(raw).map_err(|message| DeviceError::invalid(field, message))
}

pub(crate) fn optional_user(field: &str, raw: &str) -> Result<Option<UserName>, DeviceError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    UserName::parse(raw)
        .map(Some)
        .map_err(|message| DeviceError::invalid(field, message))
}

pub(crate) fn request_id(raw: &str) -> Result<Option<String>, DeviceError> {
    let id = raw.trim();
    if id.len() > 128 {
        return Err(DeviceError::invalid(
            "request_id",
            "longer than 128 characters",
        ));
    }
    Ok(Some(id.to_owned()).filter(|id| !id.is_empty()))
}

pub(crate) fn page_size(raw: u32) -> Result<u64, DeviceError> {
    match u64::from(raw) {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(DeviceError::invalid(
            "page_size",
            format!("must be at most {MAX_PAGE_SIZE}"),
        )),
    }
}

fn algorithm(raw: i32) -> Result<HashAlgorithm, DeviceError> {
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

fn token_kind(raw: i32) -> Result<TokenKind, DeviceError> {
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
        let kind = token_kind(request.r#type)?;
        let period = match request.period {
            Some(period) if period.seconds < 0 || period.nanos != 0 => {
                return Err(DeviceError::invalid(
                    "period",
                    "must be a whole, positive number of seconds",
                ));
            }
            Some(period) => period.seconds as u64,
            None => 0,
        };
        let parameters =
            OtpParameters::new(kind, request.digits, period, algorithm(request.algorithm)?)
                .map_err(|(field, message)| DeviceError::invalid(field, message))?;
        if request.description.chars().count() > 256 {
            return Err(DeviceError::invalid(
                "description",
                "longer than 256 characters",
            ));
        }
        Ok(Enrollment {
            realm: realm("realm", &request.realm)?,
            user: optional_user("user", &request.user)?,
            parameters,
            description: request.description,
            include_qr_png: request.include_qr_png,
            request_id: request_id(&request.request_id)?,
        })
    }
}

fn token_state(state: &str) -> pb::TokenState {
    match state {
        "enabled" => pb::TokenState::Enabled,
        "disabled" => pb::TokenState::Disabled,
        "locked" => pb::TokenState::Locked,
        "lost" => pb::TokenState::Lost,
        _ => pb::TokenState::Unspecified,
    }
}

/// A token as callers see it: never its seed or PIN.
pub fn token_to_proto(token: &tokens::Model, user: Option<&str>) -> pb::Token {
    info_to_proto(TokenInfo::of(token, user))
}

/// A listed token as callers see it.
pub fn info_to_proto(token: TokenInfo) -> pb::Token {
    let kind = TokenKind::parse(&token.token_type);
    pb::Token {
        serial: token.serial,
        r#type: match kind {
            Some(TokenKind::Totp) => pb::TokenType::Totp,
            Some(TokenKind::Hotp) => pb::TokenType::Hotp,
            Some(TokenKind::Password) => pb::TokenType::Password,
            None => pb::TokenType::Unspecified,
        } as i32,
        realm: token.realm,
        user: token.user_name.unwrap_or_default(),
        state: token_state(&token.state) as i32,
        label: token.label,
        digits: token.digits.max(0) as u32,
        period: (token.period > 0).then(|| prost_types::Duration {
            seconds: i64::from(token.period),
            nanos: 0,
        }),
        algorithm: match HashAlgorithm::parse(&token.algorithm) {
            Some(HashAlgorithm::Sha1) => pb::HashAlgorithm::Sha1,
            Some(HashAlgorithm::Sha256) => pb::HashAlgorithm::Sha256,
            Some(HashAlgorithm::Sha512) => pb::HashAlgorithm::Sha512,
            None => pb::HashAlgorithm::Unspecified,
        } as i32,
        has_pin: token.has_pin,
        failure_count: token.failure_count.max(0) as u32,
        create_time: Some(to_timestamp(token.create_time)),
        expire_time: token.expire_time.map(to_timestamp),
        description: token.description,
    }
}

fn list_filter(request: &pb::ListTokensRequest) -> Result<TokenFilter, DeviceError> {
    let realm = match request.realm.trim() {
        "" => None,
        raw => Some(realm("realm", raw)?),
    };
    let token_type = match pb::TokenType::try_from(request.r#type) {
        Ok(pb::TokenType::Unspecified) => None,
        Ok(kind) => Some(token_kind(kind as i32)?.as_str()),
        Err(_) => {
            return Err(DeviceError::invalid(
                "type",
                format!("unknown value {}", request.r#type),
            ));
        }
    };
    let state = match pb::TokenState::try_from(request.state) {
        Ok(pb::TokenState::Unspecified) => None,
        Ok(pb::TokenState::Enabled) => Some("enabled"),
        Ok(pb::TokenState::Disabled) => Some("disabled"),
        Ok(pb::TokenState::Locked) => Some("locked"),
        Ok(pb::TokenState::Lost) => Some("lost"),
        Err(_) => {
            return Err(DeviceError::invalid(
                "state",
                format!("unknown value {}", request.state),
            ));
        }
    };
    Ok(TokenFilter {
        realm,
        user: optional_user("user", &request.user)?,
        token_type,
        assigned: request.assigned,
        state,
    })
}

#[tonic::async_trait]
impl DeviceService for DeviceGrpc {
    async fn enroll_token(
        &self,
        request: Request<pb::EnrollTokenRequest>,
    ) -> Result<Response<pb::EnrollTokenResponse>, Status> {
        let actor = actor(&request, &request.get_ref().client_ip)?;
        let enrollment = Enrollment::try_from(request.into_inner())?;
        let response = self.tokens.enroll(&actor, enrollment).await?;
        Ok(Response::new(response))
    }

    async fn get_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let serial = Serial::parse(&request.get_ref().serial)
            .map_err(|message| DeviceError::invalid("serial", message))?;
        let row = self
            .tokens
            .store()
            .get(serial.as_str())
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("token `{serial}`")))?;
        Ok(Response::new(token_to_proto(
            &row.token,
            row.user.as_deref(),
        )))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let request = request.into_inner();
        let filter = list_filter(&request)?;
        let size = page_size(request.page_size)?;
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                hex::decode(token)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        DeviceError::invalid("page_token", "not a token returned by this service")
                    })?,
            ),
        };
        let mut rows = self
            .tokens
            .store()
            .list(&filter, after.as_deref(), size + 1)
            .await?;
        let next_page_token = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last()
                .map(|row| hex::encode(&row.serial))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListTokensResponse {
            tokens: rows.into_iter().map(info_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn check_enrollment(
        &self,
        request: Request<pb::CheckEnrollmentRequest>,
    ) -> Result<Response<pb::CheckEnrollmentResponse>, Status> {
        crate::device_edge::check_enrollment(&self.devices, request).await
    }

    async fn create_enrollment_link(
        &self,
        request: Request<pb::CreateEnrollmentLinkRequest>,
    ) -> Result<Response<pb::EnrollmentLink>, Status> {
        crate::device_edge::create_enrollment_link(&self.devices, request).await
    }

    async fn list_enrollment_links(
        &self,
        request: Request<pb::ListEnrollmentLinksRequest>,
    ) -> Result<Response<pb::ListEnrollmentLinksResponse>, Status> {
        crate::device_edge::list_enrollment_links(&self.devices, request).await
    }

    async fn revoke_enrollment_link(
        &self,
        request: Request<pb::RevokeEnrollmentLinkRequest>,
    ) -> Result<Response<pb::EnrollmentLink>, Status> {
        crate::device_edge::revoke_enrollment_link(&self.devices, request).await
    }

    async fn begin_device_registration(
        &self,
        request: Request<pb::BeginDeviceRegistrationRequest>,
    ) -> Result<Response<pb::BeginDeviceRegistrationResponse>, Status> {
        crate::device_edge::begin_device_registration(&self.devices, request).await
    }

    async fn finish_device_registration(
        &self,
        request: Request<pb::FinishDeviceRegistrationRequest>,
    ) -> Result<Response<pb::FinishDeviceRegistrationResponse>, Status> {
        crate::device_edge::finish_device_registration(&self.devices, request).await
    }

    async fn begin_device_authentication(
        &self,
        request: Request<pb::BeginDeviceAuthenticationRequest>,
    ) -> Result<Response<pb::BeginDeviceAuthenticationResponse>, Status> {
        crate::device_edge::begin_device_authentication(&self.devices, request).await
    }

    async fn finish_device_authentication(
        &self,
        request: Request<pb::FinishDeviceAuthenticationRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        crate::device_edge::finish_device_authentication(&self.devices, request).await
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        crate::device_edge::list_devices(&self.devices, request).await
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        crate::device_edge::get_device(&self.devices, request).await
    }

    async fn approve_device(
        &self,
        request: Request<pb::ApproveDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        crate::device_edge::approve_device(&self.devices, request).await
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        crate::device_edge::revoke_device(&self.devices, request).await
    }

    async fn import_tokens(
        &self,
        request: Request<pb::ImportTokensRequest>,
    ) -> Result<Response<pb::ImportTokensResponse>, Status> {
        let actor = actor(&request, "")?;
        let request = request.into_inner();
        let realm = realm("realm", &request.realm)?;
        if request.csv.len() > 16 * 1024 * 1024 {
            return Err(DeviceError::invalid("csv", "larger than 16 MiB: split the import").into());
        }
        let request_id = request_id(&request.request_id)?;
        let response = self
            .tokens
            .import(&actor, &realm, &request.csv, request_id.as_deref())
            .await?;
        Ok(Response::new(response))
    }

    async fn assign_token(
        &self,
        request: Request<pb::AssignTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let actor = actor(&request, &request.get_ref().client_ip)?;
        let request = request.into_inner();
        let serial = serial(&request.serial)?;
        let realm = realm("realm", &request.realm)?;
        let user = UserName::parse(&request.user)
            .map_err(|message| DeviceError::invalid("user", message))?;
        let request_id = request_id(&request.request_id)?;
        let token = self
            .tokens
            .assign(&actor, &serial, &realm, &user, request_id.as_deref())
            .await?;
        Ok(Response::new(token))
    }

    async fn unassign_token(
        &self,
        request: Request<pb::UnassignTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let actor = actor(&request, "")?;
        let request = request.get_ref();
        self.manage(
            &actor,
            &request.serial,
            TokenChange::Unassign,
            &request.request_id,
        )
        .await
    }

    async fn set_pin(
        &self,
        request: Request<pb::SetPinRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let actor = actor(&request, &request.get_ref().client_ip)?;
        let request = request.into_inner();
        let serial = serial(&request.serial)?;
        let request_id = request_id(&request.request_id)?;
        let token = self
            .tokens
            .set_pin(&actor, &serial, request.pin, request_id.as_deref())
            .await?;
        Ok(Response::new(token))
    }

    async fn enable_token(
        &self,
        request: Request<pb::EnableTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let actor = actor(&request, "")?;
        let request = request.get_ref();
        self.manage(
            &actor,
            &request.serial,
            TokenChange::Enable,
            &request.request_id,
        )
        .await
    }

    async fn disable_token(
        &self,
        request: Request<pb::DisableTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let actor = actor(&request, "")?;
        let request = request.get_ref();
        self.manage(
            &actor,
            &request.serial,
            TokenChange::Disable,
            &request.request_id,
        )
        .await
    }

    async fn delete_token(
        &self,
        request: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let actor = actor(&request, "")?;
        let serial = serial(&request.get_ref().serial)?;
        let request_id = request_id(&request.get_ref().request_id)?;
        self.tokens
            .manage(&actor, &serial, TokenChange::Delete, request_id.as_deref())
            .await?;
        Ok(Response::new(pb::DeleteTokenResponse {}))
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let actor = actor(&request, &request.get_ref().client_ip)?;
        let request = request.into_inner();
        let realm = realm("realm", &request.realm)?;
        let user = UserName::parse(&request.user)
            .map_err(|message| DeviceError::invalid("user", message))?;
        if request.pass.is_empty() {
            return Err(DeviceError::invalid("pass", "required").into());
        }
        let response = match self
            .tokens
            .validate(&actor, &realm, &user, request.pass)
            .await?
        {
            Verdict::Accepted { serial } => pb::ValidateResponse {
                ok: true,
                serial,
                autoassigned: false,
                message: String::new(),
            },
            Verdict::Autoassigned { serial } => pb::ValidateResponse {
                ok: true,
                serial,
                autoassigned: true,
                message: String::new(),
            },
            Verdict::Refused { reason } => pb::ValidateResponse {
                ok: false,
                message: reason.to_owned(),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn report_lost_token(
        &self,
        request: Request<pb::ReportLostTokenRequest>,
    ) -> Result<Response<pb::ReportLostTokenResponse>, Status> {
        let actor = actor(&request, &request.get_ref().client_ip)?;
        let serial = serial(&request.get_ref().serial)?;
        let request_id = request_id(&request.get_ref().request_id)?;
        let response = self
            .tokens
            .report_lost(&actor, &serial, request_id.as_deref())
            .await?;
        Ok(Response::new(response))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let request = request.into_inner();
        let text = |value: &str| Some(value.trim().to_owned()).filter(|value| !value.is_empty());
        let filter = AuditFilter {
            realm: text(&request.realm).map(|realm| realm.to_lowercase()),
            user: text(&request.user).map(|user| user.to_lowercase()),
            action: text(&request.action),
            subject: text(&request.serial),
            result: text(&request.result),
        };
        let size = page_size(request.page_size)?;
        let before_id = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<i64>().map_err(|_| {
                DeviceError::invalid("page_token", "not a token returned by this service")
            })?),
        };
        let mut events = self
            .tokens
            .store()
            .audit_events(&filter, before_id, size + 1)
            .await?;
        let next_page_token = if events.len() as u64 > size {
            events.truncate(size as usize);
            events
                .last()
                .map(|event| event.id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|event| pb::AuditEvent {
                    id: event.id,
                    time: Some(to_timestamp(event.time)),
                    actor: event.actor,
                    action: event.action,
                    realm: event.realm,
                    user: event.user_name,
                    subject: event.subject,
                    result: event.result,
                    reason: event.reason,
                    trace_id: event.trace_id,
                })
                .collect(),
            next_page_token,
        }))
    }
}
