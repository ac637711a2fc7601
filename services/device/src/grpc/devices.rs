//! The WebAuthn device RPCs and the proxy's CheckEnrollment: decode into domain values, call
//! one use case, encode.
use enroll_shared::proto::device::v1 as pb;
use tonic::{Request, Response, Status};

use super::decode::{
    actor, check_text, device_kind, id, kind_to_proto, optional_realm, optional_user, page, realm,
    required_text, text, timestamp, user,
};

/// The largest credential JSON looked at (attestation certificate chains included).
const MAX_CREDENTIAL_JSON_CHARS: usize = 256 * 1024;
/// The longest user agent accepted (stored cut to 512 characters).
const MAX_USER_AGENT_CHARS: usize = 4096;

/// A credential from the browser, as JSON: required, storable.
fn credential_json(raw: &str) -> Result<(), DeviceError> {
    if raw.trim().is_empty() {
        return Err(DeviceError::invalid("credential_json", "required"));
    }
    check_text("credential_json", raw, MAX_CREDENTIAL_JSON_CHARS)
}
use crate::domain::devices::DeviceFilter;
use crate::domain::devices::{
    Device, DeviceKind, DeviceState, EnrollmentCheck, EnrollmentStatus, LinkSecret,
};
use crate::error::DeviceError;
use crate::service::devices::{Devices, EnrollmentQuery, Finisher, Registrant};

fn state_to_proto(state: DeviceState) -> pb::DeviceState {
    match state {
        DeviceState::PendingApproval => pb::DeviceState::PendingApproval,
        DeviceState::Approved => pb::DeviceState::Approved,
        DeviceState::Revoked => pb::DeviceState::Revoked,
    }
}

pub fn device_to_proto(device: Device) -> pb::Device {
    let acceptance = [DeviceKind::Any, DeviceKind::EnclaveOnly]
        .into_iter()
        .map(|required| {
            let acceptance = device.acceptance(required);
            pb::DeviceAcceptance {
                required_device_type: kind_to_proto(required) as i32,
                acceptable: acceptance.acceptable,
                reason: acceptance.reason,
            }
        })
        .collect();
    pb::Device {
        acceptance,
        model: device.model,
        certification_level: device.certification_level,
        attestation_format: device.attestation_format,
        attestation_root: device.attestation_root.unwrap_or_default(),
        aaguid_verified: device.aaguid_verified,
        model_compromised: device.model_compromise.is_some(),
        model_compromise_reason: device.model_compromise.unwrap_or_default(),
        id: device.id,
        realm: device.realm.to_string(),
        user: device.user.to_string(),
        credential_id: device.credential_id,
        device_type: kind_to_proto(device.kind) as i32,
        state: state_to_proto(device.state) as i32,
        aaguid: device.aaguid,
        backup_eligible: device.backup_eligible,
        user_agent: device.user_agent,
        enrollment_link_id: device.enrollment_link_id.unwrap_or_default(),
        create_time: timestamp(device.create_time),
        last_used_time: device.last_used_time.and_then(timestamp),
        approved_by: device.approved_by,
    }
}

fn check_to_proto(check: EnrollmentCheck) -> pb::CheckEnrollmentResponse {
    let status = match check.status {
        EnrollmentStatus::Enrolled => pb::EnrollmentStatus::Enrolled,
        EnrollmentStatus::PendingApproval => pb::EnrollmentStatus::PendingApproval,
        EnrollmentStatus::NotEnrolled => pb::EnrollmentStatus::NotEnrolled,
        EnrollmentStatus::TypeMismatch => pb::EnrollmentStatus::TypeMismatch,
        EnrollmentStatus::Revoked => pb::EnrollmentStatus::Revoked,
    };
    pb::CheckEnrollmentResponse {
        status: status as i32,
        device: check.device.map(device_to_proto),
        can_self_enroll: check.can_self_enroll,
        reasons: check.reasons,
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
        credential_id: Some(text("credential_id", &request.credential_id, 1024)?)
            .filter(|id| !id.is_empty()),
        required: device_kind("required_device_type", request.required_device_type)?
            .unwrap_or(DeviceKind::Any),
    };
    let check = devices.check_enrollment(&actor, &query).await?;
    Ok(Response::new(check_to_proto(check)))
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
    let challenge = devices.begin_registration(&actor, registrant).await?;
    Ok(Response::new(pb::BeginDeviceRegistrationResponse {
        ceremony_id: challenge.ceremony_id,
        creation_options_json: challenge.options_json,
        expire_time: timestamp(challenge.expire_time),
        realm: challenge.realm.to_string(),
        user: challenge.user.to_string(),
        device_type: kind_to_proto(challenge.kind) as i32,
    }))
}

pub async fn finish_device_registration(
    devices: &Devices,
    request: Request<pb::FinishDeviceRegistrationRequest>,
) -> Result<Response<pb::FinishDeviceRegistrationResponse>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let ceremony_id = id("ceremony_id", &request.ceremony_id)?;
    credential_json(&request.credential_json)?;
    check_text("user_agent", &request.user_agent, MAX_USER_AGENT_CHARS)?;
    let registered = devices
        .finish_registration(
            &actor,
            &ceremony_id,
            request.credential_json,
            &request.user_agent,
            Finisher::Caller,
        )
        .await?;
    Ok(Response::new(pb::FinishDeviceRegistrationResponse {
        device: Some(device_to_proto(registered.device)),
        redirect_url: registered.redirect_url,
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
    let challenge = devices
        .begin_authentication(&realm, &user, required)
        .await?;
    Ok(Response::new(pb::BeginDeviceAuthenticationResponse {
        ceremony_id: challenge.ceremony_id,
        request_options_json: challenge.options_json,
        expire_time: timestamp(challenge.expire_time),
    }))
}

pub async fn finish_device_authentication(
    devices: &Devices,
    request: Request<pb::FinishDeviceAuthenticationRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = actor(&request, &request.get_ref().client_ip)?;
    let request = request.into_inner();
    let ceremony_id = id("ceremony_id", &request.ceremony_id)?;
    credential_json(&request.credential_json)?;
    let device = devices
        .finish_authentication(&actor, &ceremony_id, request.credential_json)
        .await?;
    Ok(Response::new(device_to_proto(device)))
}

pub async fn list_devices(
    devices: &Devices,
    request: Request<pb::ListDevicesRequest>,
) -> Result<Response<pb::ListDevicesResponse>, Status> {
    let request = request.into_inner();
    let state = match pb::DeviceState::try_from(request.state) {
        Ok(pb::DeviceState::Unspecified) => None,
        Ok(pb::DeviceState::PendingApproval) => Some(DeviceState::PendingApproval),
        Ok(pb::DeviceState::Approved) => Some(DeviceState::Approved),
        Ok(pb::DeviceState::Revoked) => Some(DeviceState::Revoked),
        Err(_) => return Err(DeviceError::invalid("state", "unknown device state").into()),
    };
    let filter = DeviceFilter {
        realm: optional_realm("realm", &request.realm)?,
        user: optional_user("user", &request.user)?,
        kind: device_kind("device_type", request.device_type)?,
        state,
    };
    let page = devices
        .list_devices(&filter, &page(request.page_size, &request.page_token)?)
        .await?;
    Ok(Response::new(pb::ListDevicesResponse {
        devices: page.items.into_iter().map(device_to_proto).collect(),
        next_page_token: page.next_page_token,
    }))
}

pub async fn get_device(
    devices: &Devices,
    request: Request<pb::GetDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let id = id("id", &request.get_ref().id)?;
    Ok(Response::new(device_to_proto(devices.device(&id).await?)))
}

pub async fn approve_device(
    devices: &Devices,
    request: Request<pb::ApproveDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let approved_by = required_text("approved_by", &request.approved_by, 128)?;
    let device = devices.approve(&actor, &id, &approved_by).await?;
    Ok(Response::new(device_to_proto(device)))
}

pub async fn revoke_device(
    devices: &Devices,
    request: Request<pb::RevokeDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let revoked_by = required_text("revoked_by", &request.revoked_by, 128)?;
    let reason = text("reason", &request.reason, 512)?;
    let device = devices.revoke(&actor, &id, &revoked_by, &reason).await?;
    Ok(Response::new(device_to_proto(device)))
}
