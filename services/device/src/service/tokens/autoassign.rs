//! Autoassignment: a user who holds no token and no device takes an unassigned hardware
//! token of the realm's pool by proving they hold it, with two consecutive codes, in a
//! challenge-response a person (and an identity proxy) can follow:
//!
//! 1. `Validate(pass = new PIN + code)`: every well-formed first attempt (a realm whose
//!    policy allows autoassignment, budgets left, a pass ending in a code) answers a
//!    challenge, "enter the next code your token shows", with a transaction id and an
//!    expiry. It is real when the code (inside the validation window) is the code of
//!    exactly one hardware pool token and the new PIN keeps the PIN rules: the token, the
//!    matched step or counter and the new PIN (sealed) are stored. Otherwise it is a decoy,
//!    stored too, alike in shape, expiry, work (one argon2 either way, the policy's PIN
//!    verdict asked either way) and metrics; only the audit event says which.
//! 2. `Validate(pass = same PIN + the token's NEXT code, transaction_id)` from the same
//!    client address assigns the token. The challenge is bound to realm, user and client;
//!    any other pass from that client spends it (single use), an answer to a decoy never
//!    assigns, and it expires after `autoassign_challenge_secs`.
//!
//! Retyping the first pass (as the answer or as a new sign-in, from the same client) shows
//! the same challenge again: it is not a new attempt and spends no autoassignment budget.
//! Plain "wrong pass" without a challenge answers only what does not depend on the pool:
//! autoassignment off or undecidable for the realm, a spent budget, a pass that does not
//! end with six digits, and a transaction id that names no open challenge of this user and
//! client (expired, spent, another client's, made up).
//!
//! A random guess thus needs two codes right, about k*N/10^(2*digits) per attempt for N
//! pool tokens and k codes per token in the window, and every attempt but a retype spends
//! the user's, the client's and the realm's budgets (database counters shared by every
//! replica). The reason of every outcome is only in the audit event.
use super::*;
use crate::domain::audit::AuditRecord;
use crate::domain::challenges::{
    client_binding, first_pass_digest, is_first_pass, is_transaction_id, is_well_formed,
    transaction_id,
};
use crate::domain::lockout::ClientKey;
use crate::domain::otp::matching_factor;
use crate::domain::pins::pin_matches;
use crate::domain::secrets::CipherError;
use crate::domain::tokens::{HashAlgorithm, NEXT_CODE_MESSAGE, PassAttempt, TokenKind, Verdict};
use crate::service::budgets::BudgetKey;
use crate::service::pool_index::Candidate;
use crate::store::autoassign::Assignment;
use crate::store::entities::autoassign_challenges as challenges;
use crate::store::entities::columns::TokenStateColumn;
use crate::store::lockout::Pairs;

/// The answer to every autoassignment that neither challenges nor assigns: a wrong pass.
fn refused() -> Verdict {
    Verdict::Refused {
        reason: "wrong pass",
    }
}

/// How an attempt ended, before it is answered. The `&'static str`s are the outcome the
/// metrics count: a closed set of classes, none of which tells a real challenge from a
/// decoy ("challenged", "retyped" and "confirmation_failed" count both alike; real matches
/// show only once both codes were right). The reason itself is for the audit event only.
enum Outcome {
    Assigned(String),
    /// Refused for this reason, not audited yet, no argon2 run yet.
    Refused(&'static str, String),
    /// Refused; the audit event is written (with the change it goes with) and the argon2
    /// work done.
    Recorded(&'static str),
    /// A challenge opened, or shown again; audited.
    Challenged(&'static str, OpenChallenge),
}

/// What the caller is told of a challenge.
struct OpenChallenge {
    transaction_id: String,
    expire_time: chrono::DateTime<chrono::Utc>,
}

/// The metrics' class of a refusal after both codes were right (a limit, the policy, the
/// token or user changed meanwhile): only reachable through a real challenge answered
/// right, so it tells nothing about first codes.
const CONFIRMED_BUT_REFUSED: &str = "confirmed_but_refused";

/// A first pass, with whom and when it came from.
struct FirstPass<'a> {
    realm: &'a Realm,
    user: &'a UserName,
    pass: &'a str,
    /// The client binding (`client_binding`).
    client: String,
    now: chrono::DateTime<chrono::Utc>,
}

/// A keyed digest could not be made: only when the configured keys are broken.
fn key_error(error: CipherError) -> DeviceError {
    DeviceError::FailedPrecondition(error.to_string())
}

impl Tokens {
    /// Autoassignment for a user who holds no token and no device (the caller checked).
    pub(super) async fn autoassign(
        &self,
        actor: &Actor,
        attempt: &PassAttempt,
    ) -> Result<Verdict, DeviceError> {
        let now = self.clock.now();
        let (realm, user) = (&attempt.realm, &attempt.user);
        let record = self.gate.record(actor, "autoassign", realm, Some(user), "");
        let outcome = self.attempt(actor, attempt, now, &record).await;
        self.metrics.autoassign(match &outcome {
            Ok(Outcome::Assigned(_)) => "assigned",
            Ok(
                Outcome::Refused(class, _)
                | Outcome::Recorded(class)
                | Outcome::Challenged(class, _),
            ) => class,
            Err(_) => "error",
        });
        match outcome? {
            Outcome::Assigned(serial) => {
                // Two consecutive codes from this client: the user is there. It is a known
                // client from now on (others' failures never hold it back), and the proxy
                // gets a device token for it, as after any success.
                let passed = Pairs {
                    realm,
                    user,
                    clients: vec![ClientKey::of(actor.client_ip, &actor.name)],
                    now,
                };
                self.store.mark_passed(&passed).await?;
                let device_token = self
                    .device_tokens
                    .as_ref()
                    .map(|signer| signer.issue(realm, user, now));
                Ok(Verdict::Autoassigned {
                    serial,
                    device_token,
                })
            }
            Outcome::Refused(_, reason) => {
                // A tokenless user's refusal costs one argon2 check like anyone's, so the
                // time taken does not tell whether a user holds tokens.
                self.equalize_timing(&attempt.pass).await?;
                self.gate.audit(record.denied(reason)).await?;
                Ok(refused())
            }
            Outcome::Recorded(_) => Ok(refused()),
            Outcome::Challenged(_, challenge) => Ok(Verdict::Challenged {
                transaction_id: challenge.transaction_id,
                message: NEXT_CODE_MESSAGE,
                expire_time: challenge.expire_time,
            }),
        }
    }

    async fn attempt(
        &self,
        actor: &Actor,
        attempt: &PassAttempt,
        now: chrono::DateTime<chrono::Utc>,
        record: &AuditRecord,
    ) -> Result<Outcome, DeviceError> {
        let (realm, user, pass) = (&attempt.realm, &attempt.user, attempt.pass.as_str());
        let cipher = self.cipher()?.clone();
        let client = client_binding(actor.client_ip);
        let offered = attempt.transaction_id.as_deref();
        // Only this client's challenge can be answered (or spent) by this request: nobody
        // elsewhere can answer a person's challenge, nor cancel it.
        let mut answered = None;
        if let Some(open) = self
            .store
            .pending_challenge(realm, user, &client, now)
            .await?
        {
            let named = offered.is_some_and(|id| is_transaction_id(&cipher, &open.id, id));
            if (offered.is_none() || named)
                && is_first_pass(&cipher, &open.id, &open.pass_digest, pass)
            {
                return self.retyped(open, &cipher, record).await;
            }
            if named {
                answered = Some(open);
            } else {
                // Any other pass from this client spends the challenge: single use.
                self.store.drop_challenge(&open.id).await?;
            }
        }
        // The client first: a flood from one address stops before it writes a row per
        // rotated user name.
        for key in [
            BudgetKey::autoassign_client(&ClientKey::of(actor.client_ip, &actor.name)),
            BudgetKey::autoassign_realm(realm),
            BudgetKey::autoassign_user(realm, user),
        ] {
            if !self.budgets.spend(&key, now).await? {
                if let Some(open) = &answered {
                    self.store.drop_challenge(&open.id).await?;
                }
                return Ok(Outcome::Refused("budget_exhausted", key.describe()));
            }
        }
        match (answered, offered) {
            (Some(open), _) => {
                self.confirm(actor, realm, user, pass, open, now, record)
                    .await
            }
            (None, Some(_)) => Ok(Outcome::Refused(
                "unknown_transaction",
                "the transaction id names no open challenge of this user from this client \
                 (expired, spent, another client's or made up)"
                    .to_owned(),
            )),
            (None, None) => {
                let first = FirstPass {
                    realm,
                    user,
                    pass,
                    client,
                    now,
                };
                self.first_attempt(actor, first, &cipher, record).await
            }
        }
    }

    /// The first pass typed again from the same client: the same challenge, still open. It
    /// is not a new attempt (no budget spent, nothing checked): the person did not see the
    /// token change yet, or signed in again with the code still on its display.
    async fn retyped(
        &self,
        open: challenges::Model,
        cipher: &SeedCipher,
        record: &AuditRecord,
    ) -> Result<Outcome, DeviceError> {
        let mut audit = record
            .clone()
            .denied("the same first code again; the challenge stays open");
        audit.subject = open.serial.clone();
        self.gate.audit(audit).await?;
        Ok(Outcome::Challenged(
            "retyped",
            OpenChallenge {
                transaction_id: transaction_id(cipher, &open.id).map_err(key_error)?,
                expire_time: open.expire_time,
            },
        ))
    }

    /// A first pass: a challenge, real when it proves one pool token, a decoy otherwise;
    /// plain refusals only for what does not depend on the pool (the realm's policy, the
    /// shape of the pass).
    async fn first_attempt(
        &self,
        actor: &Actor,
        first: FirstPass<'_>,
        cipher: &SeedCipher,
        record: &AuditRecord,
    ) -> Result<Outcome, DeviceError> {
        let FirstPass {
            realm,
            user,
            pass,
            client,
            now,
        } = first;
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
        if !is_well_formed(pass) {
            return Ok(Outcome::Refused(
                "malformed",
                "the pass does not end with a six- or eight-digit code".to_owned(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let ttl = chrono::Duration::from_std(self.validation.challenge_ttl())
            .unwrap_or_else(|_| chrono::Duration::minutes(2));
        let mut challenge = challenges::Model {
            pass_digest: first_pass_digest(cipher, &id, pass).map_err(key_error)?,
            id,
            realm: realm.to_string(),
            user_name: user.to_string(),
            serial: String::new(),
            factor: 0,
            pin_hash: String::new(),
            create_time: now,
            expire_time: now + ttl,
            attempts: 0,
            client,
            decoy: true,
        };
        let mut audit = record.clone();
        match self.prove(actor, realm, user, pass, now).await? {
            Ok((candidate, pin_hash)) => {
                audit = audit.denied("first code matched; waiting for the token's next code");
                audit.subject = candidate.serial.clone();
                challenge.serial = candidate.serial;
                challenge.factor = i64::try_from(candidate.factor).unwrap_or(i64::MAX);
                challenge.pin_hash = pin_hash;
                challenge.decoy = false;
            }
            Err(why) => {
                // The argon2 work the real challenge spends sealing the PIN.
                self.equalize_timing(pass).await?;
                audit = audit.denied(format!("decoy challenge: {why}"));
            }
        }
        let answer = OpenChallenge {
            transaction_id: transaction_id(cipher, &challenge.id).map_err(key_error)?,
            expire_time: challenge.expire_time,
        };
        self.store.open_challenge(challenge, audit).await?;
        Ok(Outcome::Challenged("challenged", answer))
    }

    /// The pool token a first pass proves, with the new PIN sealed for it; or why there is
    /// none (the challenge is then a decoy). The policy's PIN verdict is asked for every
    /// well-formed first pass, matched or not, so neither the time taken nor the policy
    /// service's request counts tell a match.
    async fn prove(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        pass: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Result<(Candidate, String), String>, DeviceError> {
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
        // The PIN asked about: the matched token's split, else the one before a six-digit
        // code (a well-formed pass has one).
        let pin = match matches.first() {
            Some((_, pin)) => pin.clone(),
            None => pass
                .get(..pass.len().saturating_sub(6))
                .unwrap_or_default()
                .to_owned(),
        };
        let verdict = self.gate.pin_verdict(actor, realm, user, &pin).await;
        let (candidate, pin) = match matches.len() {
            0 => return Ok(Err("no pool token shows this code".to_owned())),
            1 => matches.remove(0),
            count => return Ok(Err(format!("the code matches {count} pool tokens"))),
        };
        match verdict {
            Ok(verdict) if verdict.valid => {}
            Ok(verdict) => {
                return Ok(Err(format!(
                    "new PIN refused: {}",
                    verdict.violations.join("; ")
                )));
            }
            Err(error) => {
                return Ok(Err(format!("no PIN verdict: {}", error.audit_reason())));
            }
        }
        Ok(match self.seal_pin(&pin, false, &candidate.serial).await {
            Ok(sealed) => Ok((candidate, sealed)),
            Err(error) => Err(format!("new PIN refused: {}", error.audit_reason())),
        })
    }

    /// The answer to an open challenge: for a real one, the same PIN and the token's next
    /// code assign it; anything else, and every answer to a decoy, spends it.
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
                "the challenge was spent by a concurrent attempt".to_owned(),
            ));
        }
        if challenge.decoy {
            // The argon2 work of checking a real answer's PIN.
            self.equalize_timing(pass).await?;
            return self
                .burn(
                    &challenge.id,
                    &audit,
                    "confirmation_failed",
                    "answer to a decoy challenge (no pool token had matched)".to_owned(),
                )
                .await;
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
                self.equalize_timing(pass).await?;
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
                    .burn(&challenge.id, &audit, CONFIRMED_BUT_REFUSED, reason)
                    .await;
            }
            Ok(decision) => decision,
        };
        if let Some(denial) = decision.denials.first() {
            return self
                .burn(
                    &challenge.id,
                    &audit,
                    CONFIRMED_BUT_REFUSED,
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
            Some(refusal) => {
                if let Some(limit) = refusal.limit {
                    self.metrics.limit_hit(limit);
                }
                Ok(Outcome::Recorded(CONFIRMED_BUT_REFUSED))
            }
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
            verify_state: None,
            verify_deadline: None,
            verify_attempts_left: None,
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
