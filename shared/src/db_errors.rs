//! What a database error means for the caller, decided once for both services and both
//! backends: by SQLSTATE on PostgreSQL, by extended result code on SQLite.
//!
//! Only failures that a later retry can cure are UNAVAILABLE (clients retry those without
//! end): a lost connection, an exhausted pool, a server shutting down or out of resources.
//! A value the database refuses to store is the request's fault and retrying it can never
//! succeed, so it must not look retryable.
use std::ops::Deref;

use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};
use tonic::{Code, Status};

use crate::status::with_reason;

/// The caller-facing meaning of a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// The database cannot be reached or cannot take the work now (connection, pool,
    /// resources, shutdown, lock wait): retry later. gRPC UNAVAILABLE.
    Unavailable,
    /// The transaction lost a race (serialization failure, deadlock): retry the whole
    /// request. gRPC ABORTED.
    Aborted,
    /// A request value the database cannot store (a NUL byte in text, a value too long or
    /// out of range): never retry. gRPC INVALID_ARGUMENT.
    InvalidData,
    /// A unique key is taken. gRPC ALREADY_EXISTS.
    Duplicate,
    /// Another integrity rule refused the write (foreign key, not null, check).
    /// gRPC FAILED_PRECONDITION.
    Integrity,
    /// A stored value does not read back into its type. gRPC INTERNAL.
    Unreadable,
    /// Anything else (an SQL error, a schema that does not match): a defect. gRPC INTERNAL.
    Internal,
}

impl DbFailure {
    /// What the caller is told: never the database's own message (it may quote the value,
    /// and the value may be a secret).
    pub fn message(self) -> &'static str {
        match self {
            DbFailure::Unavailable => "database unavailable",
            DbFailure::Aborted => "the change conflicted with a concurrent one; retry",
            DbFailure::InvalidData => {
                "a value in the request cannot be stored (a NUL character, or too long)"
            }
            DbFailure::Duplicate => "a record with this key already exists; retry",
            DbFailure::Integrity => "the change conflicts with stored data",
            DbFailure::Unreadable => "stored data is unreadable",
            DbFailure::Internal => "internal database error",
        }
    }
}

/// The one status of a database error, for both services: classified, logged with the
/// driver's code (at error level when it is a defect or an outage), never echoing the
/// database's message to the caller.
pub fn to_status(error: &DbErr) -> Status {
    let failure = classify(error);
    let code = error_code(error).unwrap_or_default();
    let message = failure.message();
    match failure {
        DbFailure::Unavailable => {
            tracing::error!(error = %error, code = %code, "database unavailable");
            Status::unavailable(message)
        }
        DbFailure::Aborted => {
            tracing::warn!(error = %error, code = %code, "transaction conflict");
            Status::aborted(message)
        }
        DbFailure::InvalidData => {
            // The database's message may quote the value: logged at debug only.
            tracing::warn!(code = %code, "a request value the database cannot store");
            tracing::debug!(error = %error, "database refused a value");
            with_reason(Code::InvalidArgument, message, "UNSTORABLE_VALUE", [])
        }
        DbFailure::Duplicate => Status::already_exists(message),
        DbFailure::Integrity => {
            tracing::warn!(code = %code, "integrity rule refused a write");
            Status::failed_precondition(message)
        }
        DbFailure::Unreadable => {
            tracing::error!(error = %error, "unreadable stored data");
            Status::internal(message)
        }
        DbFailure::Internal => {
            tracing::error!(error = %error, code = %code, "database error");
            Status::internal(message)
        }
    }
}

/// Classifies `error`; see [`DbFailure`].
pub fn classify(error: &DbErr) -> DbFailure {
    match error {
        DbErr::ConnectionAcquire(_) => DbFailure::Unavailable,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => match runtime {
            RuntimeErr::SqlxError(sqlx_error) => classify_sqlx(sqlx_error),
            // sea-orm's own message about a connection (e.g. it could not open one).
            RuntimeErr::Internal(_) if matches!(error, DbErr::Conn(_)) => DbFailure::Unavailable,
            _ => DbFailure::Internal,
        },
        DbErr::Type(_) | DbErr::TryIntoErr { .. } | DbErr::Json(_) => DbFailure::Unreadable,
        _ => DbFailure::Internal,
    }
}

/// The driver's error code (SQLSTATE, or SQLite's extended result code), for logs.
pub fn error_code(error: &DbErr) -> Option<String> {
    database_error(error).and_then(|database| database.code().map(|code| code.into_owned()))
}

fn database_error(error: &DbErr) -> Option<&dyn sqlx::error::DatabaseError> {
    match error {
        DbErr::Conn(RuntimeErr::SqlxError(sqlx_error))
        | DbErr::Exec(RuntimeErr::SqlxError(sqlx_error))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx_error)) => match sqlx_error.deref() {
            sqlx::Error::Database(database) => Some(database.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

fn classify_sqlx(error: &sqlx::Error) -> DbFailure {
    match error {
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            if database
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                code.parse().map_or(DbFailure::Internal, classify_sqlite)
            } else {
                classify_sqlstate(&code)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DbFailure::Unavailable,
        // A value the driver cannot send (e.g. out of the column type's range).
        sqlx::Error::Encode(_) => DbFailure::InvalidData,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => DbFailure::Unreadable,
        _ => DbFailure::Internal,
    }
}

/// PostgreSQL: by SQLSTATE class (the first two characters), with the exceptions that
/// matter (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
pub fn classify_sqlstate(sqlstate: &str) -> DbFailure {
    match sqlstate {
        // serialization_failure, deadlock_detected: the transaction may succeed if rerun.
        "40001" | "40P01" => return DbFailure::Aborted,
        // lock_not_available (NOWAIT / lock_timeout): someone else holds the row now.
        "55P03" => return DbFailure::Unavailable,
        "23505" => return DbFailure::Duplicate,
        _ => {}
    }
    match sqlstate.get(..2).unwrap_or_default() {
        // connection_exception, insufficient_resources, operator_intervention (query
        // canceled, admin shutdown, cannot connect now), system_error (I/O), and
        // transaction rollback for other reasons.
        "08" | "53" | "57" | "58" | "40" => DbFailure::Unavailable,
        // data_exception (22001 string too long, 22021 invalid byte sequence: a NUL in
        // text, 22003 numeric out of range, ...) and program_limit_exceeded (a value too
        // large to index): the request's values cannot be stored.
        "22" | "54" => DbFailure::InvalidData,
        "23" => DbFailure::Integrity,
        _ => DbFailure::Internal,
    }
}

/// SQLite: by extended result code (<https://www.sqlite.org/rescode.html>).
pub fn classify_sqlite(code: i32) -> DbFailure {
    match code {
        // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
        1555 | 2067 => return DbFailure::Duplicate,
        // SQLITE_BUSY_SNAPSHOT: a read snapshot went stale before the write; rerun.
        517 => return DbFailure::Aborted,
        _ => {}
    }
    // The primary result code is the low byte.
    match code & 0xff {
        // BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL
        5 | 6 | 7 | 8 | 10 | 13 | 14 | 15 => DbFailure::Unavailable,
        // TOOBIG, MISMATCH, RANGE
        18 | 20 | 25 => DbFailure::InvalidData,
        // CONSTRAINT (foreign key, not null, check, ...)
        19 => DbFailure::Integrity,
        _ => DbFailure::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnAcquireErr, ConnectionTrait, Database};
    use std::sync::Arc;

    #[test]
    fn postgres_classes() {
        for (sqlstate, failure) in [
            ("08006", DbFailure::Unavailable),
            ("08001", DbFailure::Unavailable),
            ("53300", DbFailure::Unavailable),
            ("57P01", DbFailure::Unavailable),
            ("57014", DbFailure::Unavailable),
            ("55P03", DbFailure::Unavailable),
            ("40001", DbFailure::Aborted),
            ("40P01", DbFailure::Aborted),
            ("22021", DbFailure::InvalidData),
            ("22001", DbFailure::InvalidData),
            ("22P02", DbFailure::InvalidData),
            ("54000", DbFailure::InvalidData),
            ("23505", DbFailure::Duplicate),
            ("23503", DbFailure::Integrity),
            ("23502", DbFailure::Integrity),
            ("42P01", DbFailure::Internal),
            ("42601", DbFailure::Internal),
            ("", DbFailure::Internal),
        ] {
            assert_eq!(classify_sqlstate(sqlstate), failure, "{sqlstate}");
        }
    }

    #[test]
    fn sqlite_codes() {
        for (code, failure) in [
            (5, DbFailure::Unavailable),
            (261, DbFailure::Unavailable),
            (517, DbFailure::Aborted),
            (6, DbFailure::Unavailable),
            (13, DbFailure::Unavailable),
            (266, DbFailure::Unavailable),
            (18, DbFailure::InvalidData),
            (2067, DbFailure::Duplicate),
            (1555, DbFailure::Duplicate),
            (787, DbFailure::Integrity),
            (1299, DbFailure::Integrity),
            (1, DbFailure::Internal),
            (11, DbFailure::Internal),
        ] {
            assert_eq!(classify_sqlite(code), failure, "{code}");
        }
    }

    #[test]
    fn errors_without_a_database_code() {
        let sqlx_error = |error| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error)));
        for (error, failure) in [
            (
                DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
                DbFailure::Unavailable,
            ),
            (
                DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
                DbFailure::Unavailable,
            ),
            (
                sqlx_error(sqlx::Error::PoolTimedOut),
                DbFailure::Unavailable,
            ),
            (
                sqlx_error(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())),
                DbFailure::Unavailable,
            ),
            (
                DbErr::Conn(RuntimeErr::Internal("refused".into())),
                DbFailure::Unavailable,
            ),
            (DbErr::Type("x".into()), DbFailure::Unreadable),
            (DbErr::Json("x".into()), DbFailure::Unreadable),
            (DbErr::Custom("x".into()), DbFailure::Internal),
            (DbErr::RecordNotFound("x".into()), DbFailure::Internal),
        ] {
            assert_eq!(classify(&error), failure, "{error}");
        }
    }

    /// Real SQLite errors carry the codes the table above expects.
    #[tokio::test]
    async fn sqlite_errors_are_classified_by_their_codes() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
            .await
            .unwrap();
        db.execute_unprepared("INSERT INTO t (id, name) VALUES (1, 'a')")
            .await
            .unwrap();
        let duplicate = db
            .execute_unprepared("INSERT INTO t (id, name) VALUES (2, 'a')")
            .await
            .unwrap_err();
        assert_eq!(classify(&duplicate), DbFailure::Duplicate);
        assert_eq!(error_code(&duplicate).as_deref(), Some("2067"));
        let null = db
            .execute_unprepared("INSERT INTO t (id, name) VALUES (3, NULL)")
            .await
            .unwrap_err();
        assert_eq!(classify(&null), DbFailure::Integrity);
        let missing = db
            .execute_unprepared("SELECT * FROM missing")
            .await
            .unwrap_err();
        assert_eq!(classify(&missing), DbFailure::Internal);
    }

    #[test]
    fn statuses_never_echo_the_database_message() {
        let cases = [
            (
                DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
                Code::Unavailable,
            ),
            (DbErr::Type("secret detail".into()), Code::Internal),
            (DbErr::Custom("secret detail".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let status = to_status(&error);
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("secret detail"));
        }
    }
}
