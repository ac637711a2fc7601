//! The verify step's writes: a first code accepted or refused, and the purge of expired
//! enrollments' seeds. Each is one locked transaction with its audit events, so racing
//! codes cannot both pass, nor spend more attempts than the token has.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::sql::statement;
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::verify::{EnrollmentState, FAILED, PENDING};
use crate::error::DeviceError;

/// What a wrong first code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Wrong codes still allowed.
    AttemptsLeft(u32),
    /// That was the last one: failed, the seed erased.
    Failed,
}

/// Why a verify write found the token in no state to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotPending(pub EnrollmentState);

impl TokenStore {
    /// Accepts the first code (its `factor`, the step or counter): the token is enrolled and
    /// the factor and every earlier one are used up, as a Validate success would. Err when
    /// the token is no longer pending at `now` (a racing request got there first, or the
    /// window ended), with nothing written but the audit event. `pin_hash`, when given, is
    /// the sealed PIN set in the same write (the enrollment page's PIN step).
    pub async fn verify_passed(
        &self,
        serial: &str,
        factor: i64,
        pin_hash: Option<String>,
        now: DateTime<Utc>,
        audit: AuditRecord,
    ) -> Result<Result<(), NotPending>, DeviceError> {
        let next = factor.checked_add(1).ok_or_else(|| {
            DeviceError::FailedPrecondition(format!("token {serial}: its counter is exhausted"))
        })?;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let updated = transaction
            .execute_raw(statement(
                backend,
                &format!(
                    "UPDATE tokens SET verify_state = NULL, verify_deadline = NULL, \
                     verify_attempts_left = NULL, counter = $1, failure_count = 0, \
                     pin_hash = COALESCE($2, pin_hash) \
                     WHERE serial = $3 AND verify_state = '{PENDING}' AND verify_deadline > $4 \
                     AND counter <= $5"
                ),
                // SQLite binds by position: each placeholder once, in order.
                vec![
                    next.into(),
                    pin_hash.into(),
                    serial.into(),
                    now.into(),
                    factor.into(),
                ],
            ))
            .await?;
        let outcome = if updated.rows_affected() == 1 {
            Self::insert_audit(
                &transaction,
                audit.with_reason("first code verified: enrolled"),
            )
            .await?;
            Ok(())
        } else {
            let state = Self::state_now(&transaction, serial, now).await?;
            Self::insert_audit(
                &transaction,
                audit.denied(format!("token is {}", state.as_str())),
            )
            .await?;
            Err(NotPending(state))
        };
        transaction.commit().await?;
        Ok(outcome)
    }

    /// Spends one attempt on a wrong first code; the last one fails the enrollment and
    /// erases the sealed seed in the same transaction.
    pub async fn verify_missed(
        &self,
        serial: &str,
        now: DateTime<Utc>,
        audit: AuditRecord,
    ) -> Result<Result<Miss, NotPending>, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        // Takes the row lock (PostgreSQL) or the write lock (SQLite) first.
        let spent = transaction
            .execute_raw(statement(
                backend,
                &format!(
                    "UPDATE tokens SET verify_attempts_left = verify_attempts_left - 1 \
                     WHERE serial = $1 AND verify_state = '{PENDING}' AND verify_deadline > $2 \
                     AND verify_attempts_left > 0"
                ),
                vec![serial.into(), now.into()],
            ))
            .await?;
        if spent.rows_affected() != 1 {
            let state = Self::state_now(&transaction, serial, now).await?;
            Self::insert_audit(
                &transaction,
                audit.denied(format!("wrong first code; token is {}", state.as_str())),
            )
            .await?;
            transaction.commit().await?;
            return Ok(Err(NotPending(state)));
        }
        let left: i32 = transaction
            .query_one_raw(statement(
                backend,
                "SELECT COALESCE(verify_attempts_left, 0) FROM tokens WHERE serial = $1",
                vec![serial.into()],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("token".into()))?
            .try_get_by_index(0)?;
        let miss = if left > 0 {
            Self::insert_audit(
                &transaction,
                audit.denied(format!("wrong first code; {left} attempts left")),
            )
            .await?;
            Miss::AttemptsLeft(u32::try_from(left).unwrap_or(0))
        } else {
            transaction
                .execute_raw(statement(
                    backend,
                    &format!(
                        "UPDATE tokens SET verify_state = '{FAILED}', seed = $1, seed_key_id = '' \
                         WHERE serial = $2"
                    ),
                    vec![Vec::<u8>::new().into(), serial.into()],
                ))
                .await?;
            Self::insert_audit(
                &transaction,
                audit
                    .denied("wrong first code, the last allowed: verify failed, seed erased")
                    .with_event(crate::domain::events::EventKind::TokenEnrollmentFailed),
            )
            .await?;
            Miss::Failed
        };
        transaction.commit().await?;
        Ok(Ok(miss))
    }

    /// Erases the sealed seeds of pending enrollments whose window ended by `now` (one
    /// audit event each, `actor` the service); returns how many.
    pub async fn purge_expired_seeds(
        &self,
        now: DateTime<Utc>,
        audit: impl Fn(&str, &str) -> AuditRecord,
    ) -> Result<u64, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let rows = transaction
            .query_all_raw(statement(
                backend,
                &format!(
                    "SELECT serial, realm FROM tokens WHERE verify_state = '{PENDING}' \
                     AND verify_deadline <= $1 AND seed_key_id <> ''"
                ),
                vec![now.into()],
            ))
            .await?;
        let mut purged = 0;
        for row in rows {
            let serial: String = row.try_get_by_index(0)?;
            let realm: String = row.try_get_by_index(1)?;
            let erased = transaction
                .execute_raw(statement(
                    backend,
                    &format!(
                        "UPDATE tokens SET seed = $1, seed_key_id = '' WHERE serial = $2 \
                         AND verify_state = '{PENDING}' AND verify_deadline <= $3"
                    ),
                    vec![Vec::<u8>::new().into(), serial.as_str().into(), now.into()],
                ))
                .await?;
            if erased.rows_affected() == 1 {
                Self::insert_audit(&transaction, audit(&serial, &realm)).await?;
                purged += 1;
            }
        }
        transaction.commit().await?;
        Ok(purged)
    }

    /// The token's enrollment state at `now` (NOT_FOUND when it is gone).
    async fn state_now(
        db: &impl ConnectionTrait,
        serial: &str,
        now: DateTime<Utc>,
    ) -> Result<EnrollmentState, DeviceError> {
        let row = db
            .query_one_raw(statement(
                db.get_database_backend(),
                "SELECT verify_state, verify_deadline FROM tokens WHERE serial = $1",
                vec![serial.into()],
            ))
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("token `{serial}`")))?;
        let state: Option<String> = row.try_get_by_index(0)?;
        let deadline: Option<DateTime<Utc>> = row.try_get_by_index(1)?;
        Ok(EnrollmentState::of(state.as_deref(), deadline, now))
    }
}
