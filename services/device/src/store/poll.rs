//! RFC 8936 poll delivery's state. A poll stream's outstanding events are those after its
//! cursor that it sends and its receiver has not acknowledged, plus its dead letters queued
//! again (RedeliverEvents). Acknowledgements may come in any order: those beyond the cursor
//! are kept in `event_poll_acks`, and the cursor moves over the contiguous prefix of
//! acknowledged (or unsent) events, deleting the acknowledgements it passes, in the same
//! transaction. A receiver's error for an event (`setErrs`) acknowledges it and makes it a
//! dead letter of the stream with the receiver's reason.
//!
//! A round runs in one transaction that first locks the stream's row (an UPDATE: the row
//! lock on PostgreSQL, the write lock on SQLite), so polls of one stream on any replica are
//! serialized: an event acknowledged through one replica is never served again by another.
use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::event_entities::{
    enrollment_events, event_dead_letters, event_poll_acks, event_streams,
};
use super::events::event_of;
use super::sql::statement;
use super::streams::{DISABLED, ENABLED};
use crate::domain::events::EnrollmentEvent;
use crate::error::DeviceError;

/// Events read per query.
const SCAN_BATCH: u64 = 500;
/// Events looked at per walk at most (the cursor's, then the serving one's): a long run of
/// events the stream does not send is crossed over several polls, not in one transaction.
const SCAN_LIMIT: usize = 5_000;

/// What a receiver reported in a poll: the `jti`s it acknowledged, and those it could not
/// process with its reason.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    pub acks: Vec<String>,
    pub errors: Vec<(String, String)>,
}

impl Reports {
    fn is_empty(&self) -> bool {
        self.acks.is_empty() && self.errors.is_empty()
    }
}

/// What one round did and found.
#[derive(Debug, Clone)]
pub struct Round {
    /// The stream as locked (its status, filter, audience; its cursor after the round).
    pub stream: event_streams::Model,
    /// Outstanding events to send, redelivered dead letters first, then in `seq` order.
    pub events: Vec<EnrollmentEvent>,
    /// More are outstanding than `events` holds.
    pub more: bool,
    /// Events newly acknowledged, and newly rejected (`setErrs`), by this round's reports.
    pub acknowledged: u64,
    pub rejected: u64,
}

/// What the stream looks like now, read without a lock: a waiting poll runs a round only
/// when this changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glance {
    pub last_seq: i64,
    pub redelivering: u64,
    pub status: String,
}

#[derive(Clone)]
pub struct PollStore {
    db: DatabaseConnection,
}

impl PollStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The stream's row (no lock).
    pub async fn stream(&self, id: &str) -> Result<Option<event_streams::Model>, DeviceError> {
        Ok(event_streams::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// The newest stamped event, the dead letters queued again and the status; None when
    /// the stream is gone.
    pub async fn glance(&self, id: &str) -> Result<Option<Glance>, DeviceError> {
        let Some(stream) = self.stream(id).await? else {
            return Ok(None);
        };
        let backend = self.db.get_database_backend();
        let last_seq = self
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
            .unwrap_or(0);
        let redelivering = event_dead_letters::Entity::find()
            .filter(event_dead_letters::Column::StreamId.eq(id))
            .filter(event_dead_letters::Column::Redrive.eq(true))
            .count(&self.db)
            .await?;
        Ok(Some(Glance {
            last_seq,
            redelivering,
            status: stream.status,
        }))
    }

    /// One poll of stream `id`: records `reports` (unless the stream is disabled), moves the
    /// cursor, and returns up to `max` outstanding events when the stream is enabled (none
    /// while paused: held). `sendable` says whether the stream sends an event at all. None:
    /// no such stream.
    pub async fn round(
        &self,
        id: &str,
        reports: &Reports,
        max: u64,
        sendable: impl Fn(&event_streams::Model, &EnrollmentEvent) -> bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Round>, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        // The lock first (SQLite: the write lock at once, see `EventStore::stamp`).
        let locked = transaction
            .execute_raw(statement(
                backend,
                "UPDATE event_streams SET update_time = update_time WHERE id = $1",
                vec![id.into()],
            ))
            .await?
            .rows_affected();
        let stream = match locked {
            0 => None,
            _ => {
                event_streams::Entity::find_by_id(id.to_owned())
                    .one(&transaction)
                    .await?
            }
        };
        let Some(mut stream) = stream else {
            transaction.rollback().await?;
            return Ok(None);
        };
        let mut round = Round {
            stream: stream.clone(),
            events: Vec::new(),
            more: false,
            acknowledged: 0,
            rejected: 0,
        };
        if stream.status != DISABLED {
            if !reports.is_empty() {
                (round.acknowledged, round.rejected) =
                    record(&transaction, &stream, reports, &sendable, now).await?;
            }
            stream.cursor = advance(&transaction, &stream, &sendable).await?;
        }
        if stream.status == ENABLED && max > 0 {
            (round.events, round.more) = outstanding(&transaction, &stream, max, &sendable).await?;
        }
        transaction.commit().await?;
        round.stream = stream;
        Ok(Some(round))
    }
}

/// The acknowledged `seq`s of the stream in `(after, up_to]`.
async fn acknowledged(
    db: &DatabaseTransaction,
    stream_id: &str,
    after: i64,
    up_to: i64,
) -> Result<BTreeSet<i64>, DeviceError> {
    Ok(event_poll_acks::Entity::find()
        .select_only()
        .column(event_poll_acks::Column::Seq)
        .filter(event_poll_acks::Column::StreamId.eq(stream_id))
        .filter(event_poll_acks::Column::Seq.gt(after))
        .filter(event_poll_acks::Column::Seq.lte(up_to))
        .into_tuple::<i64>()
        .all(db)
        .await?
        .into_iter()
        .collect())
}

/// Stamped events after `after`, in order, one batch.
async fn batch_after(
    db: &DatabaseTransaction,
    after: i64,
) -> Result<Vec<EnrollmentEvent>, DeviceError> {
    enrollment_events::Entity::find()
        .filter(enrollment_events::Column::Seq.gt(after))
        .order_by_asc(enrollment_events::Column::Seq)
        .limit(SCAN_BATCH)
        .all(db)
        .await?
        .into_iter()
        .map(event_of)
        .collect()
}

/// Records acknowledgements and errors; returns how many events each newly settled. An
/// acknowledged dead letter is gone; an error for a redelivered one puts it back to rest
/// with the new reason. Unknown `jti`s, events the stream does not send and events already
/// settled are ignored (a receiver may repeat itself).
async fn record(
    db: &DatabaseTransaction,
    stream: &event_streams::Model,
    reports: &Reports,
    sendable: &impl Fn(&event_streams::Model, &EnrollmentEvent) -> bool,
    now: DateTime<Utc>,
) -> Result<(u64, u64), DeviceError> {
    let backend = db.get_database_backend();
    let jtis: Vec<&str> = reports
        .acks
        .iter()
        .map(String::as_str)
        .chain(reports.errors.iter().map(|(jti, _)| jti.as_str()))
        .collect();
    let events: HashMap<String, EnrollmentEvent> = enrollment_events::Entity::find()
        .filter(enrollment_events::Column::EventId.is_in(jtis.iter().copied()))
        .filter(enrollment_events::Column::Seq.is_not_null())
        .all(db)
        .await?
        .into_iter()
        .map(|row| event_of(row).map(|event| (event.id.clone(), event)))
        .collect::<Result<_, _>>()?;
    let mut letters: HashMap<String, event_dead_letters::Model> =
        event_dead_letters::Entity::find()
            .filter(event_dead_letters::Column::StreamId.eq(stream.id.as_str()))
            .filter(event_dead_letters::Column::EventId.is_in(jtis.iter().copied()))
            .all(db)
            .await?
            .into_iter()
            .map(|letter| (letter.event_id.clone(), letter))
            .collect();
    let last = events.values().map(|event| event.seq).max().unwrap_or(0);
    let mut settled = acknowledged(db, &stream.id, stream.cursor, last).await?;
    // Events this stream sends, beyond its cursor and not yet settled.
    let open = |jti: &str, settled: &BTreeSet<i64>| {
        events
            .get(jti)
            .filter(|event| {
                event.seq > stream.cursor
                    && !settled.contains(&event.seq)
                    && sendable(stream, event)
            })
            .cloned()
    };
    let (mut acknowledged_now, mut rejected_now) = (0, 0);
    for jti in &reports.acks {
        if let Some(letter) = letters.remove(jti.as_str()) {
            event_dead_letters::Entity::delete_by_id(letter.id)
                .exec(db)
                .await?;
            acknowledged_now += 1;
            continue;
        }
        if let Some(event) = open(jti, &settled) {
            insert_ack(db, &stream.id, event.seq).await?;
            settled.insert(event.seq);
            acknowledged_now += 1;
        }
    }
    for (jti, reason) in &reports.errors {
        if let Some(letter) = letters.remove(jti.as_str()) {
            if letter.redrive {
                db.execute_raw(statement(
                    backend,
                    "UPDATE event_dead_letters SET redrive = FALSE, reason = $1, \
                     attempts = attempts + 1, dead_at = $2 WHERE id = $3",
                    vec![reason.as_str().into(), now.into(), letter.id.into()],
                ))
                .await?;
                rejected_now += 1;
            }
            continue;
        }
        if let Some(event) = open(jti, &settled) {
            insert_ack(db, &stream.id, event.seq).await?;
            settled.insert(event.seq);
            event_dead_letters::Entity::insert(event_dead_letters::ActiveModel {
                stream_id: sea_orm::Set(stream.id.clone()),
                seq: sea_orm::Set(event.seq),
                event_id: sea_orm::Set(event.id.clone()),
                subject_key: sea_orm::Set(format!("{}/{}", event.realm, event.user)),
                reason: sea_orm::Set(reason.clone()),
                attempts: sea_orm::Set(1),
                dead_at: sea_orm::Set(now),
                redrive: sea_orm::Set(false),
                ..Default::default()
            })
            .exec_without_returning(db)
            .await?;
            rejected_now += 1;
        }
    }
    Ok((acknowledged_now, rejected_now))
}

async fn insert_ack(
    db: &DatabaseTransaction,
    stream_id: &str,
    seq: i64,
) -> Result<(), DeviceError> {
    event_poll_acks::Entity::insert(event_poll_acks::ActiveModel {
        stream_id: sea_orm::Set(stream_id.to_owned()),
        seq: sea_orm::Set(seq),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Moves the cursor over the acknowledged and unsent events that follow it, deletes the
/// acknowledgements it passed, and returns it.
async fn advance(
    db: &DatabaseTransaction,
    stream: &event_streams::Model,
    sendable: &impl Fn(&event_streams::Model, &EnrollmentEvent) -> bool,
) -> Result<i64, DeviceError> {
    let backend = db.get_database_backend();
    let mut cursor = stream.cursor;
    let mut looked = 0;
    'walk: loop {
        let batch = batch_after(db, cursor).await?;
        let Some(last) = batch.last().map(|event| event.seq) else {
            break;
        };
        let full = batch.len() as u64 == SCAN_BATCH;
        let settled = acknowledged(db, &stream.id, cursor, last).await?;
        for event in &batch {
            looked += 1;
            if !settled.contains(&event.seq) && sendable(stream, event) {
                break 'walk;
            }
            cursor = event.seq;
        }
        if !full || looked >= SCAN_LIMIT {
            break;
        }
    }
    if cursor != stream.cursor {
        db.execute_raw(statement(
            backend,
            "UPDATE event_streams SET cursor = $1 WHERE id = $2",
            vec![cursor.into(), stream.id.as_str().into()],
        ))
        .await?;
    }
    // Also those a disable or re-enable left behind (the cursor jumped over them).
    db.execute_raw(statement(
        backend,
        "DELETE FROM event_poll_acks WHERE stream_id = $1 AND seq <= $2",
        vec![stream.id.as_str().into(), cursor.into()],
    ))
    .await?;
    Ok(cursor)
}

/// Up to `max` outstanding events (redelivered dead letters first, then the unsettled
/// events after the cursor, in order) and whether more are outstanding.
async fn outstanding(
    db: &DatabaseTransaction,
    stream: &event_streams::Model,
    max: u64,
    sendable: &impl Fn(&event_streams::Model, &EnrollmentEvent) -> bool,
) -> Result<(Vec<EnrollmentEvent>, bool), DeviceError> {
    let want = usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1);
    let letters: Vec<String> = event_dead_letters::Entity::find()
        .select_only()
        .column(event_dead_letters::Column::EventId)
        .filter(event_dead_letters::Column::StreamId.eq(stream.id.as_str()))
        .filter(event_dead_letters::Column::Redrive.eq(true))
        .order_by_asc(event_dead_letters::Column::Seq)
        .limit(max.saturating_add(1))
        .into_tuple()
        .all(db)
        .await?;
    let mut found: Vec<EnrollmentEvent> = if letters.is_empty() {
        Vec::new()
    } else {
        enrollment_events::Entity::find()
            .filter(enrollment_events::Column::EventId.is_in(letters))
            .order_by_asc(enrollment_events::Column::Seq)
            .all(db)
            .await?
            .into_iter()
            .map(event_of)
            .collect::<Result<_, _>>()?
    };
    let mut after = stream.cursor;
    let mut looked = 0;
    let mut cut_short = false;
    while found.len() < want {
        let batch = batch_after(db, after).await?;
        let Some(last) = batch.last().map(|event| event.seq) else {
            break;
        };
        let full = batch.len() as u64 == SCAN_BATCH;
        let settled = acknowledged(db, &stream.id, after, last).await?;
        for event in batch {
            after = event.seq;
            looked += 1;
            if !settled.contains(&event.seq) && sendable(stream, &event) {
                found.push(event);
                if found.len() == want {
                    break;
                }
            }
        }
        if !full {
            break;
        }
        if looked >= SCAN_LIMIT {
            cut_short = true;
            break;
        }
    }
    let more = found.len() > want - 1 || cut_short;
    found.truncate(want - 1);
    Ok((found, more))
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveValue::Set, Database};
    use sea_orm_migration::MigratorTrait;

    use super::*;
    use crate::domain::audit::{AuditRecord, OK};
    use crate::domain::events::{CredentialFacts, EventKind};
    use crate::service::poll::sendable;
    use crate::store::migration::Migrator;
    use crate::store::streams::PAUSED;

    const STREAM: &str = "00000000-0000-4000-8000-000000000001";

    async fn database() -> (DatabaseConnection, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("poll-{}.db", uuid::Uuid::new_v4()));
        let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        Migrator::up(&db, None).await.unwrap();
        let now = Utc::now();
        event_streams::Entity::insert(event_streams::ActiveModel {
            id: Set(STREAM.into()),
            name: Set("firewalled".into()),
            encoding: Set("caep_poll".into()),
            endpoint: Set(String::new()),
            audience: Set("aud".into()),
            subject_format: Set("iss_sub".into()),
            event_types: Set(String::new()),
            realms: Set(String::new()),
            status: Set(ENABLED.into()),
            secret_key_id: Set(String::new()),
            sealed_secrets: Set(Vec::new()),
            cursor: Set(0),
            lease_owner: Set(None),
            lease_until: Set(None),
            attempts: Set(0),
            next_attempt_at: Set(None),
            first_failure_at: Set(None),
            last_error: Set(String::new()),
            created_by: Set("secops".into()),
            create_time: Set(now),
            update_time: Set(now),
        })
        .exec_without_returning(&db)
        .await
        .unwrap();
        (db, path)
    }

    /// Event `e<seq>` of `kind` for `user`, stamped `seq`.
    async fn event(db: &DatabaseConnection, seq: i64, kind: EventKind, user: &str, subject: &str) {
        let audit = AuditRecord {
            actor: "admin".into(),
            action: "test",
            realm: "corp".into(),
            user: user.into(),
            subject: subject.into(),
            result: OK,
            reason: String::new(),
            trace_id: String::new(),
            time: Utc::now(),
            event: None,
        };
        let mut row = crate::store::events::row(&audit, kind, subject, CredentialFacts::default());
        row.event_id = Set(format!("e{seq}"));
        row.seq = Set(Some(seq));
        enrollment_events::Entity::insert(row)
            .exec_without_returning(db)
            .await
            .unwrap();
    }

    fn ids(round: &Round) -> Vec<&str> {
        round.events.iter().map(|event| event.id.as_str()).collect()
    }

    fn reports(acks: &[&str], errors: &[&str]) -> Reports {
        Reports {
            acks: acks.iter().map(|jti| jti.to_string()).collect(),
            errors: errors
                .iter()
                .map(|jti| (jti.to_string(), "receiver error x: y".to_owned()))
                .collect(),
        }
    }

    async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
        db.query_one_raw(statement(db.get_database_backend(), sql, vec![]))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap()
    }

    #[tokio::test]
    async fn acks_in_any_order_move_the_cursor_over_the_settled_prefix_only() {
        let (db, path) = database().await;
        let store = PollStore::new(db.clone());
        event(&db, 1, EventKind::TokenEnrolled, "a", "t1").await;
        event(&db, 2, EventKind::LinkCreated, "x", "l1").await;
        event(&db, 3, EventKind::TokenEnrolled, "b", "t3").await;
        event(&db, 4, EventKind::TokenDisabled, "c", "t4").await;
        // Another stream's verification: never this stream's.
        event(&db, 5, EventKind::StreamVerification, "", "other-stream").await;
        event(&db, 6, EventKind::TokenEnrolled, "d", "t6").await;
        let now = Utc::now();
        let poll = |acks: &[&str], errors: &[&str], max| {
            let reports = reports(acks, errors);
            let store = store.clone();
            async move {
                store
                    .round(STREAM, &reports, max, sendable, now)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };

        let first = poll(&[], &[], 2).await;
        assert_eq!((ids(&first), first.more), (vec!["e1", "e3"], true));
        // e3 before e1: kept, the cursor stays.
        let second = poll(&["e3"], &[], 10).await;
        assert_eq!((ids(&second), second.more), (vec!["e1", "e4", "e6"], false));
        assert_eq!((second.acknowledged, second.stream.cursor), (1, 0));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM event_poll_acks").await, 1);
        // A repeated ack counts once; an unknown jti is ignored.
        let again = poll(&["e3", "nope"], &[], 0).await;
        assert_eq!((again.acknowledged, again.events.len()), (0, 0));
        // e1 and e4 acknowledged, e6 refused: all settled, the cursor at the end.
        let third = poll(&["e1", "e4"], &["e6"], 10).await;
        assert_eq!((third.acknowledged, third.rejected), (2, 1));
        assert!(third.events.is_empty());
        assert_eq!(third.stream.cursor, 6);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM event_poll_acks").await, 0);
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM event_dead_letters WHERE redrive = FALSE"
            )
            .await,
            1
        );

        // Redelivered: served first, before a new event; an ack removes it.
        db.execute_raw(statement(
            db.get_database_backend(),
            "UPDATE event_dead_letters SET redrive = TRUE",
            vec![],
        ))
        .await
        .unwrap();
        event(&db, 7, EventKind::TokenEnrolled, "e", "t7").await;
        let fourth = poll(&[], &[], 10).await;
        assert_eq!(ids(&fourth), ["e6", "e7"]);
        let fifth = poll(&["e6", "e7"], &[], 10).await;
        assert_eq!((fifth.acknowledged, fifth.stream.cursor), (2, 7));
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM event_dead_letters").await,
            0
        );

        // Paused: reports recorded, nothing served.
        db.execute_raw(statement(
            db.get_database_backend(),
            &format!("UPDATE event_streams SET status = '{PAUSED}'"),
            vec![],
        ))
        .await
        .unwrap();
        event(&db, 8, EventKind::TokenEnrolled, "f", "t8").await;
        let paused = poll(&["e8"], &[], 10).await;
        assert_eq!((paused.acknowledged, paused.events.len()), (1, 0));
        assert_eq!(paused.stream.cursor, 8);
        assert!(
            store
                .round("gone", &Reports::default(), 1, sendable, now)
                .await
                .unwrap()
                .is_none()
        );
        drop(db);
        let _ = std::fs::remove_file(path);
    }
}
