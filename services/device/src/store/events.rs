//! The enrollment-event outbox. An event row is written by the audit insert of its change
//! (same connection, same transaction: it exists if and only if the change committed); its
//! credential facts are read from the subject's row in that transaction. Rows get their
//! delivery order (`seq`) from the stamper after they commit, in the order the stamper
//! sees them: a transaction that allocated a smaller id but committed late is stamped
//! after the ones that committed before it, so a reader resuming "after seq N" never skips
//! it (a cursor on the insert id would).
use chrono::{DateTime, Utc};
use sea_orm::ColumnTrait;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use super::event_entities::enrollment_events;
use super::sql::statement;
use crate::domain::audit::AuditRecord;
use crate::domain::events::{
    CredentialFacts, CredentialKind, EnrollmentEvent, EventKind, InitiatingEntity,
    PolicyChangeFacts,
};
use crate::error::DeviceError;

/// The advisory lock key of the stamper on PostgreSQL.
const STAMPER_LOCK_KEY: i64 = 0x656e_726f_6c45;
/// Events stamped per round at most.
const STAMP_BATCH: u64 = 1_000;

/// The typed rest of an event, stored as `payload`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Payload {
    pub(super) actor: String,
    pub(super) initiating_entity: InitiatingEntity,
    pub(super) reason: String,
    pub(super) credential: CredentialFacts,
    pub(super) trace_id: String,
    /// Policy events only (`store::policy_events`); absent from every other payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) policy: Option<PolicyChangeFacts>,
    /// A stream verification's `state` (the only event that has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) state: Option<String>,
}

/// Writes the event `audit` is (if it is one) on `db`, the change's transaction.
pub(super) async fn record_audited(
    db: &impl ConnectionTrait,
    audit: &AuditRecord,
) -> Result<(), DeviceError> {
    match audit.event_kind() {
        Some(kind) => record(db, audit, kind, &audit.subject).await,
        None => Ok(()),
    }
}

/// Writes event `kind` about `subject`, described by `audit`, on `db`.
pub(super) async fn record(
    db: &impl ConnectionTrait,
    audit: &AuditRecord,
    kind: EventKind,
    subject: &str,
) -> Result<(), DeviceError> {
    let facts = facts_of(db, kind, subject).await?;
    enrollment_events::Entity::insert(row(audit, kind, subject, facts))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The event row of `audit` as `kind` about `subject` with `facts` (its id and seq left to
/// the database and the stamper).
pub(super) fn row(
    audit: &AuditRecord,
    kind: EventKind,
    subject: &str,
    facts: CredentialFacts,
) -> enrollment_events::ActiveModel {
    let payload = Payload {
        actor: audit.actor.clone(),
        initiating_entity: initiating_entity(kind, audit.action),
        reason: audit.reason.clone(),
        credential: facts,
        trace_id: audit.trace_id.clone(),
        state: None,
        policy: None,
    };
    enrollment_events::ActiveModel {
        event_id: Set(uuid::Uuid::new_v4().to_string()),
        event_type: Set(kind.as_str().to_owned()),
        realm: Set(audit.realm.clone()),
        user_name: Set(audit.user.clone()),
        subject: Set(subject.to_owned()),
        occurred_at: Set(audit.time),
        // Plain data: serializing it cannot fail.
        payload: Set(serde_json::to_string(&payload).unwrap_or_default()),
        ..Default::default()
    }
}

/// The `stream.verification` event row of stream `stream_id` with the receiver's `state`,
/// described by `audit` (VerifyEventStream's).
pub(super) fn verification_row(
    audit: &AuditRecord,
    stream_id: &str,
    state: Option<String>,
) -> enrollment_events::ActiveModel {
    let mut row = row(
        audit,
        EventKind::StreamVerification,
        stream_id,
        CredentialFacts::default(),
    );
    let payload = Payload {
        actor: audit.actor.clone(),
        initiating_entity: InitiatingEntity::Admin,
        reason: audit.reason.clone(),
        credential: CredentialFacts::default(),
        trace_id: audit.trace_id.clone(),
        state,
        policy: None,
    };
    // Plain data: serializing it cannot fail.
    row.payload = Set(serde_json::to_string(&payload).unwrap_or_default());
    row
}

/// Who started a change of `kind` through `action`.
fn initiating_entity(kind: EventKind, action: &str) -> InitiatingEntity {
    match kind {
        EventKind::DeviceFlagged
        | EventKind::TokenEnrollmentFailed
        | EventKind::LinkExpired
        | EventKind::OtpLinkExpired => InitiatingEntity::System,
        EventKind::DeviceRegistered
        | EventKind::DeviceAuthenticationRefused
        | EventKind::LinkUsed
        | EventKind::TokenAutoassigned
        | EventKind::OtpLinkRedeemed => InitiatingEntity::User,
        EventKind::TokenEnrolled if action == "finish_otp_enrollment" => InitiatingEntity::User,
        _ => InitiatingEntity::Admin,
    }
}

/// The credential facts of a token's row.
pub(super) fn token_facts(token_type: &str, hardware: bool, label: &str) -> CredentialFacts {
    let kind = match (token_type, hardware) {
        ("password", _) => CredentialKind::Password,
        (_, true) => CredentialKind::HardwareOtp,
        _ => CredentialKind::SoftwareOtp,
    };
    CredentialFacts {
        kind: Some(kind),
        aaguid: None,
        friendly_name: label.to_owned(),
        transports: Vec::new(),
    }
}

/// The credential facts of `subject` for an event of `kind`, read in the change's
/// transaction; for a subject whose row is gone (deleted), those of its last event.
async fn facts_of(
    db: &impl ConnectionTrait,
    kind: EventKind,
    subject: &str,
) -> Result<CredentialFacts, DeviceError> {
    let backend = db.get_database_backend();
    let name = kind.as_str();
    let row = if name.starts_with("device.") {
        db.query_one_raw(statement(
            backend,
            "SELECT device_type, aaguid, attachment, transports, model FROM devices WHERE id = $1",
            vec![subject.into()],
        ))
        .await?
        .map(|row| -> Result<CredentialFacts, sea_orm::DbErr> {
            let device_type: String = row.try_get_by_index(0)?;
            let aaguid: String = row.try_get_by_index(1)?;
            let attachment: String = row.try_get_by_index(2)?;
            let transports: String = row.try_get_by_index(3)?;
            let model: String = row.try_get_by_index(4)?;
            let platform = device_type == "enclave_only"
                || attachment == "platform"
                || (attachment.is_empty() && transports.split(',').any(|t| t == "internal"));
            Ok(CredentialFacts {
                kind: Some(if platform {
                    CredentialKind::Fido2Platform
                } else {
                    CredentialKind::Fido2Roaming
                }),
                aaguid: Some(aaguid).filter(|aaguid| !aaguid.is_empty()),
                friendly_name: model,
                transports: transports
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .transpose()?
    } else if name.starts_with("token.") {
        db.query_one_raw(statement(
            backend,
            "SELECT token_type, hardware, label FROM tokens WHERE serial = $1",
            vec![subject.into()],
        ))
        .await?
        .map(|row| -> Result<CredentialFacts, sea_orm::DbErr> {
            let token_type: String = row.try_get_by_index(0)?;
            let hardware: bool = row.try_get_by_index(1)?;
            let label: String = row.try_get_by_index(2)?;
            Ok(token_facts(&token_type, hardware, &label))
        })
        .transpose()?
    } else {
        // Links name no credential.
        return Ok(CredentialFacts::default());
    };
    if let Some(facts) = row {
        return Ok(facts);
    }
    let last = enrollment_events::Entity::find()
        .filter(enrollment_events::Column::Subject.eq(subject))
        .order_by_desc(enrollment_events::Column::Id)
        .one(db)
        .await?;
    Ok(last
        .and_then(|event| serde_json::from_str::<Payload>(&event.payload).ok())
        .map(|payload| payload.credential)
        .unwrap_or_default())
}

/// The outbox's reads and the stamper.
#[derive(Clone)]
pub struct EventStore {
    pub(super) db: DatabaseConnection,
}

impl EventStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Gives the committed, unstamped events their `seq`, in id order, after the largest
    /// stamped one; returns how many. One stamper at a time: an advisory lock on
    /// PostgreSQL, the write lock (taken by the first statement) on SQLite.
    pub async fn stamp(&self) -> Result<u64, DeviceError> {
        let backend = self.db.get_database_backend();
        // Most rounds find nothing: a plain read, no transaction, no lock.
        let waiting = enrollment_events::Entity::find()
            .filter(enrollment_events::Column::Seq.is_null())
            .one(&self.db)
            .await?;
        if waiting.is_none() {
            return Ok(0);
        }
        let transaction = self.db.begin().await?;
        if backend == DbBackend::Postgres {
            transaction
                .execute_raw(statement(
                    backend,
                    "SELECT pg_advisory_xact_lock($1)",
                    vec![STAMPER_LOCK_KEY.into()],
                ))
                .await?;
        } else {
            // SQLite: a write first takes the write lock at once (a read first would have
            // to upgrade later, which fails at once when another writer waits).
            transaction
                .execute_raw(statement(
                    backend,
                    "UPDATE enrollment_events SET seq = NULL WHERE 1 = 0",
                    vec![],
                ))
                .await?;
        }
        let pending: Vec<i64> = enrollment_events::Entity::find()
            .select_only()
            .column(enrollment_events::Column::Id)
            .filter(enrollment_events::Column::Seq.is_null())
            .order_by_asc(enrollment_events::Column::Id)
            .limit(STAMP_BATCH)
            .into_tuple()
            .all(&transaction)
            .await?;
        if pending.is_empty() {
            transaction.commit().await?;
            return Ok(0);
        }
        let last: Option<i64> = transaction
            .query_one_raw(statement(
                backend,
                "SELECT MAX(seq) FROM enrollment_events",
                vec![],
            ))
            .await?
            .map(|row| row.try_get_by_index(0))
            .transpose()?
            .flatten();
        let mut next = last.unwrap_or(0);
        for id in &pending {
            next += 1;
            transaction
                .execute_raw(statement(
                    backend,
                    "UPDATE enrollment_events SET seq = $1 WHERE id = $2 AND seq IS NULL",
                    vec![next.into(), (*id).into()],
                ))
                .await?;
        }
        transaction.commit().await?;
        Ok(pending.len() as u64)
    }

    /// Stamped events after `cursor`, in order, at most `limit`.
    pub async fn after(
        &self,
        cursor: i64,
        limit: u64,
    ) -> Result<Vec<EnrollmentEvent>, DeviceError> {
        enrollment_events::Entity::find()
            .filter(enrollment_events::Column::Seq.gt(cursor))
            .order_by_asc(enrollment_events::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(event_of)
            .collect()
    }

    /// The largest stamped `seq` (0: none yet): "from now" for a new reader.
    pub async fn last_seq(&self) -> Result<i64, DeviceError> {
        let backend = self.db.get_database_backend();
        Ok(self
            .db
            .query_one_raw(statement(
                backend,
                "SELECT MAX(seq) FROM enrollment_events",
                vec![],
            ))
            .await?
            .map(|row| row.try_get_by_index::<Option<i64>>(0))
            .transpose()?
            .flatten()
            .unwrap_or(0))
    }

    /// The largest `seq` the retention purge went past (0: none yet): every event after it
    /// is still kept, those at or below it are gone (but for dead letters' own).
    pub async fn purged_through(&self) -> Result<i64, DeviceError> {
        purged_through(&self.db).await
    }

    /// How many stamped events come after `cursor`, and the oldest one's time. Two index
    /// lookups, whatever the backlog: the stamper numbers events densely (each batch goes
    /// on from the largest `seq`), so the count is the largest `seq` minus the cursor.
    pub async fn pending_after(
        &self,
        cursor: i64,
    ) -> Result<(i64, Option<DateTime<Utc>>), DeviceError> {
        let last = self.last_seq().await?;
        if last <= cursor {
            return Ok((0, None));
        }
        let oldest = enrollment_events::Entity::find()
            .select_only()
            .column(enrollment_events::Column::OccurredAt)
            .filter(enrollment_events::Column::Seq.gt(cursor))
            .order_by_asc(enrollment_events::Column::Seq)
            .limit(1)
            .into_tuple::<DateTime<Utc>>()
            .one(&self.db)
            .await?;
        Ok((last - cursor, oldest))
    }

    /// One event by its stable id.
    pub async fn by_id(&self, id: &str) -> Result<Option<EnrollmentEvent>, DeviceError> {
        enrollment_events::Entity::find()
            .filter(enrollment_events::Column::EventId.eq(id))
            .one(&self.db)
            .await?
            .map(event_of)
            .transpose()
    }
}

pub(super) fn event_of(row: enrollment_events::Model) -> Result<EnrollmentEvent, DeviceError> {
    let corrupt = |problem: String| DeviceError::corrupt(format!("event {}", row.id), problem);
    let kind = EventKind::parse(&row.event_type)
        .ok_or_else(|| corrupt(format!("unknown type {}", row.event_type)))?;
    let payload: Payload =
        serde_json::from_str(&row.payload).map_err(|error| corrupt(error.to_string()))?;
    Ok(EnrollmentEvent {
        seq: row.seq.unwrap_or(0),
        id: row.event_id,
        kind,
        realm: row.realm,
        user: row.user_name,
        subject: row.subject,
        time: row.occurred_at,
        actor: payload.actor,
        initiating_entity: payload.initiating_entity,
        reason: payload.reason,
        credential: payload.credential,
        trace_id: payload.trace_id,
        verification_state: payload.state,
        policy: payload.policy,
    })
}

/// The largest `seq` the retention purge went past (0: none yet; `store::retention`).
pub(super) async fn purged_through(db: &impl ConnectionTrait) -> Result<i64, DeviceError> {
    let backend = db.get_database_backend();
    Ok(db
        .query_one_raw(statement(
            backend,
            "SELECT purged_through FROM event_retention WHERE id = 1",
            vec![],
        ))
        .await?
        .map(|row| row.try_get_by_index::<i64>(0))
        .transpose()?
        .unwrap_or(0))
}
