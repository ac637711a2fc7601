//! What the use cases need from the outside, as small traits: the policy service, the
//! audit log and the WebAuthn relying party. The adapters implement them; tests use fakes.
use async_trait::async_trait;

use crate::domain::attestation::VerifiedAttestation;
use crate::domain::audit::AuditRecord;
use crate::domain::decision::{Decision, PinVerdict, PolicyError, PolicyQuestion};
use crate::domain::devices::DeviceKind;
use crate::domain::metadata::ModelAnchor;
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// The policy service's decisions.
#[async_trait]
pub trait PolicyDecisions: Send + Sync + 'static {
    /// The decision for `question` from a client at `client_ip` ("" when unknown).
    async fn evaluate(
        &self,
        question: &PolicyQuestion<'_>,
        client_ip: &str,
    ) -> Result<Decision, PolicyError>;

    /// The subject's PIN rules applied to a proposed PIN.
    async fn validate_pin(
        &self,
        realm: &Realm,
        user: &UserName,
        client_ip: &str,
        pin: &str,
    ) -> Result<PinVerdict, PolicyError>;
}

/// Decisions from the last policy set the policy service streamed, for the proxy's path
/// while the policy service cannot answer.
pub trait LastKnownPolicies: Send + Sync + 'static {
    /// The decision the last known set makes for `question`, and when that set was
    /// received; None when no set is known.
    fn evaluate(
        &self,
        question: &PolicyQuestion<'_>,
        client_ip: &str,
    ) -> Option<(Result<Decision, PolicyError>, chrono::DateTime<chrono::Utc>)>;

    /// The decision of the known set for `question`, only when that set is `version` (the
    /// one the policy service says it decides with now): then it is the policy service's
    /// own decision, made here with the same engine. None otherwise.
    fn evaluate_at(
        &self,
        version: i64,
        question: &PolicyQuestion<'_>,
        client_ip: &str,
    ) -> Option<Result<Decision, PolicyError>>;
}

/// Where audit events that stand alone (refusals with no change) are written.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    async fn record(&self, record: AuditRecord) -> Result<(), DeviceError>;
}

/// Options for the browser and the state to keep until the ceremony finishes, both JSON.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub options_json: String,
    pub state_json: String,
}

/// A credential that passed registration.
#[derive(Debug, Clone)]
pub struct RegisteredCredential {
    /// base64url without padding.
    pub credential_id: String,
    /// The passkey (public key, counter, flags) as JSON.
    pub passkey_json: String,
    pub aaguid: String,
    pub backup_eligible: bool,
    /// What the attestation proved: format, AAGUID, the root its chain was verified to.
    pub attestation: VerifiedAttestation,
}

/// What a successful authentication tells about the credential used.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub credential_id: String,
    /// The signature counter the authenticator reported (0 if it keeps none).
    pub counter: u32,
    /// The credential says it may be (or is) synced to other devices.
    pub backup_eligible: bool,
    /// The updated passkey JSON when the counter or backup state changed.
    pub updated_passkey_json: Option<String>,
}

/// The WebAuthn relying party: CPU work only, run on the blocking pool where it is heavy.
pub trait RelyingParty: Send + Sync + 'static {
    /// Starts a registration; `exclude` lists the user's credential ids (base64url) so an
    /// authenticator is not registered twice.
    /// `want_attestation` asks an `any` registration for the authenticator's attestation
    /// (the model matters: model rules or FIDO metadata); `enclave_only` always asks.
    fn start_registration(
        &self,
        kind: DeviceKind,
        want_attestation: bool,
        user_handle: uuid::Uuid,
        user_name: &str,
        exclude: &[String],
    ) -> Result<Challenge, DeviceError>;

    /// Verifies the browser's credential against the stored state.
    fn finish_registration(
        &self,
        state_json: &str,
        credential_json: &str,
    ) -> Result<RegisteredCredential, DeviceError>;

    /// Starts an authentication with the user's usable passkeys (JSON).
    fn start_authentication(&self, passkeys: &[String]) -> Result<Challenge, DeviceError>;

    /// Verifies an assertion; `stored` finds a stored passkey by credential id.
    fn finish_authentication(
        &self,
        state_json: &str,
        assertion_json: &str,
        stored: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Authenticated, DeviceError>;
}

/// Attestation trust anchors that change at run time: the attestation roots of certified
/// models from the FIDO metadata, each bound to its model's AAGUID.
pub trait AttestationAnchors: Send + Sync + 'static {
    /// The current anchors and the BLOB number they come from (it changes when they do).
    fn current(&self) -> Option<(u64, std::sync::Arc<Vec<ModelAnchor>>)>;
}

/// The FIDO metadata BLOB's source and its signature check.
#[async_trait]
pub trait MetadataBlobs: Send + Sync + 'static {
    /// Where BLOBs come from, for logs and the stored row.
    fn source(&self) -> String;
    /// The BLOB as published (a JWT), or why it could not be fetched.
    async fn fetch(&self) -> Result<String, String>;
    /// The payload of a BLOB whose signature chain leads to the configured FIDO root with
    /// certificates valid at `now` and whose signer carries the pinned name (with what the
    /// key pins said), or why not.
    fn verify(
        &self,
        jwt: &str,
        now: std::time::SystemTime,
    ) -> Result<
        crate::domain::metadata_trust::VerifiedBlob,
        crate::domain::metadata_trust::Unverified,
    >;
}
