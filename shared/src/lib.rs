//! Common code of the enrollment services: generated gRPC code, configuration, telemetry,
//! caller authentication, database connections, realm and user names, status helpers and
//! the gRPC server shell and its (mutual) TLS.

pub mod auth;
pub mod cli;
pub mod clock_cache;
pub mod config;
pub mod db;
pub mod db_changes;
pub mod db_errors;
pub mod db_startup;
pub mod healthcheck;
pub mod jose;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod paging;
pub mod proto;
pub mod server;
pub mod starting;
pub mod status;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod tls;
