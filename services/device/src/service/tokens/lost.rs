//! ReportLostToken: the lost token stops validating and its owner gets a temporary password
//! token (length, classes and validity from the policy), whose password is returned once.
//!
//! Marking the token lost removes access, so it never waits for the policy service; the
//! temporary password grants access, so it needs the LOST_TOKEN decision. Without that
//! decision the token is still marked lost and the call fails; reporting it lost again
//! later issues the password (a lost token without a replacement may be reported again).
use super::admin::seal;
use super::*;
use crate::domain::decision::{Decision, PolicyError};
use crate::domain::tokens::{HashAlgorithm, LostTokenReplacement, TokenKind};
use crate::store::idempotency::Outcome;
use crate::store::token_changes::LostReport;

impl Tokens {
    #[tracing::instrument(skip_all, fields(serial = %serial))]
    pub async fn report_lost(
        &self,
        actor: &Actor,
        serial: &Serial,
        request_id: Option<&RequestId>,
    ) -> Result<LostTokenReplacement, DeviceError> {
        let cipher = self.cipher()?.clone();
        let digest = Digest::new().text("serial", serial.as_str());
        let idempotent = Idempotent::new(
            actor,
            Rpc::ReportLostToken,
            request_id,
            digest,
            Some(&cipher),
        )?;
        if let Some(first) = self.first_response(idempotent.as_ref()).await? {
            return Ok(first);
        }
        let row = self.existing(serial).await?;
        let realm = realm_of(&row.token)?;
        let Some(user) = row.user else {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is not assigned to anyone"
            )));
        };
        // A token that never passed its verify step was never the user's working token: no
        // temporary password stands in for it (disable or delete it instead).
        let enrollment = crate::domain::verify::EnrollmentState::of(
            row.token.verify_state.as_deref(),
            row.token.verify_deadline,
            self.clock.now(),
        );
        if enrollment != crate::domain::verify::EnrollmentState::Enrolled {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is {}: it was never usable, so nothing replaces it; delete it instead",
                enrollment.as_str()
            )));
        }
        let mut audit = self.gate.record(
            actor,
            "report_lost_token",
            &realm,
            Some(&user),
            serial.as_str(),
        );
        let disabling = PolicyQuestion::token(
            PolicyAction::Manage,
            "report_lost_token",
            &realm,
            Some(&user),
            &row.token.token_type,
            serial.as_str(),
        );
        let note = self.gate.decide_removal(actor, &disabling).await?;
        let replacing = PolicyQuestion::token(
            PolicyAction::LostToken,
            "report_lost_token",
            &realm,
            Some(&user),
            TokenKind::Password.as_str(),
            serial.as_str(),
        );
        let decision = match self.gate.decide(actor, &replacing).await {
            Ok(decision) => decision,
            Err(refused) => {
                let reason = format!(
                    "marked lost; no temporary password issued: {}",
                    why_not(&refused)
                );
                let audit = audit.with_reason(with_note(reason, note.as_deref()));
                // Nothing is remembered under the request id: its retry tries again.
                self.store
                    .replace_lost(serial.as_str(), None, audit, None)
                    .await?;
                return Err(disabled_only(serial, refused));
            }
        };
        if let Some(note) = note {
            audit = audit.with_reason(note);
        }
        let (replacement, password) = self.replacement(&cipher, &realm, serial, &decision).await?;
        let view = |created: &tokens::Model| {
            Ok(LostTokenReplacement {
                expire_time: created.expire_time,
                token: convert::token(created, Some(&user), self.clock.now())?,
                password: password.clone(),
            })
        };
        let seal = |created: &tokens::Model| seal(idempotent.as_ref(), &view(created)?);
        let outcome = self
            .store
            .replace_lost(
                serial.as_str(),
                Some(replacement),
                audit,
                idempotent
                    .as_ref()
                    .map(|idempotent| idempotent.for_store(&seal)),
            )
            .await?;
        let outcome = match outcome {
            Outcome::Done(LostReport::Replaced(created)) => Outcome::Done(*created),
            Outcome::Replayed(first) => Outcome::Replayed(first),
            Outcome::Done(LostReport::MarkedLost) => {
                return Err(DeviceError::Unavailable(format!(
                    "token `{serial}` was marked lost without a temporary password"
                )));
            }
        };
        respond(idempotent.as_ref(), outcome, |created| view(&created))
    }

    /// The temporary password token the policy's lost-token settings describe, and its
    /// password (returned once).
    async fn replacement(
        &self,
        cipher: &SeedCipher,
        realm: &Realm,
        lost: &Serial,
        decision: &Decision,
    ) -> Result<(tokens::Model, String), DeviceError> {
        let settings = &decision.settings;
        let (replacement_serial, password) = {
            let mut rng = rand::rng();
            let password = random_string(
                &mut rng,
                settings.lost_token_pw_len as usize,
                &settings.lost_token_pw_contents,
            );
            (new_serial(TokenKind::Password, &mut rng), password)
        };
        let sealed = self.seal_pin(&password, false, &replacement_serial).await?;
        let now = self.clock.now();
        let (seed_key_id, seed) = cipher
            .encrypt(&[], &replacement_serial)
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        let replacement = tokens::Model {
            serial: replacement_serial,
            realm: realm.to_string(),
            user_id: None,
            token_type: TokenKind::Password.as_str().to_owned(),
            state: TokenState::Enabled.into(),
            seed_key_id,
            seed,
            digits: 0,
            period: 0,
            algorithm: HashAlgorithm::Sha1.as_str().to_owned(),
            counter: 0,
            pin_hash: Some(sealed),
            failure_count: 0,
            label: format!("temporary password for {lost}"),
            description: format!("replaces lost token {lost}"),
            create_time: now,
            expire_time: Some(
                now + chrono::Duration::days(i64::from(settings.lost_token_valid_days)),
            ),
            locked_until: None,
            replaced_by: None,
            hardware: false,
            verify_state: None,
            verify_deadline: None,
            verify_attempts_left: None,
        };
        Ok((replacement, password))
    }
}

fn with_note(reason: String, note: Option<&str>) -> String {
    match note {
        Some(note) => format!("{reason}; {note}"),
        None => reason,
    }
}

/// Why no LOST_TOKEN decision could be had, without the "nothing was changed" an outage
/// message carries elsewhere (here the token was changed: it is lost).
fn why_not(refused: &DeviceError) -> String {
    match refused {
        DeviceError::Policy(PolicyError::Unreachable(detail)) => {
            format!("policy service unreachable ({detail})")
        }
        DeviceError::Policy(PolicyError::KeyRefused) => {
            "the policy service refused this service's API key".to_owned()
        }
        DeviceError::Policy(PolicyError::BadAnswer(detail)) => {
            format!("the policy service's answer is unusable ({detail})")
        }
        other => other.audit_reason(),
    }
}

/// The answer when the token was marked lost but no temporary password could be issued:
/// the caller learns both, and that reporting it lost again issues the password.
fn disabled_only(serial: &Serial, refused: DeviceError) -> DeviceError {
    let done =
        format!("token `{serial}` was disabled (marked lost) but no temporary password was issued");
    match refused {
        DeviceError::Denied {
            action,
            code,
            message,
            policy,
        } => DeviceError::Denied {
            action,
            code,
            message: format!("{message}; {done}"),
            policy,
        },
        DeviceError::Policy(PolicyError::Rejected {
            rejection,
            message,
            reason,
            field,
        }) => DeviceError::Policy(PolicyError::Rejected {
            rejection,
            message: format!("{message}; {done}"),
            reason,
            field,
        }),
        other => DeviceError::Unavailable(format!(
            "{done}: {}; report it lost again once the policy service answers",
            why_not(&other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial() -> Serial {
        Serial::parse("TOTP0123456789AB").unwrap()
    }

    #[test]
    fn an_outage_answer_says_the_token_is_disabled_and_nothing_was_issued() {
        let error = disabled_only(
            &serial(),
            DeviceError::Policy(PolicyError::Unreachable("connection refused".into())),
        );
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let message = status.message();
        assert!(
            message.contains("`TOTP0123456789AB` was disabled")
                && message.contains("no temporary password was issued")
                && message.contains("report it lost again"),
            "{message}"
        );
        assert!(!message.contains("nothing was changed"), "{message}");
    }

    #[test]
    fn a_denial_keeps_its_code_and_says_the_token_is_disabled() {
        let denied = DeviceError::Denied {
            action: "report_lost_token",
            code: "TOKEN_TYPE_NOT_ALLOWED".to_owned(),
            message: "token type `password` is not in token_types `hotp`".to_owned(),
            policy: "strict".to_owned(),
        };
        let status = tonic::Status::from(disabled_only(&serial(), denied));
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            enroll_shared::status::reason(&status).as_deref(),
            Some("TOKEN_TYPE_NOT_ALLOWED")
        );
        assert!(
            status
                .message()
                .contains("no temporary password was issued")
        );
        assert_eq!(
            with_note("marked lost".to_owned(), Some("never blocked")),
            "marked lost; never blocked"
        );
    }
}
