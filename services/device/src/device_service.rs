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
    DeviceKind, LinkSecret, RedirectAllowList, device_state, link_state, link_url, user_handle,
};
use crate::domain::names::{Realm, UserName};
use crate::domain::secrets::SeedCipher;
use crate::error::DeviceError;
use crate::policy_gate::{Ask, Decision, PolicyGate, open_response, seal_response};
use crate::relying_party::RelyingParty;
use crate::store::devices::{DeviceFilter, DeviceRow, DeviceStore, LinkFilter, Registration};
use crate::store::entities::{ceremonies, devices, enrollment_links};
use crate::store::tokens::EnrollOutcome;
use crate::token_service::Actor;

const REGISTRATION: &str = "registration";
const AUTHENTICATION: &str = "authentication";

/// A validated CreateEnrollmentLink request.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub realm: Realm,
    pub user: UserName,
    pub kind: Option<DeviceKind>,
    pub redirect_url: Option<String>,
    pub ttl: Option<Duration>,
    pub created_by: String,
    pub request_id: Option<String>,
}

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

/// A validated CheckEnrollment request.
#[derive(Debug, Clone)]
pub struct EnrollmentQuery {
    pub realm: Realm,
    pub user: UserName,
    pub credential_id: Option<String>,
    pub required: DeviceKind,
    pub require_approved: bool,
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

    /// Issues a single-use link. The secret is in the returned URL only.
    #[tracing::instrument(skip_all, fields(realm = %request.realm, user = %request.user))]
    pub async fn create_link(
        &self,
        actor: &Actor,
        request: NewLink,
    ) -> Result<pb::EnrollmentLink, DeviceError> {
        let idempotency = match &request.request_id {
            Some(id) => {
                let cipher = self.cipher.as_deref().ok_or_else(|| {
                    DeviceError::FailedPrecondition(
                        "request_id needs secrets.seed_keys to seal the first response".to_owned(),
                    )
                })?;
                let key = format!("{}|CreateEnrollmentLink|{id}", actor.name);
                if let Some(first) = self.store.find_response(&key).await? {
                    return open_response(cipher, &key, &first);
                }
                Some((key, cipher))
            }
            None => None,
        };
        let ask = Ask {
            action: policy_pb::Action::CreateLink,
            audit_action: "create_link",
            realm: &request.realm,
            user: Some(&request.user),
            subject: "",
        };
        let decision = self.gate.decide(actor, ask).await?;
        let ask = Ask {
            action: policy_pb::Action::CreateLink,
            audit_action: "create_link",
            realm: &request.realm,
            user: Some(&request.user),
            subject: "",
        };
        let checked = self.link_terms(&decision, &request);
        let (kind, ttl, redirect_url) = match checked {
            Ok(terms) => terms,
            Err(error) => {
                self.gate.deny(actor, &ask, &error).await?;
                return Err(error);
            }
        };
        let secret = LinkSecret::generate(&mut rand::rng());
        let now = self.clock.now();
        let expire_time = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| DeviceError::invalid("ttl", "too long"))?;
        let link = enrollment_links::Model {
            id: uuid::Uuid::new_v4().to_string(),
            realm: request.realm.to_string(),
            user_name: request.user.to_string(),
            device_type: kind.as_str().to_owned(),
            redirect_url,
            secret_hash: secret.hash(),
            state: link_state::ACTIVE.to_owned(),
            created_by: request.created_by.clone(),
            create_time: now,
            expire_time,
            device_id: None,
        };
        let mut response = link_to_proto(&link, now);
        response.url = link_url(&self.settings.base_url, &secret);
        let mut record = self.gate.record(
            actor,
            "create_link",
            &request.realm,
            Some(&request.user),
            &link.id,
        );
        record.reason = format!(
            "created by {}; device type {}",
            request.created_by,
            kind.as_str()
        );
        let sealed = match idempotency {
            Some((key, cipher)) => Some((key.clone(), seal_response(cipher, &key, &response)?)),
            None => None,
        };
        match self.store.create_link(link, record, sealed.clone()).await? {
            EnrollOutcome::Created => Ok(response),
            EnrollOutcome::Replayed(first) => match (sealed, self.cipher.as_deref()) {
                (Some((key, _)), Some(cipher)) => open_response(cipher, &key, &first),
                _ => Ok(response),
            },
        }
    }

    /// The device type, lifetime and redirect of a new link, within the policy.
    fn link_terms(
        &self,
        decision: &Decision,
        request: &NewLink,
    ) -> Result<(DeviceKind, Duration, String), DeviceError> {
        let policy_kind =
            DeviceKind::parse(&decision.settings.webauthn_device_type).unwrap_or(DeviceKind::Any);
        let kind = request.kind.unwrap_or(policy_kind);
        if !kind.satisfies(policy_kind) {
            return Err(DeviceError::Denied {
                action: "create_link",
                code: "DEVICE_TYPE_NOT_ALLOWED".to_owned(),
                message: format!(
                    "the policy requires {} devices for this user",
                    policy_kind.as_str()
                ),
                policy: decision.decided("webauthn_device_type"),
            });
        }
        let max_hours = match decision.settings.enrollment_link_ttl_hours {
            0 => 24,
            hours => hours,
        };
        let max = Duration::from_secs(u64::from(max_hours) * 3_600);
        let ttl = match request.ttl {
            None => max,
            Some(ttl) if ttl.is_zero() => {
                return Err(DeviceError::invalid("ttl", "must be positive"));
            }
            Some(ttl) if ttl > max => {
                let policy = decision.decided("enrollment_link_ttl_hours");
                let by = if policy.is_empty() {
                    "the default".to_owned()
                } else {
                    format!("policy {policy}")
                };
                return Err(DeviceError::invalid(
                    "ttl",
                    format!("longer than the {max_hours} h that {by} allows"),
                ));
            }
            Some(ttl) => ttl,
        };
        let redirect_url = match &request.redirect_url {
            Some(raw) => self
                .settings
                .redirects
                .check(raw)
                .map_err(|message| DeviceError::invalid("redirect_url", message))?,
            None => String::new(),
        };
        Ok((kind, ttl, redirect_url))
    }

    pub async fn list_links(
        &self,
        filter: &LinkFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<pb::EnrollmentLink>, DeviceError> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_links(filter, now, after, limit)
            .await?
            .iter()
            .map(|link| link_to_proto(link, now))
            .collect())
    }

    pub async fn revoke_link(
        &self,
        actor: &Actor,
        id: &str,
        revoked_by: &str,
    ) -> Result<pb::EnrollmentLink, DeviceError> {
        let found = self.link_by_id(id).await?;
        let realm = Realm::parse(&found.realm).map_err(DeviceError::FailedPrecondition)?;
        let user = UserName::parse(&found.user_name).map_err(DeviceError::FailedPrecondition)?;
        self.gate
            .decide(
                actor,
                Ask {
                    action: policy_pb::Action::Manage,
                    audit_action: "revoke_link",
                    realm: &realm,
                    user: Some(&user),
                    subject: id,
                },
            )
            .await?;
        let mut record = self
            .gate
            .record(actor, "revoke_link", &realm, Some(&user), id);
        record.reason = format!("revoked by {revoked_by}");
        let link = self.store.revoke_link(id, record).await?;
        Ok(link_to_proto(&link, self.clock.now()))
    }

    async fn link_by_id(&self, id: &str) -> Result<enrollment_links::Model, DeviceError> {
        self.store
            .link(id)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("enrollment link `{id}`")))
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
                    .decide(actor, register_ask(&realm, &user, &link.id))
                    .await?;
                (realm, user, kind, Some(link.id))
            }
            Registrant::SelfService { realm, user, kind } => {
                let decision = self
                    .gate
                    .decide(actor, register_ask(&realm, &user, ""))
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
        let expire_time =
            now + chrono::Duration::from_std(self.settings.ceremony_ttl).unwrap_or_default();
        let ceremony = ceremonies::Model {
            id: uuid::Uuid::new_v4().to_string(),
            kind: REGISTRATION.to_owned(),
            realm: realm.to_string(),
            user_name: user.to_string(),
            link_id,
            device_type: kind.as_str().to_owned(),
            state: challenge.state_json,
            create_time: now,
            expire_time,
        };
        let ceremony_id = ceremony.id.clone();
        self.store.save_ceremony(ceremony).await?;
        Ok(pb::BeginDeviceRegistrationResponse {
            ceremony_id,
            creation_options_json: challenge.options_json,
            expire_time: Some(to_timestamp(expire_time)),
            realm: realm.to_string(),
            user: user.to_string(),
            device_type: kind_to_proto(kind) as i32,
        })
    }

    /// The link behind a secret, if it can still be used.
    async fn live_link(
        &self,
        actor: &Actor,
        secret: &LinkSecret,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<enrollment_links::Model, DeviceError> {
        let link = self
            .store
            .link_by_secret_hash(&secret.hash())
            .await?
            .ok_or_else(|| DeviceError::NotFound("enrollment link".to_owned()))?;
        let unusable = match link.state.as_str() {
            link_state::USED => "this enrollment link was already used",
            link_state::REVOKED => "this enrollment link was revoked",
            _ if link.expire_time <= now => "this enrollment link has expired",
            _ => return Ok(link),
        };
        let error = DeviceError::FailedPrecondition(format!(
            "{unusable}; ask your administrator for a new one"
        ));
        // The refusal is audited under the link's id (never its secret).
        if let (Ok(realm), Ok(user)) = (Realm::parse(&link.realm), UserName::parse(&link.user_name))
        {
            self.gate
                .deny(actor, &register_ask(&realm, &user, &link.id), &error)
                .await?;
        }
        Err(error)
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
            .decide(actor, register_ask(&realm, &user, subject))
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
        let now = self.clock.now();
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
        let expire_time =
            now + chrono::Duration::from_std(self.settings.ceremony_ttl).unwrap_or_default();
        let ceremony = ceremonies::Model {
            id: uuid::Uuid::new_v4().to_string(),
            kind: AUTHENTICATION.to_owned(),
            realm: realm.to_string(),
            user_name: user.to_string(),
            link_id: None,
            device_type: required.as_str().to_owned(),
            state: challenge.state_json,
            create_time: now,
            expire_time,
        };
        let ceremony_id = ceremony.id.clone();
        self.store.save_ceremony(ceremony).await?;
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
                Ask {
                    action: policy_pb::Action::Manage,
                    audit_action: action,
                    realm: &realm,
                    user: Some(&user),
                    subject: id,
                },
            )
            .await?;
        let mut record = self.gate.record(actor, action, &realm, Some(&user), id);
        record.reason = reason;
        self.store
            .set_device_state(id, from, to, approved_by, record)
            .await
    }

    /// The proxy's question: is this user enrolled with a device of the required type, and
    /// may they self-register one now? A read: it never fails because the policy service is
    /// down, it answers "may not self-enroll" with the reason.
    #[tracing::instrument(skip_all, fields(realm = %query.realm, user = %query.user))]
    pub async fn check_enrollment(
        &self,
        actor: &Actor,
        query: &EnrollmentQuery,
    ) -> Result<pb::CheckEnrollmentResponse, DeviceError> {
        // The device rows and the policy decision are independent: ask both at once, the
        // proxy waits for the slower one only.
        let (devices, self_enrollment) = tokio::join!(
            self.store.user_devices(&query.realm, &query.user),
            self.self_enrollment(actor, query)
        );
        let devices = devices?;
        let (can_self_enroll, reasons) = self_enrollment?;
        let (status, device) = enrollment_status(&devices, query);
        Ok(pb::CheckEnrollmentResponse {
            status: status as i32,
            device: device.map(|device| device_to_proto(device, query.user.as_str())),
            can_self_enroll,
            reasons,
        })
    }

    async fn self_enrollment(
        &self,
        actor: &Actor,
        query: &EnrollmentQuery,
    ) -> Result<(bool, Vec<String>), DeviceError> {
        let request = policy_pb::EvaluateEnrollmentRequest {
            realm: query.realm.to_string(),
            user: query.user.to_string(),
            client_ip: actor.client_ip.clone(),
            action: policy_pb::Action::RegisterDevice as i32,
            token_type: "webauthn".to_owned(),
            serial: String::new(),
        };
        let decision = match self.gate.evaluate_read(request).await {
            Ok(decision) => decision,
            Err(reason) => return Ok((false, vec![reason])),
        };
        let mut reasons: Vec<String> = decision
            .denials
            .iter()
            .map(|denial| with_policy(&denial.message, &denial.policy))
            .collect();
        let settings = decision.settings.clone().unwrap_or_default();
        let decided = |field: &str| decision.decided_by.get(field).cloned().unwrap_or_default();
        if reasons.is_empty() {
            let holdings = self
                .store
                .holdings(
                    &query.realm,
                    &query.user,
                    settings.max_token_per_realm.is_some(),
                )
                .await?;
            for (name, limit, held) in [
                (
                    "max_token_per_user",
                    settings.max_token_per_user,
                    Some(holdings.held),
                ),
                (
                    "max_active_token_per_user",
                    settings.max_active_token_per_user,
                    Some(holdings.active),
                ),
                (
                    "max_token_per_realm",
                    settings.max_token_per_realm,
                    holdings.in_realm,
                ),
            ] {
                if let (Some(limit), Some(held)) = (limit, held)
                    && held >= u64::from(limit)
                {
                    reasons.push(with_policy(
                        &format!("{name} {limit} reached"),
                        &decided(name),
                    ));
                }
            }
        }
        let can = reasons.is_empty();
        if can {
            let kind = DeviceKind::parse(&settings.webauthn_device_type).unwrap_or(DeviceKind::Any);
            reasons.push(with_policy(
                &format!("may self-register a device of type {}", kind.as_str()),
                &decided("webauthn_device_type"),
            ));
            if settings.require_device_approval {
                reasons.push(with_policy(
                    "a self-registered device stays pending until an admin approves it",
                    &decided("require_device_approval"),
                ));
            }
        }
        Ok((can, reasons))
    }
}

fn with_policy(message: &str, policy: &str) -> String {
    if policy.is_empty() {
        message.to_owned()
    } else {
        format!("{message} (policy {policy})")
    }
}

fn register_ask<'a>(realm: &'a Realm, user: &'a UserName, subject: &'a str) -> Ask<'a> {
    Ask {
        action: policy_pb::Action::RegisterDevice,
        audit_action: "register_device",
        realm,
        user: Some(user),
        subject,
    }
}

/// The enrollment status of a user's devices for the proxy's requirement.
fn enrollment_status<'a>(
    devices: &'a [devices::Model],
    query: &EnrollmentQuery,
) -> (pb::EnrollmentStatus, Option<&'a devices::Model>) {
    use pb::EnrollmentStatus as Status;
    let fits = |device: &devices::Model| {
        DeviceKind::parse(&device.device_type).is_some_and(|kind| kind.satisfies(query.required))
    };
    let usable = |device: &devices::Model| {
        if device.state == device_state::PENDING && query.require_approved {
            Status::PendingApproval
        } else {
            Status::Enrolled
        }
    };
    if let Some(credential_id) = &query.credential_id {
        return match devices
            .iter()
            .find(|device| &device.credential_id == credential_id)
        {
            None => (Status::NotEnrolled, None),
            Some(device) if device.state == device_state::REVOKED => {
                (Status::Revoked, Some(device))
            }
            Some(device) if !fits(device) => (Status::TypeMismatch, Some(device)),
            Some(device) => (usable(device), Some(device)),
        };
    }
    let live: Vec<&devices::Model> = devices
        .iter()
        .filter(|device| device.state != device_state::REVOKED)
        .collect();
    if let Some(device) = live
        .iter()
        .copied()
        .find(|device| fits(device) && device.state == device_state::APPROVED)
    {
        return (Status::Enrolled, Some(device));
    }
    if let Some(device) = live.iter().copied().find(|device| fits(device)) {
        return (usable(device), Some(device));
    }
    match live.first() {
        Some(device) => (Status::TypeMismatch, Some(device)),
        None => (Status::NotEnrolled, None),
    }
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

pub fn link_to_proto(
    link: &enrollment_links::Model,
    now: chrono::DateTime<chrono::Utc>,
) -> pb::EnrollmentLink {
    let state = match link.state.as_str() {
        link_state::USED => pb::LinkState::Used,
        link_state::REVOKED => pb::LinkState::Revoked,
        _ if link.expire_time <= now => pb::LinkState::Expired,
        _ => pb::LinkState::Active,
    };
    pb::EnrollmentLink {
        id: link.id.clone(),
        realm: link.realm.clone(),
        user: link.user_name.clone(),
        device_type: DeviceKind::parse(&link.device_type)
            .map(kind_to_proto)
            .unwrap_or(pb::DeviceType::Unspecified) as i32,
        redirect_url: link.redirect_url.clone(),
        url: String::new(),
        expire_time: Some(to_timestamp(link.expire_time)),
        state: state as i32,
        created_by: link.created_by.clone(),
        create_time: Some(to_timestamp(link.create_time)),
        device_id: link.device_id.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn device(id: &str, kind: &str, state: &str) -> devices::Model {
        devices::Model {
            id: id.to_owned(),
            realm: "acme".to_owned(),
            user_id: 1,
            credential_id: format!("cred-{id}"),
            device_type: kind.to_owned(),
            state: state.to_owned(),
            aaguid: String::new(),
            backup_eligible: false,
            user_agent: String::new(),
            enrollment_link_id: None,
            credential: String::new(),
            create_time: Utc::now(),
            last_used_time: None,
            approved_by: String::new(),
        }
    }

    fn query(
        required: DeviceKind,
        require_approved: bool,
        credential: Option<&str>,
    ) -> EnrollmentQuery {
        EnrollmentQuery {
            realm: Realm::parse("acme").unwrap(),
            user: UserName::parse("alice").unwrap(),
            credential_id: credential.map(str::to_owned),
            required,
            require_approved,
        }
    }

    #[test]
    fn status_table() {
        use pb::EnrollmentStatus as S;
        let any = DeviceKind::Any;
        let enclave = DeviceKind::EnclaveOnly;
        let approved_any = device("a", "any", device_state::APPROVED);
        let pending_enclave = device("p", "enclave_only", device_state::PENDING);
        let revoked = device("r", "enclave_only", device_state::REVOKED);
        let cases: Vec<(Vec<devices::Model>, EnrollmentQuery, S, Option<&str>)> = vec![
            (vec![], query(any, false, None), S::NotEnrolled, None),
            (
                vec![approved_any.clone()],
                query(any, true, None),
                S::Enrolled,
                Some("a"),
            ),
            (
                vec![approved_any.clone()],
                query(enclave, false, None),
                S::TypeMismatch,
                Some("a"),
            ),
            (
                vec![pending_enclave.clone()],
                query(enclave, true, None),
                S::PendingApproval,
                Some("p"),
            ),
            (
                vec![pending_enclave.clone()],
                query(any, false, None),
                S::Enrolled,
                Some("p"),
            ),
            (
                vec![pending_enclave.clone(), approved_any.clone()],
                query(any, true, None),
                S::Enrolled,
                Some("a"),
            ),
            (
                vec![revoked.clone()],
                query(any, false, None),
                S::NotEnrolled,
                None,
            ),
            (
                vec![revoked.clone()],
                query(any, false, Some("cred-r")),
                S::Revoked,
                Some("r"),
            ),
            (
                vec![approved_any.clone()],
                query(any, false, Some("cred-x")),
                S::NotEnrolled,
                None,
            ),
            (
                vec![approved_any.clone()],
                query(enclave, false, Some("cred-a")),
                S::TypeMismatch,
                Some("a"),
            ),
        ];
        for (index, (devices, query, status, device)) in cases.into_iter().enumerate() {
            let (got, found) = enrollment_status(&devices, &query);
            assert_eq!(got, status, "case {index}");
            assert_eq!(
                found.map(|device| device.id.as_str()),
                device,
                "case {index}"
            );
        }
    }

    #[test]
    fn link_state_shows_expiry() {
        let now = Utc::now();
        let link = enrollment_links::Model {
            id: "l".into(),
            realm: "acme".into(),
            user_name: "alice".into(),
            device_type: "any".into(),
            redirect_url: String::new(),
            secret_hash: "h".into(),
            state: link_state::ACTIVE.into(),
            created_by: "admin".into(),
            create_time: now,
            expire_time: now,
            device_id: None,
        };
        assert_eq!(
            link_to_proto(&link, now).state,
            pb::LinkState::Expired as i32
        );
        assert!(link_to_proto(&link, now).url.is_empty());
    }
}
