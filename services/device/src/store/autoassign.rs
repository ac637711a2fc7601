//! What autoassignment reads and writes: the realm's hardware pool, whether a user holds
//! anything, the pending two-code confirmations and the assigning transaction. Claims and
//! the assignment are conditional statements, so racing requests (on any replica) get one
//! winner.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, EntityTrait, TransactionTrait};

use super::entities::autoassign_challenges as challenges;
use super::entities::columns::TokenStateColumn;
use super::entities::tokens;
use super::sql::{limits_reached, lock_user, statement};
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::decision::Limits;
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// What a confirmed autoassignment writes.
#[derive(Debug, Clone)]
pub struct Assignment<'a> {
    pub realm: &'a Realm,
    pub user: &'a UserName,
    /// The confirmation it completes (deleted with the assignment).
    pub challenge_id: &'a str,
    pub serial: &'a str,
    /// The confirming code's step or counter: it and everything before it are consumed.
    pub factor: i64,
    pub pin_hash: String,
    pub limits: &'a Limits,
}

/// Counts the user's holdings: tokens in any state and devices that are not revoked (a
/// passkey-only user holds something). A token whose verify step is pending, failed or
/// expired is not "a token the user has" (it never validated).
const HOLDINGS: &str = "SELECT (SELECT COUNT(*) FROM tokens WHERE user_id = $1 \
     AND verify_state IS NULL) \
     + (SELECT COUNT(*) FROM devices WHERE user_id = $2 AND state <> 'revoked')";

impl TokenStore {
    /// The realm's autoassignable tokens: unassigned, enabled, imported as hardware.
    pub async fn pool(&self, realm: &Realm) -> Result<Vec<tokens::Model>, DeviceError> {
        use sea_orm::{ColumnTrait, QueryFilter};
        Ok(tokens::Entity::find()
            .filter(tokens::Column::Realm.eq(realm.as_str()))
            .filter(tokens::Column::UserId.is_null())
            .filter(tokens::Column::State.eq(TokenStateColumn::Enabled))
            .filter(tokens::Column::Hardware.eq(true))
            .all(&self.db)
            .await?)
    }

    /// How many tokens are autoassignable in all realms (the metrics' pool size).
    pub async fn pool_size(&self) -> Result<u64, DeviceError> {
        use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
        Ok(tokens::Entity::find()
            .filter(tokens::Column::UserId.is_null())
            .filter(tokens::Column::State.eq(TokenStateColumn::Enabled))
            .filter(tokens::Column::Hardware.eq(true))
            .count(&self.db)
            .await?)
    }

    /// Whether the user holds any token (in any state, not counting one enrolled with a
    /// verify step that did not pass it) or any device that is not revoked.
    pub async fn holds_token_or_device(
        &self,
        realm: &Realm,
        user: &UserName,
    ) -> Result<bool, DeviceError> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(statement(
                backend,
                "SELECT (SELECT COUNT(*) FROM tokens t JOIN users u ON t.user_id = u.id \
                         WHERE u.realm = $1 AND u.name = $2 AND t.verify_state IS NULL) \
                      + (SELECT COUNT(*) FROM devices d JOIN users u ON d.user_id = u.id \
                         WHERE u.realm = $3 AND u.name = $4 AND d.state <> 'revoked')",
                vec![
                    realm.as_str().into(),
                    user.as_str().into(),
                    realm.as_str().into(),
                    user.as_str().into(),
                ],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("count".into()))?;
        let held: i64 = row.try_get_by_index(0)?;
        Ok(held > 0)
    }

    /// The user's open challenge from `client` (unused, unexpired), real or decoy.
    pub async fn pending_challenge(
        &self,
        realm: &Realm,
        user: &UserName,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<challenges::Model>, DeviceError> {
        use sea_orm::{ColumnTrait, QueryFilter};
        Ok(challenges::Entity::find()
            .filter(challenges::Column::Realm.eq(realm.as_str()))
            .filter(challenges::Column::UserName.eq(user.as_str()))
            .filter(challenges::Column::Client.eq(client))
            .filter(challenges::Column::Attempts.eq(0))
            .filter(challenges::Column::ExpireTime.gt(now))
            .one(&self.db)
            .await?)
    }

    /// Stores a challenge (replacing any older one of the user from the same client) with
    /// its audit event; expired challenges of anyone are dropped on the way. Real and
    /// decoy challenges take the same statements.
    pub async fn open_challenge(
        &self,
        challenge: challenges::Model,
        audit: AuditRecord,
    ) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        transaction
            .execute_raw(statement(
                backend,
                "INSERT INTO autoassign_challenges \
                 (id, realm, user_name, serial, factor, pin_hash, create_time, expire_time, \
                  attempts, client, pass_digest, decoy) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11) \
                 ON CONFLICT (realm, user_name, client) DO UPDATE SET id = excluded.id, \
                 serial = excluded.serial, factor = excluded.factor, pin_hash = excluded.pin_hash, \
                 create_time = excluded.create_time, expire_time = excluded.expire_time, \
                 attempts = 0, pass_digest = excluded.pass_digest, decoy = excluded.decoy",
                vec![
                    challenge.id.into(),
                    challenge.realm.into(),
                    challenge.user_name.into(),
                    challenge.serial.into(),
                    challenge.factor.into(),
                    challenge.pin_hash.into(),
                    challenge.create_time.into(),
                    challenge.expire_time.into(),
                    challenge.client.into(),
                    challenge.pass_digest.into(),
                    challenge.decoy.into(),
                ],
            ))
            .await?;
        transaction
            .execute_raw(statement(
                backend,
                "DELETE FROM autoassign_challenges WHERE expire_time <= $1",
                vec![challenge.create_time.into()],
            ))
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Spends the confirmation: true for the one attempt that gets to check its code, false
    /// when another attempt (on any replica) already did or it expired.
    pub async fn claim_challenge(&self, id: &str, now: DateTime<Utc>) -> Result<bool, DeviceError> {
        let backend = self.db.get_database_backend();
        let claimed = self
            .db
            .execute_raw(statement(
                backend,
                "UPDATE autoassign_challenges SET attempts = attempts + 1 \
                 WHERE id = $1 AND attempts = 0 AND expire_time > $2",
                vec![id.into(), now.into()],
            ))
            .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Deletes a challenge another attempt of its client spends without answering it.
    pub async fn drop_challenge(&self, id: &str) -> Result<(), DeviceError> {
        challenges::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Deletes a spent confirmation with the audit event saying why it failed.
    pub async fn burn_challenge(&self, id: &str, audit: AuditRecord) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        challenges::Entity::delete_by_id(id.to_owned())
            .exec(&transaction)
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Assigns the confirmed pool token when everything still holds with the user's row
    /// locked: the user holds no token and no live device, the decision's limits allow one
    /// more, and the token is still an enabled hardware token in the realm's pool whose
    /// codes up to `factor` are unused. The confirmation is deleted and the audit event
    /// written either way. Returns the refusal, None when assigned.
    pub async fn autoassign(
        &self,
        assignment: Assignment<'_>,
        mut audit: AuditRecord,
    ) -> Result<Option<LateRefusal>, DeviceError> {
        let Assignment {
            realm,
            user,
            challenge_id,
            serial,
            factor,
            pin_hash,
            limits,
        } = assignment;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let user_id = lock_user(&transaction, realm, user, audit.time).await?;
        transaction
            .execute_raw(statement(
                backend,
                "DELETE FROM autoassign_challenges WHERE id = $1",
                vec![challenge_id.into()],
            ))
            .await?;
        let held = transaction
            .query_one_raw(statement(
                backend,
                HOLDINGS,
                vec![user_id.into(), user_id.into()],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("count".into()))?
            .try_get_by_index::<i64>(0)?;
        // The pool token already counts toward the realm's total, so assigning it breaks the
        // realm limit only when the realm is over it already: one more than the limit.
        let limits = Limits {
            per_realm: limits
                .per_realm
                .clone()
                .map(|(value, policy)| (value.saturating_add(1), policy)),
            ..limits.clone()
        };
        let refusal = if held > 0 {
            Some(LateRefusal::new("the user holds a token or device"))
        } else if let Some(reached) =
            limits_reached(&transaction, realm, Some(user_id), &limits, audit.time)
                .await?
                .into_iter()
                .next()
        {
            Some(match reached {
                DeviceError::LimitReached {
                    limit: limit @ "max_token_per_realm",
                    value,
                    policy,
                } => LateRefusal {
                    reason: format!(
                        "max_token_per_realm {} exceeded (policy {policy})",
                        value.saturating_sub(1)
                    ),
                    limit: Some(limit),
                },
                DeviceError::LimitReached { limit, .. } => LateRefusal {
                    reason: reached.audit_reason(),
                    limit: Some(limit),
                },
                other => LateRefusal::new(other.audit_reason()),
            })
        } else {
            let assigned = transaction
                .execute_raw(statement(
                    backend,
                    "UPDATE tokens SET user_id = $1, pin_hash = $2, counter = $3, failure_count = 0 \
                     WHERE serial = $4 AND realm = $5 AND user_id IS NULL AND state = 'enabled' \
                     AND hardware = $6 AND counter <= $7",
                    vec![
                        user_id.into(),
                        pin_hash.into(),
                        factor.saturating_add(1).into(),
                        serial.into(),
                        realm.as_str().into(),
                        true.into(),
                        factor.into(),
                    ],
                ))
                .await?
                .rows_affected()
                == 1;
            (!assigned).then(|| LateRefusal::new("the token left the pool or its code was used"))
        };
        if let Some(refusal) = &refusal {
            audit = audit.denied(refusal.reason.clone());
        }
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(refusal)
    }
}

/// Why a confirmed autoassignment was refused inside its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateRefusal {
    /// For the audit event.
    pub reason: String,
    /// The limit that was reached, when that is why.
    pub limit: Option<&'static str>,
}

impl LateRefusal {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            limit: None,
        }
    }
}
