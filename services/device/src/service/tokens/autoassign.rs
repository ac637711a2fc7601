//! Autoassignment: a user who holds no token and no device takes an unassigned hardware
//! token of the realm's pool by proving they hold it, with two consecutive codes.
//!
//! 1. `Validate(pass = new PIN + code)`: when the code (inside the validation window) is
//!    the code of exactly one hardware pool token, a confirmation is stored for the user
//!    (token, matched step or counter, the new PIN sealed, two minutes to live). Nothing is
//!    assigned and the answer is the ordinary refusal.
//! 2. The user's next `Validate(pass = same PIN + the token's NEXT code)` (TOTP: the step
//!    after the matched one; HOTP: the counter after it) assigns the token. Any other pass
//!    spends the confirmation: it is single-use, bound to the realm and user, and expires.
//!
//! A random guess thus needs two codes right, about k*N/10^(2*digits) per attempt for N
//! pool tokens and k codes per token in the window, and every attempt spends the user's,
//! the client's and the realm's budgets (database counters shared by every replica). Every
//! way an attempt fails (no match, several matches, disabled by policy, PIN rules broken,
//! budget exhausted, confirmation pending, wrong confirming code, a limit) gets the same
//! answer as a wrong pass; the reason is only in the audit event.
use super::*;
use crate::domain::audit::AuditRecord;
use crate::domain::otp::matching_factor;
use crate::domain::pins::pin_matches;
use crate::domain::tokens::{HashAlgorithm, TokenKind, Verdict};
use crate::service::budgets::BudgetKey;
use crate::service::pool_index::Candidate;
use crate::store::autoassign::Assignment;
use crate::store::entities::autoassign_challenges as challenges;
use crate::store::entities::columns::TokenStateColumn;

/// The answer to every autoassignment that does not assign: the same as a wrong pass.
fn refused() -> Verdict {
    Verdict::Refused {
        reason: "wrong pass",
    }
}

/// How an attempt ended, before it is answered. The `&'static str`s are the outcome the
/// metrics count (a closed set of classes; the reason itself is for the audit event only).
enum Outcome {
    Assigned(String),
    /// Refused for this reason, not audited yet.
    Refused(&'static str, String),
    /// Refused (or a confirmation opened), and the audit event is already written (with
    /// the change it goes with).
    Recorded(&'static str),
}

impl Tokens {
    /// Autoassignment for a user who holds no token and no device (the caller checked).
    pub(super) async fn autoassign(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        pass: String,
    ) -> Result<Verdict, DeviceError> {
        let now = self.clock.now();
        let record = self.gate.record(actor, "autoassign", realm, Some(user), "");
        let outcome = self.attempt(actor, realm, user, &pass, now, &record).await;
        self.metrics.autoassign(match &outcome {
            Ok(Outcome::Assigned(_)) => "assigned",
            Ok(Outcome::Refused(class, _) | Outcome::Recorded(class)) => class,
            Err(_) => "error",
        });
        match outcome? {
            Outcome::Assigned(serial) => Ok(Verdict::Autoassigned { serial }),
            Outcome::Refused(_, reason) => {
                // A tokenless user's refusal costs one argon2 check like anyone's, so the
                // time taken does not tell whether a user holds tokens.
                self.equalize_timing(&pass).await?;
                self.gate.audit(record.denied(reason)).await?;
                Ok(refused())
            }
            Outcome::Recorded(_) => Ok(refused()),
        }
    }

    async fn attempt(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        pass: &str,
        now: chrono::DateTime<chrono::Utc>,
        record: &AuditRecord,
    ) -> Result<Outcome, DeviceError> {
        // The client first: a flood from one address stops before it writes a row per
        // rotated user name.
        for key in [
            BudgetKey::autoassign_client(actor.client_ip),
            BudgetKey::autoassign_realm(realm),
            BudgetKey::autoassign_user(realm, user),
        ] {
            if !self.budgets.spend(&key, now).await? {
                return Ok(Outcome::Refused("budget_exhausted", key.describe()));
            }
        }
        if let Some(challenge) = self.store.pending_challenge(realm, user, now).await? {
            return self
                .confirm(actor, realm, user, pass, challenge, now, record)
                .await;
        }
        // The policy before the index: a realm without autoassignment is never indexed.
        let question = PolicyQuestion::token(
            PolicyAction::Autoassign,
            "autoassign",
            realm,
            Some(user),
            TokenKind::Totp.as_str(),
            "",
        );
        match self.gate.evaluate_read(actor, &question).await {
            Err(reason) => return Ok(Outcome::Refused("policy_unavailable", reason)),
            Ok(decision) if !decision.settings.autoassignment => {
                return Ok(Outcome::Refused(
                    "disabled_by_policy",
                    format!(
                        "AUTOASSIGNMENT_DISABLED (policy `{}`)",
                        decision.decided("autoassignment")
                    ),
                ));
            }
            Ok(_) => {}
        }
        self.first_code(actor, realm, user, pass, now, record).await
    }

    /// A first code: opens a confirmation when it is the code of exactly one pool token.
    async fn first_code(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        pass: &str,
        now: chrono::DateTime<chrono::Utc>,
        record: &AuditRecord,
    ) -> Result<Outcome, DeviceError> {
        let cipher = self.cipher()?.clone();
        let unix_time = now.timestamp().max(0) as u64;
        let mut matches: Vec<(Candidate, String)> = Vec::new();
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
        matches.sort_by(|a, b| a.0.serial.cmp(&b.0.serial));
        matches.dedup_by(|a, b| a.0.serial == b.0.serial);
        let (candidate, pin) = match matches.len() {
            0 => {
                return Ok(Outcome::Refused(
                    "no_match",
                    "no pool token shows this code".to_owned(),
                ));
            }
            1 => matches.remove(0),
            count => {
                return Ok(Outcome::Refused(
                    "ambiguous_match",
                    format!("the code matches {count} pool tokens"),
                ));
            }
        };
        // After a match every failure must still look like a miss: an error here would
        // tell the caller that the code was right.
        match self.gate.pin_verdict(actor, realm, user, &pin).await {
            Ok(verdict) if verdict.valid => {}
            Ok(verdict) => {
                return Ok(Outcome::Refused(
                    "pin_refused",
                    format!("new PIN refused: {}", verdict.violations.join("; ")),
                ));
            }
            Err(error) => {
                return Ok(Outcome::Refused(
                    "policy_unavailable",
                    format!("no PIN verdict: {}", error.audit_reason()),
                ));
            }
        }
        let pin_hash = match self.seal_pin(&pin, false, &candidate.serial).await {
            Ok(sealed) => sealed,
            Err(error) => return Ok(Outcome::Refused("pin_refused", error.audit_reason())),
        };
        let ttl = chrono::Duration::from_std(self.validation.challenge_ttl())
            .unwrap_or_else(|_| chrono::Duration::minutes(2));
        let challenge = challenges::Model {
            id: uuid::Uuid::new_v4().to_string(),
            realm: realm.to_string(),
            user_name: user.to_string(),
            serial: candidate.serial.clone(),
            factor: i64::try_from(candidate.factor).unwrap_or(i64::MAX),
            pin_hash,
            create_time: now,
            expire_time: now + ttl,
            attempts: 0,
        };
        let mut audit = record
            .clone()
            .denied("first code matched; waiting for the token's next code");
        audit.subject = candidate.serial;
        self.store.open_challenge(challenge, audit).await?;
        Ok(Outcome::Recorded("confirmation_pending"))
    }

    /// The attempt after a matched first code: the same PIN and the token's next code
    /// assign it; anything else spends the confirmation.
    #[allow(clippy::too_many_arguments)]
    async fn confirm(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        pass: &str,
        challenge: challenges::Model,
        now: chrono::DateTime<chrono::Utc>,
        record: &AuditRecord,
    ) -> Result<Outcome, DeviceError> {
        let mut audit = record.clone();
        audit.subject = challenge.serial.clone();
        if !self.store.claim_challenge(&challenge.id, now).await? {
            return Ok(Outcome::Refused(
                "confirmation_failed",
                "the confirmation was spent by a concurrent attempt".to_owned(),
            ));
        }
        let token = match self.store.get(&challenge.serial).await? {
            Some(row)
                if row.user.is_none()
                    && row.token.hardware
                    && row.token.realm == realm.as_str()
                    && row.token.state == TokenStateColumn::Enabled =>
            {
                row.token
            }
            _ => {
                return self
                    .burn(
                        &challenge.id,
                        &audit,
                        "confirmation_failed",
                        "the token left the pool".to_owned(),
                    )
                    .await;
            }
        };
        let cipher = self.cipher()?.clone();
        let (window, unix_time) = (self.window(), now.timestamp().max(0) as u64);
        let (pass, sealed_pin, matched) = (
            pass.to_owned(),
            challenge.pin_hash.clone(),
            challenge.factor,
        );
        let kind = TokenKind::parse(&token.token_type);
        let confirmed = self
            .blocking
            .run("autoassignment confirmation", move || {
                confirming_factor(
                    &token,
                    &sealed_pin,
                    &pass,
                    &cipher,
                    unix_time,
                    window,
                    matched,
                )
            })
            .await?;
        let (Some(factor), Some(kind)) = (confirmed, kind) else {
            return self
                .burn(
                    &challenge.id,
                    &audit,
                    "confirmation_failed",
                    "wrong PIN or not the token's next code".to_owned(),
                )
                .await;
        };
        let question = PolicyQuestion::token(
            PolicyAction::Autoassign,
            "autoassign",
            realm,
            Some(user),
            kind.as_str(),
            &challenge.serial,
        );
        let decision = match self.gate.evaluate_read(actor, &question).await {
            Err(reason) => {
                return self
                    .burn(&challenge.id, &audit, "policy_unavailable", reason)
                    .await;
            }
            Ok(decision) => decision,
        };
        if let Some(denial) = decision.denials.first() {
            return self
                .burn(
                    &challenge.id,
                    &audit,
                    "policy_denied",
                    format!("{} (policy `{}`)", denial.code, denial.policy),
                )
                .await;
        }
        let assignment = Assignment {
            realm,
            user,
            challenge_id: &challenge.id,
            serial: &challenge.serial,
            factor,
            pin_hash: challenge.pin_hash.clone(),
            limits: &decision.limits(),
        };
        match self.store.autoassign(assignment, audit.clone()).await? {
            None => {
                self.pool_index.invalidate(realm);
                tracing::info!(serial = %challenge.serial, "pool token autoassigned");
                Ok(Outcome::Assigned(challenge.serial))
            }
            Some(refusal) => Ok(Outcome::Recorded(match refusal.limit {
                Some(limit) => {
                    self.metrics.limit_hit(limit);
                    "limit_reached"
                }
                None => "no_longer_eligible",
            })),
        }
    }

    /// Deletes a spent confirmation, audited with why it failed.
    async fn burn(
        &self,
        id: &str,
        audit: &AuditRecord,
        class: &'static str,
        reason: String,
    ) -> Result<Outcome, DeviceError> {
        self.store
            .burn_challenge(id, audit.clone().denied(reason))
            .await?;
        Ok(Outcome::Recorded(class))
    }
}

/// The confirming code's moving factor, when `pass` is the PIN sealed in the confirmation
/// followed by the code of exactly the factor after `matched` (inside the validation window
/// for TOTP) and that factor is unused. PIN and code are both always checked.
fn confirming_factor(
    token: &tokens::Model,
    sealed_pin: &str,
    pass: &str,
    cipher: &SeedCipher,
    unix_time: u64,
    window: Window,
    matched: i64,
) -> Option<i64> {
    let kind = TokenKind::parse(&token.token_type)?;
    let parameters = OtpParameters {
        kind,
        digits: u8::try_from(token.digits).ok()?,
        period: u32::try_from(token.period).ok()?,
        algorithm: HashAlgorithm::parse(&token.algorithm)?,
    };
    let split = pass.len().checked_sub(usize::from(parameters.digits))?;
    let (pin, otp) = (pass.get(..split)?, pass.get(split..)?);
    let next = u64::try_from(matched.checked_add(1)?).ok()?;
    let unused = u64::try_from(token.counter).ok()? <= next;
    let seed = cipher
        .decrypt(&token.seed_key_id, &token.seed, &token.serial)
        .ok()?;
    let pin_ok = pin_matches(pin, sealed_pin, cipher, &token.serial);
    // Searching from `next` finds `next` itself first when its code is `otp`: a later
    // factor (the user waited too long, or skipped a code) is not the next code.
    let code_ok = matching_factor(&parameters, &seed, otp, unix_time, next, window) == Some(next);
    (pin_ok && code_ok && unused)
        .then(|| i64::try_from(next).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::otp::code;
    use crate::domain::pins::seal_pin;

    const SEED: &[u8] = b"12345678901234567890";

    fn cipher() -> SeedCipher {
        SeedCipher::new([("k1", "ab".repeat(32).as_str())], "k1").unwrap()
    }

    fn pool_token(kind: TokenKind, counter: i64) -> (tokens::Model, OtpParameters) {
        let cipher = cipher();
        let (seed_key_id, seed) = cipher.encrypt(SEED, "HW1").unwrap();
        let period = if kind == TokenKind::Totp { 30 } else { 0 };
        let parameters = OtpParameters::new(kind, 6, period, HashAlgorithm::Sha1).unwrap();
        let token = tokens::Model {
            serial: "HW1".to_owned(),
            realm: "corp".to_owned(),
            user_id: None,
            token_type: kind.as_str().to_owned(),
            state: TokenState::Enabled.into(),
            seed_key_id,
            seed,
            digits: 6,
            period: period as i32,
            algorithm: HashAlgorithm::Sha1.as_str().to_owned(),
            counter,
            pin_hash: None,
            failure_count: 0,
            label: String::new(),
            description: "imported".to_owned(),
            create_time: chrono::Utc::now(),
            expire_time: None,
            hardware: true,
            locked_until: None,
            replaced_by: None,
        };
        (token, parameters)
    }

    const WINDOW: Window = Window {
        totp_steps: 1,
        hotp_look_ahead: 10,
    };

    #[test]
    fn only_the_next_hotp_code_with_the_same_pin_confirms() {
        let (token, parameters) = pool_token(TokenKind::Hotp, 0);
        let cipher = cipher();
        let sealed = seal_pin("5555", false, &cipher, "HW1").unwrap();
        let pass = |pin: &str, counter: u64| format!("{pin}{}", code(&parameters, SEED, counter));
        let check = |pass: &str| confirming_factor(&token, &sealed, pass, &cipher, 0, WINDOW, 3);
        assert_eq!(check(&pass("5555", 4)), Some(4));
        assert_eq!(check(&pass("5555", 3)), None, "the matched code again");
        assert_eq!(check(&pass("5555", 5)), None, "a code skipped");
        assert_eq!(check(&pass("6666", 4)), None, "another PIN");
        let (used, _) = pool_token(TokenKind::Hotp, 5);
        assert_eq!(
            confirming_factor(&used, &sealed, &pass("5555", 4), &cipher, 0, WINDOW, 3),
            None,
            "a used counter"
        );
    }

    #[test]
    fn the_next_totp_step_confirms_only_inside_the_window() {
        let (token, parameters) = pool_token(TokenKind::Totp, 0);
        let cipher = cipher();
        let sealed = seal_pin("5555", false, &cipher, "HW1").unwrap();
        let step = 60_000_000u64;
        let pass = format!("5555{}", code(&parameters, SEED, step + 1));
        let at = |unix_time: u64| {
            confirming_factor(
                &token,
                &sealed,
                &pass,
                &cipher,
                unix_time,
                WINDOW,
                step as i64,
            )
        };
        assert_eq!(at((step + 1) * 30), Some(step as i64 + 1));
        assert_eq!(at(step * 30), Some(step as i64 + 1), "one step of drift");
        assert_eq!(at((step + 3) * 30), None, "too late");
    }
}
