//! The gRPC edge of the WebAuthn device and enrollment-link RPCs: decode and validate into
//! domain types, call one use case, map errors through `From<DeviceError> for Status`.
use enroll_shared::proto::device::v1 as pb;
use tonic::{Request, Response, Status};

use crate::device_service::{Devices, EnrollmentQuery, NewLink, Registrant, device_to_proto};
use crate::domain::devices::{DeviceKind, LinkSecret, device_state, link_state};
use crate::domain::names::UserName;
use crate::error::DeviceError;
use crate::grpc::{actor, optional_user, page_size, realm, request_id};
use crate::store::devices::{DeviceFilter, LinkFilter};

fn user(field: &str, raw: &str) -> Result<UserName, DeviceError> {
    UserName::parse(raw).map_err(|message| DeviceError::invalid(field, message))
}

fn device_kind(field: &str, raw: i32) -> Result<Option<DeviceKind>, DeviceError> {
    match pb::DeviceType::try_from(raw) {
        Ok(pb::DeviceType::Unspecified) => Ok(None),
        Ok(pb::DeviceType::Any) => Ok(Some(DeviceKind::Any)),
        Ok(pb::DeviceType::EnclaveOnly) => Ok(Some(DeviceKind::EnclaveOnly)),
        Err(_) => Err(DeviceError::invalid(
            field,
            format!("unknown device type {raw}"),
        )),
    }
}

fn required_text(field: &str, raw: &str, max: usize) -> Result<String, DeviceError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(DeviceError::invalid(field, "required"));
    }
    if value.chars().count() > max {
        return Err(DeviceError::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(value.to_owned())
}

fn id(field: &str, raw: &str) -> Result<String, DeviceError> {
    let value = raw.trim();
    uuid::Uuid::parse_str(value)
        .map(|id| id.to_string())
        .map_err(|_| DeviceError::invalid(field, "not a valid id"))
}

fn after(page_token: &str) -> Result<Option<String>, DeviceError> {
    if page_token.is_empty() {
        return Ok(None);
    }
    hex::decode(page_token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| DeviceError::invalid("page_token", "not a token this service issued"))
}

/// Cuts a page read with one extra row and returns the token of the next page.
fn next_page<T>(rows: &mut Vec<T>, size: u64, key: impl Fn(&T) -> &str) -> String {
    if rows.len() as u64 > size {
        rows.truncate(size as usize);
        rows.last()
            .map(|row| hex::encode(key(row)))
            .unwrap_or_default()
    } else {
        String::new()
    }
}

pub async fn check_enrollment(
    devices: &Devices,
    request: Request<pb::CheckEnrollmentRequest>,
) -> Result<Response<pb::CheckEnrollmentResponse>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let query = EnrollmentQuery {
        realm: realm("realm", &request.realm)?,
        user: user("user", &request.user)?,
        credential_id: Some(request.credential_id.trim().to_owned()).filter(|id| !id.is_empty()),
        required: device_kind("required_device_type", request.required_device_type)?
            .unwrap_or(DeviceKind::Any),
        require_approved: request.require_approved,
    };
    Ok(Response::new(
        devices.check_enrollment(&actor, &query).await?,
    ))
}

pub async fn create_enrollment_link(
    devices: &Devices,
    request: Request<pb::CreateEnrollmentLinkRequest>,
) -> Result<Response<pb::EnrollmentLink>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
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
    let link = NewLink {
        realm: realm("realm", &request.realm)?,
        user: user("user", &request.user)?,
        kind: device_kind("device_type", request.device_type)?,
        redirect_url: Some(request.redirect_url.trim().to_owned()).filter(|url| !url.is_empty()),
        ttl,
        created_by: required_text("created_by", &request.created_by, 128)?,
        request_id: request_id(&request.request_id)?,
    };
    Ok(Response::new(devices.create_link(&actor, link).await?))
}

pub async fn list_enrollment_links(
    devices: &Devices,
    request: Request<pb::ListEnrollmentLinksRequest>,
) -> Result<Response<pb::ListEnrollmentLinksResponse>, Status> {
    let request = request.into_inner();
    let (state, expired) = match pb::LinkState::try_from(request.state) {
        Ok(pb::LinkState::Unspecified) => (None, None),
        Ok(pb::LinkState::Active) => (Some(link_state::ACTIVE), Some(false)),
        Ok(pb::LinkState::Expired) => (Some(link_state::ACTIVE), Some(true)),
        Ok(pb::LinkState::Used) => (Some(link_state::USED), None),
        Ok(pb::LinkState::Revoked) => (Some(link_state::REVOKED), None),
        Err(_) => return Err(DeviceError::invalid("state", "unknown link state").into()),
    };
    let filter = LinkFilter {
        realm: match request.realm.trim() {
            "" => None,
            raw => Some(realm("realm", raw)?),
        },
        user: optional_user("user", &request.user)?,
        state,
        expired,
    };
    let size = page_size(request.page_size)?;
    let after = after(&request.page_token)?;
    let mut links = devices
        .list_links(&filter, after.as_deref(), size + 1)
        .await?;
    let next_page_token = next_page(&mut links, size, |link| link.id.as_str());
    Ok(Response::new(pb::ListEnrollmentLinksResponse {
        links,
        next_page_token,
    }))
}

pub async fn revoke_enrollment_link(
    devices: &Devices,
    request: Request<pb::RevokeEnrollmentLinkRequest>,
) -> Result<Response<pb::EnrollmentLink>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let revoked_by = required_text("revoked_by", &request.revoked_by, 128)?;
    Ok(Response::new(
        devices.revoke_link(&actor, &id, &revoked_by).await?,
    ))
}

pub async fn begin_device_registration(
    devices: &Devices,
    request: Request<pb::BeginDeviceRegistrationRequest>,
) -> Result<Response<pb::BeginDeviceRegistrationResponse>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let registrant = if !request.link_secret.trim().is_empty() {
        if !request.realm.trim().is_empty() || !request.user.trim().is_empty() {
            return Err(DeviceError::invalid(
                "link_secret",
                "give either link_secret or realm + user, not both",
            )
            .into());
        }
        // A malformed secret is treated like an unknown one: it names no link.
        let secret = LinkSecret::parse(&request.link_secret)
            .ok_or_else(|| DeviceError::NotFound("enrollment link".to_owned()))?;
        Registrant::Link(secret)
    } else {
        Registrant::SelfService {
            realm: realm("realm", &request.realm)?,
            user: user("user", &request.user)?,
            kind: device_kind("device_type", request.device_type)?,
        }
    };
    Ok(Response::new(
        devices.begin_registration(&actor, registrant).await?,
    ))
}

pub async fn finish_device_registration(
    devices: &Devices,
    request: Request<pb::FinishDeviceRegistrationRequest>,
) -> Result<Response<pb::FinishDeviceRegistrationResponse>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let ceremony_id = id("ceremony_id", &request.ceremony_id)?;
    if request.credential_json.trim().is_empty() {
        return Err(DeviceError::invalid("credential_json", "required").into());
    }
    let (row, redirect_url) = devices
        .finish_registration(
            &actor,
            &ceremony_id,
            request.credential_json,
            &request.user_agent,
        )
        .await?;
    Ok(Response::new(pb::FinishDeviceRegistrationResponse {
        device: Some(device_to_proto(&row.device, &row.user)),
        redirect_url,
    }))
}

pub async fn begin_device_authentication(
    devices: &Devices,
    request: Request<pb::BeginDeviceAuthenticationRequest>,
) -> Result<Response<pb::BeginDeviceAuthenticationResponse>, Status> {
    let request = request.into_inner();
    let realm = realm("realm", &request.realm)?;
    let user = user("user", &request.user)?;
    let required = device_kind("required_device_type", request.required_device_type)?
        .unwrap_or(DeviceKind::Any);
    Ok(Response::new(
        devices
            .begin_authentication(&realm, &user, required)
            .await?,
    ))
}

pub async fn finish_device_authentication(
    devices: &Devices,
    request: Request<pb::FinishDeviceAuthenticationRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let ceremony_id = id("ceremony_id", &request.ceremony_id)?;
    if request.credential_json.trim().is_empty() {
        return Err(DeviceError::invalid("credential_json", "required").into());
    }
    let row = devices
        .finish_authentication(&actor, &ceremony_id, request.credential_json)
        .await?;
    Ok(Response::new(device_to_proto(&row.device, &row.user)))
}

pub async fn list_devices(
    devices: &Devices,
    request: Request<pb::ListDevicesRequest>,
) -> Result<Response<pb::ListDevicesResponse>, Status> {
    let request = request.into_inner();
    let state = match pb::DeviceState::try_from(request.state) {
        Ok(pb::DeviceState::Unspecified) => None,
        Ok(pb::DeviceState::PendingApproval) => Some(device_state::PENDING),
        Ok(pb::DeviceState::Approved) => Some(device_state::APPROVED),
        Ok(pb::DeviceState::Revoked) => Some(device_state::REVOKED),
        Err(_) => return Err(DeviceError::invalid("state", "unknown device state").into()),
    };
    let filter = DeviceFilter {
        realm: match request.realm.trim() {
            "" => None,
            raw => Some(realm("realm", raw)?),
        },
        user: optional_user("user", &request.user)?,
        device_type: device_kind("device_type", request.device_type)?.map(DeviceKind::as_str),
        state,
    };
    let size = page_size(request.page_size)?;
    let after = after(&request.page_token)?;
    let mut rows = devices
        .list_devices(&filter, after.as_deref(), size + 1)
        .await?;
    let next_page_token = next_page(&mut rows, size, |row| row.device.id.as_str());
    Ok(Response::new(pb::ListDevicesResponse {
        devices: rows
            .iter()
            .map(|row| device_to_proto(&row.device, &row.user))
            .collect(),
        next_page_token,
    }))
}

pub async fn get_device(
    devices: &Devices,
    request: Request<pb::GetDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let id = id("id", &request.get_ref().id)?;
    let row = devices.device(&id).await?;
    Ok(Response::new(device_to_proto(&row.device, &row.user)))
}

pub async fn approve_device(
    devices: &Devices,
    request: Request<pb::ApproveDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let approved_by = required_text("approved_by", &request.approved_by, 128)?;
    let row = devices.approve(&actor, &id, &approved_by).await?;
    Ok(Response::new(device_to_proto(&row.device, &row.user)))
}

pub async fn revoke_device(
    devices: &Devices,
    request: Request<pb::RevokeDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let revoked_by = required_text("revoked_by", &request.revoked_by, 128)?;
    let reason = request.reason.trim().chars().take(512).collect::<String>();
    let row = devices.revoke(&actor, &id, &revoked_by, &reason).await?;
    Ok(Response::new(device_to_proto(&row.device, &row.user)))
}
