//! End-to-end tests: both services over real gRPC, on PostgreSQL and on SQLite.
mod auth_matrix;
mod autoassign;
mod devices;
mod enrollment_page;
mod health_and_reflection;
mod no_secrets_in_logs;
mod policy_crud;
mod policy_decisions;
mod policy_replicas;
mod tokens;
