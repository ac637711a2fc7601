//! What Validate reads and writes: usable tokens, consumed codes and failure counts (the
//! pool and autoassignment are in `autoassign`, the (user, client) pairs in `lockout`).
//! Each write is one conditional statement or one locked transaction, so a code is accepted
//! once even when requests race.
use sea_orm::{ConnectionTrait, EntityTrait, TransactionTrait};

use super::entities::columns::TokenStateColumn;
use super::entities::tokens;
use super::lockout::{CountedFailure, Pairs};
use super::sql::statement;
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::names::{Realm, UserName};
use crate::domain::verify::EnrollmentState;
use crate::error::DeviceError;

impl TokenStore {
    /// The user's tokens that may validate now: enabled and not expired, oldest first.
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
    /// success ends the token's run of failures, and the runs and back-offs of the client
    /// pairs in `passed`, which are known clients of the user from now on.
    pub async fn accept(
        &self,
        serial: &str,
        factor: i64,
        passed: &Pairs<'_>,
        audit: AuditRecord,
    ) -> Result<bool, DeviceError> {
        // Callers never match a factor past `otp::LAST_FACTOR`; should one come, refusing
        // beats wrapping the counter back below every used code.
        let next = factor.checked_add(1).ok_or_else(|| {
            DeviceError::FailedPrecondition(format!("token {serial}: its counter is exhausted"))
        })?;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let updated = transaction
            .execute_raw(statement(
                backend,
                "UPDATE tokens SET counter = $1, failure_count = 0 \
                 WHERE serial = $2 AND counter <= $3 AND state = 'enabled' \
                 AND verify_state IS NULL",
                vec![next.into(), serial.into(), factor.into()],
            ))
            .await?;
        let accepted = updated.rows_affected() == 1;
        let mut audit = audit;
        if accepted {
            Self::pairs_passed(&transaction, passed).await?;
        } else {
            audit.result = "denied";
            audit.reason = "one-time code already used".to_owned();
        }
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(accepted)
    }

    /// Counts a failed validation on the pair of `client` (its back-off from `backoff`) and,
    /// for the admin's view only, on each token still enabled: a token's count never
    /// refuses anyone. The audit event says what the pair got.
    pub async fn record_failure(
        &self,
        serials: &[String],
        pairs: &Pairs<'_>,
        backoff: impl Fn(u32) -> Option<chrono::DateTime<chrono::Utc>>,
        mut audit: AuditRecord,
    ) -> Result<CountedFailure, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        for serial in serials {
            transaction
                .execute_raw(statement(
                    backend,
                    "UPDATE tokens SET failure_count = failure_count + 1 \
                     WHERE serial = $1 AND state = 'enabled'",
                    vec![serial.clone().into()],
                ))
                .await?;
        }
        let mut counted = None;
        for client in &pairs.clients {
            let failure = Self::pair_failed(&transaction, pairs, client, &backoff).await?;
            audit.reason = match failure.blocked_until {
                Some(until) => format!(
                    "{}; client {client} failure {}: backing off until {until}",
                    audit.reason, failure.failures
                ),
                None => format!(
                    "{}; client {client} failure {}",
                    audit.reason, failure.failures
                ),
            };
            counted = Some(failure);
        }
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(counted.unwrap_or(CountedFailure {
            failures: 0,
            blocked_until: None,
        }))
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
    // Enrolled with a verify step and not (yet) verified: the answer of a disabled token.
    let enrollment = EnrollmentState::of(token.verify_state.as_deref(), token.verify_deadline, now);
    if enrollment != EnrollmentState::Enrolled {
        return Some(enrollment.as_str().to_owned());
    }
    token
        .expire_time
        .filter(|expire| *expire <= now)
        .map(|_| "expired".to_owned())
}
