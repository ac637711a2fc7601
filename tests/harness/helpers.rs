//! Helpers the test modules share: policies in one line, link secrets, OTP codes, audit
//! events, a registered passkey.
use std::collections::HashMap;

use enroll_device::domain::otp::code;
use enroll_device::domain::tokens::{HashAlgorithm, OtpParameters, TokenKind};
use enroll_shared::proto::device::v1 as device_pb;
use enroll_shared::proto::policy::v1 as policy_pb;

use crate::PolicyClient;

/// The device service's gRPC name (health, reflection, paths).
pub const DEVICE_SERVICE: &str =
    enroll_shared::proto::device::v1::device_service_server::SERVICE_NAME;
/// The policy service's gRPC name (health, reflection, paths).
pub const POLICY_SERVICE: &str =
    enroll_shared::proto::policy::v1::policy_service_server::SERVICE_NAME;

/// An active policy named `name` with `actions` (scope and priority at their defaults).
pub fn policy(name: &str, actions: &[(&str, &str)]) -> policy_pb::Policy {
    policy_pb::Policy {
        name: name.to_owned(),
        actions: actions
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        active: true,
        ..Default::default()
    }
}

/// [`policy`], limited to `realm`.
pub fn realm_policy(name: &str, realm: &str, actions: &[(&str, &str)]) -> policy_pb::Policy {
    policy_pb::Policy {
        realms: vec![realm.into()],
        ..policy(name, actions)
    }
}

/// CreatePolicy, with the stored policy or the refusal.
pub async fn create(
    client: &mut PolicyClient,
    policy: policy_pb::Policy,
) -> Result<policy_pb::Policy, tonic::Status> {
    client
        .create_policy(policy_pb::CreatePolicyRequest {
            policy: Some(policy),
            actor: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The secret at the end of an enrollment link's URL.
pub fn link_secret(link: &device_pb::EnrollmentLink) -> String {
    link.url
        .rsplit('/')
        .next()
        .filter(|secret| !secret.is_empty())
        .unwrap_or_else(|| panic!("no secret at the end of {}", link.url))
        .to_owned()
}

/// The RFC 4226 test seed, and its hex form (as in an import CSV).
pub const RFC4226_SEED: &[u8] = b"12345678901234567890";
pub const RFC4226_SEED_HEX: &str = "3132333435363738393031323334353637383930";

/// The default HOTP parameters: 6 digits, SHA1.
pub fn hotp_parameters() -> OtpParameters {
    OtpParameters::new(TokenKind::Hotp, 6, 0, HashAlgorithm::Sha1).unwrap()
}

/// The default TOTP parameters: 6 digits, 30 s, SHA1.
pub fn totp_parameters() -> OtpParameters {
    OtpParameters::new(TokenKind::Totp, 6, 30, HashAlgorithm::Sha1).unwrap()
}

/// The 6-digit SHA1 HOTP code of `seed` at `counter`.
pub fn hotp_code(seed: &[u8], counter: u64) -> String {
    code(&hotp_parameters(), seed, counter)
}

/// The seed an enrollment returned (base32).
pub fn seed_of(enrolled: &device_pb::EnrollTokenResponse) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(&enrolled.secret_base32)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The current 30-second TOTP time step.
pub fn now_step() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// The 6-digit SHA1, 30-second TOTP code of `seed` at time step `step`.
pub fn totp_code(seed: &[u8], step: u64) -> String {
    code(&totp_parameters(), seed, step)
}

/// The audit events of `action` (up to 1000), newest first.
pub async fn audit_events(
    client: &mut crate::DeviceClient,
    action: &str,
) -> Vec<device_pb::AuditEvent> {
    client
        .list_audit_events(device_pb::ListAuditEventsRequest {
            action: action.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListAuditEvents")
        .into_inner()
        .events
}

/// Registers a passkey (soft authenticator) for `user` of `realm` through an enrollment
/// link on the stack's first device server; returns the device.
pub async fn register_passkey(
    stack: &crate::TestStack,
    realm: &str,
    user: &str,
) -> device_pb::Device {
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let link = admin
        .create_enrollment_link(device_pb::CreateEnrollmentLinkRequest {
            realm: realm.to_owned(),
            user: user.to_owned(),
            device_type: device_pb::DeviceType::Any as i32,
            created_by: "console-admin".to_owned(),
            ..Default::default()
        })
        .await
        .expect("CreateEnrollmentLink")
        .into_inner();
    let begun = proxy
        .begin_device_registration(device_pb::BeginDeviceRegistrationRequest {
            link_secret: link_secret(&link),
            ..Default::default()
        })
        .await
        .expect("BeginDeviceRegistration")
        .into_inner();
    let options: webauthn_rs_proto::CreationChallengeResponse =
        serde_json::from_str(&begun.creation_options_json).expect("creation options");
    let credential = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true)
        .do_registration(
            url::Url::parse("http://localhost:8080").expect("origin"),
            options,
        )
        .expect("soft authenticator registers");
    proxy
        .finish_device_registration(device_pb::FinishDeviceRegistrationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&credential).expect("credential JSON"),
            user_agent: "soft-authenticator".to_owned(),
            client_ip: "192.0.2.7".to_owned(),
        })
        .await
        .expect("FinishDeviceRegistration")
        .into_inner()
        .device
        .expect("the registered device")
}
