//! Link expiry as events: a link ends by the clock alone, so a scan writes `link.expired`
//! and `otp_link.expired` after the fact, once per link (the update that marks it decides
//! which instance writes it), with their audit events.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::events::EventStore;
use super::sql::statement;
use crate::domain::audit::AuditRecord;
use crate::error::DeviceError;

impl EventStore {
    /// Writes `link.expired` and `otp_link.expired` (with their audit events) for the
    /// links whose end passed by `now` unused, once each; returns how many. Any instance
    /// may run it: the update that marks a link decides who writes its event.
    pub async fn record_expiries(&self, now: DateTime<Utc>) -> Result<u64, DeviceError> {
        let backend = self.db.get_database_backend();
        let mut recorded = 0;
        for (table, action, unused) in [
            ("enrollment_links", "expire_link", ""),
            (
                "otp_enrollment_links",
                "expire_otp_link",
                " AND serial IS NULL",
            ),
        ] {
            let transaction = self.db.begin().await?;
            let rows = transaction
                .query_all_raw(statement(
                    backend,
                    &format!(
                        "UPDATE {table} SET expiry_recorded = TRUE WHERE state = 'active' \
                         AND expire_time <= $1 AND expiry_recorded = FALSE{unused} \
                         RETURNING id, realm, user_name, expire_time"
                    ),
                    vec![now.into()],
                ))
                .await?;
            for row in rows {
                let id: String = row.try_get_by_index(0)?;
                let realm: String = row.try_get_by_index(1)?;
                let user: String = row.try_get_by_index(2)?;
                let expired: DateTime<Utc> = row.try_get_by_index(3)?;
                let audit = AuditRecord {
                    actor: "enroll-device".to_owned(),
                    action,
                    realm,
                    user,
                    subject: id,
                    result: crate::domain::audit::OK,
                    reason: format!("ended {expired} unused"),
                    trace_id: String::new(),
                    time: now,
                    event: None,
                };
                super::audit::insert(&transaction, audit).await?;
                recorded += 1;
            }
            transaction.commit().await?;
        }
        Ok(recorded)
    }
}
