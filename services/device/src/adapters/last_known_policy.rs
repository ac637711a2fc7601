//! The last policy set the policy service streamed, compiled with the policy service's own
//! engine (`enroll-policy-engine`) and kept in the database, so that the proxy's path
//! (CheckEnrollment's model rules and self-enrollment, device authentication) decides from
//! the organisation's rules while the policy service cannot answer, instead of from none.
//! The policy service stays the only writer and the reference: this copy is used only when
//! it cannot be asked.
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use enroll_policy_engine::engine::PolicySet;
use enroll_policy_engine::policy::{InvalidField, PolicySpec};
use enroll_policy_engine::proto;
use enroll_shared::proto::policy::v1 as pb;
use enroll_shared::time::SharedClock;

use super::policy_client::{decision, evaluation_request};
use crate::domain::decision::{Decision, PolicyError, PolicyQuestion, Rejection};
use crate::service::ports::LastKnownPolicies;
use crate::store::policy_snapshot::{PolicySnapshotStore, StoredPolicySet};

/// A compiled set and when this service received it.
struct Known {
    set: PolicySet,
    receive_time: DateTime<Utc>,
}

pub struct LastKnownPolicy {
    current: RwLock<Option<Arc<Known>>>,
    store: PolicySnapshotStore,
    clock: SharedClock,
}

impl LastKnownPolicy {
    pub fn new(store: PolicySnapshotStore, clock: SharedClock) -> Self {
        Self {
            current: RwLock::new(None),
            store,
            clock,
        }
    }

    /// The version known, if any.
    pub fn version(&self) -> Option<i64> {
        self.read().map(|known| known.set.version())
    }

    /// Loads the stored set (at start-up, once the schema is there), unless a newer one
    /// arrived meanwhile. A stored set that does not parse is ignored (logged): the stream
    /// brings the next one.
    pub async fn load_stored(&self) {
        match self.store.latest().await {
            Ok(Some(stored)) => {
                match serde_json::from_str::<Vec<PolicySpec>>(&stored.policies_json) {
                    Ok(specs) => {
                        self.install(stored.version, &specs, stored.receive_time);
                    }
                    Err(error) => tracing::error!(
                        version = stored.version,
                        %error,
                        "the stored policy set does not parse; waiting for the policy service's"
                    ),
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the stored policy set");
            }
        }
    }

    /// A set the policy service streamed: compiled and installed when newer than the one
    /// known, then stored for replicas that start while the policy service is down.
    pub async fn receive(&self, version: i64, policies: Vec<pb::Policy>) {
        let specs: Vec<PolicySpec> = policies.into_iter().map(proto::spec_from_proto).collect();
        let now = self.clock.now();
        if !self.install(version, &specs, now) {
            return;
        }
        let policies_json = match serde_json::to_string(&specs) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, "cannot encode the policy set");
                return;
            }
        };
        let stored = StoredPolicySet {
            version,
            policies_json,
            receive_time: now,
        };
        if let Err(error) = self.store.save_if_newer(&stored).await {
            tracing::warn!(version, %error, "cannot store the received policy set");
        }
    }

    /// Installs the set unless one as new is known; false when not installed. A set with a
    /// policy this engine cannot read is refused whole (the policy service does not serve
    /// such a set either).
    fn install(&self, version: i64, specs: &[PolicySpec], receive_time: DateTime<Utc>) -> bool {
        if self.version().is_some_and(|known| known >= version) {
            return false;
        }
        let (set, unreadable) = PolicySet::from_specs(version, specs);
        if let Some(policy) = unreadable.first() {
            tracing::error!(
                version,
                policy = %policy.name,
                reason = %policy.reason,
                "a streamed policy does not compile here; keeping the last set known"
            );
            return false;
        }
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current
            .as_ref()
            .is_some_and(|known| known.set.version() >= version)
        {
            return false;
        }
        tracing::debug!(version, policies = set.len(), "policy set received");
        *current = Some(Arc::new(Known { set, receive_time }));
        true
    }

    fn read(&self) -> Option<Arc<Known>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl LastKnownPolicies for LastKnownPolicy {
    fn evaluate(
        &self,
        question: &PolicyQuestion<'_>,
        client_ip: &str,
    ) -> Option<(Result<Decision, PolicyError>, DateTime<Utc>)> {
        let known = self.read()?;
        Some((decide(&known.set, question, client_ip), known.receive_time))
    }

    fn evaluate_at(
        &self,
        version: i64,
        question: &PolicyQuestion<'_>,
        client_ip: &str,
    ) -> Option<Result<Decision, PolicyError>> {
        let known = self.read()?;
        (known.set.version() == version).then(|| decide(&known.set, question, client_ip))
    }
}

/// The decision the policy service would make with `set`, through the same request
/// decoding, engine and answer conversion.
fn decide(
    set: &PolicySet,
    question: &PolicyQuestion<'_>,
    client_ip: &str,
) -> Result<Decision, PolicyError> {
    // Refused as the policy service refuses it: the field named, as its ErrorInfo does.
    let invalid = |invalid: InvalidField| PolicyError::Rejected {
        rejection: Rejection::InvalidArgument,
        message: format!("{}: {}", invalid.field, invalid.message),
        reason: None,
        field: Some(invalid.field),
    };
    let request =
        proto::evaluation_request(evaluation_request(question, client_ip)).map_err(invalid)?;
    set.require_client(&request.subject).map_err(invalid)?;
    let made = set
        .evaluate(&request)
        .map_err(|conflict| PolicyError::Rejected {
            rejection: Rejection::FailedPrecondition,
            message: conflict.to_string(),
            reason: None,
            field: None,
        })?;
    decision(proto::decision_to_proto(made))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::PolicyAction;
    use crate::domain::names::{Realm, UserName};

    fn policy(name: &str, clients: &[&str], actions: &[(&str, &str)]) -> pb::Policy {
        pb::Policy {
            name: name.to_owned(),
            scope: "enrollment".to_owned(),
            realms: vec!["acme".to_owned()],
            clients: clients.iter().map(|c| c.to_string()).collect(),
            actions: actions
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            priority: 1,
            active: true,
            ..Default::default()
        }
    }

    fn set(version: i64, policies: Vec<pb::Policy>) -> PolicySet {
        let specs: Vec<PolicySpec> = policies.into_iter().map(proto::spec_from_proto).collect();
        let (set, unreadable) = PolicySet::from_specs(version, &specs);
        assert!(unreadable.is_empty(), "{unreadable:?}");
        set
    }

    #[test]
    fn decides_as_the_policy_service_would_and_requires_the_client_where_it_matters() {
        let (realm, user) = (
            Realm::parse("acme").unwrap(),
            UserName::parse("alice").unwrap(),
        );
        let question = PolicyQuestion {
            action: PolicyAction::RegisterDevice,
            audit_action: "register_device",
            realm: &realm,
            user: Some(&user),
            subject: "",
            token_type: "webauthn",
            serial: "",
        };
        let rules = set(
            7,
            vec![policy(
                "models",
                &[],
                &[("webauthn_min_certification", "FIDO_CERTIFIED_L1")],
            )],
        );
        let decision = decide(&rules, &question, "").unwrap();
        assert_eq!(decision.policy_set_version, 7);
        assert_eq!(decision.decided("webauthn_min_certification"), "models");
        assert!(
            decision.settings.require_device_approval,
            "approval by default"
        );

        let networks = set(
            8,
            vec![policy(
                "office",
                &["10.0.0.0/8"],
                &[("webauthn_device_type", "enclave_only")],
            )],
        );
        match decide(&networks, &question, "") {
            Err(PolicyError::Rejected {
                rejection: Rejection::InvalidArgument,
                message,
                ..
            }) => assert!(message.contains("client_ip") && message.contains("office")),
            other => panic!("{other:?}"),
        }
        let inside = decide(&networks, &question, "10.1.2.3").unwrap();
        assert_eq!(inside.decided("webauthn_device_type"), "office");
        let outside = decide(&networks, &question, "192.0.2.1").unwrap();
        assert_eq!(outside.decided("webauthn_device_type"), "");
    }
}
