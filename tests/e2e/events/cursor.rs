//! Cursors never skip: on PostgreSQL, ids come from a sequence when a transaction inserts,
//! so a transaction holding a smaller id can commit after one holding a larger id. The
//! stamper orders events by when it sees them committed: a reader that resumed "after" the
//! late-committed transaction's neighbour still gets it. (SQLite has one writer at a time:
//! a second transaction cannot insert until the first ends, so ids commit in order.)
use enroll_device::store::events::EventStore;
use enroll_e2e::{Backend, TestStack};
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

fn insert(id: &str) -> Statement {
    Statement::from_string(
        sea_orm::DbBackend::Postgres,
        format!(
            "INSERT INTO enrollment_events (event_id, event_type, realm, user_name, subject, \
             occurred_at, payload) VALUES ('{id}', 'token.enrolled', 'corp', 'alice', 'S-{id}', \
             now(), '{{\"actor\":\"test\",\"initiating_entity\":\"Admin\",\"reason\":\"\",\
             \"credential\":{{\"kind\":null}},\"trace_id\":\"\"}}')"
        ),
    )
}

/// The stamped events after `cursor` once `count` are there (the servers' own stampers
/// run too: whichever stamps first, the order is the same).
async fn stamped_after(
    store: &EventStore,
    cursor: i64,
    count: usize,
) -> Vec<enroll_device::domain::events::EnrollmentEvent> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        store.stamp().await.unwrap();
        let events = store.after(cursor, 10).await.unwrap();
        if events.len() >= count || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_event_committed_late_is_delivered_after_the_cursor() {
    let stack = TestStack::start(Backend::Postgres).await;
    let db = sea_orm::Database::connect(&stack.database.url)
        .await
        .unwrap();
    let store = EventStore::new(db.clone());
    let late = db.begin().await.unwrap();
    late.execute_raw(insert("late")).await.unwrap(); // the smaller id
    let early = db.begin().await.unwrap();
    early.execute_raw(insert("early")).await.unwrap(); // the larger id
    early.commit().await.unwrap();
    let first = stamped_after(&store, 0, 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, "early");
    let cursor = first[0].seq;
    late.commit().await.unwrap();
    let next = stamped_after(&store, cursor, 1).await;
    assert_eq!(
        next.len(),
        1,
        "the late commit is after the cursor: {next:?}"
    );
    assert_eq!(next[0].id, "late");
    // Ordered by id it would have been before the cursor, and skipped.
    let ids: Vec<i64> = db
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT id FROM enrollment_events ORDER BY seq".to_owned(),
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index(0).unwrap())
        .collect();
    assert!(
        ids[0] > ids[1],
        "the late transaction held the smaller id: {ids:?}"
    );
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_no_event() {
    let stack = TestStack::start(Backend::Postgres).await;
    let db = sea_orm::Database::connect(&stack.database.url)
        .await
        .unwrap();
    let store = EventStore::new(db.clone());
    let gone = db.begin().await.unwrap();
    gone.execute_raw(insert("gone")).await.unwrap();
    gone.rollback().await.unwrap();
    store.stamp().await.unwrap();
    assert!(store.after(0, 10).await.unwrap().is_empty());
    assert_eq!(
        stack
            .database
            .count("SELECT COUNT(*) FROM enrollment_events")
            .await,
        0
    );
}
