//! Retention: audit events and outbox events past their age are deleted in batches, the
//! outbox only below what every enabled or paused stream received and never an event a
//! dead letter names; readers of what remains page (ListAuditEvents) and resume
//! (WatchEnrollmentEvents) correctly, and one that resumes before what is kept is told so
//! (OUT_OF_RANGE) instead of skipping.
//!
//! The purges here run on a clock ahead of the servers' (a test clock: nothing waits for
//! days), either as an extra replica would (`RetentionPurge::run_once` on its own
//! connection) or as the server's own background task.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use enroll_device::config::RetentionConfig;
use enroll_device::service::retention::{Purged, RetentionPurge};
use enroll_device::store::audit::AuditStore;
use enroll_device::store::event_entities::{event_dead_letters, event_streams};
use enroll_device::store::events::EventStore;
use enroll_device::store::retention::RetentionStore;
use enroll_e2e::{Backend, DeviceClient, TestStack, enroll_token, metric_value};
use enroll_shared::proto::device::v1 as pb;
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Set, Statement};
use tonic::Code;

const DAY: Duration = Duration::from_secs(24 * 3_600);

/// The system clock moved forward.
struct Ahead(chrono::Duration);

impl enroll_shared::time::Clock for Ahead {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

/// A stack whose servers never purge on their own (the tests purge when they choose).
async fn stack(backend: Backend) -> TestStack {
    TestStack::builder(backend)
        .device_config(|config| {
            config.retention.audit_days = 0;
            config.retention.events_days = 0;
        })
        .start()
        .await
}

async fn connect(stack: &TestStack) -> DatabaseConnection {
    sea_orm::Database::connect(&stack.database.url)
        .await
        .unwrap()
}

/// A purge as another replica would run it, on a clock `ahead` of now (batches of 100).
fn purger(
    db: &DatabaseConnection,
    audit_days: u32,
    events_days: u32,
    ahead: Duration,
) -> RetentionPurge {
    purger_by(db, audit_days, events_days, ahead, 100)
}

fn purger_by(
    db: &DatabaseConnection,
    audit_days: u32,
    events_days: u32,
    ahead: Duration,
    batch_size: u64,
) -> RetentionPurge {
    RetentionPurge::new(
        RetentionStore::new(db.clone()),
        AuditStore::new(db.clone()),
        RetentionConfig {
            audit_days,
            events_days,
            batch_size,
            batch_pause_ms: 0,
            interval_secs: 3_600,
        },
        Arc::new(Ahead(chrono::Duration::from_std(ahead).unwrap())),
        &enroll_shared::metrics::Meters::none(),
    )
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<Option<i64>>(0)
        .unwrap()
        .unwrap_or(0)
}

async fn seqs(db: &DatabaseConnection) -> Vec<i64> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT seq FROM enrollment_events WHERE seq IS NOT NULL ORDER BY seq",
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get_by_index(0).unwrap())
    .collect()
}

/// Enrolls `count` tokens (one audit event and one outbox event each) and stamps them.
async fn changes(admin: &mut DeviceClient, db: &DatabaseConnection, user: &str, count: usize) {
    for _ in 0..count {
        enroll_token(admin, "corp", user, pb::TokenType::Totp).await;
    }
    EventStore::new(db.clone()).stamp().await.unwrap();
}

/// Every audit event ListAuditEvents shows, page by page (`page_size` each), newest first.
async fn all_audit(admin: &mut DeviceClient, page_size: u32) -> Vec<pb::AuditEvent> {
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.events);
        if page.next_page_token.is_empty() {
            return seen;
        }
        token = page.next_page_token;
    }
}

async fn old_audit_events_go_and_recent_ones_stay(backend: Backend) {
    let stack = stack(backend).await;
    let db = connect(&stack).await;
    let mut admin = stack.admin();
    changes(&mut admin, &db, "alice", 3).await;
    let old = scalar(&db, "SELECT COUNT(*) FROM audit_events").await;
    assert!(old >= 3);
    // 401 days later, more changes.
    stack.clock().advance(401 * DAY);
    changes(&mut admin, &db, "bob", 2).await;
    let total = scalar(&db, "SELECT COUNT(*) FROM audit_events").await;

    // Two replicas at once, on that clock: each old row deleted once, the recent ones kept.
    let (one, two) = (
        purger(&db, 400, 0, 401 * DAY),
        purger(&connect(&stack).await, 400, 0, 401 * DAY),
    );
    let (one, two) = tokio::join!(one.run_once(), two.run_once());
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(
        one.audit_events + two.audit_events,
        u64::try_from(old).unwrap()
    );
    assert_eq!(one.enrollment_events + two.enrollment_events, 0);
    let purges = i64::from(one.batches > 0) + i64::from(two.batches > 0);
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM audit_events").await,
        total - old + purges
    );

    // What remains pages as before: newest first, every page joined, nothing twice.
    let listed = all_audit(&mut admin, 2).await;
    assert_eq!(listed.len() as i64, total - old + purges);
    assert!(listed.windows(2).all(|pair| pair[0].id > pair[1].id));
    assert_eq!(listed[0].action, "retention_purge");
    assert!(
        listed[0].reason.contains("audit events"),
        "{}",
        listed[0].reason
    );
    assert!(listed.iter().all(|event| event.user != "alice"));
    assert_eq!(
        listed
            .iter()
            .filter(|event| event.action == "enroll_token")
            .count(),
        2
    );
    // Nothing more to do: no batch, no new audit event (the purge's own is recent).
    let again = purger(&db, 400, 0, 401 * DAY).run_once().await.unwrap();
    assert_eq!(again, Purged::default());
    assert_eq!(all_audit(&mut admin, 50).await.len(), listed.len());
}

const PAUSED: &str = "00000000-0000-4000-8000-00000000000a";
const ENABLED: &str = "00000000-0000-4000-8000-00000000000b";
const DISABLED: &str = "00000000-0000-4000-8000-00000000000c";

/// A stream row as a receiver's state leaves it (`status`, `cursor`), named its status.
async fn stream(db: &DatabaseConnection, id: &str, status: &str, cursor: i64) {
    let now = Utc::now();
    event_streams::Entity::insert(event_streams::ActiveModel {
        id: Set(id.into()),
        name: Set(status.into()),
        encoding: Set("caep_poll".into()),
        endpoint: Set(String::new()),
        audience: Set("aud".into()),
        subject_format: Set("iss_sub".into()),
        event_types: Set(String::new()),
        realms: Set(String::new()),
        status: Set(status.into()),
        secret_key_id: Set(String::new()),
        sealed_secrets: Set(Vec::new()),
        cursor: Set(cursor),
        lease_owner: Set(None),
        lease_until: Set(None),
        attempts: Set(0),
        next_attempt_at: Set(None),
        first_failure_at: Set(None),
        last_error: Set(String::new()),
        created_by: Set("test".into()),
        create_time: Set(now),
        update_time: Set(now),
    })
    .exec_without_returning(db)
    .await
    .unwrap();
}

async fn set_cursor(db: &DatabaseConnection, id: &str, cursor: i64) {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "UPDATE event_streams SET cursor = $1 WHERE id = $2",
        _ => "UPDATE event_streams SET cursor = ? WHERE id = ?",
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [cursor.into(), id.into()],
    ))
    .await
    .unwrap();
}

async fn event_id_of(db: &DatabaseConnection, seq: i64) -> String {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT event_id FROM enrollment_events WHERE seq = {seq}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index(0).unwrap()
}

async fn outbox_events_go_only_once_every_stream_has_them(backend: Backend) {
    let stack = stack(backend).await;
    let db = connect(&stack).await;
    let mut admin = stack.admin();
    changes(&mut admin, &db, "alice", 6).await;
    let first = seqs(&db).await;
    assert_eq!(first, [1, 2, 3, 4, 5, 6]);
    // A paused stream has received up to 2, an enabled one everything; a disabled stream
    // (its cursor wherever it was) keeps nothing.
    stream(&db, PAUSED, "paused", 2).await;
    stream(&db, ENABLED, "enabled", 6).await;
    stream(&db, DISABLED, "disabled", 0).await;
    // Not old enough yet: nothing goes.
    let young = purger(&db, 0, 30, 29 * DAY).run_once().await.unwrap();
    assert_eq!(young, Purged::default());
    let month = 31 * DAY;
    let purged = purger(&db, 0, 30, month).run_once().await.unwrap();
    assert_eq!(purged.enrollment_events, 2);
    assert_eq!(seqs(&db).await, [3, 4, 5, 6]);
    assert_eq!(
        RetentionStore::new(db.clone())
            .purged_through()
            .await
            .unwrap(),
        2
    );
    // The enabled stream's dead letter keeps its event (4).
    event_dead_letters::Entity::insert(event_dead_letters::ActiveModel {
        stream_id: Set(ENABLED.into()),
        seq: Set(4),
        event_id: Set(event_id_of(&db, 4).await),
        subject_key: Set("corp/alice".into()),
        reason: Set("receiver error".into()),
        attempts: Set(3),
        dead_at: Set(Utc::now()),
        redrive: Set(false),
        ..Default::default()
    })
    .exec_without_returning(&db)
    .await
    .unwrap();
    // The paused stream received everything (resumed, delivered): all but the dead letter's
    // and the newest (the stamper numbers on from it) go.
    set_cursor(&db, PAUSED, 6).await;
    let purged = purger(&db, 0, 30, month).run_once().await.unwrap();
    assert_eq!(purged.enrollment_events, 2);
    assert_eq!(seqs(&db).await, [4, 6]);
    // Its dead letter still shows its event, and could be redelivered.
    let letters = admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            stream_id: ENABLED.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<i64> = letters
        .dead_letters
        .iter()
        .map(|letter| letter.event.as_ref().unwrap().seq)
        .collect();
    assert_eq!(shown, [4]);
    // Its dead letter settled: the event goes at the next run.
    event_dead_letters::Entity::delete_many()
        .exec(&db)
        .await
        .unwrap();
    let purged = purger(&db, 0, 30, month).run_once().await.unwrap();
    assert_eq!(purged.enrollment_events, 1);
    assert_eq!(seqs(&db).await, [6]);
    // Numbering goes on densely, and backlogs stay right.
    changes(&mut admin, &db, "bob", 2).await;
    assert_eq!(seqs(&db).await, [6, 7, 8]);
    let (backlog, _) = enroll_device::store::events::EventStore::new(db.clone())
        .pending_after(6)
        .await
        .unwrap();
    assert_eq!(backlog, 2);
    // A stream created "from the beginning" starts at the first event kept.
    let created = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "late".into(),
            encoding: pb::EventEncoding::CaepPoll as i32,
            audience: "https://receiver.example.com".into(),
            from_beginning: true,
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .stream
        .unwrap();
    assert_eq!(created.cursor, 5, "{created:?}");
}

/// The events after `after` as a watcher reads them: events until `count`, or the error
/// that ended the stream.
async fn watch(
    client: &mut DeviceClient,
    after: i64,
    count: usize,
) -> Result<Vec<pb::EnrollmentEvent>, tonic::Status> {
    let mut stream = client
        .watch_enrollment_events(pb::WatchEnrollmentEventsRequest {
            after_seq: after,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < count {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(event)) => seen.push(event?),
            _ => break,
        }
    }
    Ok(seen)
}

async fn watchers_resume_from_what_is_kept_or_are_told(backend: Backend) {
    let stack = stack(backend).await;
    let db = connect(&stack).await;
    let (mut admin, mut ops) = (stack.admin(), stack.ops());
    changes(&mut admin, &db, "alice", 5).await;
    let purged = purger(&db, 0, 30, 31 * DAY).run_once().await.unwrap();
    assert_eq!(purged.enrollment_events, 4);
    changes(&mut admin, &db, "bob", 2).await;
    let seq = |events: &[pb::EnrollmentEvent]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    // 0: from the first kept; at the mark or past it: as always.
    assert_eq!(seq(&watch(&mut ops, 0, 3).await.unwrap()), [5, 6, 7]);
    assert_eq!(seq(&watch(&mut ops, 4, 3).await.unwrap()), [5, 6, 7]);
    assert_eq!(seq(&watch(&mut ops, 6, 1).await.unwrap()), [7]);
    // Below it: told, never skipped.
    for after in [1, 3] {
        let status = watch(&mut ops, after, 1).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert!(status.message().contains("after_seq"), "{status:?}");
        assert!(status.message().contains("seq 5"), "{status:?}");
    }
}

/// `count` audit events from `time` (ids after every existing one), in one statement.
async fn seed_audit(db: &DatabaseConnection, count: u32, time: DateTime<Utc>) {
    let backend = db.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO audit_events (time, actor, action, realm, user_name, subject, result, \
             reason, trace_id) SELECT {placeholder}, 'seed', 'enroll_token', 'corp', 'seeded', \
             'S-' || i, 'ok', '', '' FROM n"
        ),
        [time.into()],
    ))
    .await
    .unwrap();
}

/// `count` stamped outbox events from `time`, numbered from 1 (an empty outbox).
async fn seed_events(db: &DatabaseConnection, count: u32, time: DateTime<Utc>) {
    let backend = db.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO enrollment_events (seq, event_id, event_type, realm, user_name, \
             subject, occurred_at, payload) SELECT i, 'seed-' || i, 'token.enrolled', 'corp', \
             'seeded', 'S-' || i, {placeholder}, '{{\"actor\":\"seed\",\"initiating_entity\":\
             \"Admin\",\"reason\":\"\",\"credential\":{{\"kind\":null}},\"trace_id\":\"\"}}' \
             FROM n"
        ),
        [time.into()],
    ))
    .await
    .unwrap();
}

async fn a_reader_the_purge_overtakes_is_told(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| {
            config.retention.audit_days = 0;
            config.retention.events_days = 0;
            // The feed holds one event for the reader: it reads its next batch (100) only
            // once the reader took this one's.
            config.events.watch_buffer = 1;
        })
        .start()
        .await;
    let db = connect(&stack).await;
    // Far more than HTTP/2's windows let the server send ahead of a reader that does not
    // read (about 10 MB).
    seed_events(&db, 50_000, Utc::now() - chrono::Duration::days(60)).await;
    let mut ops = stack.ops();
    let mut stream = ops
        .watch_enrollment_events(pb::WatchEnrollmentEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.seq, 1);
    // Everything but the newest goes while the reader is at 1.
    let purged = purger_by(&db, 0, 30, Duration::ZERO, 5_000)
        .run_once()
        .await
        .unwrap();
    assert_eq!(purged.enrollment_events, 49_999);
    let mut last = first.seq;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(event))) => {
                assert_eq!(event.seq, last + 1, "a gap skipped");
                last = event.seq;
            }
            Ok(Some(Err(status))) => break status,
            other => panic!("the stream ended without saying why after {last}: {other:?}"),
        }
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains(&format!("after seq {last}")),
        "{status:?}"
    );
    assert!(last < 49_999, "{last}");
}

async fn a_large_purge_goes_in_batches_while_requests_go_on(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| {
            config.retention.audit_days = 400;
            config.retention.events_days = 30;
            config.retention.batch_size = 1_000;
            config.retention.batch_pause_ms = 20;
            config.retention.interval_secs = 1;
        })
        .start()
        .await;
    let db = connect(&stack).await;
    seed_events(&db, 5_000, Utc::now() - chrono::Duration::days(60)).await;
    seed_audit(&db, 20_000, Utc::now() - chrono::Duration::days(500)).await;
    let seeded = "SELECT COUNT(*) FROM audit_events WHERE actor = 'seed'";
    assert_eq!(scalar(&db, seeded).await, 20_000);

    // Requests the whole time: none fails.
    let mut admin = stack.admin();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut requests = 0;
    loop {
        let user = format!("user{requests}");
        enroll_token(&mut admin, "corp", &user, pb::TokenType::Totp).await;
        admin
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 20,
                ..Default::default()
            })
            .await
            .unwrap();
        requests += 1;
        if scalar(&db, seeded).await == 0
            && scalar(
                &db,
                "SELECT COUNT(*) FROM enrollment_events WHERE user_name = 'seeded'",
            )
            .await
                == 0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge did not finish: {} seeded audit events left",
            scalar(&db, seeded).await
        );
    }
    assert!(requests > 1, "the purge ran alongside requests");
    // Counted once each batch returns (a moment after its commit): at least one a batch
    // of 1,000 each.
    let metrics = stack.device_metrics_addr();
    for (name, table, least) in [
        (
            "enroll_device_retention_deleted_total",
            "audit_events",
            20_000.0,
        ),
        (
            "enroll_device_retention_batches_total",
            "audit_events",
            20.0,
        ),
        (
            "enroll_device_retention_deleted_total",
            "enrollment_events",
            5_000.0,
        ),
        (
            "enroll_device_retention_batches_total",
            "enrollment_events",
            5.0,
        ),
    ] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = metric_value(metrics, name, Some(&format!("table=\"{table}\"")))
                .await
                .unwrap_or(0.0);
            if value >= least {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}{{table=\"{table}\"}} = {value}, expected at least {least}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Recent rows untouched: every request's audit event is there.
    let recent = scalar(
        &db,
        "SELECT COUNT(*) FROM audit_events WHERE action = 'enroll_token' AND actor <> 'seed'",
    )
    .await;
    assert_eq!(recent, requests);
    // The run's audit event, once its last batch found nothing more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let purges = "SELECT COUNT(*) FROM audit_events WHERE action = 'retention_purge'";
    while scalar(&db, purges).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retention_purge audit event"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

enroll_e2e::on_both_backends!(
    old_audit_events_go_and_recent_ones_stay,
    outbox_events_go_only_once_every_stream_has_them,
    watchers_resume_from_what_is_kept_or_are_told,
    a_reader_the_purge_overtakes_is_told,
    a_large_purge_goes_in_batches_while_requests_go_on,
);
