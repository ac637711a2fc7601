//! Validate: PIN then one-time code on the user's tokens; a user who holds nothing goes to
//! autoassignment (`autoassign`).
use super::*;
use crate::domain::otp::matching_factor;
use crate::domain::pins::pin_matches;
use crate::domain::tokens::{HashAlgorithm, TokenKind, Verdict};
use crate::service::budgets::BudgetKey;

impl Tokens {
    /// Checks `pass` (PIN followed by the one-time code) against the user's usable tokens.
    /// PINs are checked first on every token (argon2 on the blocking pool), so the time taken
    /// does not tell which part of a wrong pass was wrong.
    #[tracing::instrument(skip_all, fields(realm = %realm, user = %user))]
    pub async fn validate(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        pass: String,
    ) -> Result<Verdict, DeviceError> {
        let cipher = self.cipher()?.clone();
        let now = self.clock.now();
        let mut record = self.gate.record(actor, "validate", realm, Some(user), "");
        // One budget per client across users and replicas; running out looks like a miss.
        let budget = BudgetKey::validate_client(&actor.client_ip);
        if !self.budgets.spend(&budget, now).await? {
            self.gate.audit(record.denied(budget.describe())).await?;
            return Ok(Verdict::Refused {
                reason: "wrong pass",
            });
        }
        let candidates = self.store.usable_tokens(realm, user, now).await?;
        if candidates.is_empty() && !self.store.holds_token_or_device(realm, user).await? {
            return self.autoassign(actor, realm, user, pass).await;
        }
        if candidates.is_empty() {
            record.result = "denied";
            record.reason = "no usable token".to_owned();
            self.gate.audit(record).await?;
            return Ok(Verdict::Refused {
                reason: "no usable token",
            });
        }
        let window = Window {
            totp_steps: self.validation.totp_window_steps,
            hotp_look_ahead: self.validation.hotp_look_ahead,
        };
        let unix_time = now.timestamp().max(0) as u64;
        let (checked, serials) = self
            .blocking
            .run("validation", move || {
                let checked = candidates
                    .iter()
                    .find_map(|token| match_token(token, &pass, &cipher, unix_time, window));
                let serials: Vec<String> =
                    candidates.into_iter().map(|token| token.serial).collect();
                (checked, serials)
            })
            .await?;
        match checked {
            Some((serial, factor)) => {
                record.subject = serial.clone();
                if self.store.accept(&serial, factor, record).await? {
                    Ok(Verdict::Accepted { serial })
                } else {
                    Ok(Verdict::Refused {
                        reason: "wrong pass",
                    })
                }
            }
            None => {
                record.result = "denied";
                record.reason = "wrong pass".to_owned();
                record.subject = serials.join(",");
                self.store
                    .record_failure(&serials, self.validation.max_failures, record)
                    .await?;
                Ok(Verdict::Refused {
                    reason: "wrong pass",
                })
            }
        }
    }
}

/// The token's serial and the moving factor to consume, when `pass` matches it.
fn match_token(
    token: &tokens::Model,
    pass: &str,
    cipher: &SeedCipher,
    unix_time: u64,
    window: Window,
) -> Option<(String, i64)> {
    let kind = TokenKind::parse(&token.token_type)?;
    let digits = usize::try_from(token.digits).ok()?;
    if kind == TokenKind::Password {
        let stored = token.pin_hash.as_deref()?;
        return pin_matches(pass, stored, cipher, &token.serial)
            .then(|| (token.serial.clone(), token.counter));
    }
    let split = pass.len().checked_sub(digits)?;
    let (pin, otp) = (pass.get(..split)?, pass.get(split..)?);
    let pin_ok = match token.pin_hash.as_deref() {
        Some(stored) => pin_matches(pin, stored, cipher, &token.serial),
        None => pin.is_empty(),
    };
    if !pin_ok {
        return None;
    }
    let parameters = OtpParameters {
        kind,
        digits: u8::try_from(digits).ok()?,
        period: u32::try_from(token.period).ok()?,
        algorithm: HashAlgorithm::parse(&token.algorithm)?,
    };
    let seed = cipher
        .decrypt(&token.seed_key_id, &token.seed, &token.serial)
        .ok()?;
    let next_unused = u64::try_from(token.counter).ok()?;
    matching_factor(&parameters, &seed, otp, unix_time, next_unused, window)
        .and_then(|factor| i64::try_from(factor).ok())
        .map(|factor| (token.serial.clone(), factor))
}
