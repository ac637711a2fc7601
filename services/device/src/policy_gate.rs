//! The policy decision every token and device mutation asks for first: fail closed when the
//! policy service cannot answer, audit and refuse a denial.
use std::collections::HashMap;

use enroll_shared::proto::policy::v1 as policy_pb;
use enroll_shared::time::SharedClock;
use prost::Message;

use crate::domain::names::{Realm, UserName};
use crate::domain::secrets::SeedCipher;
use crate::error::DeviceError;
use crate::policy_client::PolicyClient;
use crate::store::tokens::{AuditRecord, Limits, SealedResponse, TokenStore};
use crate::token_service::Actor;

/// A decision that allowed the action.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub settings: policy_pb::EnrollmentSettings,
    decided_by: HashMap<String, String>,
}

impl From<policy_pb::EvaluateEnrollmentResponse> for Decision {
    fn from(response: policy_pb::EvaluateEnrollmentResponse) -> Self {
        Self {
            settings: response.settings.unwrap_or_default(),
            decided_by: response.decided_by,
        }
    }
}

impl Decision {
    /// The policy that decided a setting ("" for the default).
    pub fn decided(&self, field: &str) -> String {
        self.decided_by.get(field).cloned().unwrap_or_default()
    }

    /// The limits the decision sets, each with the policy that set it.
    pub fn limits(&self) -> Limits {
        Limits {
            per_user: self
                .settings
                .max_token_per_user
                .map(|limit| (limit, self.decided("max_token_per_user"))),
            active_per_user: self
                .settings
                .max_active_token_per_user
                .map(|limit| (limit, self.decided("max_active_token_per_user"))),
            per_realm: self
                .settings
                .max_token_per_realm
                .map(|limit| (limit, self.decided("max_token_per_realm"))),
        }
    }
}

/// One decision request.
pub struct Ask<'a> {
    pub action: policy_pb::Action,
    /// The audit action a denial is recorded under.
    pub audit_action: &'static str,
    pub realm: &'a Realm,
    pub user: Option<&'a UserName>,
    /// What a denial's audit event names (serial, link or device id).
    pub subject: &'a str,
    pub token_type: &'a str,
    /// The serial the policy renders labels with; empty for devices.
    pub serial: &'a str,
}

impl<'a> Ask<'a> {
    /// A decision about a WebAuthn device or link.
    pub fn webauthn(
        action: policy_pb::Action,
        audit_action: &'static str,
        realm: &'a Realm,
        user: &'a UserName,
        subject: &'a str,
    ) -> Self {
        Self {
            action,
            audit_action,
            realm,
            user: Some(user),
            subject,
            token_type: "webauthn",
            serial: "",
        }
    }

    fn request(&self, actor: &Actor) -> policy_pb::EvaluateEnrollmentRequest {
        policy_pb::EvaluateEnrollmentRequest {
            realm: self.realm.to_string(),
            user: self.user.map(ToString::to_string).unwrap_or_default(),
            client_ip: actor.client_ip.clone(),
            action: self.action as i32,
            token_type: self.token_type.to_owned(),
            serial: self.serial.to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct PolicyGate {
    policy: PolicyClient,
    store: TokenStore,
    clock: SharedClock,
}

impl PolicyGate {
    pub fn new(policy: PolicyClient, store: TokenStore, clock: SharedClock) -> Self {
        Self {
            policy,
            store,
            clock,
        }
    }

    /// An audit record of `actor` doing `action` now, result ok until changed.
    pub fn record(
        &self,
        actor: &Actor,
        action: &'static str,
        realm: &Realm,
        user: Option<&UserName>,
        subject: &str,
    ) -> AuditRecord {
        audit_record(actor, action, realm, user, subject, self.clock.now())
    }

    /// Asks the policy service; a denial is audited and refused.
    pub async fn decide(&self, actor: &Actor, ask: &Ask<'_>) -> Result<Decision, DeviceError> {
        let decision = self
            .policy
            .evaluate(ask.request(actor))
            .await
            .map_err(policy_failure)?;
        if let Some(denial) = decision.denials.first() {
            let error = DeviceError::Denied {
                action: ask.audit_action,
                code: denial.code.clone(),
                message: denial.message.clone(),
                policy: denial.policy.clone(),
            };
            self.deny(actor, ask, &error).await?;
            return Err(error);
        }
        Ok(Decision::from(decision))
    }

    /// A decision for a read (CheckEnrollment): denials are returned, not audited, and an
    /// unreachable policy service is a reason, not an error.
    pub async fn evaluate_read(
        &self,
        actor: &Actor,
        ask: &Ask<'_>,
    ) -> Result<(Decision, Vec<policy_pb::Denial>), String> {
        let mut response = self
            .policy
            .evaluate(ask.request(actor))
            .await
            .map_err(|status| format!("no policy decision: {}", status.message()))?;
        let denials = std::mem::take(&mut response.denials);
        Ok((Decision::from(response), denials))
    }

    /// Records a refusal decided here (not by the policy service).
    pub async fn deny(
        &self,
        actor: &Actor,
        ask: &Ask<'_>,
        error: &DeviceError,
    ) -> Result<(), DeviceError> {
        let mut record = self.record(actor, ask.audit_action, ask.realm, ask.user, ask.subject);
        record.result = "denied";
        record.reason = error.audit_reason();
        self.store.audit(record).await
    }
}

/// An audit record of `actor` doing `action` at `time`, result ok until changed; the trace
/// id is the current span's.
pub fn audit_record(
    actor: &Actor,
    action: &'static str,
    realm: &Realm,
    user: Option<&UserName>,
    subject: &str,
    time: chrono::DateTime<chrono::Utc>,
) -> AuditRecord {
    AuditRecord {
        actor: actor.name.clone(),
        action,
        realm: realm.to_string(),
        user: user.map(ToString::to_string).unwrap_or_default(),
        subject: subject.to_owned(),
        result: "ok",
        reason: String::new(),
        trace_id: enroll_shared::telemetry::current_trace_id(),
        time,
    }
}

/// Transport failures became UNAVAILABLE in the client; everything else is the policy
/// service's own answer.
pub fn policy_failure(status: tonic::Status) -> DeviceError {
    match status.code() {
        tonic::Code::Unavailable => DeviceError::Unavailable(status.message().to_owned()),
        _ => DeviceError::Policy(status),
    }
}

/// A response sealed for storage under `key` (it may carry a secret returned once).
pub fn seal_response<R: Message>(
    cipher: &SeedCipher,
    key: &str,
    response: &R,
) -> Result<SealedResponse, DeviceError> {
    let (key_id, bytes) = cipher
        .encrypt(&response.encode_to_vec(), key)
        .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
    Ok(SealedResponse { key_id, bytes })
}

/// The first response stored under `key`.
pub fn open_response<R: Message + Default>(
    cipher: &SeedCipher,
    key: &str,
    sealed: &SealedResponse,
) -> Result<R, DeviceError> {
    let bytes = cipher
        .decrypt(&sealed.key_id, &sealed.bytes, key)
        .map_err(|error| DeviceError::FailedPrecondition(format!("stored response: {error}")))?;
    R::decode(bytes.as_slice())
        .map_err(|_| DeviceError::FailedPrecondition("stored response is unreadable".to_owned()))
}
