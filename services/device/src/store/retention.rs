//! Retention: batched deletes of audit events and outbox events past their age. Each batch
//! is one short statement (the outbox's with its mark, in one transaction), walking the
//! primary key or `seq` index from the oldest row, so a purge never holds locks for long
//! and a batch costs the same however large the table is. Deletes are idempotent: two
//! replicas purging at once delete each row once.
//!
//! The outbox keeps, whatever their age: every event after the smallest cursor of the
//! enabled and paused streams (a disabled stream keeps nothing), the newest stamped event
//! (the stamper numbers on from `MAX(seq)`, and backlogs are `MAX(seq)` minus a cursor),
//! unstamped events, and every event a dead letter names. Only a prefix of `seq` goes:
//! `event_retention.purged_through` is the largest `seq` purged past, and everything after
//! it is still there, so a reader resuming below it knows it lost events.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait};

use super::events::purged_through;
use super::sql::statement;
use super::streams::DISABLED;
use crate::error::DeviceError;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// Rows deleted.
    pub deleted: u64,
    /// Rows past their age may follow: call again (after a pause) with `next`.
    pub more: bool,
    /// Where the next batch starts (audit: after this id).
    pub next: i64,
}

#[derive(Clone)]
pub struct RetentionStore {
    db: DatabaseConnection,
}

impl RetentionStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// One batch of audit events written before `before`: of the next `limit` rows after
    /// id `after` (oldest first), those that are that old. `more` while the window was full
    /// and held old rows: the walk stops at the first window of recent rows.
    pub async fn purge_audit(
        &self,
        before: DateTime<Utc>,
        after: i64,
        limit: u64,
    ) -> Result<Batch, DeviceError> {
        let backend = self.db.get_database_backend();
        let window = self
            .db
            .query_all_raw(statement(
                backend,
                &format!(
                    "SELECT id, time FROM audit_events WHERE id > $1 ORDER BY id LIMIT {limit}"
                ),
                vec![after.into()],
            ))
            .await?;
        let mut last = after;
        let mut old = 0u64;
        for row in &window {
            let id: i64 = row.try_get_by_index(0)?;
            let time: DateTime<Utc> = row.try_get_by_index(1)?;
            last = id;
            old += u64::from(time < before);
        }
        if old == 0 {
            return Ok(Batch {
                deleted: 0,
                more: false,
                next: last,
            });
        }
        let deleted = self
            .db
            .execute_raw(statement(
                backend,
                "DELETE FROM audit_events WHERE id > $1 AND id <= $2 AND time < $3",
                vec![after.into(), last.into(), before.into()],
            ))
            .await?
            .rows_affected();
        Ok(Batch {
            deleted,
            more: window.len() as u64 == limit,
            next: last,
        })
    }

    /// The largest `seq` the purge went past (0: none yet).
    pub async fn purged_through(&self) -> Result<i64, DeviceError> {
        purged_through(&self.db).await
    }

    /// Outbox events at or below the mark that a dead letter kept and none names any more
    /// (redelivered, acknowledged, or their stream deleted), at most `limit`.
    pub async fn purge_released(
        &self,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64, DeviceError> {
        let backend = self.db.get_database_backend();
        let mark = purged_through(&self.db).await?;
        if mark == 0 {
            return Ok(0);
        }
        let kept = unnamed_by_dead_letters(backend, "e");
        Ok(self
            .db
            .execute_raw(statement(
                backend,
                &format!(
                    "DELETE FROM enrollment_events WHERE seq IN (SELECT e.seq FROM \
                     enrollment_events e WHERE e.seq <= $1 AND e.occurred_at < $2 AND {kept} \
                     ORDER BY e.seq LIMIT {limit})"
                ),
                vec![mark.into(), before.into()],
            ))
            .await?
            .rows_affected())
    }

    /// One batch of outbox events that occurred before `before`: the oldest `limit` stamped
    /// events after the mark, up to the first one too recent or still needed (see the
    /// module), those no dead letter names deleted and the mark moved past them, in one
    /// transaction (`now` dates the mark).
    pub async fn purge_events(
        &self,
        before: DateTime<Utc>,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<Batch, DeviceError> {
        let backend = self.db.get_database_backend();
        let mark = purged_through(&self.db).await?;
        let newest = scalar(&self.db, "SELECT MAX(seq) FROM enrollment_events").await?;
        let Some(newest) = newest else {
            return Ok(Batch::default());
        };
        let needed = scalar(
            &self.db,
            &format!("SELECT MIN(cursor) FROM event_streams WHERE status <> '{DISABLED}'"),
        )
        .await?;
        // At most everything every stream has, and never the newest.
        let bound = needed.map_or(newest - 1, |cursor| cursor.min(newest - 1));
        if bound <= mark {
            return Ok(Batch::default());
        }
        let window = self
            .db
            .query_all_raw(statement(
                backend,
                &format!(
                    "SELECT seq, occurred_at FROM enrollment_events WHERE seq > $1 AND seq <= $2 \
                     ORDER BY seq LIMIT {limit}"
                ),
                vec![mark.into(), bound.into()],
            ))
            .await?;
        let mut through = mark;
        let mut stopped = false;
        for row in &window {
            let seq: i64 = row.try_get_by_index(0)?;
            let occurred: DateTime<Utc> = row.try_get_by_index(1)?;
            if occurred >= before {
                stopped = true;
                break;
            }
            through = seq;
        }
        if through == mark {
            return Ok(Batch::default());
        }
        let kept = unnamed_by_dead_letters(backend, "enrollment_events");
        let transaction = self.db.begin().await?;
        // The delete first (SQLite: the write lock at once).
        let deleted = transaction
            .execute_raw(statement(
                backend,
                &format!(
                    "DELETE FROM enrollment_events WHERE seq > $1 AND seq <= $2 \
                     AND occurred_at < $3 AND {kept}"
                ),
                vec![mark.into(), through.into(), before.into()],
            ))
            .await?
            .rows_affected();
        // The row is the migration's; a replica whose mark is already past keeps it.
        transaction
            .execute_raw(statement(
                backend,
                "UPDATE event_retention SET purged_through = $1, update_time = $2 \
                 WHERE id = 1 AND purged_through < $3",
                vec![through.into(), now.into(), through.into()],
            ))
            .await?;
        transaction.commit().await?;
        Ok(Batch {
            deleted,
            more: !stopped && window.len() as u64 == limit,
            next: through,
        })
    }
}

/// The condition "no dead letter names this event" on `table` (a name or alias of
/// `enrollment_events`): an anti-join on PostgreSQL; SQLite builds the set once.
fn unnamed_by_dead_letters(backend: DbBackend, table: &str) -> String {
    match backend {
        DbBackend::Postgres => format!(
            "NOT EXISTS (SELECT 1 FROM event_dead_letters d WHERE d.event_id = {table}.event_id)"
        ),
        _ => format!("{table}.event_id NOT IN (SELECT event_id FROM event_dead_letters)"),
    }
}

async fn scalar(db: &impl ConnectionTrait, sql: &str) -> Result<Option<i64>, DeviceError> {
    let backend = db.get_database_backend();
    Ok(db
        .query_one_raw(statement(backend, sql, vec![]))
        .await?
        .map(|row| row.try_get_by_index::<Option<i64>>(0))
        .transpose()?
        .flatten())
}
