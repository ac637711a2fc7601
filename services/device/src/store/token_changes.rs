//! Changes to existing tokens, each in one transaction with its audit event. The first
//! statement of each transaction writes (locks), so SQLite waits for its write lock.
use sea_orm::{ConnectionTrait, DatabaseTransaction, EntityTrait, TransactionTrait};

use super::entities::columns::TokenStateColumn;
use super::entities::tokens;
use super::idempotency::{Idempotency, Outcome, remember, replayed};
use super::sql::{counted_in_realm, exceeded, lock_realm, lock_user, statement};
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::decision::Limits;
use crate::domain::names::{Realm, UserName};
use crate::domain::tokens::TokenChange;
use crate::error::DeviceError;

/// The owner's `max_active_token_per_user` that enabling a token must keep (the token's
/// owner as read before the transaction; the transaction checks it still is).
#[derive(Debug, Clone)]
pub struct ActiveLimit<'a> {
    pub realm: &'a Realm,
    pub user: &'a UserName,
    pub limit: (u32, String),
}

/// What a lost-token report did.
#[derive(Debug, Clone)]
pub enum LostReport {
    /// The token is lost and this temporary password token replaces it.
    Replaced(Box<tokens::Model>),
    /// The token is lost; no replacement was issued (none was asked for).
    MarkedLost,
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
        active_limit: Option<ActiveLimit<'_>>,
        mut audit: AuditRecord,
        idempotency: Option<Idempotency<'_, Option<tokens::Model>>>,
    ) -> Result<Outcome<Option<tokens::Model>>, DeviceError> {
        let now = audit.time;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        // The owner's row first, as AssignToken locks it: one lock order, no deadlock.
        let owner_id = match &active_limit {
            Some(guard) => Some(lock_user(&transaction, guard.realm, guard.user, now).await?),
            None => None,
        };
        // A deleted token is not found, but its deletion may be the first response.
        let locked = match Self::lock_token(&transaction, serial).await {
            Err(DeviceError::NotFound(message)) => Err(DeviceError::NotFound(message)),
            Err(error) => return Err(error),
            Ok(token) => Ok(token),
        };
        if let Some(first) = replayed(idempotency.as_ref(), &transaction, now).await? {
            transaction.rollback().await?;
            return Ok(Outcome::Replayed(first));
        }
        let token = locked?;
        if let (Some(guard), Some(owner_id)) = (&active_limit, owner_id) {
            if token.user_id != Some(owner_id) {
                return Err(DeviceError::FailedPrecondition(format!(
                    "token `{serial}` changed owner meanwhile; retry"
                )));
            }
            // Enabling an enabled token adds no active token.
            let limits = Limits {
                active_per_user: Some(guard.limit.clone()),
                ..Limits::default()
            };
            if token.state != TokenStateColumn::Enabled
                && let Some(error) =
                    exceeded(&transaction, guard.realm, Some(owner_id), &limits, now).await?
            {
                audit.result = "denied";
                audit.reason = error.audit_reason();
                Self::insert_audit(&transaction, audit).await?;
                transaction.commit().await?;
                return Err(error);
            }
        }
        let (sql, values): (&str, Vec<sea_orm::Value>) = match &change {
            TokenChange::Enable => (
                "UPDATE tokens SET state = 'enabled', failure_count = 0, locked_until = NULL \
                 WHERE serial = $1",
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
        remember(
            idempotency.as_ref(),
            &transaction,
            &after,
            now,
            &self.records.retention,
        )
        .await?;
        transaction.commit().await?;
        Ok(Outcome::Done(after))
    }

    /// Assigns a pool token of `realm` to `user`, within the user's limits. With the
    /// `factor` (step or counter) of a code the caller checked, that code and every earlier
    /// one are used up in the same update, or nothing is assigned if another request used
    /// it first.
    #[allow(clippy::too_many_arguments)]
    pub async fn assign(
        &self,
        serial: &str,
        realm: &Realm,
        user: &UserName,
        factor: Option<i64>,
        limits: &Limits,
        mut audit: AuditRecord,
        idempotency: Option<Idempotency<'_, tokens::Model>>,
    ) -> Result<Outcome<tokens::Model>, DeviceError> {
        let now = audit.time;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let user_id = lock_user(&transaction, realm, user, audit.time).await?;
        if let Some(first) = replayed(idempotency.as_ref(), &transaction, now).await? {
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
        if let Some(error) = exceeded(&transaction, realm, Some(user_id), &user_limits, now).await?
        {
            audit.result = "denied";
            audit.reason = error.audit_reason();
            Self::insert_audit(&transaction, audit).await?;
            transaction.commit().await?;
            return Err(error);
        }
        let assigned = match factor {
            None => {
                transaction
                    .execute_raw(statement(
                        backend,
                        "UPDATE tokens SET user_id = $1 WHERE serial = $2",
                        vec![user_id.into(), serial.into()],
                    ))
                    .await?
            }
            Some(factor) => {
                let next = factor.checked_add(1).ok_or_else(|| {
                    DeviceError::FailedPrecondition(format!(
                        "token {serial}: its counter is exhausted"
                    ))
                })?;
                transaction
                    .execute_raw(statement(
                        backend,
                        "UPDATE tokens SET user_id = $1, counter = $2 \
                         WHERE serial = $3 AND counter <= $4",
                        vec![user_id.into(), next.into(), serial.into(), factor.into()],
                    ))
                    .await?
            }
        };
        if assigned.rows_affected() != 1 {
            let error = DeviceError::Refused {
                reason: "WRONG_CODE",
                message: format!("code: not an unused code of token `{serial}`"),
            };
            Self::insert_audit(&transaction, audit.denied("code already used")).await?;
            transaction.commit().await?;
            return Err(error);
        }
        Self::insert_audit(&transaction, audit).await?;
        let after = tokens::Entity::find_by_id(serial.to_owned())
            .one(&transaction)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("token `{serial}`")))?;
        remember(
            idempotency.as_ref(),
            &transaction,
            &after,
            now,
            &self.records.retention,
        )
        .await?;
        transaction.commit().await?;
        Ok(Outcome::Done(after))
    }
}

impl TokenStore {
    /// Marks `serial` lost and, with a `replacement`, gives its owner that temporary
    /// password token, in one transaction. A token reported lost without a replacement
    /// (no policy decision for one) may be reported again to get it; one replaced is done.
    /// The replacement is not held to the user limits: it stands in for the lost token,
    /// which stops validating at once.
    pub async fn replace_lost(
        &self,
        serial: &str,
        replacement: Option<tokens::Model>,
        audit: AuditRecord,
        idempotency: Option<Idempotency<'_, tokens::Model>>,
    ) -> Result<Outcome<LostReport>, DeviceError> {
        use sea_orm::IntoActiveModel;
        let now = audit.time;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let lost = Self::lock_token(&transaction, serial).await?;
        if let Some(first) = replayed(idempotency.as_ref(), &transaction, now).await? {
            transaction.rollback().await?;
            return Ok(Outcome::Replayed(first));
        }
        let Some(user_id) = lost.user_id else {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is not assigned to anyone"
            )));
        };
        if let Some(replaced_by) = &lost.replaced_by {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is already reported lost (replaced by `{replaced_by}`)"
            )));
        }
        let Some(mut replacement) = replacement else {
            transaction
                .execute_raw(statement(
                    backend,
                    "UPDATE tokens SET state = 'lost' WHERE serial = $1",
                    vec![serial.into()],
                ))
                .await?;
            Self::insert_audit(&transaction, audit).await?;
            transaction.commit().await?;
            return Ok(Outcome::Done(LostReport::MarkedLost));
        };
        transaction
            .execute_raw(statement(
                backend,
                "UPDATE tokens SET state = 'lost', replaced_by = $1 WHERE serial = $2",
                vec![replacement.serial.clone().into(), serial.into()],
            ))
            .await?;
        replacement.user_id = Some(user_id);
        replacement.realm = lost.realm;
        tokens::Entity::insert(replacement.clone().into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        remember(
            idempotency.as_ref(),
            &transaction,
            &replacement,
            now,
            &self.records.retention,
        )
        .await?;
        transaction.commit().await?;
        Ok(Outcome::Done(LostReport::Replaced(Box::new(replacement))))
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
        let now = audit.time;
        let transaction = self.db.begin().await?;
        lock_realm(&transaction, realm).await?;
        if let Some(first) = replayed(idempotency.as_ref(), &transaction, now).await? {
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
            // Devices count toward the realm limit as they do for every other writer.
            let held = counted_in_realm(&transaction, realm, now).await?;
            if held + fresh.len() as u64 > u64::from(limit) {
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
        remember(
            idempotency.as_ref(),
            &transaction,
            &existing,
            now,
            &self.records.retention,
        )
        .await?;
        transaction.commit().await?;
        Ok(Outcome::Done(existing))
    }
}
