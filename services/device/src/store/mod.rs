//! Persistence of the device service: one file per table group, typed columns, rows turned
//! into domain values in `convert`.
pub mod audit;
pub mod autoassign;
pub mod budgets;
pub mod convert;
pub mod device_changes;
pub mod devices;
pub mod entities;
pub mod event_entities;
pub mod events;
mod expiries;
pub mod idempotency;
pub mod links;
pub mod lockout;
pub mod metadata;
pub mod migration;
mod one_statement;
pub mod otp_links;
pub mod owner_names;
pub mod policy_events;
pub mod policy_snapshot;
pub mod poll;
pub mod sql;
pub mod streams;
pub mod token_changes;
pub mod tokens;
pub mod validation;
pub mod verify;
