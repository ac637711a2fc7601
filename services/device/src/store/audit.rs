//! The audit trail: events written in the transaction of the change they describe (or alone,
//! for refusals that change nothing), read newest first.
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, Set};

use super::convert;
use super::entities::audit_events;
use crate::domain::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::error::DeviceError;

/// Writes `record` and, when it is an enrollment event, the event (same connection: the
/// change's transaction).
pub(super) async fn insert(
    db: &impl ConnectionTrait,
    record: AuditRecord,
) -> Result<(), DeviceError> {
    super::events::record_audited(db, &record).await?;
    row(record).insert(db).await?;
    Ok(())
}

/// The audit row of `record` (its id left to the database).
pub(super) fn row(record: AuditRecord) -> audit_events::ActiveModel {
    audit_events::ActiveModel {
        time: Set(record.time),
        actor: Set(record.actor),
        action: Set(record.action.to_owned()),
        realm: Set(record.realm),
        user_name: Set(record.user),
        subject: Set(record.subject),
        result: Set(record.result.to_owned()),
        reason: Set(record.reason),
        trace_id: Set(record.trace_id),
        ..Default::default()
    }
}

#[derive(Clone)]
pub struct AuditStore {
    db: DatabaseConnection,
}

impl AuditStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Writes one event on its own.
    pub async fn record(&self, record: AuditRecord) -> Result<(), DeviceError> {
        insert(&self.db, record).await
    }

    /// Events newest first, with ids below `before_id` (`lists::audit_events`).
    pub async fn list(
        &self,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEvent>, DeviceError> {
        let backend = self.db.get_database_backend();
        Ok(audit_events::Entity::find()
            .from_raw_sql(super::lists::audit_events(
                backend, filter, before_id, limit,
            ))
            .all(&self.db)
            .await?
            .into_iter()
            .map(convert::audit_event)
            .collect())
    }
}
