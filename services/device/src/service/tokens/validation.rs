//! Validate: PIN then one-time code on the user's tokens; a user who holds nothing goes to
//! autoassignment (`autoassign`).
use super::*;
use crate::domain::otp::matching_factor;
use crate::domain::pins::pin_matches;
use crate::domain::tokens::{HashAlgorithm, PassAttempt, TokenKind, Verdict};
use crate::service::budgets::BudgetKey;
use crate::store::lockout::Pairs;

impl Tokens {
    /// Checks `pass` (PIN followed by the one-time code) against the user's usable tokens.
    /// PINs are checked first on every token (argon2 on the blocking pool), so the time taken
    /// does not tell which part of a wrong pass was wrong. Failures slow the (user, client)
    /// pair that made them; unknown clients also spend the user's and the realm's failure
    /// budgets, which never hold back a client the user passed from (`client_trust`).
    #[tracing::instrument(skip_all, fields(realm = %attempt.realm, user = %attempt.user))]
    pub async fn validate(
        &self,
        actor: &Actor,
        attempt: &PassAttempt,
    ) -> Result<Verdict, DeviceError> {
        let (realm, user, pass) = (&attempt.realm, &attempt.user, attempt.pass.clone());
        let cipher = self.cipher()?.clone();
        let now = self.clock.now();
        let mut record = self.gate.record(actor, "validate", realm, Some(user), "");
        // Required before anything is spent: a proxy that forgets the address is a bug to
        // surface, not one client whose budget every user's calls would share.
        let client = self.client_key(actor)?;
        // One budget per client across users and replicas; running out looks like a miss.
        let budget = BudgetKey::validate_client(&client);
        if !self.budgets.spend(&budget, now).await? {
            self.gate.audit(record.denied(budget.describe())).await?;
            return Ok(Verdict::Refused {
                reason: "wrong pass",
            });
        }
        let candidates = self.store.usable_tokens(realm, user, now).await?;
        if candidates.is_empty() && !self.store.holds_token_or_device(realm, user).await? {
            return self.autoassign(actor, attempt).await;
        }
        let trust = self.client_trust(actor, attempt, now).await?;
        if !candidates.is_empty()
            && let Some(reason) = self.held_back(attempt, &trust, now).await?
        {
            // The same argon2 work and answer as a wrong pass; no failure is counted.
            self.equalize_timing(&pass).await?;
            self.gate.audit(record.denied(reason)).await?;
            return Ok(Verdict::Refused { reason: WRONG_PASS });
        }
        // Every check does the same work: PINs against argon2 hashes, or one verification
        // against the dummy hash when no real PIN was checked (no usable token, PIN-less
        // tokens), so the time taken does not tell a user without usable tokens apart.
        let dummy = self.dummy_hash().await?;
        let window = self.window();
        let unix_time = now.timestamp().max(0) as u64;
        let (checked, serials) = self
            .blocking
            .run("validation", move || {
                let checked = check_pass(&candidates, &pass, &cipher, unix_time, window, &dummy);
                let serials: Vec<String> =
                    candidates.into_iter().map(|token| token.serial).collect();
                (checked.matched, serials)
            })
            .await?;
        if serials.is_empty() {
            // Disabled, lost or expired: the answer of a wrong pass, the real reason in the
            // audit trail only; no failure is counted.
            record.result = "denied";
            record.reason = self.store.why_unusable(realm, user, now).await?;
            self.gate.audit(record).await?;
            return Ok(Verdict::Refused { reason: WRONG_PASS });
        }
        match checked {
            Some((serial, factor)) => {
                record.subject = serial.clone();
                let passed = Pairs {
                    realm,
                    user,
                    clients: trust.passed(),
                    now,
                };
                if self.store.accept(&serial, factor, &passed, record).await? {
                    let device_token = self
                        .device_tokens
                        .as_ref()
                        .map(|signer| signer.issue(realm, user, now));
                    Ok(Verdict::Accepted {
                        serial,
                        device_token,
                    })
                } else {
                    Ok(Verdict::Refused { reason: WRONG_PASS })
                }
            }
            None => {
                self.charge_failure(attempt, &trust, now).await?;
                record.result = "denied";
                record.reason = format!("{WRONG_PASS} ({})", trust.describe());
                record.subject = serials.join(",");
                let config = &self.validation;
                let failed = Pairs {
                    realm,
                    user,
                    clients: vec![trust.pair.clone()],
                    now,
                };
                let backoff = |failures: u32| backoff_until(now, config.backoff(failures));
                self.store
                    .record_failure(&serials, &failed, backoff, record)
                    .await?;
                Ok(Verdict::Refused { reason: WRONG_PASS })
            }
        }
    }

    /// The argon2id hash a pass is verified against when no real PIN is checked, made once
    /// per process on the blocking pool (`Tokens::new` starts it).
    pub(super) async fn dummy_hash(&self) -> Result<Arc<str>, DeviceError> {
        DUMMY_HASH
            .get_or_try_init(|| async {
                let cipher = self.cipher()?.clone();
                self.blocking
                    .run("dummy PIN hash", move || {
                        seal_pin(DUMMY_PIN, false, &cipher, DUMMY_SERIAL)
                    })
                    .await?
                    .map(Arc::from)
                    .map_err(DeviceError::FailedPrecondition)
            })
            .await
            .cloned()
    }

    /// The work of one PIN check, against the dummy hash: for a refusal that checks no
    /// real PIN (a user without any token), so its time does not tell.
    pub async fn equalize_timing(&self, pass: &str) -> Result<(), DeviceError> {
        let dummy = self.dummy_hash().await?;
        let (pass, cipher) = (pass.to_owned(), self.cipher()?.clone());
        self.blocking
            .run("timing equalizer", move || {
                std::hint::black_box(pin_matches(&pass, &dummy, &cipher, DUMMY_SERIAL));
            })
            .await
    }
}

/// Every refusal of Validate answers this, whatever the reason (the audit event has it).
pub(super) const WRONG_PASS: &str = "wrong pass";

/// What the dummy hash hashes: never a PIN anyone holds (the verification's result is
/// ignored anyway).
const DUMMY_PIN: &str = "no token has this PIN";
const DUMMY_SERIAL: &str = "DUMMY";

static DUMMY_HASH: tokio::sync::OnceCell<Arc<str>> = tokio::sync::OnceCell::const_new();

/// The longest back-off stored, whatever the configuration says (a date the database
/// can hold, and a failure must never come out as no back-off at all).
const LONGEST_BACKOFF: chrono::Duration = chrono::Duration::days(30);

/// When a back-off of `backoff` from `now` ends; None for no back-off.
fn backoff_until(
    now: chrono::DateTime<chrono::Utc>,
    backoff: std::time::Duration,
) -> Option<chrono::DateTime<chrono::Utc>> {
    if backoff.is_zero() {
        return None;
    }
    let backoff = chrono::Duration::from_std(backoff)
        .unwrap_or(LONGEST_BACKOFF)
        .min(LONGEST_BACKOFF);
    Some(now.checked_add_signed(backoff).unwrap_or(now))
}

/// The outcome of checking a pass against a user's tokens.
#[derive(Debug, PartialEq, Eq)]
struct Checked {
    /// The matching token's serial and the moving factor to consume.
    matched: Option<(String, i64)>,
    /// argon2 verifications done (at least one, the dummy's when no real PIN was checked).
    slow_checks: u32,
}

/// Checks `pass` against each token in turn; verifies against `dummy` when no argon2 hash
/// was checked, so every check costs at least one argon2 verification.
fn check_pass(
    candidates: &[tokens::Model],
    pass: &str,
    cipher: &SeedCipher,
    unix_time: u64,
    window: Window,
    dummy: &str,
) -> Checked {
    let mut slow_checks = 0;
    let matched = candidates
        .iter()
        .find_map(|token| match_token(token, pass, cipher, unix_time, window, &mut slow_checks));
    if slow_checks == 0 {
        std::hint::black_box(pin_matches(pass, dummy, cipher, DUMMY_SERIAL));
        slow_checks += 1;
    }
    Checked {
        matched,
        slow_checks,
    }
}

/// Whether checking a PIN against `stored` runs argon2 (an encrypted PIN does not).
fn is_slow(stored: &str) -> bool {
    stored.starts_with("$argon2")
}

/// The token's serial and the moving factor to consume, when `pass` matches it; counts the
/// argon2 verifications done in `slow_checks`.
fn match_token(
    token: &tokens::Model,
    pass: &str,
    cipher: &SeedCipher,
    unix_time: u64,
    window: Window,
    slow_checks: &mut u32,
) -> Option<(String, i64)> {
    let kind = TokenKind::parse(&token.token_type)?;
    let digits = usize::try_from(token.digits).ok()?;
    let mut check_pin = |pin: &str, stored: &str| {
        *slow_checks += u32::from(is_slow(stored));
        pin_matches(pin, stored, cipher, &token.serial)
    };
    if kind == TokenKind::Password {
        let stored = token.pin_hash.as_deref()?;
        // Accepting stores counter + 1: a counter at the end refuses (see `otp::LAST_FACTOR`).
        token.counter.checked_add(1)?;
        return check_pin(pass, stored).then(|| (token.serial.clone(), token.counter));
    }
    let split = pass.len().checked_sub(digits)?;
    let (pin, otp) = (pass.get(..split)?, pass.get(split..)?);
    let pin_ok = match token.pin_hash.as_deref() {
        Some(stored) => check_pin(pin, stored),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::otp::code;

    const SEED: &[u8] = b"12345678901234567890";

    fn cipher() -> SeedCipher {
        SeedCipher::new([("k1", "ab".repeat(32).as_str())], "k1").unwrap()
    }

    /// A HOTP token with the RFC 4226 seed and, optionally, an argon2-hashed PIN.
    fn hotp(serial: &str, pin: Option<&str>, cipher: &SeedCipher) -> tokens::Model {
        let (seed_key_id, seed) = cipher.encrypt(SEED, serial).unwrap();
        tokens::Model {
            serial: serial.to_owned(),
            realm: "acme".to_owned(),
            user_id: Some(1),
            token_type: "hotp".to_owned(),
            state: TokenState::Enabled.into(),
            seed_key_id,
            seed,
            digits: 6,
            period: 0,
            algorithm: HashAlgorithm::Sha1.as_str().to_owned(),
            counter: 0,
            pin_hash: pin.map(|pin| seal_pin(pin, false, cipher, serial).unwrap()),
            failure_count: 0,
            label: String::new(),
            description: String::new(),
            create_time: chrono::Utc::now(),
            expire_time: None,
            locked_until: None,
            replaced_by: None,
            hardware: false,
            verify_state: None,
            verify_deadline: None,
            verify_attempts_left: None,
        }
    }

    fn window() -> Window {
        Window {
            totp_steps: 1,
            hotp_look_ahead: 10,
        }
    }

    #[test]
    fn a_token_whose_counter_reached_the_end_refuses_instead_of_overflowing() {
        let cipher = cipher();
        let hotp_parameters =
            OtpParameters::new(TokenKind::Hotp, 6, 0, HashAlgorithm::Sha1).unwrap();
        let mut token = hotp("H1", None, &cipher);
        token.counter = i64::MAX;
        let at_end = code(&hotp_parameters, SEED, i64::MAX as u64);
        let mut checks = 0;
        assert_eq!(
            match_token(&token, &at_end, &cipher, 0, window(), &mut checks),
            None
        );
        token.counter = i64::MAX - 1;
        let last = code(&hotp_parameters, SEED, i64::MAX as u64 - 1);
        assert_eq!(
            match_token(&token, &last, &cipher, 0, window(), &mut checks),
            Some(("H1".to_owned(), i64::MAX - 1))
        );
        // A password token's counter moves on every use too.
        let mut password = hotp("P1", Some("s3cret-pass"), &cipher);
        password.token_type = "password".to_owned();
        password.counter = i64::MAX;
        assert_eq!(
            match_token(&password, "s3cret-pass", &cipher, 0, window(), &mut checks),
            None
        );
        password.counter = 7;
        assert_eq!(
            match_token(&password, "s3cret-pass", &cipher, 0, window(), &mut checks),
            Some(("P1".to_owned(), 7))
        );
    }

    #[test]
    fn every_check_costs_at_least_one_argon2_verification() {
        let cipher = cipher();
        let dummy = seal_pin(DUMMY_PIN, false, &cipher, DUMMY_SERIAL).unwrap();
        let first = code(
            &OtpParameters::new(TokenKind::Hotp, 6, 0, HashAlgorithm::Sha1).unwrap(),
            SEED,
            0,
        );
        let check = |candidates: &[tokens::Model], pass: &str| {
            check_pass(candidates, pass, &cipher, 0, window(), &dummy)
        };
        // No usable token: the dummy verification, and nothing matches.
        assert_eq!(
            check(&[], "1234755224"),
            Checked {
                matched: None,
                slow_checks: 1
            }
        );
        // PIN-less tokens, a pass too short to split: the dummy again.
        let bare = hotp("H1", None, &cipher);
        assert_eq!(check(std::slice::from_ref(&bare), "12").slow_checks, 1);
        assert_eq!(check(std::slice::from_ref(&bare), "000000").slow_checks, 1);
        let matched = check(std::slice::from_ref(&bare), &first);
        assert_eq!(matched.matched, Some(("H1".to_owned(), 0)));
        assert_eq!(matched.slow_checks, 1);
        // Real PINs: one verification each, no dummy on top.
        let pinned = [
            hotp("P1", Some("4321"), &cipher),
            hotp("P2", Some("4321"), &cipher),
        ];
        let wrong = check(&pinned, &format!("1111{first}"));
        assert_eq!(
            wrong,
            Checked {
                matched: None,
                slow_checks: 2
            }
        );
        let right = check(&pinned, &format!("4321{first}"));
        assert_eq!(right.matched, Some(("P1".to_owned(), 0)));
        assert_eq!(right.slow_checks, 1, "the first match ends the search");
    }

    #[test]
    fn a_backoff_ends_after_its_duration_and_none_is_no_backoff() {
        let now = chrono::Utc::now();
        assert_eq!(backoff_until(now, std::time::Duration::ZERO), None);
        assert_eq!(
            backoff_until(now, std::time::Duration::from_secs(2)),
            Some(now + chrono::Duration::seconds(2))
        );
        assert_eq!(
            backoff_until(now, std::time::Duration::MAX),
            Some(now + chrono::Duration::days(30)),
            "an absurd back-off is capped, never dropped"
        );
    }
}
