//! Validate: PIN then one-time code on the user's tokens, and autoassignment of a pool
//! token to a user who has none.
use super::*;
use crate::domain::otp::matching_factor;
use crate::domain::pins::pin_matches;
use crate::domain::tokens::{HashAlgorithm, TokenKind, Verdict};

impl Tokens {
    /// Autoassignment: a user without any token sends a new PIN followed by the code of a
    /// pool token; when exactly one pool token of the realm shows that code and the policy
    /// allows it, the token becomes the user's with that PIN.
    async fn autoassign(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        pass: String,
    ) -> Result<Verdict, DeviceError> {
        let now = self.clock.now();
        let user_key = format!("{realm}/{user}");
        if !self.user_attempts.allow(&user_key, now) {
            return Err(DeviceError::RateLimited(format!(
                "too many autoassignment attempts for this user (at most {} per minute)",
                self.validation.autoassign_attempts_per_user
            )));
        }
        if !actor.client_ip.is_empty() && !self.client_attempts.allow(&actor.client_ip, now) {
            return Err(DeviceError::RateLimited(format!(
                "too many autoassignment attempts from this client (at most {} per minute)",
                self.validation.autoassign_attempts_per_client
            )));
        }
        let cipher = self.cipher()?.clone();
        let unix_time = self.clock.now().timestamp().max(0) as u64;
        let mut matches = Vec::new();
        for digits in [6usize, 8] {
            let Some(split) = pass.len().checked_sub(digits) else {
                continue;
            };
            let (Some(pin), Some(otp)) = (pass.get(..split), pass.get(split..)) else {
                continue;
            };
            let found = self
                .pool_index
                .lookup(&self.store, &cipher, realm, otp, unix_time, self.window())
                .await?;
            matches.extend(
                found
                    .into_iter()
                    .filter(|candidate| usize::from(candidate.digits) == digits)
                    .map(|candidate| (candidate, pin.to_owned())),
            );
        }
        matches.dedup_by(|a, b| a.0.serial == b.0.serial);
        let mut record = self.gate.record(actor, "autoassign", realm, Some(user), "");
        let (candidate, pin) = match matches.len() {
            1 => matches.remove(0),
            count => {
                let reason = if count == 0 {
                    "wrong pass"
                } else {
                    "the code matches more than one pool token"
                };
                record.result = "denied";
                record.reason = reason.to_owned();
                self.gate.audit(record).await?;
                return Ok(Verdict::Refused { reason });
            }
        };
        // The index knows the token's type: no read here (the assigning transaction checks
        // that the token is still in the pool).
        self.gate
            .decide(
                actor,
                &PolicyQuestion::token(
                    PolicyAction::Autoassign,
                    "autoassign",
                    realm,
                    Some(user),
                    candidate.kind.as_str(),
                    &candidate.serial,
                ),
            )
            .await?;
        let verdict = self.gate.pin_verdict(actor, realm, user, &pin).await?;
        if !verdict.valid {
            record.result = "denied";
            record.reason = format!("new PIN refused: {}", verdict.violations.join("; "));
            self.gate.audit(record).await?;
            return Ok(Verdict::Refused {
                reason: "the new PIN breaks the PIN rules",
            });
        }
        let pin_hash = self.seal_pin(&pin, false, &candidate.serial).await?;
        record.subject = candidate.serial.clone();
        let factor = i64::try_from(candidate.factor).unwrap_or(i64::MAX);
        if self
            .store
            .autoassign(realm, user, &candidate.serial, factor, pin_hash, record)
            .await?
        {
            Ok(Verdict::Autoassigned {
                serial: candidate.serial,
            })
        } else {
            Ok(Verdict::Refused {
                reason: "wrong pass",
            })
        }
    }

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
        let candidates = self.store.usable_tokens(realm, user, now).await?;
        let mut record = self.gate.record(actor, "validate", realm, Some(user), "");
        if candidates.is_empty() && !self.store.holds_tokens(realm, user).await? {
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
