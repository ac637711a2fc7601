//! WebAuthn device use cases: enrollment links, registration (by link: trust on first use;
//! or self-service), authentication, approval and revocation, and the proxy's
//! CheckEnrollment. Every mutation asks the policy service first and writes its audit event
//! in the transaction of the change.
use std::sync::Arc;
use std::time::Duration;

use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use enroll_shared::time::{SharedClock, to_timestamp};

use crate::domain::devices::{
    DeviceKind, LinkSecret, RedirectAllowList, device_state, user_handle,
};
use crate::domain::names::{Realm, UserName};
use crate::domain::secrets::SeedCipher;
use crate::error::DeviceError;
use crate::policy_gate::{Ask, PolicyGate};
use crate::relying_party::RelyingParty;
use crate::store::devices::{DeviceFilter, DeviceRow, DeviceStore, Registration};
use crate::store::entities::{ceremonies, devices};
use crate::token_service::Actor;

mod check;
mod links;

pub use check::EnrollmentQuery;
pub use links::{NewLink, link_to_proto};

const REGISTRATION: &str = "registration";
const AUTHENTICATION: &str = "authentication";

/// Who a registration is for.
#[derive(Debug, Clone)]
pub enum Registrant {
    /// The holder of a link: trust on first use.
    Link(LinkSecret),
    /// A user registering on their own (policy REGISTER_DEVICE).
    SelfService {
        realm: Realm,
        user: UserName,
        kind: Option<DeviceKind>,
    },
}

/// Link settings from the configuration.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub base_url: String,
    pub redirects: RedirectAllowList,
    pub ceremony_ttl: Duration,
}

#[derive(Clone)]
pub struct Devices {
    store: DeviceStore,
    gate: PolicyGate,
    relying_party: Arc<RelyingParty>,
    cipher: Option<Arc<SeedCipher>>,
    clock: SharedClock,
    settings: LinkSettings,
}

impl Devices {
    pub fn new(
        store: DeviceStore,
        gate: PolicyGate,
        relying_party: Arc<RelyingParty>,
        cipher: Option<Arc<SeedCipher>>,
        clock: SharedClock,
        settings: LinkSettings,
    ) -> Self {
        Self {
            store,
            gate,
            relying_party,
            cipher,
            clock,
            settings,
        }
    }

    /// Starts a registration ceremony; its state is stored for whichever replica finishes.
    #[tracing::instrument(skip_all)]
    pub async fn begin_registration(
        &self,
        actor: &Actor,
        registrant: Registrant,
    ) -> Result<pb::BeginDeviceRegistrationResponse, DeviceError> {
        let now = self.clock.now();
        let (realm, user, kind, link_id) = match registrant {
            Registrant::Link(secret) => {
                let link = self.live_link(actor, &secret, now).await?;
                let realm = Realm::parse(&link.realm).map_err(DeviceError::FailedPrecondition)?;
                let user =
                    UserName::parse(&link.user_name).map_err(DeviceError::FailedPrecondition)?;
                let kind = DeviceKind::parse(&link.device_type).unwrap_or(DeviceKind::EnclaveOnly);
                self.gate
                    .decide(actor, &register_ask(&realm, &user, &link.id))
                    .await?;
                (realm, user, kind, Some(link.id))
            }
            Registrant::SelfService { realm, user, kind } => {
                let decision = self
                    .gate
                    .decide(actor, &register_ask(&realm, &user, ""))
                    .await?;
                let policy_kind = DeviceKind::parse(&decision.settings.webauthn_device_type)
                    .unwrap_or(DeviceKind::Any);
                // The stricter of what was asked and what the policy requires.
                let kind = match kind {
                    Some(DeviceKind::EnclaveOnly) => DeviceKind::EnclaveOnly,
                    _ => policy_kind,
                };
                (realm, user, kind, None)
            }
        };
        let exclude: Vec<String> = self
            .store
            .user_devices(&realm, &user)
            .await?
            .into_iter()
            .filter(|device| device.state != device_state::REVOKED)
            .map(|device| device.credential_id)
            .collect();
        let display = format!("{user}@{realm}");
        let challenge = self.relying_party.start_registration(
            kind,
            user_handle(realm.as_str(), user.as_str()),
            &display,
            &exclude,
        )?;
        let (ceremony_id, expire_time) = self
            .store_ceremony(
                REGISTRATION,
                &realm,
                &user,
                link_id,
                kind,
                challenge.state_json,
            )
            .await?;
        Ok(pb::BeginDeviceRegistrationResponse {
            ceremony_id,
            creation_options_json: challenge.options_json,
            expire_time: Some(to_timestamp(expire_time)),
            realm: realm.to_string(),
            user: user.to_string(),
            device_type: kind_to_proto(kind) as i32,
        })
    }

    /// Stores a ceremony's server state; returns its id and expire time.
    async fn store_ceremony(
        &self,
        kind: &str,
        realm: &Realm,
        user: &UserName,
        link_id: Option<String>,
        device_kind: DeviceKind,
        state: String,
    ) -> Result<(String, chrono::DateTime<chrono::Utc>), DeviceError> {
        let now = self.clock.now();
        let expire_time =
            now + chrono::Duration::from_std(self.settings.ceremony_ttl).unwrap_or_default();
        let ceremony = ceremonies::Model {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_owned(),
            realm: realm.to_string(),
            user_name: user.to_string(),
            link_id,
            device_type: device_kind.as_str().to_owned(),
            state,
            create_time: now,
            expire_time,
        };
        let id = ceremony.id.clone();
        self.store.save_ceremony(ceremony).await?;
        Ok((id, expire_time))
    }

    /// Verifies the browser's credential and registers the device: approved for a link
    /// (and the link spent), pending when the policy asks for approval of self-registration.
    #[tracing::instrument(skip_all, fields(ceremony_id = %ceremony_id))]
    pub async fn finish_registration(
        &self,
        actor: &Actor,
        ceremony_id: &str,
        credential_json: String,
        user_agent: &str,
    ) -> Result<(DeviceRow, String), DeviceError> {
        let now = self.clock.now();
        let ceremony = self.live_ceremony(ceremony_id, REGISTRATION, now).await?;
        let realm = Realm::parse(&ceremony.realm).map_err(DeviceError::FailedPrecondition)?;
        let user = UserName::parse(&ceremony.user_name).map_err(DeviceError::FailedPrecondition)?;
        let link = match &ceremony.link_id {
            Some(id) => Some(self.link_by_id(id).await?),
            None => None,
        };
        let subject = link.as_ref().map(|link| link.id.as_str()).unwrap_or("");
        let decision = self
            .gate
            .decide(actor, &register_ask(&realm, &user, subject))
            .await?;
        let relying_party = self.relying_party.clone();
        let state = ceremony.state.clone();
        let verified = tokio::task::spawn_blocking(move || {
            relying_party.finish_registration(&state, &credential_json)
        })
        .await
        .map_err(|error| DeviceError::Unavailable(format!("verification task: {error}")))?;
        let registered = match verified {
            Ok(registered) => registered,
            Err(error) => {
                let mut record =
                    self.gate
                        .record(actor, "register_device", &realm, Some(&user), subject);
                record.result = "denied";
                record.reason = error.audit_reason();
                self.store.burn_ceremony(ceremony_id, record).await?;
                return Err(error);
            }
        };
        let kind = DeviceKind::parse(&ceremony.device_type).unwrap_or(DeviceKind::EnclaveOnly);
        let (state, approved_by) = match &link {
            Some(link) => (device_state::APPROVED, link.created_by.clone()),
            None if decision.settings.require_device_approval => {
                (device_state::PENDING, String::new())
            }
            None => (device_state::APPROVED, String::new()),
        };
        let device = devices::Model {
            id: uuid::Uuid::new_v4().to_string(),
            realm: realm.to_string(),
            user_id: 0,
            credential_id: registered.credential_id,
            device_type: kind.as_str().to_owned(),
            state: state.to_owned(),
            aaguid: registered.aaguid,
            backup_eligible: registered.backup_eligible,
            user_agent: user_agent.chars().take(512).collect(),
            enrollment_link_id: ceremony.link_id.clone(),
            credential: registered.passkey_json,
            create_time: now,
            last_used_time: None,
            approved_by,
        };
        let mut record =
            self.gate
                .record(actor, "register_device", &realm, Some(&user), &device.id);
        record.reason = match &link {
            Some(link) => format!("through enrollment link {}; {state}", link.id),
            None => format!("self-registration; {state}"),
        };
        let row = self
            .store
            .register(Registration {
                ceremony_id: ceremony_id.to_owned(),
                link_id: ceremony.link_id.clone(),
                realm,
                user,
                device,
                limits: decision.limits(),
                audit: record,
            })
            .await?;
        let redirect_url = link.map(|link| link.redirect_url).unwrap_or_default();
        Ok((row, redirect_url))
    }

    async fn live_ceremony(
        &self,
        id: &str,
        kind: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ceremonies::Model, DeviceError> {
        let gone = || {
            DeviceError::FailedPrecondition(format!(
                "the {kind} ceremony has expired or was already finished; begin again"
            ))
        };
        let ceremony = self.store.ceremony(id).await?.ok_or_else(gone)?;
        if ceremony.kind != kind || ceremony.expire_time <= now {
            return Err(gone());
        }
        Ok(ceremony)
    }

    /// Starts an authentication with the user's usable devices of the required type.
    pub async fn begin_authentication(
        &self,
        realm: &Realm,
        user: &UserName,
        required: DeviceKind,
    ) -> Result<pb::BeginDeviceAuthenticationResponse, DeviceError> {
        let passkeys: Vec<String> = self
            .store
            .user_devices(realm, user)
            .await?
            .into_iter()
            .filter(|device| device.state != device_state::REVOKED)
            .filter(|device| {
                DeviceKind::parse(&device.device_type).is_some_and(|kind| kind.satisfies(required))
            })
            .map(|device| device.credential)
            .collect();
        if passkeys.is_empty() {
            return Err(DeviceError::FailedPrecondition(format!(
                "user `{user}` has no usable {} device",
                required.as_str()
            )));
        }
        let challenge = self.relying_party.start_authentication(&passkeys)?;
        let (ceremony_id, expire_time) = self
            .store_ceremony(
                AUTHENTICATION,
                realm,
                user,
                None,
                required,
                challenge.state_json,
            )
            .await?;
        Ok(pb::BeginDeviceAuthenticationResponse {
            ceremony_id,
            request_options_json: challenge.options_json,
            expire_time: Some(to_timestamp(expire_time)),
        })
    }

    /// Verifies an assertion; the ceremony is spent whether it passes or not.
    pub async fn finish_authentication(
        &self,
        actor: &Actor,
        ceremony_id: &str,
        assertion_json: String,
    ) -> Result<DeviceRow, DeviceError> {
        let now = self.clock.now();
        let ceremony = self.live_ceremony(ceremony_id, AUTHENTICATION, now).await?;
        let realm = Realm::parse(&ceremony.realm).map_err(DeviceError::FailedPrecondition)?;
        let user = UserName::parse(&ceremony.user_name).map_err(DeviceError::FailedPrecondition)?;
        let devices = self.store.user_devices(&realm, &user).await?;
        let result = self.relying_party.finish_authentication(
            &ceremony.state,
            &assertion_json,
            |credential_id| {
                devices
                    .iter()
                    .find(|device| device.credential_id == credential_id)
                    .map(|device| device.credential.clone())
            },
        );
        let mut record = self
            .gate
            .record(actor, "authenticate_device", &realm, Some(&user), "");
        let authenticated = match result {
            Ok(authenticated) => authenticated,
            Err(error) => {
                record.result = "denied";
                record.reason = error.audit_reason();
                self.store.burn_ceremony(ceremony_id, record).await?;
                return Err(error);
            }
        };
        record.subject = devices
            .iter()
            .find(|device| device.credential_id == authenticated.credential_id)
            .map(|device| device.id.clone())
            .unwrap_or_default();
        let outcome = self
            .store
            .authenticated(
                ceremony_id,
                &authenticated.credential_id,
                authenticated.updated_passkey_json,
                record.clone(),
            )
            .await;
        if let Err(error @ DeviceError::Refused { .. }) = &outcome {
            record.result = "denied";
            record.reason = error.audit_reason();
            self.store.burn_ceremony(ceremony_id, record).await?;
        }
        outcome
    }

    pub async fn device(&self, id: &str) -> Result<DeviceRow, DeviceError> {
        self.store
            .device(id)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("device `{id}`")))
    }

    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<DeviceRow>, DeviceError> {
        self.store.list_devices(filter, after, limit).await
    }

    /// Approves a pending device (approving an approved one changes nothing).
    pub async fn approve(
        &self,
        actor: &Actor,
        id: &str,
        approved_by: &str,
    ) -> Result<DeviceRow, DeviceError> {
        self.change_state(
            actor,
            id,
            "approve_device",
            &[device_state::PENDING],
            device_state::APPROVED,
            Some(approved_by),
            format!("approved by {approved_by}"),
        )
        .await
    }

    /// Revokes a device: it never authenticates again and stops counting.
    pub async fn revoke(
        &self,
        actor: &Actor,
        id: &str,
        revoked_by: &str,
        reason: &str,
    ) -> Result<DeviceRow, DeviceError> {
        self.change_state(
            actor,
            id,
            "revoke_device",
            &[device_state::PENDING, device_state::APPROVED],
            device_state::REVOKED,
            None,
            format!("revoked by {revoked_by}: {reason}"),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn change_state(
        &self,
        actor: &Actor,
        id: &str,
        action: &'static str,
        from: &[&str],
        to: &'static str,
        approved_by: Option<&str>,
        reason: String,
    ) -> Result<DeviceRow, DeviceError> {
        let current = self.device(id).await?;
        let realm = Realm::parse(&current.device.realm).map_err(DeviceError::FailedPrecondition)?;
        let user = UserName::parse(&current.user).map_err(DeviceError::FailedPrecondition)?;
        self.gate
            .decide(
                actor,
                &Ask::webauthn(policy_pb::Action::Manage, action, &realm, &user, id),
            )
            .await?;
        let mut record = self.gate.record(actor, action, &realm, Some(&user), id);
        record.reason = reason;
        self.store
            .set_device_state(id, from, to, approved_by, record)
            .await
    }
}

fn register_ask<'a>(realm: &'a Realm, user: &'a UserName, subject: &'a str) -> Ask<'a> {
    Ask::webauthn(
        policy_pb::Action::RegisterDevice,
        "register_device",
        realm,
        user,
        subject,
    )
}

pub fn kind_to_proto(kind: DeviceKind) -> pb::DeviceType {
    match kind {
        DeviceKind::Any => pb::DeviceType::Any,
        DeviceKind::EnclaveOnly => pb::DeviceType::EnclaveOnly,
    }
}

pub fn device_to_proto(device: &devices::Model, user: &str) -> pb::Device {
    let state = match device.state.as_str() {
        device_state::PENDING => pb::DeviceState::PendingApproval,
        device_state::APPROVED => pb::DeviceState::Approved,
        device_state::REVOKED => pb::DeviceState::Revoked,
        _ => pb::DeviceState::Unspecified,
    };
    pb::Device {
        id: device.id.clone(),
        realm: device.realm.clone(),
        user: user.to_owned(),
        credential_id: device.credential_id.clone(),
        device_type: DeviceKind::parse(&device.device_type)
            .map(kind_to_proto)
            .unwrap_or(pb::DeviceType::Unspecified) as i32,
        state: state as i32,
        aaguid: device.aaguid.clone(),
        backup_eligible: device.backup_eligible,
        user_agent: device.user_agent.clone(),
        enrollment_link_id: device.enrollment_link_id.clone().unwrap_or_default(),
        create_time: Some(to_timestamp(device.create_time)),
        last_used_time: device.last_used_time.map(to_timestamp),
        approved_by: device.approved_by.clone(),
    }
}
