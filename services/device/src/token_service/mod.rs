//! Token use cases: each asks the policy service first (fail closed), then changes the
//! database in one transaction with its audit event.
use std::sync::Arc;

use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use enroll_shared::time::SharedClock;
use prost::Message;

use crate::config::ValidationConfig;
use crate::domain::import::{RowError, parse_csv};
use crate::domain::names::{Realm, Serial, UserName};
use crate::domain::otp::{Window, matching_factor};
use crate::domain::pins::{pin_matches, seal_pin};
use crate::domain::random::random_string;
use crate::domain::secrets::SeedCipher;
use crate::domain::tokens::{
    HashAlgorithm, OtpParameters, ProvisioningUri, TokenKind, base32, new_seed, new_serial, qr_png,
    render_serial,
};
use crate::error::DeviceError;
use crate::grpc::token_to_proto;
use crate::policy_client::PolicyClient;
use crate::pool_index::PoolIndex;
use crate::rate_limit::RateLimiter;
use crate::store::entities::tokens;
use crate::store::token_changes::TokenChange;
mod importing;
mod validation;

use crate::policy_gate::{
    Ask, Decision, PolicyGate, audit_record, open_response, policy_failure, seal_response,
};
use crate::store::tokens::{AuditRecord, EnrollOutcome, Idempotency, Limits, Outcome, TokenStore};

/// Who is asking, for policy decisions and the audit trail.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub client_ip: String,
}

/// A validated EnrollToken request.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub realm: Realm,
    pub user: Option<UserName>,
    pub parameters: OtpParameters,
    pub description: String,
    /// Also return the otpauth URI as a QR code PNG.
    pub include_qr_png: bool,
    pub request_id: Option<String>,
}

#[derive(Clone)]
pub struct Tokens {
    store: TokenStore,
    policy: PolicyClient,
    gate: PolicyGate,
    cipher: Option<Arc<SeedCipher>>,
    clock: SharedClock,
    validation: ValidationConfig,
    pool_index: PoolIndex,
    user_attempts: Arc<RateLimiter>,
    client_attempts: Arc<RateLimiter>,
    hashing_slots: Arc<tokio::sync::Semaphore>,
}

/// The outcome of Validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted { serial: String },
    Autoassigned { serial: String },
    Refused { reason: &'static str },
}

impl Tokens {
    pub fn new(
        store: TokenStore,
        policy: PolicyClient,
        gate: PolicyGate,
        cipher: Option<Arc<SeedCipher>>,
        clock: SharedClock,
        validation: ValidationConfig,
    ) -> Self {
        let minute = std::time::Duration::from_secs(60);
        Self {
            store,
            policy,
            gate,
            cipher,
            clock,
            user_attempts: Arc::new(RateLimiter::new(
                validation.autoassign_attempts_per_user,
                minute,
            )),
            client_attempts: Arc::new(RateLimiter::new(
                validation.autoassign_attempts_per_client,
                minute,
            )),
            validation,
            pool_index: PoolIndex::default(),
            hashing_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(1),
            )),
        }
    }

    pub fn pool_index(&self) -> &PoolIndex {
        &self.pool_index
    }

    pub fn window(&self) -> Window {
        Window {
            totp_steps: self.validation.totp_window_steps,
            hotp_look_ahead: self.validation.hotp_look_ahead,
        }
    }

    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// Runs argon2 work on the blocking pool, at most one job per core at a time: argon2id
    /// fills 19 MiB per hash, so more jobs than cores only thrash the caches (and queue on
    /// the cores anyway). The permit lives as long as the job, even when the caller gives up.
    async fn hashing<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DeviceError> {
        let permit = self
            .hashing_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|error| DeviceError::Unavailable(format!("{what}: {error}")))?;
        tokio::task::spawn_blocking(move || {
            let done = work();
            drop(permit);
            done
        })
        .await
        .map_err(|error| DeviceError::Unavailable(format!("{what} task: {error}")))
    }

    fn cipher(&self) -> Result<&SeedCipher, DeviceError> {
        self.cipher.as_deref().ok_or_else(|| {
            DeviceError::FailedPrecondition(
                "token secrets cannot be stored: configure secrets.seed_keys and secrets.active_seed_key".to_owned(),
            )
        })
    }

    fn audit(
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
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        actor: &Actor,
        action: policy_pb::Action,
        audit_action: &'static str,
        realm: &Realm,
        user: Option<&UserName>,
        token_type: &str,
        serial: &str,
    ) -> Result<Decision, DeviceError> {
        let ask = Ask {
            action,
            audit_action,
            realm,
            user,
            subject: serial,
            token_type,
            serial,
        };
        self.gate.decide(actor, &ask).await
    }

    /// Enrolls a TOTP/HOTP token: the secret (and a random PIN when the policy asks for one)
    /// is returned once; a retry with the same request id returns the same response.
    #[tracing::instrument(skip_all, fields(realm = %enrollment.realm, request_id = enrollment.request_id.as_deref()))]
    pub async fn enroll(
        &self,
        actor: &Actor,
        enrollment: Enrollment,
    ) -> Result<pb::EnrollTokenResponse, DeviceError> {
        let cipher = self.cipher()?;
        let idempotency_key =
            idempotency_key(actor, "EnrollToken", enrollment.request_id.as_deref());
        if let Some(first) = self.first_response(idempotency_key.as_deref()).await? {
            return Ok(first);
        }
        let parameters = enrollment.parameters;
        let token_type = parameters.kind.as_str();
        let decision = self
            .decide(
                actor,
                policy_pb::Action::Enroll,
                "enroll_token",
                &enrollment.realm,
                enrollment.user.as_ref(),
                token_type,
                "",
            )
            .await?;
        let limits = decision.limits();
        let settings = decision.settings;

        let (serial, seed, pin) = {
            let mut rng = rand::rng();
            let pin = settings.otp_pin_random.map(|length| {
                random_string(&mut rng, length as usize, &settings.otp_pin_random_content)
            });
            (
                new_serial(parameters.kind, &mut rng),
                new_seed(parameters.algorithm, &mut rng),
                pin,
            )
        };
        let label = render_serial(&settings.token_label, &serial);
        let issuer = render_serial(&settings.token_issuer, &serial);
        let (seed_key_id, sealed_seed) = cipher
            .encrypt(&seed, &serial)
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        let pin_hash = match &pin {
            Some(pin) => {
                let (pin, encrypt, cipher, serial) = (
                    pin.clone(),
                    settings.otp_pin_encrypt,
                    cipher.clone(),
                    serial.clone(),
                );
                let sealed = self
                    .hashing("PIN hashing", move || {
                        seal_pin(&pin, encrypt, &cipher, &serial)
                    })
                    .await?
                    .map_err(DeviceError::FailedPrecondition)?;
                Some(sealed)
            }
            None => None,
        };
        let now = self.clock.now();
        let token = tokens::Model {
            serial: serial.clone(),
            realm: enrollment.realm.to_string(),
            user_id: None,
            token_type: token_type.to_owned(),
            state: "enabled".to_owned(),
            seed_key_id,
            seed: sealed_seed,
            digits: i32::from(parameters.digits),
            period: parameters.period as i32,
            algorithm: parameters.algorithm.as_str().to_owned(),
            counter: 0,
            pin_hash,
            failure_count: 0,
            label: label.clone(),
            description: enrollment.description.clone(),
            create_time: now,
            expire_time: None,
        };
        let otpauth_uri = ProvisioningUri {
            parameters,
            seed: &seed,
            label: &label,
            issuer: &issuer,
            counter: 0,
        }
        .to_string();
        let qr_png = if enrollment.include_qr_png {
            qr_png(&otpauth_uri)
                .map_err(|message| DeviceError::FailedPrecondition(message.to_owned()))?
        } else {
            Vec::new()
        };
        let response = pb::EnrollTokenResponse {
            token: Some(token_to_proto(
                &token,
                enrollment.user.as_ref().map(|u| u.as_str()),
            )),
            otpauth_uri,
            secret_base32: base32(&seed),
            pin: pin.unwrap_or_default(),
            qr_png,
        };
        let sealed_response = match &idempotency_key {
            Some(key) => Some((key.clone(), seal_response(cipher, key, &response)?)),
            None => None,
        };
        let audit = self.audit(
            actor,
            "enroll_token",
            &enrollment.realm,
            enrollment.user.as_ref(),
            &serial,
        );
        match self
            .store
            .enroll(
                &enrollment.realm,
                enrollment.user.as_ref(),
                token,
                &limits,
                audit,
                sealed_response,
            )
            .await?
        {
            EnrollOutcome::Created => {
                tracing::info!(serial = %serial, "token enrolled");
                Ok(response)
            }
            EnrollOutcome::Replayed(first) => open_response(
                cipher,
                idempotency_key.as_deref().unwrap_or_default(),
                &first,
            ),
        }
    }

    /// The token and its owner, or NOT_FOUND.
    async fn existing(
        &self,
        serial: &Serial,
    ) -> Result<(tokens::Model, Option<UserName>), DeviceError> {
        let row = self
            .store
            .get(serial.as_str())
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("token `{serial}`")))?;
        let user = row
            .user
            .as_deref()
            .map(UserName::parse)
            .transpose()
            .map_err(DeviceError::FailedPrecondition)?;
        Ok((row.token, user))
    }

    fn realm_of(token: &tokens::Model) -> Result<Realm, DeviceError> {
        Realm::parse(&token.realm).map_err(DeviceError::FailedPrecondition)
    }

    /// Assigns a pool token to a user of the token's realm.
    #[tracing::instrument(skip_all, fields(serial = %serial, realm = %realm))]
    pub async fn assign(
        &self,
        actor: &Actor,
        serial: &Serial,
        realm: &Realm,
        user: &UserName,
        request_id: Option<&str>,
    ) -> Result<pb::Token, DeviceError> {
        let key = idempotency_key(actor, "AssignToken", request_id);
        if let Some(first) = self.first_response(key.as_deref()).await? {
            return Ok(first);
        }
        let (token, _) = self.existing(serial).await?;
        let decision = self
            .decide(
                actor,
                policy_pb::Action::Assign,
                "assign_token",
                realm,
                Some(user),
                &token.token_type,
                serial.as_str(),
            )
            .await?;
        // Assigning moves a token within its realm: the realm count does not change.
        let limits = Limits {
            per_realm: None,
            ..decision.limits()
        };
        let audit = self.audit(actor, "assign_token", realm, Some(user), serial.as_str());
        let cipher = self.cipher()?;
        let seal = |after: &tokens::Model| {
            let response = token_to_proto(after, Some(user.as_str()));
            seal_response(cipher, key.as_deref().unwrap_or_default(), &response)
        };
        let outcome = self
            .store
            .assign(
                serial.as_str(),
                realm,
                user,
                &limits,
                audit,
                key.clone().map(|key| Idempotency { key, seal: &seal }),
            )
            .await?;
        self.respond(key.as_deref(), outcome, |after| {
            token_to_proto(&after, Some(user.as_str()))
        })
    }

    /// Enables, disables, unassigns or deletes a token; returns the token after the change
    /// (a deleted token as it was).
    #[tracing::instrument(skip_all, fields(serial = %serial))]
    pub async fn manage(
        &self,
        actor: &Actor,
        serial: &Serial,
        change: TokenChange,
        request_id: Option<&str>,
    ) -> Result<pb::Token, DeviceError> {
        let (action, rpc) = match change {
            TokenChange::Enable => ("enable_token", "EnableToken"),
            TokenChange::Disable => ("disable_token", "DisableToken"),
            TokenChange::Unassign => ("unassign_token", "UnassignToken"),
            TokenChange::Delete => ("delete_token", "DeleteToken"),
            TokenChange::SetPin(_) => ("set_pin", "SetPin"),
        };
        let key = idempotency_key(actor, rpc, request_id);
        if let Some(first) = self.first_response(key.as_deref()).await? {
            return Ok(first);
        }
        let (token, user) = match self.existing(serial).await {
            // A racing first request with this id may have deleted it meanwhile.
            Err(DeviceError::NotFound(message)) => {
                return match self.first_response(key.as_deref()).await? {
                    Some(first) => Ok(first),
                    None => Err(DeviceError::NotFound(message)),
                };
            }
            found => found?,
        };
        let realm = Self::realm_of(&token)?;
        self.decide(
            actor,
            policy_pb::Action::Manage,
            action,
            &realm,
            user.as_ref(),
            &token.token_type,
            serial.as_str(),
        )
        .await?;
        let unassigning = matches!(change, TokenChange::Unassign);
        let audit = self.audit(actor, action, &realm, user.as_ref(), serial.as_str());
        let owner = if unassigning { None } else { user };
        let response = |after: &Option<tokens::Model>| {
            token_to_proto(
                after.as_ref().unwrap_or(&token),
                owner.as_ref().map(UserName::as_str),
            )
        };
        let cipher = self.cipher()?;
        let seal = |after: &Option<tokens::Model>| {
            seal_response(cipher, key.as_deref().unwrap_or_default(), &response(after))
        };
        let outcome = self
            .store
            .change(
                serial.as_str(),
                change,
                audit,
                key.clone().map(|key| Idempotency { key, seal: &seal }),
            )
            .await?;
        if unassigning && matches!(outcome, Outcome::Done(_)) {
            self.pool_index.invalidate(&realm);
        }
        self.respond(key.as_deref(), outcome, |after| response(&after))
    }

    /// Sets an assigned token's PIN after checking it against the user's PIN rules.
    #[tracing::instrument(skip_all, fields(serial = %serial))]
    pub async fn set_pin(
        &self,
        actor: &Actor,
        serial: &Serial,
        pin: String,
        request_id: Option<&str>,
    ) -> Result<pb::Token, DeviceError> {
        let key = idempotency_key(actor, "SetPin", request_id);
        if let Some(first) = self.first_response(key.as_deref()).await? {
            return Ok(first);
        }
        let cipher = self.cipher()?.clone();
        let (token, user) = self.existing(serial).await?;
        let realm = Self::realm_of(&token)?;
        let Some(user) = user else {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is in the pool: assign it before setting a PIN"
            )));
        };
        let verdict = self
            .policy
            .validate_pin(policy_pb::ValidatePinRequest {
                realm: realm.to_string(),
                user: user.to_string(),
                client_ip: actor.client_ip.clone(),
                pin: pin.clone(),
            })
            .await
            .map_err(policy_failure)?;
        if !verdict.valid {
            let error = DeviceError::invalid("pin", verdict.violations.join("; "));
            let mut record = self.audit(actor, "set_pin", &realm, Some(&user), serial.as_str());
            record.result = "denied";
            record.reason = error.audit_reason();
            self.store.audit(record).await?;
            return Err(error);
        }
        let decision = self
            .decide(
                actor,
                policy_pb::Action::SetPin,
                "set_pin",
                &realm,
                Some(&user),
                &token.token_type,
                serial.as_str(),
            )
            .await?;
        let encrypt = decision.settings.otp_pin_encrypt;
        let (serial_text, pin_cipher) = (serial.to_string(), cipher.clone());
        let sealed = self
            .hashing("PIN hashing", move || {
                seal_pin(&pin, encrypt, &pin_cipher, &serial_text)
            })
            .await?
            .map_err(DeviceError::FailedPrecondition)?;
        let audit = self.audit(actor, "set_pin", &realm, Some(&user), serial.as_str());
        let response = |after: &Option<tokens::Model>| {
            token_to_proto(after.as_ref().unwrap_or(&token), Some(user.as_str()))
        };
        let seal = |after: &Option<tokens::Model>| {
            seal_response(
                &cipher,
                key.as_deref().unwrap_or_default(),
                &response(after),
            )
        };
        let outcome = self
            .store
            .change(
                serial.as_str(),
                TokenChange::SetPin(sealed),
                audit,
                key.clone().map(|key| Idempotency { key, seal: &seal }),
            )
            .await?;
        self.respond(key.as_deref(), outcome, |after| response(&after))
    }

    /// Reports a token lost: it stops validating and its owner gets a temporary password
    /// token (length, classes and validity from the policy), whose password is returned once.
    #[tracing::instrument(skip_all, fields(serial = %serial))]
    pub async fn report_lost(
        &self,
        actor: &Actor,
        serial: &Serial,
        request_id: Option<&str>,
    ) -> Result<pb::ReportLostTokenResponse, DeviceError> {
        let key = idempotency_key(actor, "ReportLostToken", request_id);
        if let Some(first) = self.first_response(key.as_deref()).await? {
            return Ok(first);
        }
        let cipher = self.cipher()?.clone();
        let (token, user) = self.existing(serial).await?;
        let realm = Self::realm_of(&token)?;
        let Some(user) = user else {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is not assigned to anyone"
            )));
        };
        let decision = self
            .decide(
                actor,
                policy_pb::Action::LostToken,
                "report_lost_token",
                &realm,
                Some(&user),
                "password",
                serial.as_str(),
            )
            .await?;
        let settings = decision.settings;
        let (replacement_serial, password) = {
            let mut rng = rand::rng();
            let password = random_string(
                &mut rng,
                settings.lost_token_pw_len.max(1) as usize,
                &settings.lost_token_pw_contents,
            );
            (new_serial(TokenKind::Password, &mut rng), password)
        };
        let sealed = {
            let (password, cipher, serial) =
                (password.clone(), cipher.clone(), replacement_serial.clone());
            self.hashing("password hashing", move || {
                seal_pin(&password, false, &cipher, &serial)
            })
            .await?
            .map_err(DeviceError::FailedPrecondition)?
        };
        let now = self.clock.now();
        let (seed_key_id, seed) = cipher
            .encrypt(&[], &replacement_serial)
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        let replacement = tokens::Model {
            serial: replacement_serial.clone(),
            realm: realm.to_string(),
            user_id: None,
            token_type: TokenKind::Password.as_str().to_owned(),
            state: "enabled".to_owned(),
            seed_key_id,
            seed,
            digits: 0,
            period: 0,
            algorithm: HashAlgorithm::Sha1.as_str().to_owned(),
            counter: 0,
            pin_hash: Some(sealed),
            failure_count: 0,
            label: format!("temporary password for {serial}"),
            description: format!("replaces lost token {serial}"),
            create_time: now,
            expire_time: Some(
                now + chrono::Duration::days(i64::from(settings.lost_token_valid_days.max(1))),
            ),
        };
        let audit = self.audit(
            actor,
            "report_lost_token",
            &realm,
            Some(&user),
            serial.as_str(),
        );
        // The password is in the response: a retry's copy is stored sealed.
        let response = |created: &tokens::Model| pb::ReportLostTokenResponse {
            expire_time: created.expire_time.map(enroll_shared::time::to_timestamp),
            token: Some(token_to_proto(created, Some(user.as_str()))),
            password: password.clone(),
        };
        let seal = |created: &tokens::Model| {
            seal_response(
                &cipher,
                key.as_deref().unwrap_or_default(),
                &response(created),
            )
        };
        let outcome = self
            .store
            .replace_lost(
                serial.as_str(),
                replacement,
                audit,
                key.clone().map(|key| Idempotency { key, seal: &seal }),
            )
            .await?;
        self.respond(key.as_deref(), outcome, |created| response(&created))
    }

    /// The first response to a request id used before: the fast path of a retry, before
    /// the policy is asked again. The store checks once more inside the change's
    /// transaction, for retries that race the first request.
    async fn first_response<R: Message + Default>(
        &self,
        key: Option<&str>,
    ) -> Result<Option<R>, DeviceError> {
        let Some(key) = key else {
            return Ok(None);
        };
        match self.store.find_response(key).await? {
            Some(sealed) => open_response(self.cipher()?, key, &sealed).map(Some),
            None => Ok(None),
        }
    }

    /// The outcome of a mutation with an optional request id as the response it returns.
    fn respond<T, R: Message + Default>(
        &self,
        key: Option<&str>,
        outcome: Outcome<T>,
        response: impl FnOnce(T) -> R,
    ) -> Result<R, DeviceError> {
        match outcome {
            Outcome::Done(result) => Ok(response(result)),
            Outcome::Replayed(first) => {
                open_response(self.cipher()?, key.unwrap_or_default(), &first)
            }
        }
    }
}

/// The idempotency key of a request id: per caller (API key name) and RPC.
fn idempotency_key(actor: &Actor, rpc: &str, request_id: Option<&str>) -> Option<String> {
    request_id.map(|id| format!("{}|{rpc}|{id}", actor.name))
}
