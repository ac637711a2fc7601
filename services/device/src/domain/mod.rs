//! Device-service values and rules that know nothing of gRPC or the database.
pub mod actor;
pub mod attestation;
pub mod audit;
pub mod challenges;
pub mod decision;
pub mod devices;
pub mod events;
pub mod import;
pub mod lockout;
pub mod metadata;
pub mod metadata_trust;
pub mod model_rules;
pub mod names;
pub mod otp;
pub mod otp_links;
pub mod pins;
pub mod policy_events;
pub mod random;
pub mod secrets;
pub mod tokens;
pub mod verify;

#[cfg(test)]
#[path = "proptests.rs"]
mod proptests;
