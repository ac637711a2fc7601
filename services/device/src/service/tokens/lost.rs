//! ReportLostToken: the lost token stops validating and its owner gets a temporary password
//! token (length, classes and validity from the policy), whose password is returned once.
use super::admin::seal;
use super::*;
use crate::domain::tokens::{HashAlgorithm, LostTokenReplacement, TokenKind};

impl Tokens {
    #[tracing::instrument(skip_all, fields(serial = %serial))]
    pub async fn report_lost(
        &self,
        actor: &Actor,
        serial: &Serial,
        request_id: Option<&RequestId>,
    ) -> Result<LostTokenReplacement, DeviceError> {
        let cipher = self.cipher()?.clone();
        let idempotent = Idempotent::new(actor, "ReportLostToken", request_id, Some(&cipher))?;
        if let Some(idempotent) = &idempotent
            && let Some(first) =
                idempotent.first(self.store.find_response(idempotent.key()).await?)?
        {
            return Ok(first);
        }
        let row = self.existing(serial).await?;
        let realm = realm_of(&row.token)?;
        let Some(user) = row.user else {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is not assigned to anyone"
            )));
        };
        let decision = self
            .gate
            .decide(
                actor,
                &PolicyQuestion::token(
                    PolicyAction::LostToken,
                    "report_lost_token",
                    &realm,
                    Some(&user),
                    "password",
                    serial.as_str(),
                ),
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
        let sealed = self.seal_pin(&password, false, &replacement_serial).await?;
        let now = self.clock.now();
        let (seed_key_id, seed) = cipher
            .encrypt(&[], &replacement_serial)
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        let replacement = tokens::Model {
            serial: replacement_serial.clone(),
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
            label: format!("temporary password for {serial}"),
            description: format!("replaces lost token {serial}"),
            create_time: now,
            expire_time: Some(
                now + chrono::Duration::days(i64::from(settings.lost_token_valid_days.max(1))),
            ),
            hardware: false,
        };
        let audit = self.gate.record(
            actor,
            "report_lost_token",
            &realm,
            Some(&user),
            serial.as_str(),
        );
        let view = |created: &tokens::Model| {
            Ok(LostTokenReplacement {
                expire_time: created.expire_time,
                token: convert::token(created, Some(&user))?,
                password: password.clone(),
            })
        };
        let seal = |created: &tokens::Model| seal(idempotent.as_ref(), &view(created)?);
        let outcome = self
            .store
            .replace_lost(
                serial.as_str(),
                replacement,
                audit,
                idempotent
                    .as_ref()
                    .map(|idempotent| idempotent.for_store(&seal)),
            )
            .await?;
        respond(idempotent.as_ref(), outcome, |created| view(&created))
    }
}
