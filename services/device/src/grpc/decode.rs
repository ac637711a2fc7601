//! Decoding of request fields into domain values, shared by every resource's handlers: a
//! bad field is INVALID_ARGUMENT naming it.
use chrono::{DateTime, Utc};
use enroll_shared::auth::caller;
use enroll_shared::paging::{PageKey, PageRequest};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::time::to_timestamp;
use tonic::{Request, Status};

use crate::domain::actor::{Actor, parse_client_ip};
use crate::domain::devices::DeviceKind;
use crate::domain::names::{Realm, Serial, UserName};
use crate::error::DeviceError;
use crate::service::idempotency::RequestId;

/// The caller (its API key's name) and the client address it reports.
pub fn actor<T>(request: &Request<T>, client_ip: &str) -> Result<Actor, Status> {
    Ok(Actor {
        name: caller(request)?.name.clone(),
        client_ip: parse_client_ip(client_ip)
            .map_err(|message| DeviceError::invalid("client_ip", message))?,
    })
}

/// A free-text field, trimmed: refused (INVALID_ARGUMENT naming it) when it holds a NUL
/// character, which PostgreSQL cannot store, or more than `max` characters. Every string
/// a request carries to the database or the audit trail goes through this or a stricter
/// parser (names, serials, ids).
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, DeviceError> {
    let value = raw.trim();
    enroll_shared::text::check_storable(value, max)
        .map_err(|message| DeviceError::invalid(field, message))?;
    Ok(value.to_owned())
}

/// A free-text field kept exactly as given (a PIN, a pass, a description): only checked.
pub fn check_text(field: &str, raw: &str, max: usize) -> Result<(), DeviceError> {
    enroll_shared::text::check_storable(raw, max)
        .map_err(|message| DeviceError::invalid(field, message))
}

pub fn realm(field: &str, raw: &str) -> Result<Realm, DeviceError> {
    Realm::parse(raw).map_err(|message| DeviceError::invalid(field, message))
}

/// A realm filter: none when empty.
pub fn optional_realm(field: &str, raw: &str) -> Result<Option<Realm>, DeviceError> {
    match raw.trim() {
        "" => Ok(None),
        raw => realm(field, raw).map(Some),
    }
}

pub fn user(field: &str, raw: &str) -> Result<UserName, DeviceError> {
    UserName::parse(raw).map_err(|message| DeviceError::invalid(field, message))
}

pub fn optional_user(field: &str, raw: &str) -> Result<Option<UserName>, DeviceError> {
    match raw.trim() {
        "" => Ok(None),
        raw => user(field, raw).map(Some),
    }
}

pub fn serial(raw: &str) -> Result<Serial, DeviceError> {
    Serial::parse(raw).map_err(|message| DeviceError::invalid("serial", message))
}

pub fn request_id(raw: &str) -> Result<Option<RequestId>, DeviceError> {
    RequestId::parse(raw).map_err(|message| DeviceError::invalid("request_id", message))
}

pub fn page<K: PageKey>(page_size: u32, page_token: &str) -> Result<PageRequest<K>, DeviceError> {
    PageRequest::parse(page_size, page_token)
        .map_err(|error| DeviceError::invalid(error.field, error.message))
}

/// A record id this service issued (a UUID).
pub fn id(field: &str, raw: &str) -> Result<String, DeviceError> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|id| id.to_string())
        .map_err(|_| DeviceError::invalid(field, "not a valid id"))
}

/// A required free-text field of at most `max` characters.
pub fn required_text(field: &str, raw: &str, max: usize) -> Result<String, DeviceError> {
    let value = text(field, raw, max)?;
    if value.is_empty() {
        return Err(DeviceError::invalid(field, "required"));
    }
    Ok(value)
}

pub fn device_kind(field: &str, raw: i32) -> Result<Option<DeviceKind>, DeviceError> {
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

pub fn kind_to_proto(kind: DeviceKind) -> pb::DeviceType {
    match kind {
        DeviceKind::Any => pb::DeviceType::Any,
        DeviceKind::EnclaveOnly => pb::DeviceType::EnclaveOnly,
    }
}

pub fn timestamp(time: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(to_timestamp(time))
}
