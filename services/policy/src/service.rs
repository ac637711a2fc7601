//! The policy service's use cases, independent of gRPC.
use std::sync::Arc;

use enroll_shared::metrics::{Counter, Meters};
use enroll_shared::paging::{Page, PageRequest};
use enroll_shared::time::SharedClock;
use opentelemetry::KeyValue;

use crate::cache::{CacheStatus, PolicyCache};
use crate::domain::engine::{Conflict, Decision, EvaluationRequest, PolicySet, Subject};
use crate::domain::pin::pin_violations;
use crate::domain::policy::{CompiledPolicy, PolicySpec, StoredPolicy, validate_name};
use crate::error::PolicyError;
use crate::store::{ChangeContext, PolicyChange, PolicyStore, StoreError};

/// A policy with the conflicts it takes part in.
#[derive(Debug, Clone)]
pub struct PolicyView {
    pub policy: StoredPolicy,
    pub conflicts: Vec<Conflict>,
}

/// What WatchPolicySet follows: the published state, and the set it names.
pub struct SetWatch {
    pub published: tokio::sync::watch::Receiver<crate::cache::PublishedSet>,
    cache: Arc<PolicyCache>,
}

impl SetWatch {
    /// The served set of `version`, if that is the one served now (a set that is not served,
    /// stale or holding an unreadable policy, is never handed out).
    pub fn served_set(&self, version: i64) -> Option<Arc<PolicySet>> {
        self.cache
            .decision_set()
            .ok()
            .filter(|set| set.version() == version)
    }
}

pub struct Policies<S> {
    store: Arc<S>,
    cache: Arc<PolicyCache>,
    clock: SharedClock,
    metrics: DecisionMetrics,
}

impl<S> Clone for Policies<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            cache: self.cache.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Decision counters, and gauges of the policy set the decisions are made on.
#[derive(Clone)]
struct DecisionMetrics {
    decisions: Counter,
    denials: Counter,
}

impl DecisionMetrics {
    fn new(meters: &Meters, cache: &Arc<PolicyCache>) -> Self {
        let gauge = |name, unit, description, read: fn(&CacheStatus) -> f64| {
            let cache = cache.clone();
            meters.gauge(name, unit, description, move || {
                cache
                    .status()
                    .map(|status| vec![(read(&status), Vec::new())])
                    .unwrap_or_default()
            });
        };
        gauge(
            "enroll.policy.set.version",
            "",
            "Version of the loaded policy set",
            |status| status.version as f64,
        );
        gauge(
            "enroll.policy.set.age",
            "s",
            "Time since the database last confirmed the loaded policy set (decisions stop past cache.max_staleness_ms)",
            |status| status.age.as_secs_f64(),
        );
        gauge(
            "enroll.policy.set.policies",
            "",
            "Policies in the loaded set",
            |status| status.policies as f64,
        );
        gauge(
            "enroll.policy.set.unreadable",
            "",
            "Active stored policies that do not compile (decisions are refused while any)",
            |status| status.unreadable as f64,
        );
        Self {
            decisions: meters.counter(
                "enroll.policy.decisions",
                "Enrollment decisions by action and outcome (allowed, denied, conflict, unavailable)",
            ),
            denials: meters.counter("enroll.policy.denials", "Denials by action and code"),
        }
    }

    fn record(&self, request: &EvaluationRequest, decision: &Result<Decision, PolicyError>) {
        let action = KeyValue::new("action", request.action.as_str());
        let outcome = match decision {
            Ok(decision) if decision.allowed() => "allowed",
            Ok(_) => "denied",
            Err(PolicyError::Conflict(_)) => "conflict",
            Err(_) => "unavailable",
        };
        self.decisions
            .add(1, &[action.clone(), KeyValue::new("outcome", outcome)]);
        if let Ok(decision) = decision {
            for denial in &decision.denials {
                self.denials
                    .add(1, &[action.clone(), KeyValue::new("code", denial.code)]);
            }
        }
    }
}

impl<S: PolicyStore> Policies<S> {
    /// Counts decisions on `meters` and shows the state of `cache` there.
    pub fn new(
        store: Arc<S>,
        cache: Arc<PolicyCache>,
        clock: SharedClock,
        meters: &Meters,
    ) -> Self {
        Self {
            metrics: DecisionMetrics::new(meters, &cache),
            store,
            cache,
            clock,
        }
    }

    /// Follows the loaded policy-set version (WatchPolicySet), with the set itself.
    pub fn watch_set(&self) -> SetWatch {
        SetWatch {
            published: self.cache.published(),
            cache: self.cache.clone(),
        }
    }

    pub fn evaluate(&self, request: &EvaluationRequest) -> Result<Decision, PolicyError> {
        let decision = self.policy_set().and_then(|set| {
            set.require_client(&request.subject)?;
            set.evaluate(request).map_err(PolicyError::Conflict)
        });
        self.metrics.record(request, &decision);
        decision
    }

    /// Every PIN rule `pin` breaks for the subject.
    pub fn validate_pin(&self, subject: &Subject, pin: &str) -> Result<Vec<String>, PolicyError> {
        let set = self.policy_set()?;
        set.require_client(subject)?;
        let (settings, decided_by) = set.resolve(subject).map_err(PolicyError::Conflict)?;
        Ok(pin_violations(pin, &settings, &decided_by))
    }

    pub async fn create(&self, spec: PolicySpec, actor: String) -> Result<PolicyView, PolicyError> {
        let (spec, compiled) = spec.validate()?;
        let policy = self.store.create(spec, self.context(actor)).await?;
        self.after_write().await;
        Ok(PolicyView {
            policy,
            conflicts: self.conflicts_with(&compiled),
        })
    }

    pub async fn update(
        &self,
        spec: PolicySpec,
        etag: &str,
        actor: String,
    ) -> Result<PolicyView, PolicyError> {
        let etag = required_etag(etag)?;
        let (spec, compiled) = spec.validate()?;
        let policy = self.store.update(spec, etag, self.context(actor)).await?;
        self.after_write().await;
        Ok(PolicyView {
            policy,
            conflicts: self.conflicts_with(&compiled),
        })
    }

    /// A dry run of [`Self::create`]: the same validation, existence check and conflicts,
    /// nothing stored. The would-be policy has no etag (it has no stored version).
    pub async fn validate_create(&self, spec: PolicySpec) -> Result<PolicyView, PolicyError> {
        let (spec, compiled) = spec.validate()?;
        match self.store.get(&spec.name).await {
            // An unreadable row still holds the name: a create would fail on it too.
            Ok(Some(_)) | Err(StoreError::Corrupt { .. }) => {
                return Err(PolicyError::AlreadyExists(spec.name));
            }
            Ok(None) => {}
            Err(error) => return Err(error.into()),
        }
        let now = self.clock.now();
        Ok(PolicyView {
            conflicts: self.conflicts_with(&compiled),
            policy: StoredPolicy {
                spec,
                etag: String::new(),
                create_time: now,
                update_time: now,
            },
        })
    }

    /// A dry run of [`Self::update`]: the same validation, etag check and conflicts,
    /// nothing stored. The would-be policy keeps the stored etag (it is still current).
    pub async fn validate_update(
        &self,
        spec: PolicySpec,
        etag: &str,
    ) -> Result<PolicyView, PolicyError> {
        let etag = required_etag(etag)?;
        let (spec, compiled) = spec.validate()?;
        let stored = self
            .store
            .get(&spec.name)
            .await?
            .ok_or_else(|| PolicyError::NotFound(spec.name.clone()))?;
        if stored.etag != etag {
            return Err(PolicyError::EtagMismatch {
                name: spec.name,
                given: etag.to_owned(),
            });
        }
        Ok(PolicyView {
            conflicts: self.conflicts_with(&compiled),
            policy: StoredPolicy {
                spec,
                update_time: self.clock.now(),
                ..stored
            },
        })
    }

    pub async fn delete(
        &self,
        name: &str,
        etag: Option<&str>,
        actor: String,
    ) -> Result<(), PolicyError> {
        validate_name(name).map_err(|invalid| PolicyError::invalid("name", invalid.message))?;
        self.store.delete(name, etag, self.context(actor)).await?;
        self.after_write().await;
        Ok(())
    }

    pub async fn get(&self, name: &str) -> Result<PolicyView, PolicyError> {
        validate_name(name).map_err(|invalid| PolicyError::invalid("name", invalid.message))?;
        let policy = self
            .store
            .get(name)
            .await?
            .ok_or_else(|| PolicyError::NotFound(name.to_owned()))?;
        Ok(self.view(policy))
    }

    /// A page of policies by name.
    pub async fn list(&self, page: &PageRequest<String>) -> Result<Page<PolicyView>, PolicyError> {
        let policies = self.store.list(page.after.as_deref(), page.fetch()).await?;
        Ok(
            Page::cut(policies, page.size, |policy| policy.spec.name.clone())
                .map(|policy| self.view(policy)),
        )
    }

    /// A page of recorded changes, newest first.
    pub async fn history(
        &self,
        name: Option<&str>,
        page: &PageRequest<i64>,
    ) -> Result<Page<PolicyChange>, PolicyError> {
        let changes = self.store.history(name, page.after, page.fetch()).await?;
        Ok(Page::cut(changes, page.size, |change| change.id))
    }

    /// A page of recorded changes with ids above `after_id` (or above the page token's,
    /// which continues such a page), oldest first: the outbox read.
    pub async fn history_after(
        &self,
        name: Option<&str>,
        after_id: i64,
        page: &PageRequest<i64>,
    ) -> Result<Page<PolicyChange>, PolicyError> {
        let after = page.after.unwrap_or(after_id).max(after_id);
        let changes = self.store.history_after(name, after, page.fetch()).await?;
        Ok(Page::cut(changes, page.size, |change| change.id))
    }

    fn view(&self, policy: StoredPolicy) -> PolicyView {
        let conflicts = PolicySet::compile_one(&policy.spec)
            .map(|compiled| self.conflicts_with(&compiled))
            .unwrap_or_default();
        PolicyView { policy, conflicts }
    }

    fn conflicts_with(&self, compiled: &CompiledPolicy) -> Vec<Conflict> {
        // Warnings only: the last compiled set will do even when decisions are refused.
        self.cache
            .last_set()
            .map(|set| set.conflicts_with(compiled))
            .unwrap_or_default()
    }

    fn policy_set(&self) -> Result<Arc<PolicySet>, PolicyError> {
        self.cache.decision_set().map_err(PolicyError::Unservable)
    }

    fn context(&self, actor: String) -> ChangeContext {
        ChangeContext {
            actor,
            now: self.clock.now(),
        }
    }

    /// Makes this instance see its own write at once; other replicas follow through
    /// NOTIFY or the version poll.
    async fn after_write(&self) {
        if let Err(error) = self.cache.refresh_if_changed(self.store.as_ref()).await {
            tracing::warn!(%error, "policy set refresh after write failed");
        }
    }
}

/// The etag an update names, trimmed: INVALID_ARGUMENT when there is none.
fn required_etag(etag: &str) -> Result<&str, PolicyError> {
    let etag = etag.trim();
    if etag.is_empty() {
        return Err(PolicyError::invalid(
            "etag",
            "required: pass the etag of the policy you read",
        ));
    }
    Ok(etag)
}
