//! `validation_clients`: per (user, client) pair, the failures in a row since the pair's
//! last success, its back-off and when the user last passed from that client. One upsert
//! per change, so racing replicas count every failure.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use super::sql::statement;
use super::tokens::TokenStore;
use crate::domain::lockout::{ClientKey, PairState};
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// The pairs one Validate call charges: the user and the clients it came from.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    pub realm: &'a Realm,
    pub user: &'a UserName,
    pub clients: Vec<ClientKey>,
    pub now: DateTime<Utc>,
}

/// A pair's failure as counted: failures in a row (this one included) and the back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedFailure {
    pub failures: u32,
    pub blocked_until: Option<DateTime<Utc>>,
}

impl TokenStore {
    /// The stored state of the pair (the default when none is stored: no failure, never
    /// passed).
    pub async fn pair_state(
        &self,
        realm: &Realm,
        user: &UserName,
        client: &ClientKey,
    ) -> Result<PairState, DeviceError> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(statement(
                backend,
                "SELECT failures, blocked_until, last_success FROM validation_clients \
                 WHERE realm = $1 AND user_name = $2 AND client = $3",
                vec![
                    realm.as_str().into(),
                    user.as_str().into(),
                    client.stored().into(),
                ],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(PairState::default());
        };
        let failures: i32 = row.try_get_by_index(0)?;
        Ok(PairState {
            failures: u32::try_from(failures).unwrap_or(0),
            blocked_until: row.try_get_by_index(1)?,
            last_success: row.try_get_by_index(2)?,
        })
    }

    /// [`TokenStore::pairs_passed`] in a transaction of its own, for a success that is not
    /// a code accepted by `accept` (a completed autoassignment).
    pub async fn mark_passed(&self, pairs: &Pairs<'_>) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        Self::pairs_passed(&transaction, pairs).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Marks each pair as passed at `pairs.now`: its failures and back-off end, and the
    /// client is known for the user from now on.
    pub(super) async fn pairs_passed(
        transaction: &DatabaseTransaction,
        pairs: &Pairs<'_>,
    ) -> Result<(), DeviceError> {
        let backend = transaction.get_database_backend();
        for client in &pairs.clients {
            transaction
                .execute_raw(statement(
                    backend,
                    "INSERT INTO validation_clients \
                     (realm, user_name, client, failures, blocked_until, last_success, update_time) \
                     VALUES ($1, $2, $3, 0, NULL, $4, $5) \
                     ON CONFLICT (realm, user_name, client) DO UPDATE SET \
                     failures = 0, blocked_until = NULL, \
                     last_success = excluded.last_success, update_time = excluded.update_time",
                    vec![
                        pairs.realm.as_str().into(),
                        pairs.user.as_str().into(),
                        client.stored().into(),
                        pairs.now.into(),
                        pairs.now.into(),
                    ],
                ))
                .await?;
        }
        Ok(())
    }

    /// Counts one failure on `client`'s pair and sets the back-off `backoff` gives for its
    /// new run of failures.
    pub(super) async fn pair_failed(
        transaction: &DatabaseTransaction,
        pairs: &Pairs<'_>,
        client: &ClientKey,
        backoff: impl Fn(u32) -> Option<DateTime<Utc>>,
    ) -> Result<CountedFailure, DeviceError> {
        let backend = transaction.get_database_backend();
        let (realm, user, stored) = (pairs.realm.as_str(), pairs.user.as_str(), client.stored());
        // The upsert takes the row lock first, so racing failures count one by one.
        let row = transaction
            .query_one_raw(statement(
                backend,
                "INSERT INTO validation_clients \
                 (realm, user_name, client, failures, blocked_until, last_success, update_time) \
                 VALUES ($1, $2, $3, 1, NULL, NULL, $4) \
                 ON CONFLICT (realm, user_name, client) DO UPDATE SET \
                 failures = validation_clients.failures + 1, update_time = excluded.update_time \
                 RETURNING failures",
                vec![
                    realm.into(),
                    user.into(),
                    stored.clone().into(),
                    pairs.now.into(),
                ],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("validation client".into()))?;
        let failures: i32 = row.try_get_by_index(0)?;
        let failures = u32::try_from(failures).unwrap_or(0);
        let blocked_until = backoff(failures);
        transaction
            .execute_raw(statement(
                backend,
                "UPDATE validation_clients SET blocked_until = $1 \
                 WHERE realm = $2 AND user_name = $3 AND client = $4",
                vec![
                    blocked_until.into(),
                    realm.into(),
                    user.into(),
                    stored.into(),
                ],
            ))
            .await?;
        Ok(CountedFailure {
            failures,
            blocked_until,
        })
    }

    /// Forgets pairs untouched since `before` (pass the longest of the known-client period
    /// and the longest back-off: such a pair is neither known nor backing off any more).
    pub async fn sweep_pairs(&self, before: DateTime<Utc>) -> Result<u64, DeviceError> {
        let backend = self.db.get_database_backend();
        let deleted = self
            .db
            .execute_raw(statement(
                backend,
                "DELETE FROM validation_clients WHERE update_time < $1",
                vec![before.into()],
            ))
            .await?;
        Ok(deleted.rows_affected())
    }
}
