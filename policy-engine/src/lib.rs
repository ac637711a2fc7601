//! Enrollment policy logic, with neither gRPC transport nor a database: policies as admins
//! write them, their validation and compilation, and decisions.
//!
//! Two services run it: the policy service, the only writer and the reference, and the
//! device service, which decides CheckEnrollment's model rules, self-enrollment and device
//! authentication from the last policy set the policy service streamed to it when that
//! service cannot answer. One engine, so both decide alike; [`proto`] converts to and from
//! the wire form both speak.
pub mod actions;
pub mod authenticators;
pub mod engine;
pub mod patterns;
pub mod pin;
pub mod policy;
pub mod proto;
pub mod settings;

#[cfg(test)]
#[path = "proptests.rs"]
mod proptests;
