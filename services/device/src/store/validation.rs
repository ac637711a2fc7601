//! What Validate reads and writes: usable tokens, consumed codes and failure counts (the
//! pool and autoassignment are in `autoassign`). Each write is one conditional statement or
//! one locked transaction, so a code is accepted once even when requests race.
use sea_orm::{ConnectionTrait, EntityTrait, TransactionTrait};

use super::entities::tokens;
use super::sql::statement;
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

impl TokenStore {
    /// The user's tokens that may validate: enabled and not expired, oldest first.
    pub async fn usable_tokens(
        &self,
        realm: &Realm,
        user: &UserName,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<tokens::Model>, DeviceError> {
        // One round trip: the owner is joined, not looked up first.
        let backend = self.db.get_database_backend();
        Ok(tokens::Entity::find()
            .from_raw_sql(statement(
                backend,
                "SELECT t.* FROM tokens t JOIN users u ON u.id = t.user_id \
                 WHERE u.realm = $1 AND u.name = $2 AND t.state = 'enabled' \
                 ORDER BY t.create_time",
                vec![realm.as_str().into(), user.as_str().into()],
            ))
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|token| token.expire_time.is_none_or(|expire| expire > now))
            .collect())
    }

    /// Consumes `factor` (the matched step or counter) unless another request already did:
    /// the conditional update makes a code valid once, even when two requests race.
    pub async fn accept(
        &self,
        serial: &str,
        factor: i64,
        audit: AuditRecord,
    ) -> Result<bool, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let updated = transaction
            .execute_raw(statement(
                backend,
                "UPDATE tokens SET counter = $1, failure_count = 0 \
                 WHERE serial = $2 AND counter <= $3 AND state = 'enabled'",
                vec![(factor + 1).into(), serial.into(), factor.into()],
            ))
            .await?;
        let accepted = updated.rows_affected() == 1;
        let mut audit = audit;
        if !accepted {
            audit.result = "denied";
            audit.reason = "one-time code already used".to_owned();
        }
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(accepted)
    }

    /// Counts a failed validation on each token; locks those reaching `max_failures`.
    pub async fn record_failure(
        &self,
        serials: &[String],
        max_failures: u32,
        audit: AuditRecord,
    ) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        for serial in serials {
            transaction
                .execute_raw(statement(
                    backend,
                    "UPDATE tokens SET failure_count = failure_count + 1, \
                     state = CASE WHEN failure_count + 1 >= $1 THEN 'locked' ELSE state END \
                     WHERE serial = $2",
                    vec![i64::from(max_failures).into(), serial.clone().into()],
                ))
                .await?;
        }
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }
}
