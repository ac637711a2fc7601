//! Outgoing event streams: their rows, the delivery lease (one instance delivers a stream at
//! a time; another takes over when the lease lapses), the cursor, the dead letters, and the
//! security event tokens' signing keys.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::event_entities::{
    enrollment_events, event_dead_letters, event_poll_acks, event_signing_keys, event_streams,
};
use super::sql::statement;
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::error::DeviceError;

/// `event_streams.status` values.
pub const ENABLED: &str = "enabled";
pub const PAUSED: &str = "paused";
pub const DISABLED: &str = "disabled";

/// A dead letter's reason for an event held behind an earlier one of its user.
pub const HELD: &str = "held behind an earlier dead letter of this user";

/// An event held behind an earlier dead letter of its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEvent {
    pub seq: i64,
    pub event_id: String,
    pub subject_key: String,
    /// It goes out with the redelivered ones (its user's dead letters are being redriven).
    pub redrive: bool,
}

#[derive(Clone)]
pub struct StreamStore {
    db: DatabaseConnection,
}

impl StreamStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores a new stream with its audit event; ALREADY_EXISTS for a taken name.
    pub async fn create(
        &self,
        stream: event_streams::Model,
        audit: AuditRecord,
    ) -> Result<(), DeviceError> {
        let taken = || {
            DeviceError::AlreadyExists(format!("an event stream named `{}` exists", stream.name))
        };
        if event_streams::Entity::find()
            .filter(event_streams::Column::Name.eq(stream.name.as_str()))
            .count(&self.db)
            .await?
            > 0
        {
            return Err(taken());
        }
        // The insert first (SQLite: the write lock at once); a racing creation of the same
        // name fails on the unique index.
        let transaction = self.db.begin().await?;
        if let Err(error) = event_streams::Entity::insert(stream.clone().into_active_model())
            .exec_without_returning(&transaction)
            .await
        {
            return Err(match enroll_shared::db_errors::classify(&error) {
                enroll_shared::db_errors::DbFailure::Duplicate => taken(),
                _ => DeviceError::from(error),
            });
        }
        TokenStore::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<event_streams::Model>, DeviceError> {
        Ok(event_streams::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    pub async fn list(&self) -> Result<Vec<event_streams::Model>, DeviceError> {
        Ok(event_streams::Entity::find()
            .order_by_asc(event_streams::Column::Name)
            .all(&self.db)
            .await?)
    }

    /// Writes `stream` as changed (status, filter, secrets) with its audit event. A stream
    /// disabled now skips everything stamped so far (`last_seq`): nothing is kept.
    pub async fn update(
        &self,
        stream: event_streams::Model,
        audit: AuditRecord,
    ) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        let active = stream.into_active_model().reset_all();
        event_streams::Entity::update(active)
            .exec(&transaction)
            .await?;
        TokenStore::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Deletes a stream, its dead letters and its poll acknowledgements, with the audit
    /// event; false when it was gone.
    pub async fn delete(&self, id: &str, audit: AuditRecord) -> Result<bool, DeviceError> {
        let transaction = self.db.begin().await?;
        event_dead_letters::Entity::delete_many()
            .filter(event_dead_letters::Column::StreamId.eq(id))
            .exec(&transaction)
            .await?;
        event_poll_acks::Entity::delete_many()
            .filter(event_poll_acks::Column::StreamId.eq(id))
            .exec(&transaction)
            .await?;
        let deleted = event_streams::Entity::delete_by_id(id.to_owned())
            .exec(&transaction)
            .await?
            .rows_affected;
        if deleted == 1 {
            TokenStore::insert_audit(&transaction, audit).await?;
        }
        transaction.commit().await?;
        Ok(deleted == 1)
    }

    /// Writes stream `id`'s verification event (`stream.verification`, with the receiver's
    /// `state`) to the outbox with its audit event, in one transaction; returns the event's
    /// id.
    pub async fn queue_verification(
        &self,
        id: &str,
        state: Option<String>,
        audit: AuditRecord,
    ) -> Result<String, DeviceError> {
        let row = super::events::verification_row(&audit, id, state);
        let event_id = match &row.event_id {
            sea_orm::ActiveValue::Set(event_id) => event_id.clone(),
            _ => return Err(DeviceError::corrupt("verification event", "no id")),
        };
        // The event first (SQLite: the write lock at once), then its audit record alone
        // (the event is written here, not derived from the audit action).
        let transaction = self.db.begin().await?;
        enrollment_events::Entity::insert(row)
            .exec_without_returning(&transaction)
            .await?;
        TokenStore::insert_audit_without_event(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(event_id)
    }

    /// Takes (or renews) the delivery lease of stream `id` for `owner` until `until`; false
    /// when another instance holds a live lease, or the stream is not enabled.
    pub async fn lease(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, DeviceError> {
        let backend = self.db.get_database_backend();
        let taken = self
            .db
            .execute_raw(statement(
                backend,
                &format!(
                    "UPDATE event_streams SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
                     AND status = '{ENABLED}' AND (lease_owner IS NULL OR lease_owner = $4 \
                     OR lease_until IS NULL OR lease_until < $5)"
                ),
                vec![
                    owner.into(),
                    until.into(),
                    id.into(),
                    owner.into(),
                    now.into(),
                ],
            ))
            .await?
            .rows_affected();
        Ok(taken == 1)
    }

    /// Gives a lease up (shutdown), so another instance need not wait for it to lapse.
    pub async fn release(&self, id: &str, owner: &str) -> Result<(), DeviceError> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(statement(
                backend,
                "UPDATE event_streams SET lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND lease_owner = $2",
                vec![id.into(), owner.into()],
            ))
            .await?;
        Ok(())
    }

    /// Moves the cursor to `seq` after a batch of deliveries, and puts the batch's events
    /// held behind earlier dead letters of their users into the dead letters, in one
    /// transaction; only while `owner` holds the lease (false otherwise: another instance
    /// took over, and nothing is written).
    pub async fn advance_batch(
        &self,
        id: &str,
        owner: &str,
        seq: i64,
        held: &[HeldEvent],
        now: DateTime<Utc>,
    ) -> Result<bool, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        // The update first: on SQLite it takes the write lock at once.
        let moved = transaction
            .execute_raw(statement(
                backend,
                "UPDATE event_streams SET cursor = $1, attempts = 0, next_attempt_at = NULL, \
                 first_failure_at = NULL, last_error = '' WHERE id = $2 AND lease_owner = $3 \
                 AND cursor < $4",
                vec![seq.into(), id.into(), owner.into(), seq.into()],
            ))
            .await?
            .rows_affected();
        if moved != 1 {
            return Ok(false);
        }
        if !held.is_empty() {
            event_dead_letters::Entity::insert_many(held.iter().map(|event| {
                event_dead_letters::ActiveModel {
                    stream_id: sea_orm::Set(id.to_owned()),
                    seq: sea_orm::Set(event.seq),
                    event_id: sea_orm::Set(event.event_id.clone()),
                    subject_key: sea_orm::Set(event.subject_key.clone()),
                    reason: sea_orm::Set(HELD.to_owned()),
                    attempts: sea_orm::Set(0),
                    dead_at: sea_orm::Set(now),
                    redrive: sea_orm::Set(event.redrive),
                    ..Default::default()
                }
            }))
            .exec_without_returning(&transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(true)
    }

    /// The users (subject keys) with dead letters in the stream, each with whether any of
    /// them is being redelivered: their later events are held behind them.
    pub async fn held_subjects(
        &self,
        id: &str,
    ) -> Result<std::collections::HashMap<String, bool>, DeviceError> {
        let rows: Vec<(String, bool)> = event_dead_letters::Entity::find()
            .select_only()
            .column(event_dead_letters::Column::SubjectKey)
            .column(event_dead_letters::Column::Redrive)
            .filter(event_dead_letters::Column::StreamId.eq(id))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut held = std::collections::HashMap::new();
        for (subject, redrive) in rows {
            *held.entry(subject).or_insert(false) |= redrive;
        }
        Ok(held)
    }

    /// Clears the retry state (a redelivered dead letter went back to rest).
    pub async fn clear_retry(&self, id: &str, owner: &str) -> Result<(), DeviceError> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(statement(
                backend,
                "UPDATE event_streams SET attempts = 0, next_attempt_at = NULL, \
                 first_failure_at = NULL WHERE id = $1 AND lease_owner = $2",
                vec![id.into(), owner.into()],
            ))
            .await?;
        Ok(())
    }

    /// Records a failed attempt: the next one at `next`, the first failure kept.
    pub async fn failed(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        next: DateTime<Utc>,
        error: &str,
    ) -> Result<(), DeviceError> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(statement(
                backend,
                "UPDATE event_streams SET attempts = attempts + 1, next_attempt_at = $1, \
                 first_failure_at = COALESCE(first_failure_at, $2), last_error = $3 \
                 WHERE id = $4 AND lease_owner = $5",
                vec![
                    next.into(),
                    now.into(),
                    error.into(),
                    id.into(),
                    owner.into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// Disables a stream the receiver said is gone (410), with the audit event.
    pub async fn gone(&self, id: &str, error: &str, audit: AuditRecord) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        transaction
            .execute_raw(statement(
                backend,
                &format!(
                    "UPDATE event_streams SET status = '{DISABLED}', last_error = $1, \
                     lease_owner = NULL, lease_until = NULL WHERE id = $2"
                ),
                vec![error.into(), id.into()],
            ))
            .await?;
        TokenStore::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Puts event `seq` in the stream's dead letters (after its retries, or held behind an
    /// earlier one of its user) and moves the cursor past it, in one transaction, while
    /// `owner` holds the lease. `redrive`: it goes out again with the redelivered ones.
    #[allow(clippy::too_many_arguments)]
    pub async fn dead_letter(
        &self,
        id: &str,
        owner: &str,
        seq: i64,
        event_id: &str,
        subject_key: &str,
        reason: &str,
        attempts: i32,
        redrive: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let moved = transaction
            .execute_raw(statement(
                backend,
                "UPDATE event_streams SET cursor = $1, attempts = 0, next_attempt_at = NULL, \
                 first_failure_at = NULL WHERE id = $2 AND lease_owner = $3 AND cursor < $4",
                vec![seq.into(), id.into(), owner.into(), seq.into()],
            ))
            .await?
            .rows_affected();
        if moved == 1 {
            event_dead_letters::Entity::insert(event_dead_letters::ActiveModel {
                stream_id: sea_orm::Set(id.to_owned()),
                seq: sea_orm::Set(seq),
                event_id: sea_orm::Set(event_id.to_owned()),
                subject_key: sea_orm::Set(subject_key.to_owned()),
                reason: sea_orm::Set(reason.to_owned()),
                attempts: sea_orm::Set(attempts),
                dead_at: sea_orm::Set(now),
                redrive: sea_orm::Set(redrive),
                ..Default::default()
            })
            .exec_without_returning(&transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(moved == 1)
    }

    /// Dead letters of a stream, oldest first, after `after` (their seq).
    pub async fn dead_letters(
        &self,
        id: &str,
        after: i64,
        limit: u64,
        redrive_only: bool,
    ) -> Result<Vec<event_dead_letters::Model>, DeviceError> {
        let mut query = event_dead_letters::Entity::find()
            .filter(event_dead_letters::Column::StreamId.eq(id))
            .filter(event_dead_letters::Column::Seq.gt(after))
            .order_by_asc(event_dead_letters::Column::Seq)
            .limit(limit);
        if redrive_only {
            query = query.filter(event_dead_letters::Column::Redrive.eq(true));
        }
        Ok(query.all(&self.db).await?)
    }

    pub async fn count_dead_letters(&self, id: &str) -> Result<u64, DeviceError> {
        Ok(event_dead_letters::Entity::find()
            .filter(event_dead_letters::Column::StreamId.eq(id))
            .count(&self.db)
            .await?)
    }

    /// Queues every dead letter of the stream for delivery again; returns how many.
    pub async fn redrive(&self, id: &str, audit: AuditRecord) -> Result<u64, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let queued = transaction
            .execute_raw(statement(
                backend,
                "UPDATE event_dead_letters SET redrive = TRUE WHERE stream_id = $1",
                vec![id.into()],
            ))
            .await?
            .rows_affected();
        TokenStore::insert_audit(&transaction, audit.with_reason(format!("{queued} queued")))
            .await?;
        transaction.commit().await?;
        Ok(queued)
    }

    /// A redelivered dead letter went out: it is gone.
    pub async fn delivered_dead_letter(&self, row_id: i64) -> Result<(), DeviceError> {
        event_dead_letters::Entity::delete_by_id(row_id)
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// A redelivered dead letter failed again past the dead-letter time: back to rest.
    pub async fn rest_dead_letter(&self, row_id: i64, reason: &str) -> Result<(), DeviceError> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(statement(
                backend,
                "UPDATE event_dead_letters SET redrive = FALSE, reason = $1, \
                 attempts = attempts + 1 WHERE id = $2",
                vec![reason.into(), row_id.into()],
            ))
            .await?;
        Ok(())
    }

    /// The signing keys still published (not retired by `now`), newest first.
    pub async fn signing_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<event_signing_keys::Model>, DeviceError> {
        Ok(event_signing_keys::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(event_signing_keys::Column::RetireTime.is_null())
                    .add(event_signing_keys::Column::RetireTime.gt(now)),
            )
            .order_by_desc(event_signing_keys::Column::CreateTime)
            .order_by_desc(event_signing_keys::Column::Kid)
            .all(&self.db)
            .await?)
    }

    /// Stores a new signing key. A rotation (`retire_previous`) retires the keys in use at
    /// that time (still published until then) and writes `audit`; the first key retires
    /// nothing (replicas making one each at first use all keep theirs published).
    pub async fn add_signing_key(
        &self,
        key: event_signing_keys::Model,
        retire_previous: Option<(DateTime<Utc>, AuditRecord)>,
    ) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let audit = match retire_previous {
            Some((retire, audit)) => {
                transaction
                    .execute_raw(statement(
                        backend,
                        "UPDATE event_signing_keys SET retire_time = $1 \
                         WHERE retire_time IS NULL",
                        vec![retire.into()],
                    ))
                    .await?;
                Some(audit)
            }
            None => None,
        };
        event_signing_keys::Entity::insert(key.into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        if let Some(audit) = audit {
            TokenStore::insert_audit(&transaction, audit).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}
