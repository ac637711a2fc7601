//! SQL shared by every writer: placeholders per backend, the realm and user lock rows that
//! serialise counting and inserting (across replicas too), and what counts toward a limit.
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait, Value,
};

use crate::domain::decision::Limits;
use crate::domain::names::{Realm, UserName};
use crate::domain::verify::holds_slot_sql;
use crate::error::DeviceError;

/// Writes `$n` placeholders as the backend wants them.
pub(super) fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(ch) = chars.next() {
                if ch == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(ch);
                }
            }
            out
        }
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Keeps the newest of a versioned row that every replica may write (the FIDO metadata
/// BLOB, the policy set): inserts `values` for `columns` (the first is the version column,
/// `version` its value) unless a row as new or newer is stored, then drops the older ones.
/// False when another writer's row stands (a concurrent insert of the same version
/// included). `table` and `columns` are this crate's constants, never input.
pub(super) async fn keep_if_newest(
    db: &DatabaseConnection,
    table: &'static str,
    columns: &[&'static str],
    values: Vec<Value>,
    version: i64,
) -> Result<bool, DeviceError> {
    let key = columns.first().copied().unwrap_or("version");
    let placeholders: Vec<String> = (1..=columns.len()).map(|n| format!("${n}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({}) SELECT {} WHERE NOT EXISTS \
         (SELECT 1 FROM {table} WHERE {key} >= ${})",
        columns.join(", "),
        placeholders.join(", "),
        columns.len() + 1
    );
    let mut values = values;
    values.push(version.into());
    let transaction = db.begin().await?;
    let backend = transaction.get_database_backend();
    let inserted = match transaction
        .execute_raw(statement(backend, &insert, values))
        .await
    {
        Ok(result) => result.rows_affected() == 1,
        Err(error)
            if matches!(
                enroll_shared::db_errors::classify(&error),
                enroll_shared::db_errors::DbFailure::Duplicate
            ) =>
        {
            return Ok(false);
        }
        Err(error) => return Err(error.into()),
    };
    if inserted {
        transaction
            .execute_raw(statement(
                backend,
                &format!("DELETE FROM {table} WHERE {key} < $1"),
                vec![version.into()],
            ))
            .await?;
    }
    transaction.commit().await?;
    Ok(inserted)
}

/// Takes the realm's lock row: an upsert that always writes, so PostgreSQL holds the row
/// lock and SQLite the write lock until the transaction ends.
pub(super) async fn lock_realm(
    transaction: &DatabaseTransaction,
    realm: &Realm,
) -> Result<(), DeviceError> {
    let backend = transaction.get_database_backend();
    transaction
        .execute_raw(statement(
            backend,
            "INSERT INTO realms (name, lock_version) VALUES ($1, 0) \
             ON CONFLICT (name) DO UPDATE SET lock_version = realms.lock_version + 1",
            vec![realm.as_str().into()],
        ))
        .await?;
    Ok(())
}

/// Creates the user on first use and locks its row; returns its id.
pub(super) async fn lock_user(
    transaction: &DatabaseTransaction,
    realm: &Realm,
    user: &UserName,
    now: DateTime<Utc>,
) -> Result<i64, DeviceError> {
    let backend = transaction.get_database_backend();
    let row = transaction
        .query_one_raw(statement(
            backend,
            "INSERT INTO users (realm, name, create_time, lock_version) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (realm, name) DO UPDATE SET lock_version = users.lock_version + 1 RETURNING id",
            vec![realm.as_str().into(), user.as_str().into(), now.into()],
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::RecordNotFound("user lock row".into()))?;
    Ok(row.try_get_by_index(0)?)
}

/// What counts toward a limit, defined once for the enforcing transaction and for
/// CheckEnrollment's answer: a user's or realm's tokens in any state (deleted ones are gone)
/// and devices unless revoked; for the active limit, enabled tokens and live devices. A
/// token enrolled with a verify step counts while pending, not once failed or expired
/// (`verify::holds_slot_sql`, at the caller's `now`).
#[derive(Debug, Clone, Copy)]
enum Counted<'a> {
    HeldByUser(i64),
    ActiveOfUser(i64),
    InRealm(&'a Realm),
}

impl Counted<'_> {
    async fn count(
        self,
        db: &impl ConnectionTrait,
        now: DateTime<Utc>,
    ) -> Result<u64, DeviceError> {
        let (tokens, key): (&str, Value) = match self {
            Counted::HeldByUser(user_id) => ("user_id = $1", user_id.into()),
            Counted::ActiveOfUser(user_id) => {
                ("user_id = $1 AND state = 'enabled'", user_id.into())
            }
            Counted::InRealm(realm) => ("realm = $1", realm.as_str().into()),
        };
        let devices = match self {
            Counted::InRealm(_) => "realm = $3",
            _ => "user_id = $3",
        };
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM tokens WHERE {tokens} AND {}) \
             + (SELECT COUNT(*) FROM devices WHERE {devices} AND state <> 'revoked')",
            holds_slot_sql("$2")
        );
        let backend = db.get_database_backend();
        let row = db
            .query_one_raw(statement(backend, &sql, vec![key.clone(), now.into(), key]))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("count".into()))?;
        let count: i64 = row.try_get_by_index(0)?;
        Ok(count.max(0) as u64)
    }
}

/// What counts toward the realm limit now (tokens and live devices of `realm`).
pub(super) async fn counted_in_realm(
    db: &impl ConnectionTrait,
    realm: &Realm,
    now: DateTime<Utc>,
) -> Result<u64, DeviceError> {
    Counted::InRealm(realm).count(db, now).await
}

/// Every limit one more token or device would break. Without `user_id` (a pool token) only
/// the realm limit applies.
pub(super) async fn limits_reached(
    db: &impl ConnectionTrait,
    realm: &Realm,
    user_id: Option<i64>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Vec<DeviceError>, DeviceError> {
    let checks = [
        (
            "max_token_per_user",
            &limits.per_user,
            user_id.map(Counted::HeldByUser),
        ),
        (
            "max_active_token_per_user",
            &limits.active_per_user,
            user_id.map(Counted::ActiveOfUser),
        ),
        (
            "max_token_per_realm",
            &limits.per_realm,
            Some(Counted::InRealm(realm)),
        ),
    ];
    let mut reached = Vec::new();
    for (limit, set, counted) in checks {
        let (Some((value, policy)), Some(counted)) = (set, counted) else {
            continue;
        };
        if counted.count(db, now).await? >= u64::from(*value) {
            reached.push(DeviceError::LimitReached {
                limit,
                value: *value,
                policy: policy.clone(),
            });
        }
    }
    Ok(reached)
}

/// The first limit one more token or device would break, if any.
pub(super) async fn exceeded(
    db: &impl ConnectionTrait,
    realm: &Realm,
    user_id: Option<i64>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Option<DeviceError>, DeviceError> {
    Ok(limits_reached(db, realm, user_id, limits, now)
        .await?
        .into_iter()
        .next())
}
