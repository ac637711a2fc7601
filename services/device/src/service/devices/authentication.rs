//! Authentication with a registered device: the ceremony is spent whether it passes or not.
use super::*;
use crate::domain::devices::AuthenticationChallenge;

impl Devices {
    /// Starts an authentication with the user's usable devices of the required type.
    pub async fn begin_authentication(
        &self,
        realm: &Realm,
        user: &UserName,
        required: DeviceKind,
    ) -> Result<AuthenticationChallenge, DeviceError> {
        let passkeys: Vec<String> = self
            .store
            .user_devices(realm, user)
            .await?
            .into_iter()
            .filter(|stored| stored.device.state != DeviceState::Revoked)
            .filter(|stored| stored.device.kind.satisfies(required))
            .map(|stored| stored.credential)
            .collect();
        if passkeys.is_empty() {
            return Err(DeviceError::FailedPrecondition(format!(
                "user `{user}` has no usable {} device",
                required.as_str()
            )));
        }
        let challenge = self.relying_party.start_authentication(&passkeys)?;
        let (ceremony_id, expire_time) = self
            .store_ceremony(
                AUTHENTICATION,
                realm,
                user,
                None,
                required,
                challenge.state_json,
            )
            .await?;
        Ok(AuthenticationChallenge {
            ceremony_id,
            options_json: challenge.options_json,
            expire_time,
        })
    }

    /// Verifies an assertion; the ceremony is spent whether it passes or not.
    pub async fn finish_authentication(
        &self,
        actor: &Actor,
        ceremony_id: &str,
        assertion_json: String,
    ) -> Result<Device, DeviceError> {
        let now = self.now();
        let ceremony = self.live_ceremony(ceremony_id, AUTHENTICATION, now).await?;
        let (realm, user) = ceremony_subject(&ceremony)?;
        let devices = self.store.user_devices(&realm, &user).await?;
        let result = self.relying_party.finish_authentication(
            &ceremony.state,
            &assertion_json,
            &|credential_id| {
                devices
                    .iter()
                    .find(|stored| stored.device.credential_id == credential_id)
                    .map(|stored| stored.credential.clone())
            },
        );
        let mut record = self
            .gate
            .record(actor, "authenticate_device", &realm, Some(&user), "");
        let authenticated = match result {
            Ok(authenticated) => authenticated,
            Err(error) => {
                let record = record.denied(error.audit_reason());
                self.store.burn_ceremony(ceremony_id, record).await?;
                return Err(error);
            }
        };
        record.subject = devices
            .iter()
            .find(|stored| stored.device.credential_id == authenticated.credential_id)
            .map(|stored| stored.device.id.clone())
            .unwrap_or_default();
        let outcome = self
            .store
            .authenticated(
                ceremony_id,
                &authenticated.credential_id,
                authenticated.updated_passkey_json,
                record.clone(),
            )
            .await;
        if let Err(error @ DeviceError::Refused { .. }) = &outcome {
            let record = record.denied(error.audit_reason());
            self.store.burn_ceremony(ceremony_id, record).await?;
        }
        outcome
    }
}
