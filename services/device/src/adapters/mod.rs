//! The service's ways out: the policy service's gRPC client and the WebAuthn relying party,
//! each implementing a port of `service::ports`.
pub mod fido_metadata;
pub mod policy_client;
pub mod relying_party;

#[cfg(test)]
#[path = "relying_party_proptests.rs"]
mod relying_party_proptests;
