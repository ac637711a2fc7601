//! Rows <-> domain values, in one place: typed columns to domain enums, rows to the views
//! use cases return. A stored value that does not parse is unreadable data (INTERNAL,
//! logged with its row), never the caller's fault.
use chrono::{DateTime, Utc};

use super::entities::columns::{
    DeviceKindColumn, DeviceStateColumn, LinkStateColumn, TokenStateColumn,
};
use super::entities::{audit_events, devices, enrollment_links, tokens};
use crate::domain::audit::AuditEvent;
use crate::domain::devices::{Device, DeviceKind, DeviceState, Link, LinkState, LinkStatus};
use crate::domain::names::{Realm, UserName};
use crate::domain::tokens::{HashAlgorithm, Token, TokenKind, TokenState};
use crate::domain::verify::EnrollmentState;
use crate::error::DeviceError;

macro_rules! same_enum {
    ($domain:ident <-> $column:ident: $($variant:ident),+) => {
        impl From<$domain> for $column {
            fn from(value: $domain) -> Self {
                match value {
                    $($domain::$variant => $column::$variant,)+
                }
            }
        }

        impl From<$column> for $domain {
            fn from(value: $column) -> Self {
                match value {
                    $($column::$variant => $domain::$variant,)+
                }
            }
        }
    };
}

same_enum!(DeviceState <-> DeviceStateColumn: PendingApproval, Approved, Revoked);
same_enum!(LinkState <-> LinkStateColumn: Active, Used, Revoked);
same_enum!(TokenState <-> TokenStateColumn: Enabled, Disabled, Locked, Lost);
same_enum!(DeviceKind <-> DeviceKindColumn: Any, EnclaveOnly);

pub(super) fn realm(row: &str, raw: &str) -> Result<Realm, DeviceError> {
    Realm::parse(raw).map_err(|problem| DeviceError::corrupt(row, format!("realm: {problem}")))
}

pub(super) fn user(row: &str, raw: &str) -> Result<UserName, DeviceError> {
    UserName::parse(raw).map_err(|problem| DeviceError::corrupt(row, format!("user: {problem}")))
}

pub(super) fn device(row: &devices::Model, owner: &str) -> Result<Device, DeviceError> {
    let name = format!("device `{}`", row.id);
    Ok(Device {
        id: row.id.clone(),
        realm: realm(&name, &row.realm)?,
        user: user(&name, owner)?,
        credential_id: row.credential_id.clone(),
        kind: row.device_type.into(),
        state: row.state.into(),
        aaguid: row.aaguid.clone(),
        backup_eligible: row.backup_eligible,
        user_agent: row.user_agent.clone(),
        enrollment_link_id: row.enrollment_link_id.clone(),
        create_time: row.create_time,
        last_used_time: row.last_used_time,
        approved_by: row.approved_by.clone(),
        model: row.model.clone(),
        certification_level: row.certification_level.clone(),
        attestation_format: row.attestation_format.clone(),
        attestation_root: Some(row.attestation_root.clone()).filter(|root| !root.is_empty()),
        aaguid_verified: row.aaguid_verified,
        model_compromise: Some(row.model_compromise.clone()).filter(|reason| !reason.is_empty()),
    })
}

pub(super) fn link(row: &enrollment_links::Model, now: DateTime<Utc>) -> Result<Link, DeviceError> {
    let name = format!("enrollment link `{}`", row.id);
    Ok(Link {
        id: row.id.clone(),
        realm: realm(&name, &row.realm)?,
        user: user(&name, &row.user_name)?,
        kind: row.device_type.into(),
        redirect_url: row.redirect_url.clone(),
        url: None,
        expire_time: row.expire_time,
        status: LinkStatus::of(row.state.into(), row.expire_time, now),
        created_by: row.created_by.clone(),
        create_time: row.create_time,
        device_id: row.device_id.clone(),
    })
}

/// The parts of a token row a view needs (a full row or a listing row).
pub(super) struct TokenFields<'a> {
    pub serial: &'a str,
    pub realm: &'a str,
    pub token_type: &'a str,
    pub state: TokenStateColumn,
    pub digits: i32,
    pub period: i32,
    pub algorithm: &'a str,
    pub has_pin: bool,
    pub failure_count: i32,
    pub label: &'a str,
    pub description: &'a str,
    pub create_time: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
    pub verify_state: Option<&'a str>,
    pub verify_deadline: Option<DateTime<Utc>>,
}

impl<'a> TokenFields<'a> {
    pub fn of(row: &'a tokens::Model) -> Self {
        Self {
            serial: &row.serial,
            realm: &row.realm,
            token_type: &row.token_type,
            state: row.state,
            digits: row.digits,
            period: row.period,
            algorithm: &row.algorithm,
            has_pin: row.pin_hash.is_some(),
            failure_count: row.failure_count,
            label: &row.label,
            description: &row.description,
            create_time: row.create_time,
            expire_time: row.expire_time,
            verify_state: row.verify_state.as_deref(),
            verify_deadline: row.verify_deadline,
        }
    }

    /// The view at `now` (the verify step's state depends on the clock).
    pub fn into_token(
        self,
        owner: Option<UserName>,
        now: DateTime<Utc>,
    ) -> Result<Token, DeviceError> {
        let name = format!("token `{}`", self.serial);
        Ok(Token {
            serial: self.serial.to_owned(),
            kind: TokenKind::parse(self.token_type).ok_or_else(|| {
                DeviceError::corrupt(&name, format!("type `{}`", self.token_type))
            })?,
            realm: realm(&name, self.realm)?,
            user: owner,
            state: self.state.into(),
            label: self.label.to_owned(),
            digits: self.digits.max(0) as u32,
            period: self.period.max(0) as u32,
            algorithm: HashAlgorithm::parse(self.algorithm).ok_or_else(|| {
                DeviceError::corrupt(&name, format!("algorithm `{}`", self.algorithm))
            })?,
            has_pin: self.has_pin,
            failure_count: self.failure_count.max(0) as u32,
            create_time: self.create_time,
            expire_time: self.expire_time,
            description: self.description.to_owned(),
            enrollment: EnrollmentState::of(self.verify_state, self.verify_deadline, now),
        })
    }
}

/// A full token row as callers see it.
pub fn token(
    row: &tokens::Model,
    owner: Option<&UserName>,
    now: DateTime<Utc>,
) -> Result<Token, DeviceError> {
    TokenFields::of(row).into_token(owner.cloned(), now)
}

pub(super) fn audit_event(row: audit_events::Model) -> AuditEvent {
    AuditEvent {
        id: row.id,
        time: row.time,
        actor: row.actor,
        action: row.action,
        realm: row.realm,
        user: row.user_name,
        subject: row.subject,
        result: row.result,
        reason: row.reason,
        trace_id: row.trace_id,
    }
}
