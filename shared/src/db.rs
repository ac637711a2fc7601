//! Database connections: PostgreSQL by `postgres://` URL, otherwise an embedded SQLite file.
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

use crate::config::DatabaseConfig;

/// Connects with the pool settings of `config`.
///
/// SQLite runs in WAL mode (readers never block the writer) with a busy timeout, so
/// concurrent writers wait for the write lock instead of failing with "database is locked".
/// Writers that must read before they write start their transaction with a write (see the
/// services' stores) so SQLite takes the write lock first and the busy timeout applies.
pub async fn connect(config: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let url = normalize_sqlite_url(&config.url);
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(config.max_connections.max(1))
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        // Pinging on every checkout doubles the round trips of every query; a connection
        // idle this long may have been dropped by the server or a proxy, so only it is pinged.
        .test_before_acquire_if_idle_for(Duration::from_secs(10))
        .sqlx_logging(false);
    let busy_timeout = Duration::from_millis(config.sqlite_busy_timeout_ms);
    options.map_sqlx_sqlite_opts(move |sqlite| {
        sqlite
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            .foreign_keys(true)
    });
    Database::connect(options).await
}

/// Whether the URL names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The backend of a connection, for the few queries that differ.
pub fn backend(db: &DatabaseConnection) -> DbBackend {
    db.get_database_backend()
}

// `sqlite:path` and bare paths are accepted for convenience; sqlx wants `sqlite://`.
fn normalize_sqlite_url(url: &str) -> String {
    if is_postgres_url(url) || url.starts_with("sqlite://") {
        url.to_owned()
    } else if let Some(path) = url.strip_prefix("sqlite:") {
        format!("sqlite://{path}")
    } else {
        format!("sqlite://{url}")
    }
}

/// Runs the pending migrations of `M` in one transaction that first takes a lock, so
/// replicas starting together migrate once and never half-way: a PostgreSQL advisory lock,
/// or on SQLite a write to a lock row (which takes the database's write lock).
pub async fn migrate<M: sea_orm_migration::MigratorTrait>(
    db: &DatabaseConnection,
    lock_key: i64,
) -> Result<(), DbErr> {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    let backend = db.get_database_backend();
    if backend != DbBackend::Postgres {
        // Outside the transaction: the transaction's first statement must be the write that
        // takes the lock, or SQLite cannot wait for it (a stale read snapshot fails at once).
        db.execute_unprepared(
            "CREATE TABLE IF NOT EXISTS enroll_migration_lock (id INTEGER PRIMARY KEY, runs INTEGER NOT NULL)",
        )
        .await?;
    }
    let transaction = db.begin().await?;
    match backend {
        DbBackend::Postgres => {
            transaction
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT pg_advisory_xact_lock($1)",
                    [lock_key.into()],
                ))
                .await?;
        }
        _ => {
            transaction
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    "INSERT INTO enroll_migration_lock (id, runs) VALUES (?, 1) \
                     ON CONFLICT (id) DO UPDATE SET runs = runs + 1",
                    [lock_key.into()],
                ))
                .await?;
        }
    }
    M::up(&transaction, None).await?;
    transaction.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn sqlite_urls_are_normalized() {
        assert_eq!(normalize_sqlite_url("data/x.db"), "sqlite://data/x.db");
        assert_eq!(normalize_sqlite_url("sqlite:x.db"), "sqlite://x.db");
        assert_eq!(normalize_sqlite_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(normalize_sqlite_url("postgres://h/db"), "postgres://h/db");
    }
}
