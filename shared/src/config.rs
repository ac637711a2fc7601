//! Configuration: a TOML file overlaid with `ENROLL_*` environment variables.
//!
//! `ENROLL_DATABASE__URL=postgres://...` sets `[database] url`: the prefix is stripped, the
//! rest is lowercased and `__` separates nesting levels (variables without `__` are not
//! settings and are ignored). A value that parses as a TOML
//! value (number, boolean, array, inline table) is taken as such, anything else as a string.
use std::{net::SocketAddr, path::Path, path::PathBuf, time::Duration};

use serde::{Deserialize, de::DeserializeOwned};

use crate::auth::ApiKeyConfig;

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "ENROLL_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name} conflicts with a non-table value in the config")]
    EnvConflict { name: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads `T` from the optional TOML file, then applies the process's `ENROLL_*` variables.
pub fn load<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// Like [`load`] with explicit environment variables (tests pass their own).
pub fn load_with_env<T: DeserializeOwned>(
    path: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?
        }
        None => toml::Table::new(),
    };
    // Every setting lives in a section, so an override names at least `SECTION__KEY`. That
    // leaves other ENROLL_* variables alone: ENROLL_CONFIG (the --config flag) and the
    // ENROLL_..._SERVICE_HOST/PORT variables Kubernetes injects for a Service.
    let mut overrides: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name[ENV_PREFIX.len()..].contains("__"))
        .collect();
    overrides.sort();
    for (name, value) in overrides {
        apply_override(&mut table, &name, &value)?;
    }
    T::deserialize(toml::Value::Table(table))
        .map_err(|error| ConfigError::Invalid(error.to_string()))
}

fn apply_override(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let key_path = name[ENV_PREFIX.len()..].to_ascii_lowercase();
    let mut parts: Vec<&str> = key_path.split("__").collect();
    let Some(leaf) = parts.pop() else {
        return Ok(());
    };
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::EnvConflict {
                name: name.to_owned(),
            })?;
    }
    current.insert(leaf.to_owned(), parse_env_value(value));
    Ok(())
}

fn parse_env_value(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()))
}

/// Where and how the gRPC server listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket address of the gRPC server; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Deadline of one request (ms), enforced by a tower timeout layer.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most requests served at once per connection (tower concurrency limit); more wait.
    #[serde(default = "default_concurrency_limit")]
    pub concurrency_limit_per_connection: usize,
    /// Most requests in flight across all connections; past it a request is refused at once
    /// with RESOURCE_EXHAUSTED (load shedding) rather than queued.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection: a client opens no more
    /// streams than this at once and queues the rest itself.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Largest request message (bytes) a method decodes; larger ones are refused with
    /// OUT_OF_RANGE before their body is read. Unset: the service's own default (policy
    /// 4 MiB; device 17 MiB, ImportTokens' 16 MiB CSV plus room).
    #[serde(default)]
    pub max_decoding_message_size: Option<usize>,
    /// Largest response message (bytes) a method encodes; a larger one fails with
    /// OUT_OF_RANGE instead of being sent.
    #[serde(default = "default_max_encoding_message_size")]
    pub max_encoding_message_size: usize,
    /// How long a graceful shutdown waits for in-flight requests (ms).
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Serve gRPC server reflection (schema only, no data). On by default for grpcurl.
    #[serde(default = "default_true")]
    pub reflection: bool,
    /// TLS (and mutual TLS when `client_ca` is set). Off when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl ServerConfig {
    /// Defaults for everything but the address.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            request_timeout_ms: default_request_timeout_ms(),
            concurrency_limit_per_connection: default_concurrency_limit(),
            max_in_flight: default_max_in_flight(),
            max_concurrent_streams: default_max_concurrent_streams(),
            max_decoding_message_size: None,
            max_encoding_message_size: default_max_encoding_message_size(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            reflection: true,
            tls: None,
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The configured request size cap, or `service_default` when unset.
    pub fn max_decoding_message_size_or(&self, service_default: usize) -> usize {
        self.max_decoding_message_size.unwrap_or(service_default)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// PEM files of a server's TLS (`[server.tls]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS); a
    /// client without one is refused during the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// PEM files of a client's TLS to another service (e.g. `[policy_service.tls]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The CA(s) the server's certificate must chain to. Required: the services trust no
    /// system roots, so an internal CA is named explicitly.
    pub ca: PathBuf,
    /// This client's certificate chain, for a server that requires mutual TLS.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of `cert`; set both or neither.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name checked against the server's certificate instead of the URL's host (e.g.
    /// when the URL names an IP address or an alias the certificate does not list).
    #[serde(default)]
    pub domain_name: Option<String>,
}

/// The database of one service.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host/db` or `sqlite://path/to/file.db` (created when missing).
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a SQLite writer waits for the write lock (ms).
    #[serde(default = "default_sqlite_busy_timeout_ms")]
    pub sqlite_busy_timeout_ms: u64,
    /// How long start-up (and `migrate`) keeps retrying a database it cannot reach (s),
    /// with exponential back-off, logging each attempt's cause; the gRPC server already
    /// answers meanwhile, health NOT_SERVING. 0: fail at the first error. A malformed URL
    /// fails at once whatever this says.
    #[serde(default = "default_startup_retry_secs")]
    pub startup_retry_secs: u64,
}

impl DatabaseConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: default_max_connections(),
            sqlite_busy_timeout_ms: default_sqlite_busy_timeout_ms(),
            startup_retry_secs: default_startup_retry_secs(),
        }
    }

    pub fn startup_retry(&self) -> Duration {
        Duration::from_secs(self.startup_retry_secs)
    }
}

impl std::fmt::Debug for DatabaseConfig {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("sqlite_busy_timeout_ms", &self.sqlite_busy_timeout_ms)
            .field("startup_retry_secs", &self.startup_retry_secs)
            .finish()
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `pretty` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,enroll_policy=debug`. `RUST_LOG` wins when set.
    #[serde(default = "default_log_filter")]
    pub log_filter: String,
    /// OTLP/gRPC collector endpoint, e.g. `http://localhost:4317`. No export when empty.
    #[serde(default)]
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            log_filter: default_log_filter(),
            otlp_endpoint: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Caller API keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_concurrency_limit() -> usize {
    256
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_max_concurrent_streams() -> u32 {
    128
}
/// tonic's own default for both directions.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
fn default_max_encoding_message_size() -> usize {
    DEFAULT_MAX_MESSAGE_SIZE
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_max_connections() -> u32 {
    16
}
fn default_sqlite_busy_timeout_ms() -> u64 {
    10_000
}
/// Five minutes: longer than a database container or a managed instance takes to boot,
/// short enough that a wrong setting ends in a restart an orchestrator reports.
fn default_startup_retry_secs() -> u64 {
    300
}
fn default_log_filter() -> String {
    "info".to_owned()
}

/// Query parameters of a database URL that carry a secret (libpq's `password`, and the
/// passphrase of an encrypted client key).
const SECRET_QUERY_KEYS: [&str; 2] = ["password", "sslpassword"];

/// The URL with any password replaced by `***`, for logs and error messages: the one in the
/// user info and any `password=` / `sslpassword=` query parameter.
///
/// The user info ends at the last `@` before the query: a password holding an unencoded
/// `@` or `/` is still hidden (a database name with an `@` is hidden with it, harmlessly).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let mut redacted = format!("{scheme}://");
    match before_query.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            redacted.push_str(user);
            if credentials.contains(':') {
                redacted.push_str(":***");
            }
            redacted.push('@');
            redacted.push_str(host);
        }
        None => redacted.push_str(before_query),
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_query_key(key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

/// The secrets a database URL holds (its password, raw and percent-decoded, and secret
/// query values), so a message that might quote one can be scrubbed.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, query),
        None => (rest, ""),
    };
    let mut secrets = Vec::new();
    if let Some((credentials, _)) = before_query.rsplit_once('@')
        && let Some((_, password)) = credentials.split_once(':')
    {
        secrets.push(password.to_owned());
    }
    for pair in query.split('&') {
        if let Some((key, value)) = pair.split_once('=')
            && is_secret_query_key(key)
        {
            secrets.push(value.to_owned());
        }
    }
    let decoded: Vec<String> = secrets
        .iter()
        .map(|secret| percent_decode(secret))
        .collect();
    secrets.extend(decoded);
    secrets.retain(|secret| !secret.is_empty());
    secrets.sort();
    secrets.dedup();
    secrets
}

fn is_secret_query_key(key: &str) -> bool {
    SECRET_QUERY_KEYS
        .iter()
        .any(|secret| key.eq_ignore_ascii_case(secret))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        server: ServerConfig,
        database: DatabaseConfig,
        #[serde(default)]
        telemetry: TelemetryConfig,
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_build_nested_values_with_types() {
        let sample: Sample = load_with_env(
            None,
            vars(&[
                ("ENROLL_SERVER__LISTEN", "127.0.0.1:0"),
                ("ENROLL_SERVER__REQUEST_TIMEOUT_MS", "250"),
                ("ENROLL_DATABASE__URL", "postgres://u@h/db"),
                ("ENROLL_TELEMETRY__LOG_FORMAT", "json"),
                ("OTHER_VAR", "ignored"),
                ("ENROLL_CONFIG", "/etc/enroll/policy.toml"),
                ("ENROLL_POLICY_SERVICE_HOST", "10.0.0.7"),
            ]),
        )
        .unwrap();
        assert_eq!(sample.server.listen.port(), 0);
        assert_eq!(sample.server.request_timeout_ms, 250);
        assert_eq!(sample.database.url, "postgres://u@h/db");
        assert_eq!(sample.telemetry.log_format, LogFormat::Json);
        assert!(sample.server.reflection);
    }

    #[test]
    fn env_wins_over_file() {
        let dir = std::env::temp_dir().join(format!("enroll-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"0.0.0.0:1\"\n[database]\nurl = \"sqlite://a.db\"\n",
        )
        .unwrap();
        let sample: Sample = load_with_env(
            Some(&path),
            vars(&[("ENROLL_DATABASE__URL", "sqlite://b.db")]),
        )
        .unwrap();
        assert_eq!(sample.server.listen.port(), 1);
        assert_eq!(sample.database.url, "sqlite://b.db");
    }

    #[test]
    fn unknown_keys_and_missing_sections_are_reported() {
        let error = load_with_env::<Sample>(None, vars(&[("ENROLL_SERVER__LISTEN", "1.2.3.4:5")]))
            .unwrap_err();
        assert!(error.to_string().contains("database"), "{error}");
        let error = load_with_env::<Sample>(
            None,
            vars(&[
                ("ENROLL_SERVER__LISTEN", "1.2.3.4:5"),
                ("ENROLL_SERVER__LISTN", "x"),
                ("ENROLL_DATABASE__URL", "sqlite://x"),
            ]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("listn"), "{error}");
    }
}
