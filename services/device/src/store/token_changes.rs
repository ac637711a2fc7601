//! Changes to existing tokens, each in one transaction with its audit event. The first
//! statement of each transaction writes (locks), so SQLite waits for its write lock.
use sea_orm::{ConnectionTrait, DatabaseTransaction, EntityTrait, TransactionTrait};

use super::entities::tokens;
use super::tokens::{
    AuditRecord, Idempotency, Limits, Outcome, TokenStore, remember, replayed, statement,
};
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

    /// Applies `change`; returns the token after it (None once deleted), or the first
    /// response when the request id was used before.
    pub async fn change(
        &self,
        serial: &str,
        change: TokenChange,
        audit: AuditRecord,
        idempotency: Option<Idempotency<'_, Option<tokens::Model>>>,
    ) -> Result<Outcome<Option<tokens::Model>>, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        // A deleted token is not found, but its deletion may be the first response.
        let locked = match Self::lock_token(&transaction, serial).await {
            Err(DeviceError::NotFound(message)) => Err(DeviceError::NotFound(message)),
            Err(error) => return Err(error),
            Ok(token) => Ok(token),
        };
        if let Some(first) = replayed(idempotency.as_ref(), &transaction).await? {
            transaction.rollback().await?;
            return Ok(Outcome::Replayed(first));
        }
        locked?;
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
        remember(idempotency.as_ref(), &transaction, &after).await?;
        transaction.commit().await?;
        Ok(Outcome::Done(after))
    }

    /// Assigns a pool token of `realm` to `user`, within the user's limits.
    pub async fn assign(
        &self,
        serial: &str,
        realm: &Realm,
        user: &UserName,
        limits: &Limits,
        mut audit: AuditRecord,
        idempotency: Option<Idempotency<'_, tokens::Model>>,
    ) -> Result<Outcome<tokens::Model>, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let user_id = Self::lock_user(&transaction, realm, user, audit.time).await?;
        if let Some(first) = replayed(idempotency.as_ref(), &transaction).await? {
            transaction.rollback().await?;
            return Ok(Outcome::Replayed(first));
        }
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
        remember(idempotency.as_ref(), &transaction, &after).await?;
        transaction.commit().await?;
        Ok(Outcome::Done(after))
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

impl TokenStore {
    /// Marks `serial` lost and gives its owner `replacement`, in one transaction. The
    /// replacement is not held to the user limits: it stands in for the lost token, which
    /// stops validating at once.
    pub async fn replace_lost(
        &self,
        serial: &str,
        mut replacement: tokens::Model,
        audit: AuditRecord,
        idempotency: Option<Idempotency<'_, tokens::Model>>,
    ) -> Result<Outcome<tokens::Model>, DeviceError> {
        use sea_orm::IntoActiveModel;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let lost = Self::lock_token(&transaction, serial).await?;
        if let Some(first) = replayed(idempotency.as_ref(), &transaction).await? {
            transaction.rollback().await?;
            return Ok(Outcome::Replayed(first));
        }
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
        remember(idempotency.as_ref(), &transaction, &replacement).await?;
        transaction.commit().await?;
        Ok(Outcome::Done(replacement))
    }
}

impl TokenStore {
    /// Inserts pool tokens into `realm` in one transaction. Serials that already exist are
    /// returned, not inserted; the realm limit applies to the whole import.
    pub async fn import(
        &self,
        realm: &Realm,
        batch: Vec<tokens::Model>,
        per_realm: Option<(u32, String)>,
        mut audit: AuditRecord,
        idempotency: Option<Idempotency<'_, Vec<String>>>,
    ) -> Result<Outcome<Vec<String>>, DeviceError> {
        use sea_orm::{ColumnTrait, IntoActiveModel, QueryFilter, QuerySelect};
        let transaction = self.db.begin().await?;
        Self::lock_realm(&transaction, realm).await?;
        if let Some(first) = replayed(idempotency.as_ref(), &transaction).await? {
            transaction.rollback().await?;
            return Ok(Outcome::Replayed(first));
        }
        let serials: Vec<String> = batch.iter().map(|token| token.serial.clone()).collect();
        let mut existing = Vec::new();
        for chunk in serials.chunks(500) {
            let found: Vec<String> = tokens::Entity::find()
                .select_only()
                .column(tokens::Column::Serial)
                .filter(tokens::Column::Serial.is_in(chunk.to_vec()))
                .into_tuple()
                .all(&transaction)
                .await?;
            existing.extend(found);
        }
        let fresh: Vec<tokens::Model> = batch
            .into_iter()
            .filter(|token| !existing.contains(&token.serial))
            .collect();
        if let Some((limit, policy)) = per_realm {
            let backend = transaction.get_database_backend();
            let row = transaction
                .query_one_raw(statement(
                    backend,
                    "SELECT COUNT(*) FROM tokens WHERE realm = $1",
                    vec![realm.as_str().into()],
                ))
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound("count".into()))?;
            let held: i64 = row.try_get_by_index(0)?;
            if held.max(0) as u64 + fresh.len() as u64 > u64::from(limit) {
                let error = DeviceError::LimitReached {
                    limit: "max_token_per_realm",
                    value: limit,
                    policy,
                };
                audit.result = "denied";
                audit.reason =
                    format!("importing {} tokens: {}", fresh.len(), error.audit_reason());
                Self::insert_audit(&transaction, audit).await?;
                transaction.commit().await?;
                return Err(error);
            }
        }
        let imported = fresh.len();
        for chunk in fresh.chunks(200) {
            tokens::Entity::insert_many(
                chunk
                    .iter()
                    .cloned()
                    .map(IntoActiveModel::into_active_model),
            )
            .exec_without_returning(&transaction)
            .await?;
        }
        audit.reason = format!("imported {imported} tokens");
        Self::insert_audit(&transaction, audit).await?;
        remember(idempotency.as_ref(), &transaction, &existing).await?;
        transaction.commit().await?;
        Ok(Outcome::Done(existing))
    }
}

impl TokenStore {
    /// The realm's unassigned, enabled pool tokens.
    pub async fn pool(&self, realm: &Realm) -> Result<Vec<tokens::Model>, DeviceError> {
        use sea_orm::{ColumnTrait, QueryFilter};
        Ok(tokens::Entity::find()
            .filter(tokens::Column::Realm.eq(realm.as_str()))
            .filter(tokens::Column::UserId.is_null())
            .filter(tokens::Column::State.eq("enabled"))
            .all(&self.db)
            .await?)
    }

    /// Whether the user holds any token at all.
    pub async fn holds_tokens(&self, realm: &Realm, user: &UserName) -> Result<bool, DeviceError> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(statement(
                backend,
                "SELECT COUNT(*) FROM tokens t JOIN users u ON t.user_id = u.id WHERE u.realm = $1 AND u.name = $2",
                vec![realm.as_str().into(), user.as_str().into()],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("count".into()))?;
        let held: i64 = row.try_get_by_index(0)?;
        Ok(held > 0)
    }

    /// Assigns a pool token to a user who holds none, consuming the matched code and setting
    /// the PIN, when everything still holds inside the transaction: the user still has no
    /// token (their row is locked), the token is still in the realm's pool and its code is
    /// still unused. Returns false when any of that changed (a racing attempt won).
    pub async fn autoassign(
        &self,
        realm: &Realm,
        user: &UserName,
        serial: &str,
        factor: i64,
        pin_hash: String,
        mut audit: AuditRecord,
    ) -> Result<bool, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let user_id = Self::lock_user(&transaction, realm, user, audit.time).await?;
        let held = transaction
            .query_one_raw(statement(
                backend,
                "SELECT COUNT(*) FROM tokens WHERE user_id = $1",
                vec![user_id.into()],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("count".into()))?
            .try_get_by_index::<i64>(0)?;
        let assigned = if held == 0 {
            transaction
                .execute_raw(statement(
                    backend,
                    "UPDATE tokens SET user_id = $1, pin_hash = $2, counter = $3, failure_count = 0 \
                     WHERE serial = $4 AND realm = $5 AND user_id IS NULL AND state = 'enabled' AND counter <= $6",
                    vec![
                        user_id.into(),
                        pin_hash.into(),
                        (factor + 1).into(),
                        serial.into(),
                        realm.as_str().into(),
                        factor.into(),
                    ],
                ))
                .await?
                .rows_affected()
                == 1
        } else {
            false
        };
        if !assigned {
            audit.result = "denied";
            audit.reason =
                "autoassignment lost a race or the user already holds a token".to_owned();
        }
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(assigned)
    }
}
