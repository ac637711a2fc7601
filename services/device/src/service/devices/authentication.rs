//! Authentication with a registered device: the ceremony is spent whether it passes or not.
use super::*;
use crate::domain::devices::AuthenticationChallenge;
use crate::store::devices::{DeviceUse, StoredDevice, pending_approval};

impl Devices {
    /// Starts an authentication with the user's usable devices of the required type.
    pub async fn begin_authentication(
        &self,
        realm: &Realm,
        user: &UserName,
        required: DeviceKind,
    ) -> Result<AuthenticationChallenge, DeviceError> {
        let fitting: Vec<StoredDevice> = self
            .store
            .user_devices(realm, user)
            .await?
            .into_iter()
            .filter(|stored| stored.device.state != DeviceState::Revoked)
            .filter(|stored| stored.device.kind.satisfies(required))
            .collect();
        // Only approved devices authenticate: a pending one waits for an administrator.
        let passkeys: Vec<String> = fitting
            .iter()
            .filter(|stored| stored.device.state == DeviceState::Approved)
            .map(|stored| stored.credential.clone())
            .collect();
        if passkeys.is_empty() {
            if !fitting.is_empty() {
                return Err(pending_approval());
            }
            return Err(DeviceError::FailedPrecondition(format!(
                "user `{user}` has no usable {} device",
                required.as_str()
            )));
        }
        let challenge = self.relying_party.start_authentication(&passkeys)?;
        let ceremony = NewCeremony {
            kind: AUTHENTICATION,
            realm,
            user,
            link_id: None,
            device_kind: required,
            require_approval: false,
            state: challenge.state_json,
        };
        let (ceremony_id, expire_time) = self.store_ceremony(ceremony).await?;
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
        let result = self.authenticate(actor, ceremony_id, assertion_json).await;
        self.metrics.ceremony(Ceremony::Authentication, &result);
        result
    }

    async fn authenticate(
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
        let used = devices
            .iter()
            .find(|stored| stored.device.credential_id == authenticated.credential_id);
        record.subject = used
            .map(|stored| stored.device.id.clone())
            .unwrap_or_default();
        // enclave_only holds for the device's whole life: a credential that now says it may
        // be synced is refused, and the device revoked so it is flagged everywhere.
        if let Some(stored) = used
            && stored.device.kind == DeviceKind::EnclaveOnly
            && authenticated.backup_eligible
        {
            let error = DeviceError::Refused {
                reason: "BACKUP_ELIGIBLE_REFUSED",
                message: "this enclave_only device now reports a synced (backup-eligible) \
                          credential; it was revoked"
                    .to_owned(),
            };
            self.store
                .burn_ceremony(ceremony_id, record.clone().denied(error.audit_reason()))
                .await?;
            let revoked = self
                .gate
                .record(
                    actor,
                    "revoke_device",
                    &realm,
                    Some(&user),
                    &stored.device.id,
                )
                .with_reason("enclave_only device reported itself synced (backup eligible)");
            self.store
                .revoke_flagged(&stored.device.id, revoked)
                .await?;
            return Err(error);
        }
        // A device of a model flagged compromised, or one the current model rules refuse
        // (or cannot be checked against: no policy decision at all), does not authenticate,
        // as CheckEnrollment does not count it.
        if let Some(stored) = used {
            let refusal = match self
                .authentication_refusal(actor, &realm, &user, &stored.device)
                .await
            {
                Ok(refusal) => refusal,
                Err(error) => Some(error),
            };
            if let Some(error) = refusal {
                let mut denied = record.clone().denied(error.audit_reason());
                if stored.device.model_compromise.is_some() {
                    denied = denied
                        .with_event(crate::domain::events::EventKind::DeviceAuthenticationRefused);
                }
                self.store.burn_ceremony(ceremony_id, denied).await?;
                return Err(error);
            }
        }
        let outcome = self
            .store
            .authenticated(
                DeviceUse {
                    ceremony_id: ceremony_id.to_owned(),
                    credential_id: authenticated.credential_id.clone(),
                    counter: authenticated.counter,
                    updated_passkey_json: authenticated.updated_passkey_json,
                },
                record.clone(),
            )
            .await;
        if let Err(error @ (DeviceError::Refused { .. } | DeviceError::Blocked { .. })) = &outcome {
            let record = record.denied(error.audit_reason());
            self.store.burn_ceremony(ceremony_id, record).await?;
        }
        outcome
    }
}

impl Devices {
    /// Why `device` may not authenticate now, if it may not: a model flagged compromised
    /// (DEVICE_MODEL_COMPROMISED), or model rules that refuse it or cannot be checked
    /// (DEVICE_MODEL_REFUSED), decided as CheckEnrollment decides them.
    async fn authentication_refusal(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        device: &Device,
    ) -> Result<Option<DeviceError>, DeviceError> {
        if let Some(compromise) = &device.model_compromise {
            return Ok(Some(DeviceError::Blocked {
                reason: "DEVICE_MODEL_COMPROMISED",
                message: format!(
                    "this device's model is flagged compromised by the FIDO metadata: {compromise}"
                ),
            }));
        }
        let read = self
            .gate
            .evaluate_check(actor, &register_question(realm, user, &device.id))
            .await?;
        let metadata = self.metadata.current();
        let verdict = super::check::model_verdict(&read, metadata.as_deref(), device);
        Ok(verdict.err().map(|message| DeviceError::Blocked {
            reason: "DEVICE_MODEL_REFUSED",
            message,
        }))
    }
}
