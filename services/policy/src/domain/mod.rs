//! Enrollment policy logic: no gRPC, no database.
pub mod actions;
pub mod authenticators;
pub mod engine;
pub mod patterns;
pub mod pin;
pub mod policy;
pub mod settings;

#[cfg(test)]
#[path = "proptests.rs"]
mod proptests;
