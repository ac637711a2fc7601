//! The one way use cases reach the policy service: ask before every mutation, fail closed
//! when no decision can be had, audit and refuse a denial. PIN rules are asked here too.
use std::sync::Arc;

use enroll_shared::time::SharedClock;

use super::decision_cache::{CacheKey, DecisionCache};
use super::ports::{AuditLog, LastKnownPolicies, PolicyDecisions};
use crate::domain::actor::Actor;
use crate::domain::audit::AuditRecord;
use crate::domain::decision::{Decision, PinVerdict, PolicyError, PolicyQuestion, Rejection};
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// A decision for the proxy's path and how it was had.
#[derive(Debug, Clone)]
pub enum ReadDecision {
    /// The policy service's answer (or its cached copy).
    Live(Arc<Decision>),
    /// The last policy set's, while the policy service cannot answer; the note says so.
    LastKnown(Arc<Decision>, String),
    /// No decision at all; the reason names the outage.
    Missing(String),
}

impl ReadDecision {
    /// What the caller should be told about where the decision came from, if anything.
    pub fn note(&self) -> Option<&str> {
        match self {
            ReadDecision::Live(_) => None,
            ReadDecision::LastKnown(_, note) | ReadDecision::Missing(note) => Some(note),
        }
    }
}

/// Why the policy service cannot answer, for a read's reasons (no "nothing was changed":
/// nothing was to be).
fn outage_text(outage: &PolicyError) -> String {
    match outage {
        PolicyError::Unreachable(detail) => format!("the policy service is unreachable ({detail})"),
        PolicyError::KeyRefused => {
            "the policy service refused this service's policy_service.api_key".to_owned()
        }
        PolicyError::BadAnswer(detail) => {
            format!("the policy service's answer is unusable ({detail})")
        }
        PolicyError::Rejected { message, .. } => message.clone(),
    }
}

/// A question the policy (or its engine here) refused: a bad or missing field (the
/// `client_ip` a network policy needs) is the caller's to fix, an error; any other refusal
/// (conflicting policies) leaves no decision to go by.
fn refused_question(error: PolicyError) -> Result<ReadDecision, DeviceError> {
    match error {
        PolicyError::Rejected {
            rejection: Rejection::InvalidArgument,
            ..
        } => Err(DeviceError::Policy(error)),
        other => Ok(ReadDecision::Missing(format!(
            "no policy decision: {other}"
        ))),
    }
}

/// The denial a policy's `token_types` gives: it never blocks removing access.
const TOKEN_TYPE_NOT_ALLOWED: &str = "TOKEN_TYPE_NOT_ALLOWED";

#[derive(Clone)]
pub struct PolicyGate {
    policy: Arc<dyn PolicyDecisions>,
    audit: Arc<dyn AuditLog>,
    clock: SharedClock,
    /// CheckEnrollment's decisions (none: always ask).
    check_cache: Option<Arc<DecisionCache>>,
    /// The last policy set streamed, for the proxy's path during an outage.
    last_known: Option<Arc<dyn LastKnownPolicies>>,
}

impl PolicyGate {
    pub fn new(
        policy: Arc<dyn PolicyDecisions>,
        audit: Arc<dyn AuditLog>,
        clock: SharedClock,
    ) -> Self {
        Self {
            policy,
            audit,
            clock,
            check_cache: None,
            last_known: None,
        }
    }

    /// Decides the proxy's path from `last_known` while the policy service cannot answer.
    pub fn with_last_known(mut self, last_known: Arc<dyn LastKnownPolicies>) -> Self {
        self.last_known = Some(last_known);
        self
    }

    /// Answers CheckEnrollment's questions from `cache` while it is current.
    pub fn with_check_cache(mut self, cache: Arc<DecisionCache>) -> Self {
        self.check_cache = Some(cache);
        self
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// An audit record of `actor` doing `action` now.
    pub fn record(
        &self,
        actor: &Actor,
        action: &'static str,
        realm: &Realm,
        user: Option<&UserName>,
        subject: &str,
    ) -> AuditRecord {
        AuditRecord::new(actor, action, realm, user, subject, self.clock.now())
    }

    /// Asks the policy service; no answer is UNAVAILABLE, a denial is audited and refused.
    pub async fn decide(
        &self,
        actor: &Actor,
        question: &PolicyQuestion<'_>,
    ) -> Result<Decision, DeviceError> {
        let decision = self
            .policy
            .evaluate(question, &actor.client_ip_text())
            .await?;
        if let Some(denial) = decision.denials.first() {
            let error = DeviceError::Denied {
                action: question.audit_action,
                code: denial.code.clone(),
                message: denial.message.clone(),
                policy: denial.policy.clone(),
            };
            self.deny(actor, question, &error).await?;
            return Err(error);
        }
        Ok(decision)
    }

    /// Like `decide`, but a denial is not audited here: the caller writes its refusal's
    /// audit event in the transaction of what the refusal changes (a registration finish
    /// burns its ceremony with it). No answer is UNAVAILABLE, a denial is the refusal.
    pub async fn decide_unaudited(
        &self,
        actor: &Actor,
        question: &PolicyQuestion<'_>,
    ) -> Result<Decision, DeviceError> {
        let decision = self
            .policy
            .evaluate(question, &actor.client_ip_text())
            .await?;
        if let Some(denial) = decision.denials.first() {
            return Err(DeviceError::Denied {
                action: question.audit_action,
                code: denial.code.clone(),
                message: denial.message.clone(),
                policy: denial.policy.clone(),
            });
        }
        Ok(decision)
    }

    /// For an action that removes access (revoke a device or link; disable, delete or
    /// unassign a token; the disabling part of a lost-token report): the policy service is
    /// still asked, but an admin can always cut access, so an outage, a refused question or
    /// a `token_types` denial lets the action proceed. Returns the note the action's audit
    /// event carries when it proceeded without the policy's consent.
    pub async fn decide_removal(
        &self,
        actor: &Actor,
        question: &PolicyQuestion<'_>,
    ) -> Result<Option<String>, DeviceError> {
        match self
            .policy
            .evaluate(question, &actor.client_ip_text())
            .await
        {
            Ok(decision) => match decision.denials.first() {
                None => Ok(None),
                Some(denial) if denial.code == TOKEN_TYPE_NOT_ALLOWED => Ok(Some(format!(
                    "allowed although {} ({}): removing access is never blocked",
                    denial.code,
                    if denial.policy.is_empty() {
                        "default"
                    } else {
                        &denial.policy
                    }
                ))),
                Some(denial) => {
                    let error = DeviceError::Denied {
                        action: question.audit_action,
                        code: denial.code.clone(),
                        message: denial.message.clone(),
                        policy: denial.policy.clone(),
                    };
                    self.deny(actor, question, &error).await?;
                    Err(error)
                }
            },
            Err(error) => {
                tracing::warn!(%error, action = question.audit_action, "no policy decision; removing access anyway");
                Ok(Some(format!(
                    "no policy decision ({error}): removing access is never blocked"
                )))
            }
        }
    }

    /// A decision for a read (CheckEnrollment): denials stay in the decision, unaudited, and
    /// an unreachable policy service is a reason, not an error.
    pub async fn evaluate_read(
        &self,
        actor: &Actor,
        question: &PolicyQuestion<'_>,
    ) -> Result<Decision, String> {
        self.policy
            .evaluate(question, &actor.client_ip_text())
            .await
            .map_err(|error| format!("no policy decision: {error}"))
    }

    /// The decision for the proxy's path (CheckEnrollment, device authentication): from the
    /// decision cache while it holds one of the policy set the policy service decides with
    /// now, else from the policy service, else (it cannot answer) from the last policy set
    /// it streamed. Never "no rules": without any decision the answer says so, and the
    /// caller fails closed on whatever needs one. A bad or missing `client_ip` (required
    /// while a policy matching the user matches on client networks) is INVALID_ARGUMENT.
    pub async fn evaluate_check(
        &self,
        actor: &Actor,
        question: &PolicyQuestion<'_>,
    ) -> Result<ReadDecision, DeviceError> {
        let cached = self
            .check_cache
            .as_ref()
            .and_then(|cache| Some((cache, cache.key(question, actor.client_ip)?)));
        if let Some((cache, key)) = &cached
            && let Some(decision) = cache.get(key)
        {
            return Ok(ReadDecision::Live(decision));
        }
        // Only a miss needs the address as text.
        let client_ip = actor.client_ip_text();
        // A miss decided here when the set streamed last is the one the policy service
        // decides with now (the cache key's version): the same engine on the same set
        // makes the same decision, without a round trip. So a cold cache (a million users,
        // or every decision dropped by a policy change) costs CPU here, not a policy call
        // per user; the policy service stays the only writer and the reference.
        if let Some((cache, key)) = &cached
            && let Some(last_known) = &self.last_known
            && let Some(local) = last_known.evaluate_at(key.version(), question, &client_ip)
        {
            return match local {
                Ok(decision) => {
                    let decision = Arc::new(decision);
                    cache.put(key.clone(), decision.clone());
                    Ok(ReadDecision::Live(decision))
                }
                Err(error @ PolicyError::Rejected { .. }) => refused_question(error),
                // The engine answers or refuses; anything else: ask the policy service.
                Err(_) => self.evaluate_remote(question, &client_ip, cached).await,
            };
        }
        self.evaluate_remote(question, &client_ip, cached).await
    }

    /// A decision from the policy service, else (it cannot answer) from the last policy
    /// set it streamed.
    async fn evaluate_remote(
        &self,
        question: &PolicyQuestion<'_>,
        client_ip: &str,
        cached: Option<(&Arc<DecisionCache>, CacheKey)>,
    ) -> Result<ReadDecision, DeviceError> {
        let outage = match self.policy.evaluate(question, client_ip).await {
            Ok(decision) => {
                let decision = Arc::new(decision);
                if let Some((cache, key)) = cached {
                    cache.put(key, decision.clone());
                }
                return Ok(ReadDecision::Live(decision));
            }
            Err(error @ PolicyError::Rejected { .. }) => return refused_question(error),
            Err(outage) => outage_text(&outage),
        };
        let Some(last_known) = &self.last_known else {
            return Ok(ReadDecision::Missing(format!(
                "no policy decision: {outage}; no policy set is known"
            )));
        };
        match last_known.evaluate(question, client_ip) {
            None => Ok(ReadDecision::Missing(format!(
                "no policy decision: {outage}; no policy set has been received yet"
            ))),
            Some((Ok(decision), received)) => {
                let note = format!(
                    "decided from the last policy set received (version {}, {}): {outage}",
                    decision.policy_set_version,
                    received.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                Ok(ReadDecision::LastKnown(Arc::new(decision), note))
            }
            Some((Err(error), _)) => refused_question(error),
        }
    }

    /// Records a refusal decided by the device service itself.
    pub async fn deny(
        &self,
        actor: &Actor,
        question: &PolicyQuestion<'_>,
        error: &DeviceError,
    ) -> Result<(), DeviceError> {
        let record = self
            .record(
                actor,
                question.audit_action,
                question.realm,
                question.user,
                question.subject,
            )
            .denied(error.audit_reason());
        self.audit.record(record).await
    }

    /// Writes a standalone audit record (a refusal that changes nothing).
    pub async fn audit(&self, record: AuditRecord) -> Result<(), DeviceError> {
        self.audit.record(record).await
    }

    /// The PIN rules' verdict on `pin` (no answer is UNAVAILABLE).
    pub async fn pin_verdict(
        &self,
        actor: &Actor,
        realm: &Realm,
        user: &UserName,
        pin: &str,
    ) -> Result<PinVerdict, DeviceError> {
        Ok(self
            .policy
            .validate_pin(realm, user, &actor.client_ip_text(), pin)
            .await?)
    }

    /// Refuses a PIN that breaks the rules with INVALID_ARGUMENT naming every violation,
    /// audited under `record`.
    pub async fn check_pin(
        &self,
        actor: &Actor,
        record: AuditRecord,
        realm: &Realm,
        user: &UserName,
        pin: &str,
    ) -> Result<(), DeviceError> {
        let verdict = self.pin_verdict(actor, realm, user, pin).await?;
        if verdict.valid {
            return Ok(());
        }
        let error = DeviceError::invalid("pin", verdict.violations.join("; "));
        self.audit
            .record(record.denied(error.audit_reason()))
            .await?;
        Err(error)
    }
}

#[cfg(test)]
pub(crate) mod fakes {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::decision::{Denial, PolicyError};

    /// A policy service that answers with a fixed result.
    pub struct FixedPolicy(pub Result<Decision, PolicyError>);

    #[async_trait]
    impl PolicyDecisions for FixedPolicy {
        async fn evaluate(
            &self,
            _question: &PolicyQuestion<'_>,
            _client_ip: &str,
        ) -> Result<Decision, PolicyError> {
            self.0.clone()
        }

        async fn validate_pin(
            &self,
            _realm: &Realm,
            _user: &UserName,
            _client_ip: &str,
            pin: &str,
        ) -> Result<PinVerdict, PolicyError> {
            self.0.clone().map(|_| PinVerdict {
                valid: pin.len() >= 4,
                violations: vec!["shorter than 4".to_owned()],
            })
        }
    }

    /// An audit log in memory.
    #[derive(Default)]
    pub struct MemoryAudit(pub Mutex<Vec<AuditRecord>>);

    #[async_trait]
    impl AuditLog for MemoryAudit {
        async fn record(&self, record: AuditRecord) -> Result<(), DeviceError> {
            self.0.lock().unwrap().push(record);
            Ok(())
        }
    }

    pub fn denial(code: &str) -> Decision {
        Decision {
            denials: vec![Denial {
                code: code.to_owned(),
                message: "not for you".to_owned(),
                policy: "strict".to_owned(),
            }],
            ..Decision::default()
        }
    }

    pub fn gate(answer: Result<Decision, PolicyError>) -> (PolicyGate, Arc<MemoryAudit>) {
        let audit = Arc::new(MemoryAudit::default());
        let gate = PolicyGate::new(
            Arc::new(FixedPolicy(answer)),
            audit.clone(),
            Arc::new(enroll_shared::time::SystemClock),
        );
        (gate, audit)
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::*;
    use super::*;
    use crate::domain::decision::{PolicyAction, PolicyError};

    fn actor() -> Actor {
        Actor {
            name: "console".to_owned(),
            client_ip: Some("10.0.0.1".parse().unwrap()),
        }
    }

    fn names() -> (Realm, UserName) {
        (
            Realm::parse("acme").unwrap(),
            UserName::parse("alice").unwrap(),
        )
    }

    #[tokio::test]
    async fn no_decision_fails_closed_and_writes_nothing() {
        let (gate, audit) = gate(Err(PolicyError::Unreachable("deadline".into())));
        let (realm, user) = names();
        let question = PolicyQuestion::token(
            PolicyAction::Enroll,
            "enroll_token",
            &realm,
            Some(&user),
            "totp",
            "",
        );
        let error = gate.decide(&actor(), &question).await.unwrap_err();
        assert!(matches!(
            error,
            DeviceError::Policy(PolicyError::Unreachable(_))
        ));
        assert_eq!(tonic::Status::from(error).code(), tonic::Code::Unavailable);
        assert!(audit.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_denial_is_audited_and_refused() {
        let (gate, audit) = gate(Ok(denial("TOKEN_TYPE_NOT_ALLOWED")));
        let (realm, user) = names();
        let question = PolicyQuestion::token(
            PolicyAction::Enroll,
            "enroll_token",
            &realm,
            Some(&user),
            "hotp",
            "",
        );
        let error = gate.decide(&actor(), &question).await.unwrap_err();
        assert!(
            matches!(&error, DeviceError::Denied { code, policy, .. } if code == "TOKEN_TYPE_NOT_ALLOWED" && policy == "strict")
        );
        let records = audit.0.lock().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].action, "enroll_token");
        assert_eq!(records[0].result, "denied");
        assert_eq!(records[0].user, "alice");
        assert_eq!(records[0].actor, "console");
    }

    #[tokio::test]
    async fn removing_access_proceeds_through_outages_and_type_denials() {
        let (realm, user) = names();
        let question =
            PolicyQuestion::webauthn(PolicyAction::Manage, "revoke_device", &realm, &user, "d1");
        for answer in [
            Err(PolicyError::Unreachable("down".into())),
            Err(PolicyError::KeyRefused),
            Ok(denial("TOKEN_TYPE_NOT_ALLOWED")),
        ] {
            let (removal_gate, audit) = gate(answer);
            let note = removal_gate
                .decide_removal(&actor(), &question)
                .await
                .unwrap();
            assert!(note.unwrap().contains("never blocked"));
            assert!(audit.0.lock().unwrap().is_empty());
        }
        let (allowing, _) = gate(Ok(Decision::default()));
        assert_eq!(
            allowing.decide_removal(&actor(), &question).await.unwrap(),
            None
        );
        let (denying, audit) = gate(Ok(denial("SOMETHING_ELSE")));
        assert!(denying.decide_removal(&actor(), &question).await.is_err());
        assert_eq!(audit.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn reads_turn_an_outage_into_a_reason() {
        let (gate, _) = gate(Err(PolicyError::KeyRefused));
        let (realm, user) = names();
        let question = PolicyQuestion::webauthn(
            PolicyAction::RegisterDevice,
            "register_device",
            &realm,
            &user,
            "",
        );
        let reason = gate.evaluate_read(&actor(), &question).await.unwrap_err();
        assert!(reason.starts_with("no policy decision"));
    }

    #[tokio::test]
    async fn a_bad_pin_is_refused_with_its_violations_and_audited() {
        let (gate, audit) = gate(Ok(Decision::default()));
        let (realm, user) = names();
        let record = gate.record(&actor(), "set_pin", &realm, Some(&user), "TOTP1");
        let error = gate
            .check_pin(&actor(), record.clone(), &realm, &user, "12")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("shorter than 4"));
        assert_eq!(audit.0.lock().unwrap()[0].result, "denied");
        gate.check_pin(&actor(), record, &realm, &user, "1234")
            .await
            .unwrap();
        assert_eq!(audit.0.lock().unwrap().len(), 1);
    }

    /// The last set streamed, known at one version.
    struct KnownAt(i64);

    impl LastKnownPolicies for KnownAt {
        fn evaluate(
            &self,
            _question: &PolicyQuestion<'_>,
            _client_ip: &str,
        ) -> Option<(Result<Decision, PolicyError>, chrono::DateTime<chrono::Utc>)> {
            let decision = Decision {
                policy_set_version: self.0,
                ..Decision::default()
            };
            Some((Ok(decision), chrono::Utc::now()))
        }

        fn evaluate_at(
            &self,
            version: i64,
            question: &PolicyQuestion<'_>,
            client_ip: &str,
        ) -> Option<Result<Decision, PolicyError>> {
            (version == self.0).then(|| self.evaluate(question, client_ip).unwrap().0)
        }
    }

    #[tokio::test]
    async fn a_miss_is_decided_here_only_with_the_set_the_policy_service_decides_with() {
        let (realm, user) = names();
        let question = PolicyQuestion::webauthn(
            PolicyAction::RegisterDevice,
            "register_device",
            &realm,
            &user,
            "",
        );
        // The policy service cannot be asked: any remote call would show as an outage.
        let unreachable = || Err(PolicyError::Unreachable("down".into()));
        let cache = Arc::new(DecisionCache::new(10));
        cache.observe(7, true, false);
        let (local, _) = gate(unreachable());
        let local = local
            .with_last_known(Arc::new(KnownAt(7)))
            .with_check_cache(cache.clone());
        let read = local.evaluate_check(&actor(), &question).await.unwrap();
        assert!(
            matches!(&read, ReadDecision::Live(decision) if decision.policy_set_version == 7),
            "{read:?}"
        );
        let key = cache.key(&question, actor().client_ip).unwrap();
        assert!(cache.get(&key).is_some(), "kept for the next check");

        // A set other than the one the policy service decides with: asked remotely (here:
        // unreachable, so the last known set decides, said so).
        let stale_cache = Arc::new(DecisionCache::new(10));
        stale_cache.observe(8, true, false);
        let (stale, _) = gate(unreachable());
        let stale = stale
            .with_last_known(Arc::new(KnownAt(7)))
            .with_check_cache(stale_cache);
        let read = stale.evaluate_check(&actor(), &question).await.unwrap();
        assert!(matches!(read, ReadDecision::LastKnown(..)), "{read:?}");
    }
}
