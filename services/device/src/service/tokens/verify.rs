//! VerifyToken: the first code of a token enrolled with a verify step, and the purge of
//! expired enrollments' seeds.
use super::*;
use crate::domain::audit::AuditRecord;
use crate::domain::otp::matching_factor;
use crate::domain::tokens::{HashAlgorithm, TokenKind};
use crate::domain::verify::EnrollmentState;
use crate::store::verify::{Miss, NotPending};

/// How often the purge erases the seeds of expired enrollments (docs/tokens.md states the
/// bound: a seed outlives its window by at most this, plus one purge's run).
pub const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Tokens {
    /// Checks the first code of a verify-pending token: TOTP within one step of the clock,
    /// HOTP within the look-ahead. A match enrolls it (the code is used up); a miss spends
    /// an attempt, the last one fails it and erases the seed.
    #[tracing::instrument(skip_all, fields(serial = %serial, realm = %realm))]
    pub async fn verify(
        &self,
        actor: &Actor,
        realm: &Realm,
        serial: &Serial,
        code: String,
    ) -> Result<Token, DeviceError> {
        self.cipher()?;
        let row = self.existing(serial).await?;
        if row.token.realm != realm.as_str() {
            return Err(DeviceError::NotFound(format!(
                "token `{serial}` in realm `{realm}`"
            )));
        }
        // Asked before the mutation, as for every token mutation (ENROLL: this completes
        // the enrollment).
        self.gate
            .decide(
                actor,
                &PolicyQuestion::token(
                    PolicyAction::Enroll,
                    "verify_token",
                    realm,
                    row.user.as_ref(),
                    &row.token.token_type,
                    serial.as_str(),
                ),
            )
            .await?;
        let now = self.clock.now();
        let audit = self.gate.record(
            actor,
            "verify_token",
            realm,
            row.user.as_ref(),
            serial.as_str(),
        );
        let state = EnrollmentState::of(
            row.token.verify_state.as_deref(),
            row.token.verify_deadline,
            now,
        );
        if state != EnrollmentState::VerifyPending {
            self.gate
                .audit(audit.denied(format!("token is {}", state.as_str())))
                .await?;
            return Err(not_pending(serial, state));
        }
        let user = row.user.clone();
        match self
            .first_code(serial, &row.token, code, None, now, audit)
            .await
        {
            Ok(()) => {}
            Err(FirstCodeError::NotPending(state)) => return Err(not_pending(serial, state)),
            Err(FirstCodeError::Refused(error)) => return Err(error),
        }
        let after = self.existing(serial).await?;
        convert::token(&after.token, user.as_ref(), self.clock.now())
    }

    /// Erases the sealed seeds of verify-pending tokens whose window has ended; returns how
    /// many. Run every [`PURGE_INTERVAL`] by the service (`app`).
    pub async fn purge_expired_seeds(&self) -> Result<u64, DeviceError> {
        let now = self.clock.now();
        let system = Actor {
            name: "enroll-device".to_owned(),
            client_ip: None,
        };
        let audit = |serial: &str, realm: &str| AuditRecord {
            actor: system.name.clone(),
            action: "verify_token_expired",
            realm: realm.to_owned(),
            user: String::new(),
            subject: serial.to_owned(),
            result: crate::domain::audit::OK,
            reason: "verify window ended: seed erased".to_owned(),
            trace_id: String::new(),
            time: now,
            event: None,
        };
        self.store.purge_expired_seeds(now, audit).await
    }

    /// Purges every [`PURGE_INTERVAL`] until `stop` changes.
    pub async fn keep_purging(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(PURGE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
            }
            match self.purge_expired_seeds().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "erased the seeds of expired enrollments"),
                Err(error) => tracing::warn!(%error, "purge of expired enrollments failed"),
            }
        }
    }
}

/// Why a first code did not enroll the token.
pub(super) enum FirstCodeError {
    /// The token was not (or no longer) verify pending: a racing request, or the window.
    NotPending(EnrollmentState),
    /// A wrong code (attempts left, or the last one: failed), or a store failure.
    Refused(DeviceError),
}

impl From<DeviceError> for FirstCodeError {
    fn from(error: DeviceError) -> Self {
        FirstCodeError::Refused(error)
    }
}

impl Tokens {
    /// Checks the first code of the verify-pending `token`: TOTP within one step of the
    /// clock, HOTP within the look-ahead. A match enrolls it (setting `pin_hash` when
    /// given; the code is used up); a miss spends an attempt, the last one fails it and
    /// erases the seed. Each outcome is audited under `audit`.
    pub(super) async fn first_code(
        &self,
        serial: &Serial,
        token: &tokens::Model,
        code: String,
        pin_hash: Option<String>,
        now: chrono::DateTime<chrono::Utc>,
        audit: AuditRecord,
    ) -> Result<(), FirstCodeError> {
        let cipher = self.cipher()?.clone();
        let window = Window {
            totp_steps: 1,
            hotp_look_ahead: self.validation.hotp_look_ahead,
        };
        let token = token.clone();
        let unix_time = now.timestamp().max(0) as u64;
        let factor = self
            .blocking
            .run("first code", move || {
                first_code_factor(&token, &code, &cipher, unix_time, window)
            })
            .await?;
        match factor {
            Some(factor) => {
                if let Err(NotPending(state)) = self
                    .store
                    .verify_passed(serial.as_str(), factor, pin_hash, now, audit)
                    .await?
                {
                    return Err(FirstCodeError::NotPending(state));
                }
                tracing::info!("first code verified: token enrolled");
                Ok(())
            }
            None => match self
                .store
                .verify_missed(serial.as_str(), now, audit)
                .await?
            {
                Err(NotPending(state)) => Err(FirstCodeError::NotPending(state)),
                Ok(Miss::AttemptsLeft(left)) => Err(FirstCodeError::Refused(DeviceError::invalid(
                    "code",
                    format!("wrong first code; {left} attempts left"),
                ))),
                Ok(Miss::Failed) => {
                    tracing::info!("last wrong first code: enrollment failed");
                    Err(FirstCodeError::Refused(DeviceError::FailedPrecondition(
                        format!(
                            "code: wrong, the last attempt allowed: the enrollment of token `{serial}` failed and its seed is erased; enroll a new token"
                        ),
                    )))
                }
            },
        }
    }
}

impl Tokens {
    /// The factor of `code` on `token` within Validate's window (its replay protection
    /// too), or None.
    pub(super) async fn possession_factor(
        &self,
        token: &tokens::Model,
        code: String,
    ) -> Result<Option<i64>, DeviceError> {
        let cipher = self.cipher()?.clone();
        let (token, window) = (token.clone(), self.window());
        let unix_time = self.clock.now().timestamp().max(0) as u64;
        self.blocking
            .run("possession code", move || {
                first_code_factor(&token, &code, &cipher, unix_time, window)
            })
            .await
    }
}

fn not_pending(serial: &Serial, state: EnrollmentState) -> DeviceError {
    DeviceError::FailedPrecondition(format!(
        "token `{serial}` is {}: only a verify-pending token takes a first code",
        state.as_str()
    ))
}

/// The factor (step or counter) `code` is the token's code of, within `window` and never
/// below the token's next unused one.
fn first_code_factor(
    token: &tokens::Model,
    code: &str,
    cipher: &SeedCipher,
    unix_time: u64,
    window: Window,
) -> Option<i64> {
    let parameters = OtpParameters {
        kind: TokenKind::parse(&token.token_type)?,
        digits: u8::try_from(token.digits).ok()?,
        period: u32::try_from(token.period).ok()?,
        algorithm: HashAlgorithm::parse(&token.algorithm)?,
    };
    let seed = cipher
        .decrypt(&token.seed_key_id, &token.seed, &token.serial)
        .ok()?;
    let next_unused = u64::try_from(token.counter).ok()?;
    matching_factor(&parameters, &seed, code, unix_time, next_unused, window)
        .and_then(|factor| i64::try_from(factor).ok())
}
