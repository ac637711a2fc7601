//! Database connections: PostgreSQL by `postgres://` URL, otherwise an embedded SQLite file.
//!
//! Start-up first waits for the database ([`wait_until_reachable`]): one connection is
//! opened directly (not through the pool, whose own retries hide the cause behind "pool
//! timed out"), each failure is logged with the redacted URL and its cause, and attempts
//! repeat with exponential back-off for `database.startup_retry_secs`.
use std::str::FromStr;
use std::time::{Duration, Instant};

use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _, postgres::PgConnectOptions};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, SqlxSqliteConnector,
};

use crate::config::{DatabaseConfig, redact_url};
use crate::db_startup::{Cause, Diagnosis, diagnose};

/// How long the start-up probe's one connection may take (TCP, TLS, authentication): a
/// host that drops packets is reported after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a query waits for a pooled connection before it is UNAVAILABLE: under the
/// default request deadline (10 s), so the caller learns the database is the problem.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause between start-up attempts; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The longest pause: a database that comes up is noticed within this.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// The database could not be used at start-up: the redacted URL, the cause in plain words,
/// and how long it was tried.
#[derive(Debug, thiserror::Error)]
#[error("database {url}: {diagnosis}; {outcome}")]
pub struct DatabaseStartError {
    /// The URL without its password.
    pub url: String,
    pub diagnosis: Diagnosis,
    /// How it ended, e.g. "gave up after 7 attempts in 30 s (database.startup_retry_secs = 30)".
    pub outcome: String,
}

impl DatabaseStartError {
    pub fn cause(&self) -> Cause {
        self.diagnosis.cause
    }
}

/// Builds the pool of `config` without connecting (a malformed URL is the only error):
/// connections open on first use, so a service can bind and answer health while it waits
/// for its database with [`wait_until_reachable`].
///
/// SQLite runs in WAL mode (readers never block the writer) with a busy timeout, so
/// concurrent writers wait for the write lock instead of failing with "database is locked".
/// Writers that must read before they write start their transaction with a write (see the
/// services' stores) so SQLite takes the write lock first and the busy timeout applies.
pub async fn open(config: &DatabaseConfig) -> Result<DatabaseConnection, DatabaseStartError> {
    let invalid = |diagnosis| DatabaseStartError {
        url: redact_url(&config.url),
        diagnosis,
        outcome: "not retried".to_owned(),
    };
    if !is_postgres_url(&config.url) {
        // sqlx directly: sea-orm's SQLite connector queries the version while connecting,
        // even when asked to connect lazily.
        let options = sqlite_options(config)
            .map_err(|error| invalid(diagnose(&error, &config.url)))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_millis(config.sqlite_busy_timeout_ms))
            .foreign_keys(true)
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .min_connections(1)
            // Waiting for a pooled connection includes waiting for the ones that wait for
            // the write lock: never shorter than their busy timeout.
            .acquire_timeout(ACQUIRE_TIMEOUT + Duration::from_millis(config.sqlite_busy_timeout_ms))
            // A local file: a pooled connection does not go stale, no ping on checkout.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        return Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool));
    }
    let mut options = ConnectOptions::new(config.url.clone());
    options
        .max_connections(config.max_connections.max(1))
        .min_connections(1)
        .connect_lazy(true)
        // sea-orm's `connect_timeout` is sqlx's acquire timeout too; one setting, this one.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // Pinging on every checkout doubles the round trips of every query; a connection
        // idle this long may have been dropped by the server or a proxy, so only it is pinged.
        .test_before_acquire_if_idle_for(Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(options).await.map_err(|error| {
        invalid(match &error {
            DbErr::Conn(sea_orm::RuntimeErr::SqlxError(sqlx_error)) => {
                diagnose(sqlx_error, &config.url)
            }
            other => Diagnosis::new(Cause::InvalidUrl, other.to_string(), &config.url),
        })
    })
}

/// The SQLite file of `config`, created when missing (its directory is not).
fn sqlite_options(config: &DatabaseConfig) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(&normalize_sqlite_url(&config.url))?.create_if_missing(true))
}

/// Waits until the database accepts a connection, for at most
/// `config.startup_retry_secs`: every failed attempt is logged (WARN) with the redacted
/// URL, its cause, the attempt number and the next delay; a malformed URL fails at once.
pub async fn wait_until_reachable(config: &DatabaseConfig) -> Result<(), DatabaseStartError> {
    let url = redact_url(&config.url);
    let started = Instant::now();
    let deadline = started + config.startup_retry();
    let mut delay = FIRST_RETRY_DELAY;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let diagnosis = match probe(config).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(
                        url = %url,
                        attempt,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "database reachable"
                    );
                }
                return Ok(());
            }
            Err(diagnosis) => diagnosis,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !diagnosis.cause.retryable() || remaining.is_zero() {
            let outcome = if !diagnosis.cause.retryable() {
                "not retried: waiting cannot fix it".to_owned()
            } else {
                format!(
                    "gave up after {attempt} attempt(s) in {} s (database.startup_retry_secs = {})",
                    started.elapsed().as_secs(),
                    config.startup_retry_secs
                )
            };
            return Err(DatabaseStartError {
                url,
                diagnosis,
                outcome,
            });
        }
        let pause = delay.min(remaining);
        tracing::warn!(
            url = %url,
            cause = diagnosis.cause.summary(),
            detail = %diagnosis.detail,
            hint = diagnosis.cause.hint(),
            attempt,
            retry_in_ms = pause.as_millis() as u64,
            gives_up_in_s = remaining.as_secs(),
            "database not reachable yet, retrying"
        );
        tokio::time::sleep(pause).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// [`wait_until_reachable`], then [`open`]: for commands that need the database at once
/// (`migrate`, `seed-demo`, tests).
pub async fn connect(config: &DatabaseConfig) -> Result<DatabaseConnection, DatabaseStartError> {
    wait_until_reachable(config).await?;
    open(config).await
}

/// Opens and closes one connection, bounded by [`CONNECT_TIMEOUT`], and says why it failed.
async fn probe(config: &DatabaseConfig) -> Result<(), Diagnosis> {
    let attempt = async {
        if is_postgres_url(&config.url) {
            let options = PgConnectOptions::from_str(&config.url)?;
            options.connect().await?.close().await
        } else {
            sqlite_options(config)?.connect().await?.close().await
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(diagnose(&error, &config.url)),
        Err(_) => Err(Diagnosis::new(
            Cause::TimedOut,
            format!("no answer within {} ms", CONNECT_TIMEOUT.as_millis()),
            &config.url,
        )),
    }
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

    fn sqlite_config(url: String, retry_secs: u64) -> DatabaseConfig {
        let mut config = DatabaseConfig::new(url);
        config.startup_retry_secs = retry_secs;
        config
    }

    #[tokio::test]
    async fn a_missing_sqlite_directory_fails_at_once_without_retries() {
        let dir = std::env::temp_dir().join(format!("enroll-db-{}", std::process::id()));
        let url = format!("sqlite://{}/missing/enroll.db", dir.display());
        let started = Instant::now();
        let error = connect(&sqlite_config(url, 0)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(error.cause(), Cause::SqliteCannotOpen);
        let message = error.to_string();
        assert!(message.contains("missing does not exist"), "{message}");
        assert!(message.contains("startup_retry_secs = 0"), "{message}");
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_directory_appears() {
        let dir = std::env::temp_dir().join(format!("enroll-db-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}/enroll.db", dir.display());
        let creator = {
            let dir = dir.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(700)).await;
                std::fs::create_dir_all(dir).unwrap();
            })
        };
        let db = connect(&sqlite_config(url, 30)).await.unwrap();
        db.ping().await.unwrap();
        creator.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_malformed_url_is_not_retried() {
        let config = sqlite_config("postgres://u:pw@h:notaport/db".to_owned(), 60);
        let error = wait_until_reachable(&config).await.unwrap_err();
        assert_eq!(error.cause(), Cause::InvalidUrl);
        assert!(!error.to_string().contains("pw"), "{error}");
    }

    #[test]
    fn sqlite_urls_are_normalized() {
        assert_eq!(normalize_sqlite_url("data/x.db"), "sqlite://data/x.db");
        assert_eq!(normalize_sqlite_url("sqlite:x.db"), "sqlite://x.db");
        assert_eq!(normalize_sqlite_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(normalize_sqlite_url("postgres://h/db"), "postgres://h/db");
    }
}
