//! What Validate reads and writes: usable tokens, consumed codes and failure counts (the
//! pool and autoassignment are in `autoassign`). Each write is one conditional statement or
//! one locked transaction, so a code is accepted once even when requests race.
use sea_orm::{ConnectionTrait, EntityTrait, TransactionTrait};

use super::entities::columns::TokenStateColumn;
use super::entities::tokens;
use super::sql::statement;
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// What one more failed validation does to a token that has failed `failures` times in a
/// row (counting this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalty {
    /// Refuse every pass until then.
    pub locked_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Lock it until an admin enables it again.
    pub lock: bool,
}

impl TokenStore {
    /// The user's tokens that may validate now: enabled, not expired and not backing off,
    /// oldest first.
    pub async fn usable_tokens(
        &self,
        realm: &Realm,
        user: &UserName,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<tokens::Model>, DeviceError> {
        Ok(self
            .owned_tokens(realm, user)
            .await?
            .into_iter()
            .filter(|token| unusable(token, now).is_none())
            .collect())
    }

    /// Why none of the user's tokens may validate now, for the audit event (never for the
    /// caller: every refusal answers the same).
    pub async fn why_unusable(
        &self,
        realm: &Realm,
        user: &UserName,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, DeviceError> {
        let reasons: Vec<String> = self
            .owned_tokens(realm, user)
            .await?
            .iter()
            .filter_map(|token| {
                unusable(token, now).map(|reason| format!("{} {reason}", token.serial))
            })
            .collect();
        Ok(if reasons.is_empty() {
            "no usable token".to_owned()
        } else {
            format!("no usable token: {}", reasons.join(", "))
        })
    }

    /// Every token of the user, oldest first.
    async fn owned_tokens(
        &self,
        realm: &Realm,
        user: &UserName,
    ) -> Result<Vec<tokens::Model>, DeviceError> {
        // One round trip: the owner is joined, not looked up first.
        let backend = self.db.get_database_backend();
        Ok(tokens::Entity::find()
            .from_raw_sql(statement(
                backend,
                "SELECT t.* FROM tokens t JOIN users u ON u.id = t.user_id \
                 WHERE u.realm = $1 AND u.name = $2 ORDER BY t.create_time",
                vec![realm.as_str().into(), user.as_str().into()],
            ))
            .all(&self.db)
            .await?)
    }

    /// Consumes `factor` (the matched step or counter) unless another request already did:
    /// the conditional update makes a code valid once, even when two requests race. A
    /// success ends the token's run of failures and its back-off.
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
                "UPDATE tokens SET counter = $1, failure_count = 0, locked_until = NULL \
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

    /// Counts a failed validation on each token still enabled (a token disabled, lost or
    /// locked meanwhile keeps its state) and applies `penalty` for its new run of failures:
    /// a back-off, or a lock. The audit event says what each token got.
    pub async fn record_failure(
        &self,
        serials: &[String],
        penalty: impl Fn(u32) -> Penalty,
        mut audit: AuditRecord,
    ) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let mut outcomes = Vec::new();
        for serial in serials {
            // The increment takes the row lock first, so racing failures count one by one.
            let counted = transaction
                .query_one_raw(statement(
                    backend,
                    "UPDATE tokens SET failure_count = failure_count + 1 \
                     WHERE serial = $1 AND state = 'enabled' RETURNING failure_count",
                    vec![serial.clone().into()],
                ))
                .await?;
            let Some(row) = counted else {
                outcomes.push(format!("{serial} not enabled: not counted"));
                continue;
            };
            let failures: i32 = row.try_get_by_index(0)?;
            let failures = u32::try_from(failures).unwrap_or(0);
            let Penalty { locked_until, lock } = penalty(failures);
            let sql = if lock {
                "UPDATE tokens SET locked_until = $1, state = 'locked' WHERE serial = $2"
            } else {
                "UPDATE tokens SET locked_until = $1 WHERE serial = $2"
            };
            transaction
                .execute_raw(statement(
                    backend,
                    sql,
                    vec![locked_until.into(), serial.clone().into()],
                ))
                .await?;
            outcomes.push(match (lock, locked_until) {
                (true, _) => format!("{serial} failure {failures}: locked"),
                (false, Some(until)) => {
                    format!("{serial} failure {failures}: backing off until {until}")
                }
                (false, None) => format!("{serial} failure {failures}"),
            });
        }
        if !outcomes.is_empty() {
            audit.reason = format!("{} ({})", audit.reason, outcomes.join(", "));
        }
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }
}

/// Why `token` may not validate at `now`, if it may not.
fn unusable(token: &tokens::Model, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    if token.state != TokenStateColumn::Enabled {
        let state: &str = match token.state {
            TokenStateColumn::Enabled => "enabled",
            TokenStateColumn::Disabled => "disabled",
            TokenStateColumn::Locked => "locked",
            TokenStateColumn::Lost => "lost",
        };
        return Some(state.to_owned());
    }
    if token.expire_time.is_some_and(|expire| expire <= now) {
        return Some("expired".to_owned());
    }
    token
        .locked_until
        .filter(|until| *until > now)
        .map(|until| format!("backing off until {until}"))
}
