//! The identity proxy's CheckEnrollment: the user's enrollment status for a required
//! device type, and whether they may self-register a device now.
use super::*;
use crate::domain::devices::{EnrollmentCheck, EnrollmentStatus};
use crate::service::gate::ReadDecision;

/// A validated CheckEnrollment request.
#[derive(Debug, Clone)]
pub struct EnrollmentQuery {
    pub realm: Realm,
    pub user: UserName,
    pub credential_id: Option<String>,
    pub required: DeviceKind,
}

impl Devices {
    /// The proxy's question: is this user enrolled with a device of the required type, and
    /// may they self-register one now? A read: it never fails because the policy service is
    /// down, it answers "may not self-enroll" with the reason.
    #[tracing::instrument(skip_all, fields(realm = %query.realm, user = %query.user))]
    pub async fn check_enrollment(
        &self,
        actor: &Actor,
        query: &EnrollmentQuery,
    ) -> Result<EnrollmentCheck, DeviceError> {
        // The device rows and the policy decision are independent: ask both at once, the
        // proxy waits for the slower one only.
        let (devices, self_enrollment) = tokio::join!(
            self.store.devices_for_check(&query.realm, &query.user),
            self.self_enrollment(actor, query)
        );
        let (can_self_enroll, reasons, read) = self_enrollment?;
        Ok(self.device_status(query, &devices?, &read, can_self_enroll, reasons))
    }

    /// CheckEnrollment for one credential without the self-registration question (the
    /// gate's per-request check): the device rows and the policy's model rules, both
    /// from the caches when warm, never a limit count.
    #[tracing::instrument(skip_all, fields(realm = %query.realm, user = %query.user))]
    pub async fn check_device(
        &self,
        actor: &Actor,
        query: &EnrollmentQuery,
    ) -> Result<EnrollmentCheck, DeviceError> {
        let question = register_question(&query.realm, &query.user, "");
        let (devices, read) = tokio::join!(
            self.store.devices_for_check(&query.realm, &query.user),
            self.gate.evaluate_check(actor, &question)
        );
        let read = read?;
        let reasons = read.note().map(str::to_owned).into_iter().collect();
        Ok(self.device_status(query, &devices?, &read, false, reasons))
    }

    fn device_status(
        &self,
        query: &EnrollmentQuery,
        devices: &[Device],
        read: &ReadDecision,
        can_self_enroll: bool,
        mut reasons: Vec<String>,
    ) -> EnrollmentCheck {
        let metadata = self.metadata.current();
        let policy_verdict = |device: &Device| model_verdict(read, metadata.as_deref(), device);
        let (status, device) =
            enrollment_status(devices, query, &|device| policy_verdict(device).is_ok());
        // First why the device the status is about is (not) acceptable.
        if let Some(device) = device {
            let acceptance = device.acceptance(query.required);
            let reason = match policy_verdict(device) {
                Err(refusal) if acceptance.acceptable => refusal,
                _ => acceptance.reason,
            };
            reasons.insert(0, reason);
        }
        EnrollmentCheck {
            status,
            device: device.cloned(),
            can_self_enroll,
            reasons,
        }
    }

    async fn self_enrollment(
        &self,
        actor: &Actor,
        query: &EnrollmentQuery,
    ) -> Result<(bool, Vec<String>, ReadDecision), DeviceError> {
        let question = register_question(&query.realm, &query.user, "");
        let read = self.gate.evaluate_check(actor, &question).await?;
        let decision = match &read {
            ReadDecision::Missing(reason) => return Ok((false, vec![reason.clone()], read)),
            ReadDecision::Live(decision) | ReadDecision::LastKnown(decision, _) => decision,
        };
        let mut reasons: Vec<String> = decision
            .denials
            .iter()
            .map(|denial| with_policy(&denial.message, &denial.policy))
            .collect();
        let limits = decision.limits();
        let limited = limits.any();
        // Counting is only needed when a limit applies (the proxy's hot path usually has none).
        if reasons.is_empty() && limited {
            let reached = self
                .store
                .limits_reached(&query.realm, &query.user, &limits, self.now())
                .await?;
            reasons.extend(reached.iter().map(ToString::to_string));
        }
        let settings = &decision.settings;
        let decided = |field: &str| decision.decided(field);
        let can = reasons.is_empty();
        if can {
            let kind = settings.webauthn_device_type;
            reasons.push(with_policy(
                &format!("may self-register a device of type {}", kind.as_str()),
                &decided("webauthn_device_type"),
            ));
            if settings.require_device_approval {
                reasons.push(with_policy(
                    "a self-registered device stays pending until an admin approves it",
                    &decided("require_device_approval"),
                ));
            }
        }
        // Registering is a mutation: it needs the policy service itself, so while only the
        // last known set decides, the user may not self-register now (what that set would
        // allow is still said).
        let can = can && matches!(read, ReadDecision::Live(_));
        if let Some(note) = read.note() {
            reasons.push(note.to_owned());
        }
        Ok((can, reasons, read))
    }
}

/// Whether the policy's model rules (`webauthn_aaguid_allow`/`_deny`, minimum
/// certification) accept `device`, with the refusal naming the deciding policy. CheckEnrollment
/// and device authentication apply the same verdict.
/// Without any decision (the policy service cannot answer and no policy set is known) the
/// rules cannot be known: no device passes then, and the reason names the outage (never "no
/// rules", which an outage would otherwise buy).
pub(super) fn model_verdict(
    read: &ReadDecision,
    metadata: Option<&LoadedMetadata>,
    device: &Device,
) -> Result<(), String> {
    let decision = match read {
        ReadDecision::Live(decision) | ReadDecision::LastKnown(decision, _) => decision,
        ReadDecision::Missing(reason) => {
            return Err(format!(
                "the policy's model rules cannot be checked: {reason}"
            ));
        }
    };
    let listed = metadata.and_then(|loaded| loaded.catalog.model(&device.aaguid));
    let facts = ModelFacts {
        aaguid: &device.aaguid,
        // What registration recorded: whether the attestation certificate bound the AAGUID.
        verified: device.aaguid_verified,
        model: listed
            .map(|model| model.description.as_str())
            .or(Some(device.model.as_str()))
            .filter(|name| !name.is_empty()),
        certification: match listed {
            Some(model) => model.certification,
            None => CertificationLevel::parse(&device.certification_level),
        },
    };
    check_model_rules(&decision.settings, &facts).map_err(|refusal| {
        with_policy(
            &format!("not acceptable under the policy: {}", refusal.message),
            &decision.decided(refusal.setting),
        )
    })
}

fn with_policy(message: &str, policy: &str) -> String {
    if policy.is_empty() {
        message.to_owned()
    } else {
        format!("{message} (policy {policy})")
    }
}

/// The enrollment status of a user's devices for the proxy's requirement.
fn enrollment_status<'a>(
    devices: &'a [Device],
    query: &EnrollmentQuery,
    policy_accepts: &dyn Fn(&Device) -> bool,
) -> (EnrollmentStatus, Option<&'a Device>) {
    use EnrollmentStatus as Status;
    // Of the required type and of a model the FIDO metadata does not mark compromised: a
    // device of a compromised model never counts as enrolled (the user enrolls another).
    let fits = |device: &Device| {
        device.kind.satisfies(query.required)
            && device.model_compromise.is_none()
            && policy_accepts(device)
    };
    let usable = |device: &Device| {
        // A device waiting for approval is never reported as enrolled, whatever the caller asks.
        if device.state == DeviceState::PendingApproval {
            Status::PendingApproval
        } else {
            Status::Enrolled
        }
    };
    if let Some(credential_id) = &query.credential_id {
        return match devices
            .iter()
            .find(|device| &device.credential_id == credential_id)
        {
            None => (Status::NotEnrolled, None),
            Some(device) if device.state == DeviceState::Revoked => (Status::Revoked, Some(device)),
            Some(device) if !fits(device) => (Status::TypeMismatch, Some(device)),
            Some(device) => (usable(device), Some(device)),
        };
    }
    let live: Vec<&Device> = devices
        .iter()
        .filter(|device| device.state != DeviceState::Revoked)
        .collect();
    if let Some(device) = live
        .iter()
        .copied()
        .find(|device| fits(device) && device.state == DeviceState::Approved)
    {
        return (Status::Enrolled, Some(device));
    }
    if let Some(device) = live.iter().copied().find(|device| fits(device)) {
        return (usable(device), Some(device));
    }
    match live.first() {
        Some(device) => (Status::TypeMismatch, Some(device)),
        None => (Status::NotEnrolled, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn device(id: &str, kind: DeviceKind, state: DeviceState) -> Device {
        Device {
            id: id.to_owned(),
            realm: Realm::parse("acme").unwrap(),
            user: UserName::parse("alice").unwrap(),
            credential_id: format!("cred-{id}"),
            kind,
            state,
            aaguid: String::new(),
            backup_eligible: false,
            user_agent: String::new(),
            enrollment_link_id: None,
            create_time: Utc::now(),
            last_used_time: None,
            approved_by: String::new(),
            model: String::new(),
            certification_level: String::new(),
            attestation_format: String::new(),
            attestation_root: None,
            aaguid_verified: false,
            model_compromise: None,
        }
    }

    fn query(
        required: DeviceKind,
        _require_approved: bool,
        credential: Option<&str>,
    ) -> EnrollmentQuery {
        EnrollmentQuery {
            realm: Realm::parse("acme").unwrap(),
            user: UserName::parse("alice").unwrap(),
            credential_id: credential.map(str::to_owned),
            required,
        }
    }

    #[test]
    fn status_table() {
        use EnrollmentStatus as S;
        let any = DeviceKind::Any;
        let enclave = DeviceKind::EnclaveOnly;
        let approved_any = device("a", DeviceKind::Any, DeviceState::Approved);
        let pending_enclave = device("p", DeviceKind::EnclaveOnly, DeviceState::PendingApproval);
        let revoked = device("r", DeviceKind::EnclaveOnly, DeviceState::Revoked);
        let mut compromised = device("c", DeviceKind::EnclaveOnly, DeviceState::Approved);
        compromised.model_compromise = Some("model X is REVOKED".to_owned());
        let cases: Vec<(Vec<Device>, EnrollmentQuery, S, Option<&str>)> = vec![
            (vec![], query(any, false, None), S::NotEnrolled, None),
            (
                vec![approved_any.clone()],
                query(any, true, None),
                S::Enrolled,
                Some("a"),
            ),
            (
                vec![approved_any.clone()],
                query(enclave, false, None),
                S::TypeMismatch,
                Some("a"),
            ),
            (
                vec![pending_enclave.clone()],
                query(enclave, true, None),
                S::PendingApproval,
                Some("p"),
            ),
            // Pending is never enrolled, even when the caller does not ask for approval.
            (
                vec![pending_enclave.clone()],
                query(any, false, None),
                S::PendingApproval,
                Some("p"),
            ),
            (
                vec![pending_enclave.clone()],
                query(any, false, Some("cred-p")),
                S::PendingApproval,
                Some("p"),
            ),
            (
                vec![pending_enclave.clone(), approved_any.clone()],
                query(any, true, None),
                S::Enrolled,
                Some("a"),
            ),
            (
                vec![revoked.clone()],
                query(any, false, None),
                S::NotEnrolled,
                None,
            ),
            (
                vec![revoked.clone()],
                query(any, false, Some("cred-r")),
                S::Revoked,
                Some("r"),
            ),
            (
                vec![approved_any.clone()],
                query(any, false, Some("cred-x")),
                S::NotEnrolled,
                None,
            ),
            (
                vec![approved_any.clone()],
                query(enclave, false, Some("cred-a")),
                S::TypeMismatch,
                Some("a"),
            ),
            // A device of a compromised model counts for no type, even the weakest.
            (
                vec![compromised.clone()],
                query(any, false, None),
                S::TypeMismatch,
                Some("c"),
            ),
            (
                vec![compromised.clone()],
                query(any, false, Some("cred-c")),
                S::TypeMismatch,
                Some("c"),
            ),
            (
                vec![compromised.clone(), approved_any.clone()],
                query(any, false, None),
                S::Enrolled,
                Some("a"),
            ),
        ];
        let reason = compromised.acceptance(any);
        assert!(
            !reason.acceptable && reason.reason.contains("REVOKED"),
            "{reason:?}"
        );
        let ok = approved_any.acceptance(any);
        assert!(ok.acceptable, "{ok:?}");
        assert!(!approved_any.acceptance(enclave).acceptable);
        assert!(!pending_enclave.acceptance(any).acceptable);
        for (index, (devices, query, status, device)) in cases.into_iter().enumerate() {
            let (got, found) = enrollment_status(&devices, &query, &|_| true);
            assert_eq!(got, status, "case {index}");
            assert_eq!(
                found.map(|device| device.id.as_str()),
                device,
                "case {index}"
            );
        }
    }
}
