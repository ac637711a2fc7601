//! Why a database cannot be reached at start-up, in words an operator can act on: the
//! cause (connection refused, host not found, unknown role, ...), the driver's own detail
//! without secrets, and whether waiting can help. [`crate::db`] retries on it.
use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use sea_orm::sqlx;

use crate::config::url_secrets;

/// What went wrong while opening a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The URL cannot be parsed or names an unknown option: only a new config fixes it.
    InvalidUrl,
    /// Nothing listens on the host and port.
    ConnectionRefused,
    /// The host name does not resolve.
    HostNotFound,
    /// No route to the host or network.
    HostUnreachable,
    /// No answer within the connect timeout (a firewall dropping packets, a host down).
    TimedOut,
    /// PostgreSQL knows no role of that name.
    UnknownRole,
    /// PostgreSQL refused the password (or the authentication method failed).
    AuthenticationFailed,
    /// `pg_hba.conf` or a missing CONNECT privilege refuses this user, database or host.
    AccessDenied,
    /// The database named in the URL does not exist.
    MissingDatabase,
    /// The TLS handshake failed (server without TLS, certificate not trusted, ...).
    Tls,
    /// The server has no free connection slot.
    TooManyConnections,
    /// The server is starting up, shutting down or in recovery.
    NotAccepting,
    /// The SQLite file cannot be created or opened (missing directory, no permission).
    SqliteCannotOpen,
    /// Anything else; the detail says what.
    Other,
}

impl Cause {
    /// The cause in plain words.
    pub fn summary(self) -> &'static str {
        match self {
            Cause::InvalidUrl => "invalid database URL",
            Cause::ConnectionRefused => "connection refused",
            Cause::HostNotFound => "host not found",
            Cause::HostUnreachable => "host unreachable",
            Cause::TimedOut => "connection timed out",
            Cause::UnknownRole => "unknown role",
            Cause::AuthenticationFailed => "authentication failed",
            Cause::AccessDenied => "access denied",
            Cause::MissingDatabase => "missing database",
            Cause::Tls => "TLS error",
            Cause::TooManyConnections => "too many connections",
            Cause::NotAccepting => "database not accepting connections",
            Cause::SqliteCannotOpen => "cannot open the SQLite file",
            Cause::Other => "cannot connect",
        }
    }

    /// What to check.
    pub fn hint(self) -> &'static str {
        match self {
            Cause::InvalidUrl => "fix database.url (ENROLL_DATABASE__URL)",
            Cause::ConnectionRefused => {
                "is the database running and listening on this host and port?"
            }
            Cause::HostNotFound => "check the host name in database.url and the DNS",
            Cause::HostUnreachable | Cause::TimedOut => {
                "check the host, the port, the network and firewalls"
            }
            Cause::UnknownRole => "create the role or fix the user name in database.url",
            Cause::AuthenticationFailed => "check the user name and password in database.url",
            Cause::AccessDenied => {
                "check pg_hba.conf and the role's CONNECT privilege on the database"
            }
            Cause::MissingDatabase => "create the database or fix its name in database.url",
            Cause::Tls => "check sslmode and the certificates in database.url",
            Cause::TooManyConnections => {
                "lower database.max_connections or raise the server's max_connections"
            }
            Cause::NotAccepting => "the server should accept connections shortly",
            Cause::SqliteCannotOpen => {
                "create the directory and let this user write to it, or fix the path"
            }
            Cause::Other => "see the detail",
        }
    }

    /// Whether waiting can cure it. Everything the database side can fix while this
    /// process waits is retried: a server still booting, a role, password or database a
    /// provisioning job has not created or rotated yet, a volume not mounted yet. Only the
    /// process's own malformed URL cannot change without a restart.
    pub fn retryable(self) -> bool {
        self != Cause::InvalidUrl
    }
}

/// A cause and the driver's detail, free of the URL's secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub cause: Cause,
    pub detail: String,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.cause.summary(),
            self.detail,
            self.cause.hint()
        )
    }
}

impl Diagnosis {
    /// A diagnosis whose detail has every secret of `url` masked.
    pub fn new(cause: Cause, detail: impl Into<String>, url: &str) -> Self {
        Self {
            cause,
            detail: scrub(detail.into(), url),
        }
    }
}

/// Masks the secrets of `url` in `text` (a driver message may quote the URL).
fn scrub(mut text: String, url: &str) -> String {
    for secret in url_secrets(url) {
        text = text.replace(&secret, "***");
    }
    text
}

/// Diagnoses an error from opening one connection to `url`.
pub fn diagnose(error: &sqlx::Error, url: &str) -> Diagnosis {
    let (cause, detail) = match error {
        sqlx::Error::Configuration(source) => (Cause::InvalidUrl, source.to_string()),
        sqlx::Error::Io(io) => (io_cause(io), io.to_string()),
        sqlx::Error::Tls(source) => (Cause::Tls, source.to_string()),
        sqlx::Error::Database(database) => {
            // The message only: sqlx's Display appends the server's C source line.
            let message = database.message().to_owned();
            let code = database.code().unwrap_or_default().into_owned();
            if database
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                sqlite_diagnosis(&code, message, url)
            } else {
                (
                    postgres_cause(&code, &message),
                    format!("{message} [{code}]"),
                )
            }
        }
        sqlx::Error::PoolTimedOut => (
            Cause::TimedOut,
            "no connection could be opened in time".to_owned(),
        ),
        sqlx::Error::Protocol(message) => (
            Cause::Other,
            format!("unexpected reply, is this a PostgreSQL server? {message}"),
        ),
        other => (Cause::Other, other.to_string()),
    };
    Diagnosis::new(cause, detail, url)
}

fn io_cause(error: &std::io::Error) -> Cause {
    match error.kind() {
        ErrorKind::ConnectionRefused => Cause::ConnectionRefused,
        ErrorKind::TimedOut => Cause::TimedOut,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Cause::HostUnreachable,
        // The resolver's failure has no kind of its own; its message is the stable part
        // (glibc: "failed to lookup address information: Name or service not known").
        _ if error.to_string().contains("failed to lookup address") => Cause::HostNotFound,
        _ => Cause::Other,
    }
}

/// PostgreSQL's SQLSTATEs of a refused connection
/// (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
fn postgres_cause(sqlstate: &str, message: &str) -> Cause {
    match sqlstate {
        // invalid_authorization_specification: an unknown role, or no pg_hba.conf entry.
        "28000" if message.contains("does not exist") => Cause::UnknownRole,
        "28000" | "42501" => Cause::AccessDenied,
        "28P01" => Cause::AuthenticationFailed,
        "3D000" => Cause::MissingDatabase,
        "53300" => Cause::TooManyConnections,
        // cannot_connect_now (starting up, recovery), admin_shutdown, crash_shutdown.
        "57P03" | "57P01" | "57P02" => Cause::NotAccepting,
        _ => Cause::Other,
    }
}

/// SQLite cannot open its file: says which of directory or permission is missing.
fn sqlite_diagnosis(code: &str, message: String, url: &str) -> (Cause, String) {
    // SQLITE_CANTOPEN (14) and its extended codes; SQLITE_READONLY (8) and SQLITE_PERM (3).
    let primary = code.parse::<i32>().map(|code| code & 0xff).unwrap_or(0);
    if !matches!(primary, 3 | 8 | 14) {
        return (Cause::Other, format!("{message} [{code}]"));
    }
    let Some(path) = sqlite_path(url) else {
        return (Cause::SqliteCannotOpen, message);
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let detail = if !directory.is_dir() {
        format!(
            "{}: the directory {} does not exist",
            path.display(),
            directory.display()
        )
    } else {
        format!(
            "{}: {message} (the directory {} exists; can this user write to it?)",
            path.display(),
            directory.display()
        )
    };
    (Cause::SqliteCannotOpen, detail)
}

/// The file a SQLite URL names (`sqlite://path`, `sqlite:path` or a bare path).
fn sqlite_path(url: &str) -> Option<&Path> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redact_url;

    #[test]
    fn urls_are_redacted_wherever_the_password_is() {
        for (url, redacted) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("sqlite://x.db", "sqlite://x.db"),
            ("sqlite:x.db", "sqlite:x.db"),
            // An unencoded `@` or `/` in the password stays hidden.
            ("postgres://u:p@ss/w@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?sslmode=require&password=s3cret",
                "postgres://u@h/db?sslmode=require&password=***",
            ),
            (
                "postgres://u:a@h/db?PASSWORD=b&sslpassword=c",
                "postgres://u:***@h/db?PASSWORD=***&sslpassword=***",
            ),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn details_never_carry_the_password() {
        let url = "postgres://u:p%40ss@h/db?password=other";
        let diagnosis = Diagnosis::new(Cause::Other, "server said p%40ss, p@ss and other", url);
        assert_eq!(diagnosis.detail, "server said ***, *** and ***");
    }

    fn io(kind: ErrorKind, message: &str) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(kind, message.to_owned()))
    }

    #[test]
    fn network_failures_are_named() {
        let url = "postgres://u:pw@db.example:5432/enroll";
        for (error, cause) in [
            (
                sqlx::Error::Io(ErrorKind::ConnectionRefused.into()),
                Cause::ConnectionRefused,
            ),
            (
                io(
                    ErrorKind::Other,
                    "failed to lookup address information: Name or service not known",
                ),
                Cause::HostNotFound,
            ),
            (io(ErrorKind::TimedOut, "timed out"), Cause::TimedOut),
            (
                io(ErrorKind::HostUnreachable, "no route"),
                Cause::HostUnreachable,
            ),
            (
                sqlx::Error::Configuration("invalid port number".into()),
                Cause::InvalidUrl,
            ),
            (
                sqlx::Error::Tls("server does not support TLS".into()),
                Cause::Tls,
            ),
            (sqlx::Error::PoolTimedOut, Cause::TimedOut),
        ] {
            let diagnosis = diagnose(&error, url);
            assert_eq!(diagnosis.cause, cause, "{error}");
            assert!(!diagnosis.to_string().contains("pw"), "{diagnosis}");
        }
    }

    #[test]
    fn postgres_refusals_are_named() {
        for (sqlstate, message, cause) in [
            (
                "28000",
                "role \"nobody\" does not exist",
                Cause::UnknownRole,
            ),
            (
                "28000",
                "no pg_hba.conf entry for host \"10.0.0.1\"",
                Cause::AccessDenied,
            ),
            (
                "28P01",
                "password authentication failed for user \"u\"",
                Cause::AuthenticationFailed,
            ),
            (
                "3D000",
                "database \"x\" does not exist",
                Cause::MissingDatabase,
            ),
            ("53300", "too many clients", Cause::TooManyConnections),
            (
                "57P03",
                "the database system is starting up",
                Cause::NotAccepting,
            ),
            (
                "42501",
                "permission denied for database",
                Cause::AccessDenied,
            ),
            ("XX000", "internal", Cause::Other),
        ] {
            assert_eq!(postgres_cause(sqlstate, message), cause, "{sqlstate}");
        }
    }

    #[test]
    fn only_a_malformed_url_is_final() {
        assert!(!Cause::InvalidUrl.retryable());
        for cause in [
            Cause::ConnectionRefused,
            Cause::UnknownRole,
            Cause::AuthenticationFailed,
            Cause::MissingDatabase,
            Cause::SqliteCannotOpen,
        ] {
            assert!(cause.retryable(), "{cause:?}");
        }
    }

    #[test]
    fn a_missing_sqlite_directory_is_named() {
        let dir = std::env::temp_dir().join(format!("enroll-db-startup-{}", std::process::id()));
        let url = format!("sqlite://{}/absent/enroll.db", dir.display());
        let (cause, detail) = sqlite_diagnosis("14", "unable to open database file".into(), &url);
        assert_eq!(cause, Cause::SqliteCannotOpen);
        assert!(detail.contains("absent does not exist"), "{detail}");
        assert_eq!(
            sqlite_path("sqlite:data/x.db?mode=rwc"),
            Some(Path::new("data/x.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
