//! Token use cases: each mutation asks the policy gate first (fail closed), then changes the
//! database in one transaction with its audit event.
use std::sync::Arc;

use chrono::{DateTime, Utc};

use enroll_shared::paging::{Page, PageRequest};
use enroll_shared::time::SharedClock;

use super::blocking::BlockingPool;
use super::budgets::Budgets;
use super::gate::PolicyGate;
use super::idempotency::{Digest, Idempotent, RequestId, Rpc, respond};
use super::metrics::DeviceMetrics;
use super::pool_index::PoolIndex;
use crate::config::ValidationConfig;
use crate::domain::actor::Actor;
use crate::domain::decision::{Decision, PolicyAction, PolicyQuestion};
use crate::domain::lockout::DeviceTokenSigner;
use crate::domain::names::{Realm, Serial, UserName};
use crate::domain::otp::Window;
use crate::domain::pins::seal_pin;
use crate::domain::random::random_string;
use crate::domain::secrets::SeedCipher;
use crate::domain::tokens::TokenFilter;
use crate::domain::tokens::{
    EnrolledToken, HashAlgorithm, OtpParameters, ProvisioningUri, Token, TokenKind, TokenState,
    base32, new_seed, new_serial, qr_png, render_serial,
};
use crate::domain::verify::PENDING as VERIFY_PENDING;
use crate::error::DeviceError;
use crate::store::convert;
use crate::store::entities::{otp_enrollment_links, tokens};
use crate::store::tokens::{TokenRow, TokenStore};

mod admin;
mod autoassign;
mod client_trust;
mod importing;
mod lost;
mod otp_links;
mod validation;
mod verify;

pub use otp_links::{NO_PENDING_ENROLLMENT, NewOtpLink, UNUSABLE_LINK};

/// A validated EnrollToken request.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub realm: Realm,
    /// None: a software token for the pool.
    pub user: Option<UserName>,
    pub parameters: OtpParameters,
    pub description: String,
    /// Also return the otpauth URI as a QR code PNG.
    pub include_qr_png: bool,
    /// Enroll verify pending: usable only after a first correct code (`VerifyToken`).
    pub verify: bool,
    pub request_id: Option<RequestId>,
}

impl Enrollment {
    /// What a request id is bound to: every parameter of the enrollment.
    fn digest(&self) -> Digest {
        let parameters = &self.parameters;
        Digest::new()
            .text("realm", self.realm.as_str())
            .optional("user", self.user.as_ref().map(UserName::as_str))
            .text("type", parameters.kind.as_str())
            .number("digits", parameters.digits)
            .number("period", parameters.period)
            .text("algorithm", parameters.algorithm.as_str())
            .text("description", &self.description)
            .number("include_qr_png", u8::from(self.include_qr_png))
            .number("verify", u8::from(self.verify))
    }
}

#[derive(Clone)]
pub struct Tokens {
    store: TokenStore,
    gate: PolicyGate,
    cipher: Option<Arc<SeedCipher>>,
    clock: SharedClock,
    validation: ValidationConfig,
    pool_index: PoolIndex,
    /// Attempt budgets of Validate and autoassignment, in the database.
    budgets: Budgets,
    blocking: BlockingPool,
    metrics: DeviceMetrics,
    /// Signs the device tokens a successful Validate returns (none without any key).
    device_tokens: Option<DeviceTokenSigner>,
    /// The enrollment page's base URL: OTP enrollment links point there.
    enrollment_page: String,
}

impl Tokens {
    pub fn new(
        store: TokenStore,
        gate: PolicyGate,
        cipher: Option<Arc<SeedCipher>>,
        clock: SharedClock,
        validation: ValidationConfig,
    ) -> Self {
        let tokens = Self {
            budgets: Budgets::new(store.budgets(), validation.clone()),
            store,
            gate,
            clock,
            validation,
            pool_index: PoolIndex::default(),
            blocking: BlockingPool::default(),
            metrics: DeviceMetrics::none(),
            // Without a key of its own, one derived from the seed key for this purpose only.
            device_tokens: cipher
                .as_deref()
                .and_then(|cipher| cipher.derive_key(DEVICE_TOKEN_KEY_PURPOSE).ok())
                .map(DeviceTokenSigner::new),
            cipher,
            enrollment_page: String::new(),
        };
        // Validate's dummy hash, made at start-up rather than on the first refusal.
        if let (Ok(runtime), Some(_)) = (tokio::runtime::Handle::try_current(), &tokens.cipher) {
            let warming = tokens.clone();
            runtime.spawn(async move {
                if let Err(error) = warming.dummy_hash().await {
                    tracing::warn!(%error, "no dummy PIN hash yet");
                }
            });
        }
        tokens
    }

    /// Signs device tokens with `signer` (the configured `validation.device_token_key`).
    pub fn with_device_token_signer(mut self, signer: DeviceTokenSigner) -> Self {
        self.device_tokens = Some(signer);
        self
    }

    /// OTP enrollment links point at the enrollment page at `base_url`.
    pub fn with_enrollment_page(mut self, base_url: String) -> Self {
        self.enrollment_page = base_url;
        self
    }

    /// Counts limit hits and autoassignment attempts on `metrics`.
    pub fn with_metrics(mut self, metrics: DeviceMetrics) -> Self {
        self.metrics = metrics;
        self
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

    fn cipher(&self) -> Result<&SeedCipher, DeviceError> {
        self.cipher.as_deref().ok_or_else(|| {
            DeviceError::FailedPrecondition(
                "token secrets cannot be stored: configure secrets.seed_keys and secrets.active_seed_key".to_owned(),
            )
        })
    }

    /// The first response to a request id used before.
    pub(super) async fn first_response<R: serde::de::DeserializeOwned>(
        &self,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<Option<R>, DeviceError> {
        match idempotent {
            Some(idempotent) => idempotent.first(
                self.store
                    .find_response(idempotent.key(), self.clock.now())
                    .await?,
            ),
            None => Ok(None),
        }
    }

    /// A PIN (or password) sealed for storage, on the blocking pool.
    async fn seal_pin(
        &self,
        pin: &str,
        encrypt: bool,
        serial: &str,
    ) -> Result<String, DeviceError> {
        let (pin, cipher, serial) = (pin.to_owned(), self.cipher()?.clone(), serial.to_owned());
        self.blocking
            .run("PIN hashing", move || {
                seal_pin(&pin, encrypt, &cipher, &serial)
            })
            .await?
            .map_err(DeviceError::FailedPrecondition)
    }

    /// Enrolls a TOTP/HOTP token: the secret (and a random PIN when the policy asks for one)
    /// is returned once; a retry with the same request id returns the same response.
    #[tracing::instrument(skip_all, fields(realm = %enrollment.realm))]
    pub async fn enroll(
        &self,
        actor: &Actor,
        enrollment: Enrollment,
    ) -> Result<EnrolledToken, DeviceError> {
        let cipher = self.cipher()?;
        let idempotent = Idempotent::new(
            actor,
            Rpc::EnrollToken,
            enrollment.request_id.as_ref(),
            enrollment.digest(),
            Some(cipher),
        )?;
        if let Some(first) = self.first_response(idempotent.as_ref()).await? {
            return Ok(first);
        }
        let parameters = enrollment.parameters;
        let token_type = parameters.kind.as_str();
        let decision = self
            .gate
            .decide(
                actor,
                &PolicyQuestion::token(
                    PolicyAction::Enroll,
                    "enroll_token",
                    &enrollment.realm,
                    enrollment.user.as_ref(),
                    token_type,
                    "",
                ),
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
            Some(pin) => Some(
                self.seal_pin(pin, settings.otp_pin_encrypt, &serial)
                    .await?,
            ),
            None => None,
        };
        let now = self.clock.now();
        // Verify pending: the window and attempts the policy says now are stored with the
        // token, so a later policy change does not move its deadline.
        let verify = enrollment.verify.then(|| {
            let window = chrono::Duration::minutes(i64::from(settings.otp_verify_window_minutes));
            (
                now.checked_add_signed(window).unwrap_or(now),
                i32::try_from(settings.otp_verify_attempts).unwrap_or(1),
            )
        });
        let row = tokens::Model {
            serial: serial.clone(),
            realm: enrollment.realm.to_string(),
            user_id: None,
            token_type: token_type.to_owned(),
            state: TokenState::Enabled.into(),
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
            locked_until: None,
            replaced_by: None,
            // Its seed is returned to the caller: never autoassignable.
            hardware: false,
            verify_state: verify.map(|_| VERIFY_PENDING.to_owned()),
            verify_deadline: verify.map(|(deadline, _)| deadline),
            verify_attempts_left: verify.map(|(_, attempts)| attempts),
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
        let response = EnrolledToken {
            token: convert::token(&row, enrollment.user.as_ref(), now)?,
            otpauth_uri,
            secret_base32: base32(&seed),
            pin: pin.unwrap_or_default(),
            qr_png,
        };
        let sealed = idempotent
            .as_ref()
            .map(|idempotent| idempotent.seal(&response))
            .transpose()?;
        let seal = move |_: &()| {
            sealed
                .clone()
                .ok_or_else(|| DeviceError::Unavailable("no sealed response".to_owned()))
        };
        let mut audit = self.gate.record(
            actor,
            "enroll_token",
            &enrollment.realm,
            enrollment.user.as_ref(),
            &serial,
        );
        if let Some((deadline, attempts)) = verify {
            audit = audit
                .with_reason(format!(
                    "verify pending until {deadline}, {attempts} wrong codes allowed"
                ))
                .with_event(crate::domain::events::EventKind::TokenEnrollmentPending);
        }
        let outcome = self.metrics.limits(
            self.store
                .enroll(
                    &enrollment.realm,
                    enrollment.user.as_ref(),
                    row,
                    &limits,
                    audit,
                    idempotent
                        .as_ref()
                        .map(|idempotent| idempotent.for_store(&seal)),
                )
                .await,
        )?;
        tracing::info!(serial = %serial, "token enrolled");
        respond(idempotent.as_ref(), outcome, |()| Ok(response))
    }

    /// The token and its owner, or NOT_FOUND.
    async fn existing(&self, serial: &Serial) -> Result<TokenRow, DeviceError> {
        self.store
            .get(serial.as_str())
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("token `{serial}`")))
    }

    pub async fn get(&self, serial: &Serial) -> Result<Token, DeviceError> {
        let row = self.existing(serial).await?;
        convert::token(&row.token, row.user.as_ref(), self.clock.now())
    }

    /// A page of tokens ordered by serial.
    pub async fn list(
        &self,
        filter: &TokenFilter,
        page: &PageRequest<String>,
    ) -> Result<Page<Token>, DeviceError> {
        let rows = self
            .store
            .list(
                filter,
                page.after.as_deref(),
                page.fetch(),
                self.clock.now(),
            )
            .await?;
        Ok(Page::cut(rows, page.size, |token| token.serial.clone()))
    }
}

/// What the device-token key is derived for when none is configured.
const DEVICE_TOKEN_KEY_PURPOSE: &[u8] = b"enroll-device device token v1";

fn realm_of(token: &tokens::Model) -> Result<Realm, DeviceError> {
    Realm::parse(&token.realm)
        .map_err(|problem| DeviceError::corrupt(format!("token `{}`", token.serial), problem))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sea_orm::DatabaseConnection;

    use super::*;
    use crate::domain::decision::PolicyError;
    use crate::domain::tokens::{HashAlgorithm, TokenKind};
    use crate::service::gate::fakes::{self, MemoryAudit};

    /// Token use cases over a fake policy service, a memory audit log and no database at
    /// all (a store that is never connected: any write would fail the test).
    fn tokens(
        answer: Result<crate::domain::decision::Decision, PolicyError>,
    ) -> (Tokens, Arc<MemoryAudit>) {
        let (gate, audit) = fakes::gate(answer);
        let cipher = SeedCipher::new([("k1", "ab".repeat(32).as_str())], "k1").unwrap();
        let tokens = Tokens::new(
            TokenStore::new(DatabaseConnection::default(), Default::default()),
            gate,
            Some(Arc::new(cipher)),
            Arc::new(enroll_shared::time::SystemClock),
            ValidationConfig::default(),
        );
        (tokens, audit)
    }

    fn enrollment() -> Enrollment {
        Enrollment {
            realm: Realm::parse("acme").unwrap(),
            user: Some(UserName::parse("alice").unwrap()),
            parameters: OtpParameters::new(TokenKind::Totp, 6, 30, HashAlgorithm::Sha1).unwrap(),
            description: String::new(),
            include_qr_png: false,
            verify: false,
            request_id: None,
        }
    }

    fn console() -> Actor {
        Actor {
            name: "console".to_owned(),
            client_ip: None,
        }
    }

    #[tokio::test]
    async fn enrollment_fails_closed_without_a_decision() {
        let (tokens, audit) = tokens(Err(PolicyError::Unreachable("timeout".into())));
        let error = tokens.enroll(&console(), enrollment()).await.unwrap_err();
        assert!(matches!(
            error,
            DeviceError::Policy(PolicyError::Unreachable(_))
        ));
        assert!(audit.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_denied_enrollment_is_audited_and_writes_no_token() {
        let (tokens, audit) = tokens(Ok(fakes::denial("TOKEN_TYPE_NOT_ALLOWED")));
        let error = tokens.enroll(&console(), enrollment()).await.unwrap_err();
        assert!(matches!(error, DeviceError::Denied { .. }));
        let records = audit.0.lock().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].action, records[0].result),
            ("enroll_token", "denied")
        );
    }
}
