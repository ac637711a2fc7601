//! Changes to existing tokens, each in one transaction with its audit event. The first
//! statement of each transaction writes (locks), so SQLite waits for its write lock.
use sea_orm::{ConnectionTrait, DatabaseTransaction, EntityTrait, TransactionTrait};

use super::entities::tokens;
use super::tokens::{AuditRecord, Limits, TokenStore, statement};
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// What to change on one token.
#[derive(Debug, Clone)]
pub enum TokenChange {
    Enable,
    Disable,
    Unassign,
    SetPin(String),
    Delete,
}

impl TokenStore {
    /// Locks the token row (a no-op update) and reads it.
    async fn lock_token(
        transaction: &DatabaseTransaction,
        serial: &str,
    ) -> Result<tokens::Model, DeviceError> {
        let backend = transaction.get_database_backend();
        let locked = transaction
            .execute_raw(statement(
                backend,
                "UPDATE tokens SET failure_count = failure_count WHERE serial = $1",
                vec![serial.into()],
            ))
            .await?;
        if locked.rows_affected() == 0 {
            return Err(DeviceError::NotFound(format!("token `{serial}`")));
        }
        tokens::Entity::find_by_id(serial.to_owned())
            .one(transaction)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("token `{serial}`")))
    }

    /// Applies `change`; returns the token after it (None once deleted).
    pub async fn change(
        &self,
        serial: &str,
        change: TokenChange,
        audit: AuditRecord,
    ) -> Result<Option<tokens::Model>, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        Self::lock_token(&transaction, serial).await?;
        let (sql, values): (&str, Vec<sea_orm::Value>) = match &change {
            TokenChange::Enable => (
                "UPDATE tokens SET state = 'enabled', failure_count = 0 WHERE serial = $1",
                vec![serial.into()],
            ),
            TokenChange::Disable => (
                "UPDATE tokens SET state = 'disabled' WHERE serial = $1",
                vec![serial.into()],
            ),
            TokenChange::Unassign => (
                "UPDATE tokens SET user_id = NULL, pin_hash = NULL, failure_count = 0 WHERE serial = $1",
                vec![serial.into()],
            ),
            TokenChange::SetPin(sealed) => (
                "UPDATE tokens SET pin_hash = $1 WHERE serial = $2",
                vec![sealed.clone().into(), serial.into()],
            ),
            TokenChange::Delete => ("DELETE FROM tokens WHERE serial = $1", vec![serial.into()]),
        };
        transaction
            .execute_raw(statement(backend, sql, values))
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        let after = tokens::Entity::find_by_id(serial.to_owned())
            .one(&transaction)
            .await?;
        transaction.commit().await?;
        Ok(after)
    }

    /// Assigns a pool token of `realm` to `user`, within the user's limits.
    pub async fn assign(
        &self,
        serial: &str,
        realm: &Realm,
        user: &UserName,
        limits: &Limits,
        mut audit: AuditRecord,
    ) -> Result<tokens::Model, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let user_id = Self::lock_user(&transaction, realm, user, audit.time).await?;
        let token = Self::lock_token(&transaction, serial).await?;
        if token.realm != realm.as_str() {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` belongs to realm `{}`, not `{realm}`",
                token.realm
            )));
        }
        if token.user_id.is_some() {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is already assigned; unassign it first"
            )));
        }
        let user_limits = Limits {
            per_realm: None,
            ..limits.clone()
        };
        if let Some(error) = self
            .exceeded(&transaction, realm, Some(user_id), &user_limits)
            .await?
        {
            audit.result = "denied";
            audit.reason = error.audit_reason();
            Self::insert_audit(&transaction, audit).await?;
            transaction.commit().await?;
            return Err(error);
        }
        transaction
            .execute_raw(statement(
                backend,
                "UPDATE tokens SET user_id = $1 WHERE serial = $2",
                vec![user_id.into(), serial.into()],
            ))
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        let after = tokens::Entity::find_by_id(serial.to_owned())
            .one(&transaction)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("token `{serial}`")))?;
        transaction.commit().await?;
        Ok(after)
    }
}

impl TokenStore {
    /// The user's tokens that may validate: enabled and not expired, oldest first.
    pub async fn usable_tokens(
        &self,
        realm: &Realm,
        user: &UserName,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<tokens::Model>, DeviceError> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        let Some(owner) = super::entities::users::Entity::find()
            .filter(super::entities::users::Column::Realm.eq(realm.as_str()))
            .filter(super::entities::users::Column::Name.eq(user.as_str()))
            .one(&self.db)
            .await?
        else {
            return Ok(Vec::new());
        };
        Ok(tokens::Entity::find()
            .filter(tokens::Column::UserId.eq(owner.id))
            .filter(tokens::Column::State.eq("enabled"))
            .order_by_asc(tokens::Column::CreateTime)
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

impl TokenStore {
    /// Marks `serial` lost and gives its owner `replacement`, in one transaction. The
    /// replacement is not held to the user limits: it stands in for the lost token, which
    /// stops validating at once.
    pub async fn replace_lost(
        &self,
        serial: &str,
        mut replacement: tokens::Model,
        audit: AuditRecord,
    ) -> Result<tokens::Model, DeviceError> {
        use sea_orm::IntoActiveModel;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let lost = Self::lock_token(&transaction, serial).await?;
        let Some(user_id) = lost.user_id else {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is not assigned to anyone"
            )));
        };
        if lost.state == "lost" {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is already reported lost"
            )));
        }
        transaction
            .execute_raw(statement(
                backend,
                "UPDATE tokens SET state = 'lost' WHERE serial = $1",
                vec![serial.into()],
            ))
            .await?;
        replacement.user_id = Some(user_id);
        replacement.realm = lost.realm;
        tokens::Entity::insert(replacement.clone().into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(replacement)
    }
}
