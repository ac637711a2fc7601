//! WebAuthn device use cases: enrollment links, registration (by link: trust on first use;
//! or self-service), authentication, approval and revocation, and the proxy's
//! CheckEnrollment. Every mutation asks the policy gate first and writes its audit event
//! in the transaction of the change.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::blocking::BlockingPool;
use super::gate::PolicyGate;
use super::metadata::{FidoMetadata, LoadedMetadata};
use super::metrics::{Ceremony, DeviceMetrics, LinkChange};
use super::ports::{RegisteredCredential, RelyingParty};
use crate::domain::actor::Actor;
use crate::domain::decision::{Decision, PolicyAction, PolicyQuestion};
use crate::domain::devices::{
    Device, DeviceKind, DeviceState, LinkSecret, RedirectAllowList, RegisteredDevice,
    RegistrationChallenge, user_handle,
};
use crate::domain::events::ReportedAuthenticator;
use crate::domain::metadata::CertificationLevel;
use crate::domain::model_rules::{ModelFacts, check_model_rules};
use crate::domain::names::{Realm, UserName};
use crate::domain::secrets::SeedCipher;
use crate::error::DeviceError;
use crate::store::devices::{DeviceStore, Registration};
use crate::store::entities::ceremonies;

mod admin;
mod authentication;
mod check;
mod links;

pub use check::EnrollmentQuery;
pub use links::NewLink;

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

/// Who finishes a registration: the enrollment page, which anyone on the network can reach,
/// finishes only ceremonies begun from a link; an authenticated caller finishes any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finisher {
    Caller,
    Page,
    /// The gate's page: only a self-service registration of the user the proxy in front
    /// vouched for.
    Subject(Realm, UserName),
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
    relying_party: Arc<dyn RelyingParty>,
    cipher: Option<Arc<SeedCipher>>,
    settings: LinkSettings,
    blocking: BlockingPool,
    metrics: DeviceMetrics,
    metadata: FidoMetadata,
}

impl Devices {
    pub fn new(
        store: DeviceStore,
        gate: PolicyGate,
        relying_party: Arc<dyn RelyingParty>,
        cipher: Option<Arc<SeedCipher>>,
        settings: LinkSettings,
    ) -> Self {
        Self {
            store,
            gate,
            relying_party,
            cipher,
            settings,
            blocking: BlockingPool::default(),
            metrics: DeviceMetrics::none(),
            metadata: FidoMetadata::default(),
        }
    }

    /// Uses the FIDO metadata: models recorded on devices, compromised models refused.
    pub fn with_metadata(mut self, metadata: FidoMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Counts link changes, ceremonies and limit hits on `metrics`.
    pub fn with_metrics(mut self, metrics: DeviceMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    fn now(&self) -> DateTime<Utc> {
        self.gate.now()
    }

    /// Starts a registration ceremony; its state is stored for whichever replica finishes.
    #[tracing::instrument(skip_all)]
    pub async fn begin_registration(
        &self,
        actor: &Actor,
        registrant: Registrant,
    ) -> Result<RegistrationChallenge, DeviceError> {
        let now = self.now();
        let (realm, user, kind, link_id, require_approval, model_rules) = match registrant {
            Registrant::Link(secret) => {
                let link = self.live_link(actor, &secret, now).await?;
                let question = register_question(&link.realm, &link.user, &link.id);
                let decision = self.gate.decide(actor, &question).await?;
                // A link issued under an older, weaker policy is held to the current one.
                self.require_kind(actor, &question, link.kind, &decision)
                    .await?;
                let model_rules = decision.settings.has_model_rules();
                (
                    link.realm,
                    link.user,
                    link.kind,
                    Some(link.id),
                    false,
                    model_rules,
                )
            }
            Registrant::SelfService { realm, user, kind } => {
                let decision = self
                    .gate
                    .decide(actor, &register_question(&realm, &user, ""))
                    .await?;
                // The stricter of what was asked and what the policy requires.
                let kind = match kind {
                    Some(DeviceKind::EnclaveOnly) => DeviceKind::EnclaveOnly,
                    _ => decision.settings.webauthn_device_type,
                };
                let approval = decision.settings.require_device_approval;
                let model_rules = decision.settings.has_model_rules();
                (realm, user, kind, None, approval, model_rules)
            }
        };
        let exclude: Vec<String> = self
            .store
            .user_devices(&realm, &user)
            .await?
            .into_iter()
            .filter(|stored| stored.device.state != DeviceState::Revoked)
            .map(|stored| stored.device.credential_id)
            .collect();
        let display = format!("{user}@{realm}");
        // Without an attestation browsers may hide the model (a zero AAGUID), so ask for
        // it whenever a rule or the metadata depends on the model.
        let want_attestation = model_rules || self.metadata.current().is_some();
        let challenge = self.relying_party.start_registration(
            kind,
            want_attestation,
            user_handle(realm.as_str(), user.as_str()),
            &display,
            &exclude,
        )?;
        let ceremony = NewCeremony {
            kind: REGISTRATION,
            realm: &realm,
            user: &user,
            link_id,
            device_kind: kind,
            require_approval,
            state: challenge.state_json,
        };
        let (ceremony_id, expire_time) = self.store_ceremony(ceremony).await?;
        Ok(RegistrationChallenge {
            ceremony_id,
            options_json: challenge.options_json,
            expire_time,
            realm,
            user,
            kind,
        })
    }

    /// Stores a ceremony's server state; returns its id and expire time.
    async fn store_ceremony(
        &self,
        ceremony: NewCeremony<'_>,
    ) -> Result<(String, DateTime<Utc>), DeviceError> {
        let now = self.now();
        let expire_time =
            now + chrono::Duration::from_std(self.settings.ceremony_ttl).unwrap_or_default();
        let row = ceremonies::Model {
            id: uuid::Uuid::new_v4().to_string(),
            kind: ceremony.kind.to_owned(),
            realm: ceremony.realm.to_string(),
            user_name: ceremony.user.to_string(),
            link_id: ceremony.link_id,
            device_type: ceremony.device_kind.into(),
            state: ceremony.state,
            require_approval: ceremony.require_approval,
            create_time: now,
            expire_time,
        };
        let id = row.id.clone();
        self.store.save_ceremony(row).await?;
        Ok((id, expire_time))
    }

    /// Refuses (audited) a device kind the current policy does not accept.
    async fn require_kind(
        &self,
        actor: &Actor,
        question: &PolicyQuestion<'_>,
        kind: DeviceKind,
        decision: &crate::domain::decision::Decision,
    ) -> Result<(), DeviceError> {
        let required = decision.settings.webauthn_device_type;
        if kind.satisfies(required) {
            return Ok(());
        }
        let error = DeviceError::Denied {
            action: "register_device",
            code: "DEVICE_TYPE_NOT_ALLOWED".to_owned(),
            message: format!(
                "the policy now requires {} devices; ask for a new enrollment link",
                required.as_str()
            ),
            policy: decision.decided("webauthn_device_type"),
        };
        self.gate.deny(actor, question, &error).await?;
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
        finisher: Finisher,
    ) -> Result<RegisteredDevice, DeviceError> {
        let result = self.metrics.limits(
            self.register(actor, ceremony_id, credential_json, user_agent, finisher)
                .await,
        );
        self.metrics.ceremony(Ceremony::Registration, &result);
        if let Ok(registered) = &result
            && registered.device.enrollment_link_id.is_some()
        {
            self.metrics.link(LinkChange::Redeemed);
        }
        result
    }

    async fn register(
        &self,
        actor: &Actor,
        ceremony_id: &str,
        credential_json: String,
        user_agent: &str,
        finisher: Finisher,
    ) -> Result<RegisteredDevice, DeviceError> {
        let now = self.now();
        let ceremony = self.live_ceremony(ceremony_id, REGISTRATION, now).await?;
        if finisher == Finisher::Page && ceremony.link_id.is_none() {
            return Err(DeviceError::FailedPrecondition(
                "the enrollment page finishes only registrations begun from an enrollment link"
                    .to_owned(),
            ));
        }
        let (realm, user) = ceremony_subject(&ceremony)?;
        if let Finisher::Subject(subject_realm, subject_user) = &finisher
            && (ceremony.link_id.is_some() || *subject_realm != realm || *subject_user != user)
        {
            return Err(DeviceError::FailedPrecondition(
                "the gate finishes only the signed-in user's own registrations".to_owned(),
            ));
        }
        let link = match &ceremony.link_id {
            Some(id) => Some(self.link_by_id(id).await?),
            None => None,
        };
        let subject = link.as_ref().map(|link| link.id.as_str()).unwrap_or("");
        let refusal = Refusal {
            actor,
            ceremony_id,
            realm: &realm,
            user: &user,
            subject,
        };
        let question = register_question(&realm, &user, subject);
        // A denial or an outage burns the ceremony like every other refusal: the same
        // challenge must not be answered again once the obstacle goes away (a new ceremony
        // from the same link is still possible: the link is not spent).
        let decision = match self.gate.decide_unaudited(actor, &question).await {
            Ok(decision) => decision,
            Err(error) => return self.burn(refusal, error).await,
        };
        // The kind is the ceremony row's column, never the stored state's JSON variant
        // (which decides only how the relying party verifies; see `enclave_proof`).
        let kind = DeviceKind::from(ceremony.device_type);
        if let Err(error) = self.require_kind(actor, &question, kind, &decision).await {
            let record = self
                .gate
                .record(actor, "register_device", &realm, Some(&user), subject)
                .denied(error.audit_reason());
            self.store.burn_ceremony(ceremony_id, record).await?;
            return Err(error);
        }
        let reported = ReportedAuthenticator::from_credential_json(&credential_json);
        let relying_party = self.relying_party.clone();
        let state = ceremony.state.clone();
        let verified = self
            .blocking
            .run("attestation verification", move || {
                relying_party.finish_registration(&state, &credential_json)
            })
            .await?;
        let registered = match verified.and_then(|registered| {
            enclave_proof(kind, &registered)?;
            Ok(registered)
        }) {
            Ok(registered) => registered,
            Err(error) => return self.burn(refusal, error).await,
        };
        let model = match self
            .model_of(&registered)
            .and_then(|model| model_rules(&decision, &registered, model))
        {
            Ok(model) => model,
            Err(error) => return self.burn(refusal, error).await,
        };
        // Approval: fixed when the ceremony began, and the stricter of begin and finish.
        let (state, approved_by) = match &link {
            Some(link) => (DeviceState::Approved, link.created_by.clone()),
            None if ceremony.require_approval || decision.settings.require_device_approval => {
                (DeviceState::PendingApproval, String::new())
            }
            None => (DeviceState::Approved, String::new()),
        };
        let device = Device {
            id: uuid::Uuid::new_v4().to_string(),
            realm: realm.clone(),
            user: user.clone(),
            credential_id: registered.credential_id,
            kind,
            state,
            aaguid: registered.aaguid,
            backup_eligible: registered.backup_eligible,
            user_agent: user_agent.chars().take(512).collect(),
            enrollment_link_id: ceremony.link_id.clone(),
            create_time: now,
            last_used_time: None,
            approved_by,
            model: model.description,
            certification_level: model
                .certification
                .map(|level| level.as_str().to_owned())
                .unwrap_or_default(),
            attestation_format: registered.attestation.format.clone(),
            attestation_root: registered.attestation.trusted_root.clone(),
            aaguid_verified: registered.attestation.verified_aaguid().is_some(),
            model_compromise: None,
        };
        let reason = match &link {
            Some(link) => format!("through enrollment link {}; {}", link.id, state.as_str()),
            None => format!("self-registration; {}", state.as_str()),
        };
        let record = self
            .gate
            .record(actor, "register_device", &realm, Some(&user), &device.id)
            .with_reason(reason);
        let device = self
            .store
            .register(Registration {
                ceremony_id: ceremony_id.to_owned(),
                link_id: ceremony.link_id.clone(),
                device,
                credential: registered.passkey_json,
                reported,
                limits: decision.limits(),
                audit: record,
            })
            .await?;
        let redirect_url = link.map(|link| link.redirect_url).unwrap_or_default();
        Ok(RegisteredDevice {
            device,
            redirect_url,
        })
    }

    /// Refuses a finish (audited as a denied `register_device`) and burns its ceremony in
    /// the same transaction, so the challenge can never be answered again.
    async fn burn<T>(&self, refusal: Refusal<'_>, error: DeviceError) -> Result<T, DeviceError> {
        let record = self
            .gate
            .record(
                refusal.actor,
                "register_device",
                refusal.realm,
                Some(refusal.user),
                refusal.subject,
            )
            .denied(error.audit_reason());
        self.store
            .burn_ceremony(refusal.ceremony_id, record)
            .await?;
        Err(error)
    }

    /// What the FIDO metadata says of a verified credential's model; a model it marks
    /// compromised is refused (AUTHENTICATOR_COMPROMISED), whether or not its attestation
    /// was verified: claiming to be a compromised model is reason enough to refuse.
    fn model_of(&self, registered: &RegisteredCredential) -> Result<ModelRecord, DeviceError> {
        let Some(loaded) = self.metadata.current() else {
            return Ok(ModelRecord::default());
        };
        let Some(model) = loaded.catalog.model(&registered.aaguid) else {
            return Ok(ModelRecord::default());
        };
        if let Some(reason) = model.compromise_reason(loaded.catalog.no) {
            return Err(DeviceError::Refused {
                reason: "AUTHENTICATOR_COMPROMISED",
                message: format!("{reason}: register another authenticator"),
            });
        }
        Ok(ModelRecord {
            description: model.description.clone(),
            certification: model.certification,
        })
    }

    async fn live_ceremony(
        &self,
        id: &str,
        kind: &str,
        now: DateTime<Utc>,
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
}

/// The finish a refusal burns: whose, which ceremony, and the audit event's subject.
#[derive(Clone, Copy)]
struct Refusal<'a> {
    actor: &'a Actor,
    ceremony_id: &'a str,
    realm: &'a Realm,
    user: &'a UserName,
    subject: &'a str,
}

/// Fail closed on what the device will be recorded as: an `enclave_only` device is stored
/// only with an attestation verified to a configured root, from a credential that is not
/// backup eligible. The relying party verifies by the stored state's variant, which
/// someone with write access to the database could make disagree with the ceremony's
/// `device_type` column; this keeps such a state from recording an unproven device as
/// `enclave_only` (ATTESTATION_NOT_TRUSTED).
fn enclave_proof(kind: DeviceKind, registered: &RegisteredCredential) -> Result<(), DeviceError> {
    if kind != DeviceKind::EnclaveOnly {
        return Ok(());
    }
    let attestation = &registered.attestation;
    if attestation.trusted_root.is_none() {
        return Err(DeviceError::Refused {
            reason: "ATTESTATION_NOT_TRUSTED",
            message: format!(
                "enclave_only needs an attestation verified to a configured root; this one (format {}) was not",
                attestation.format
            ),
        });
    }
    if registered.backup_eligible || attestation.backup_eligible {
        return Err(DeviceError::Refused {
            reason: "BACKUP_ELIGIBLE_REFUSED",
            message: "credential is backup eligible (synced): enclave_only needs a device-bound platform authenticator".to_owned(),
        });
    }
    Ok(())
}

/// What a device records of its model.
#[derive(Debug, Default)]
struct ModelRecord {
    description: String,
    certification: Option<CertificationLevel>,
}

/// The policy's model rules on a registered credential (AUTHENTICATOR_NOT_ALLOWED, with
/// the policy that decided the refusing setting).
fn model_rules(
    decision: &Decision,
    registered: &RegisteredCredential,
    model: ModelRecord,
) -> Result<ModelRecord, DeviceError> {
    let facts = ModelFacts {
        aaguid: &registered.aaguid,
        verified: registered.attestation.verified_aaguid().is_some(),
        model: Some(model.description.as_str()).filter(|name| !name.is_empty()),
        certification: model.certification,
    };
    match check_model_rules(&decision.settings, &facts) {
        Ok(()) => Ok(model),
        Err(refusal) => {
            let policy = decision.decided(refusal.setting);
            Err(DeviceError::Denied {
                action: "register_device",
                code: "AUTHENTICATOR_NOT_ALLOWED".to_owned(),
                message: format!("{} (policy {policy})", refusal.message),
                policy,
            })
        }
    }
}

/// A ceremony to store.
struct NewCeremony<'a> {
    kind: &'static str,
    realm: &'a Realm,
    user: &'a UserName,
    link_id: Option<String>,
    device_kind: DeviceKind,
    require_approval: bool,
    state: String,
}

/// The realm and user a stored ceremony is for.
fn ceremony_subject(ceremony: &ceremonies::Model) -> Result<(Realm, UserName), DeviceError> {
    let row = || format!("ceremony `{}`", ceremony.id);
    let realm =
        Realm::parse(&ceremony.realm).map_err(|problem| DeviceError::corrupt(row(), problem))?;
    let user = UserName::parse(&ceremony.user_name)
        .map_err(|problem| DeviceError::corrupt(row(), problem))?;
    Ok((realm, user))
}

fn register_question<'a>(
    realm: &'a Realm,
    user: &'a UserName,
    subject: &'a str,
) -> PolicyQuestion<'a> {
    PolicyQuestion::webauthn(
        PolicyAction::RegisterDevice,
        "register_device",
        realm,
        user,
        subject,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attestation::VerifiedAttestation;

    fn registered(trusted_root: Option<&str>, backup_eligible: bool) -> RegisteredCredential {
        RegisteredCredential {
            credential_id: "cred".to_owned(),
            passkey_json: "{}".to_owned(),
            aaguid: String::new(),
            backup_eligible,
            attestation: VerifiedAttestation {
                format: "packed".to_owned(),
                aaguid: String::new(),
                trusted_root: trusted_root.map(str::to_owned),
                aaguid_bound: false,
                backup_eligible,
            },
        }
    }

    fn reason(result: Result<(), DeviceError>) -> Option<&'static str> {
        match result {
            Err(DeviceError::Refused { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn an_enclave_only_device_without_a_verified_root_is_refused() {
        assert_eq!(
            reason(enclave_proof(
                DeviceKind::EnclaveOnly,
                &registered(None, false)
            )),
            Some("ATTESTATION_NOT_TRUSTED")
        );
        assert_eq!(
            reason(enclave_proof(
                DeviceKind::EnclaveOnly,
                &registered(Some("apple"), true)
            )),
            Some("BACKUP_ELIGIBLE_REFUSED")
        );
        assert!(enclave_proof(DeviceKind::EnclaveOnly, &registered(Some("apple"), false)).is_ok());
        // An `any` device needs no proof.
        assert!(enclave_proof(DeviceKind::Any, &registered(None, true)).is_ok());
    }
}
