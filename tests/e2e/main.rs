//! End-to-end tests: both services over real gRPC, on PostgreSQL and on SQLite.
mod auth_matrix;
mod device_security;
mod devices;
mod enrollment_page;
mod health_and_reflection;
mod idempotency;
mod names;
mod no_secrets_in_logs;
mod policy_crud;
mod policy_decisions;
mod policy_replicas;
mod policy_safety;
mod storable_input;
mod tls;
mod token_backoff;
mod token_safety;
mod tokens;
