//! Attempt budgets kept in the database, so every replica spends from the same count: one
//! upsert per attempt both starts a new window when the stored one has run out and counts
//! the attempt, atomically (two replicas racing on one key both count).
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::sql::statement;
use super::tokens::TokenStore;
use crate::error::DeviceError;

#[derive(Clone)]
pub struct BudgetStore {
    db: DatabaseConnection,
}

impl TokenStore {
    /// The budgets, on the same database as the tokens.
    pub fn budgets(&self) -> BudgetStore {
        BudgetStore {
            db: self.db.clone(),
        }
    }
}

impl BudgetStore {
    /// Counts one attempt under `key` and returns the attempts counted in its current
    /// window (this one included); a window older than `window` restarts at `now`.
    pub async fn spend(
        &self,
        key: &str,
        now: DateTime<Utc>,
        window: Duration,
    ) -> Result<u64, DeviceError> {
        let window = chrono::Duration::from_std(window)
            .map_err(|_| DeviceError::Unavailable("budget window out of range".to_owned()))?;
        let expired_before = now - window;
        let backend = self.db.get_database_backend();
        // Every SET expression sees the row as it was, so both CASEs test the old window.
        let row = self
            .db
            .query_one_raw(statement(
                backend,
                "INSERT INTO attempt_budgets (\"key\", window_start, count) VALUES ($1, $2, 1) \
                 ON CONFLICT (\"key\") DO UPDATE SET \
                 count = CASE WHEN attempt_budgets.window_start <= $3 THEN 1 \
                              ELSE attempt_budgets.count + 1 END, \
                 window_start = CASE WHEN attempt_budgets.window_start <= $4 THEN $5 \
                                     ELSE attempt_budgets.window_start END \
                 RETURNING count",
                vec![
                    key.into(),
                    now.into(),
                    expired_before.into(),
                    expired_before.into(),
                    now.into(),
                ],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("attempt budget".into()))?;
        let count: i64 = row.try_get_by_index(0)?;
        Ok(count.max(0) as u64)
    }

    /// The attempts counted under `key` in its current window (0 once it has run out).
    pub async fn spent(
        &self,
        key: &str,
        now: DateTime<Utc>,
        window: Duration,
    ) -> Result<u64, DeviceError> {
        let window = chrono::Duration::from_std(window)
            .map_err(|_| DeviceError::Unavailable("budget window out of range".to_owned()))?;
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(statement(
                backend,
                "SELECT count FROM attempt_budgets WHERE \"key\" = $1 AND window_start > $2",
                vec![key.into(), (now - window).into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(0) };
        let count: i64 = row.try_get_by_index(0)?;
        Ok(count.max(0) as u64)
    }

    /// Forgets budgets whose window started before `before` (they would restart anyway).
    pub async fn sweep(&self, before: DateTime<Utc>) -> Result<u64, DeviceError> {
        let backend = self.db.get_database_backend();
        let deleted = self
            .db
            .execute_raw(statement(
                backend,
                "DELETE FROM attempt_budgets WHERE window_start < $1",
                vec![before.into()],
            ))
            .await?;
        Ok(deleted.rows_affected())
    }
}
