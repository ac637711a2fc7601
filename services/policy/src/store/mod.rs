//! Persistence of policies, their history and the policy-set version.
mod entities;
pub mod migration;
mod sea;

/// The actor the demo policy is recorded under in the history (no API key may take it).
pub const DEMO_ACTOR: &str = "seed-demo";

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::domain::policy::{PolicySpec, StoredPolicy, UnreadablePolicy};

pub use sea::SeaOrmPolicyStore;

/// The PostgreSQL notification channel announcing a new policy-set version.
pub const CHANGE_CHANNEL: &str = "enroll_policy_changed";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("policy `{0}` already exists")]
    AlreadyExists(String),
    #[error("policy `{0}` not found")]
    NotFound(String),
    #[error("policy `{name}` was changed by someone else (etag `{given}`, stored `{stored}`)")]
    EtagMismatch {
        name: String,
        given: String,
        stored: String,
    },
    #[error("stored policy `{name}` is unreadable: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// Every stored policy at one version: the rows that parse, and the rows that do not.
#[derive(Debug, Clone, Default)]
pub struct LoadedPolicies {
    pub version: i64,
    pub policies: Vec<StoredPolicy>,
    pub unreadable: Vec<UnreadablePolicy>,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    pub id: i64,
    pub policy_name: String,
    pub change: ChangeKind,
    pub actor: String,
    pub change_time: DateTime<Utc>,
    pub before: Option<PolicySpec>,
    pub after: Option<PolicySpec>,
}

/// The namespace of policy-change event ids (fixed: changing it changes every id).
const EVENT_ID_NAMESPACE: &[u8] = b"enroll.policy.v1/policy_history";

impl PolicyChange {
    /// The stable id of this change's event: a name-based UUID (version 8, SHA-256 of the
    /// namespace and the history id, as RFC 9562's name-based example), the same on every
    /// read and every replica, so a relay that copies the change twice writes one event.
    pub fn event_id(&self) -> uuid::Uuid {
        event_id(self.id)
    }
}

/// [`PolicyChange::event_id`] of history id `id`.
pub fn event_id(id: i64) -> uuid::Uuid {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(EVENT_ID_NAMESPACE);
    hash.update(b":");
    hash.update(id.to_be_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }

    fn parse(value: &str) -> Option<ChangeKind> {
        [ChangeKind::Create, ChangeKind::Update, ChangeKind::Delete]
            .into_iter()
            .find(|kind| kind.as_str() == value)
    }
}

/// Who changes what, when.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    pub actor: String,
    pub now: DateTime<Utc>,
}

/// Where policies live. Every write records its history and bumps the policy-set version in
/// the same transaction.
pub trait PolicyStore: Send + Sync + 'static {
    /// The current policy-set version (cheap: one row).
    fn version(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Every policy, with the version they belong to; rows that do not parse are returned
    /// as unreadable, never dropped.
    fn load_all(&self) -> impl Future<Output = Result<LoadedPolicies, StoreError>> + Send;
    fn get(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<StoredPolicy>, StoreError>> + Send;
    /// Up to `limit` policies with names after `after`, by name.
    fn list(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<StoredPolicy>, StoreError>> + Send;
    fn create(
        &self,
        spec: PolicySpec,
        context: ChangeContext,
    ) -> impl Future<Output = Result<StoredPolicy, StoreError>> + Send;
    /// Replaces the policy named `spec.name` when its etag is `etag`.
    fn update(
        &self,
        spec: PolicySpec,
        etag: &str,
        context: ChangeContext,
    ) -> impl Future<Output = Result<StoredPolicy, StoreError>> + Send;
    /// Deletes a policy; when `etag` is given it must match.
    fn delete(
        &self,
        name: &str,
        etag: Option<&str>,
        context: ChangeContext,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Changes newest first, optionally of one policy, with ids below `before_id`.
    fn history(
        &self,
        name: Option<&str>,
        before_id: Option<i64>,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<PolicyChange>, StoreError>> + Send;
    /// Changes oldest first, optionally of one policy, with ids above `after_id`: the
    /// outbox read (see `SeaOrmPolicyStore::begin_write` for why it never skips one).
    fn history_after(
        &self,
        name: Option<&str>,
        after_id: i64,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<PolicyChange>, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_distinct_uuids() {
        assert_eq!(event_id(7), event_id(7));
        assert_ne!(event_id(7), event_id(8));
        assert_eq!(event_id(7).get_version_num(), 8);
        // Fixed: a relay that read the change before an upgrade must get the same id after.
        assert_eq!(
            event_id(1).to_string(),
            "1bb79919-649e-833d-a77a-7a7715e2fb39"
        );
    }
}
