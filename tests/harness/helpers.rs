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
/// The health name under which a device server reports whether the policy service answers.
pub const DEVICE_POLICY_DEPENDENCY: &str = enroll_device::app::POLICY_DEPENDENCY_HEALTH;
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
            validate_only: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The secret of an enrollment link: its URL's fragment (`<base>#<secret>`).
pub fn link_secret(link: &device_pb::EnrollmentLink) -> String {
    link.url
        .split_once('#')
        .map(|(_, secret)| secret)
        .filter(|secret| !secret.is_empty())
        .unwrap_or_else(|| panic!("no secret in the fragment of {}", link.url))
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

/// The SHA1 HOTP code of `seed` at `counter` with `digits` digits.
pub fn hotp_code_with(seed: &[u8], counter: u64, digits: u32) -> String {
    let parameters = OtpParameters::new(TokenKind::Hotp, digits, 0, HashAlgorithm::Sha1)
        .expect("HOTP parameters");
    code(&parameters, seed, counter)
}

/// The SHA1, 30-second TOTP code of `seed` at time step `step` with `digits` digits.
pub fn totp_code_with(seed: &[u8], step: u64, digits: u32) -> String {
    let parameters = OtpParameters::new(TokenKind::Totp, digits, 30, HashAlgorithm::Sha1)
        .expect("TOTP parameters");
    code(&parameters, seed, step)
}

/// The base32 form of `seed` (as an otpauth URI carries it).
pub fn base32_of(seed: &[u8]) -> String {
    totp_rs::Secret::new(seed.into()).to_base32()
}

/// The full paths (`/package.Service/Method`) of every RPC in an encoded descriptor set
/// (`FILE_DESCRIPTOR_SET`), so a test can check it called them all, new ones included.
pub fn rpc_paths(file_descriptor_set: &[u8]) -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(file_descriptor_set).expect("descriptors");
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths
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

/// A software passkey's answer to `options_json` (a BeginDeviceRegistration's creation
/// options) for a page at `origin`: the credential JSON a browser would send.
pub fn soft_passkey_registration(options_json: &str, origin: &str) -> String {
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    let options: webauthn_rs_proto::CreationChallengeResponse =
        serde_json::from_str(options_json).expect("creation options");
    let credential = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true)
        .do_registration(url::Url::parse(origin).expect("origin"), options)
        .expect("the soft passkey registers");
    serde_json::to_string(&credential).expect("credential JSON")
}

/// The origin the soft authenticators register from (allowed by the test relying party).
pub const TEST_ORIGIN: &str = "http://localhost:8080";

/// Registers a soft passkey for `realm`/`user` through an enrollment link (admin creates the
/// link, proxy runs the ceremony); returns the registered device.
pub async fn register_device_by_link(
    admin: &mut crate::DeviceClient,
    proxy: &mut crate::DeviceClient,
    realm: &str,
    user: &str,
) -> device_pb::Device {
    let mut passkey = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
    register_by_link_with(admin, proxy, &mut passkey, realm, user).await
}

/// [`register_device_by_link`] with the caller's authenticator (kept to authenticate later).
pub async fn register_by_link_with(
    admin: &mut crate::DeviceClient,
    proxy: &mut crate::DeviceClient,
    authenticator: &mut impl webauthn_authenticator_rs::WebauthnAuthenticator,
    realm: &str,
    user: &str,
) -> device_pb::Device {
    let link = admin
        .create_enrollment_link(device_pb::CreateEnrollmentLinkRequest {
            realm: realm.into(),
            user: user.into(),
            device_type: device_pb::DeviceType::Any as i32,
            created_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .expect("create enrollment link")
        .into_inner();
    let begun = proxy
        .begin_device_registration(device_pb::BeginDeviceRegistrationRequest {
            link_secret: link_secret(&link),
            ..Default::default()
        })
        .await
        .expect("begin registration")
        .into_inner();
    let options: webauthn_rs_proto::CreationChallengeResponse =
        serde_json::from_str(&begun.creation_options_json).expect("creation options");
    let credential = authenticator
        .do_registration(url::Url::parse(TEST_ORIGIN).expect("origin"), options)
        .expect("soft authenticator registers");
    proxy
        .finish_device_registration(device_pb::FinishDeviceRegistrationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&credential).expect("credential json"),
            user_agent: "soft-authenticator".into(),
            client_ip: "192.0.2.7".into(),
        })
        .await
        .expect("finish registration")
        .into_inner()
        .device
        .expect("registered device")
}

/// EnrollToken of `kind` for `user` of `realm` (`""`: into the realm's pool); the token.
pub async fn enroll_token(
    admin: &mut crate::DeviceClient,
    realm: &str,
    user: &str,
    kind: device_pb::TokenType,
) -> device_pb::Token {
    admin
        .enroll_token(device_pb::EnrollTokenRequest {
            realm: realm.into(),
            user: user.into(),
            r#type: kind as i32,
            ..Default::default()
        })
        .await
        .expect("enroll token")
        .into_inner()
        .token
        .expect("the enrolled token")
}

/// GetToken.
pub async fn get_token(admin: &mut crate::DeviceClient, serial: &str) -> device_pb::Token {
    admin
        .get_token(device_pb::GetTokenRequest {
            serial: serial.into(),
        })
        .await
        .expect("get token")
        .into_inner()
}

/// SetPin, which must succeed.
pub async fn set_token_pin(admin: &mut crate::DeviceClient, serial: &str, pin: &str) {
    admin
        .set_pin(device_pb::SetPinRequest {
            serial: serial.into(),
            pin: pin.into(),
            ..Default::default()
        })
        .await
        .expect("set PIN");
}

/// The audit events of `action` on `serial` (`""`: any serial), newest first.
pub async fn audit_events(
    admin: &mut crate::DeviceClient,
    serial: &str,
    action: &str,
) -> Vec<device_pb::AuditEvent> {
    admin
        .list_audit_events(device_pb::ListAuditEventsRequest {
            serial: serial.into(),
            action: action.into(),
            ..Default::default()
        })
        .await
        .expect("list audit events")
        .into_inner()
        .events
}

/// A Validate request from the identity proxy's client address 192.0.2.1.
pub fn validate_request(realm: &str, user: &str, pass: &str) -> device_pb::ValidateRequest {
    device_pb::ValidateRequest {
        realm: realm.into(),
        user: user.into(),
        pass: pass.into(),
        client_ip: "192.0.2.1".into(),
        ..Default::default()
    }
}

/// A Validate request from the end user's address `client_ip`, forwarding `device_token`
/// (empty: none) as a proxy would.
pub fn validate_from(
    realm: &str,
    user: &str,
    pass: &str,
    client_ip: &str,
    device_token: &str,
) -> device_pb::ValidateRequest {
    device_pb::ValidateRequest {
        client_ip: client_ip.into(),
        device_token: device_token.into(),
        ..validate_request(realm, user, pass)
    }
}

/// Asserts that `result` is INVALID_ARGUMENT whose ErrorInfo names `field`.
#[track_caller]
pub fn assert_invalid_field<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err(&format!("`{field}` must be refused"));
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{field}: {status:?}"
    );
    assert_eq!(
        enroll_shared::status::field(&status).as_deref(),
        Some(field),
        "{status:?}"
    );
}

/// The 6-digit SHA1, 30-second TOTP code of `seed` at time step `step`.
pub fn totp_code(seed: &[u8], step: u64) -> String {
    code(&totp_parameters(), seed, step)
}

/// The audit events of `action` (up to 1000), newest first.
pub async fn audit_events_by_action(
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
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    register_device_by_link(&mut admin, &mut proxy, realm, user).await
}
