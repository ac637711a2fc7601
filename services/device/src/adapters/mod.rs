//! The service's ways out: the policy service's gRPC client and the WebAuthn relying party,
//! each implementing a port of `service::ports`.
mod attestation_trust;
pub mod fido_metadata;
pub mod last_known_policy;
mod metadata_anchors;
pub mod policy_client;
pub mod policy_history;
pub mod policy_watch;
pub mod relying_party;
mod tpm_sha1;
pub mod vendor_roots;

#[cfg(test)]
#[path = "relying_party_proptests.rs"]
mod relying_party_proptests;

#[cfg(test)]
#[path = "attestation_corpus_tests.rs"]
mod attestation_corpus_tests;
