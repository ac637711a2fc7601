//! The device guarantees the security review found open, each attacked the way a malicious
//! proxy, a cloned authenticator or someone with write access to the database would:
//! approval is enforced by the server, approval and device type are fixed against the
//! strictest of begin, finish and the current policy, refused registrations burn their
//! ceremony, counters only move forward, and trust anchors come from configuration only.
use std::time::Duration;

use enroll_e2e::{
    Backend, DeviceClient, TestStack, link_secret, on_both_backends, policy, realm_policy,
};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use enroll_shared::status::reason;
use tonic::Code;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_rs_proto::{CreationChallengeResponse, RequestChallengeResponse};

const ORIGIN: &str = "http://localhost:8080";

async fn begin_self(proxy: &mut DeviceClient, user: &str) -> pb::BeginDeviceRegistrationResponse {
    proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            realm: "acme".into(),
            user: user.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn begin_link(
    proxy: &mut DeviceClient,
    secret: String,
) -> Result<pb::BeginDeviceRegistrationResponse, tonic::Status> {
    proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: secret,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn create_link(admin: &mut DeviceClient, user: &str, kind: pb::DeviceType) -> String {
    let link = admin
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "acme".into(),
            user: user.into(),
            device_type: kind as i32,
            created_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    link_secret(&link)
}

fn credential(
    authenticator: &mut impl WebauthnAuthenticator,
    begun: &pb::BeginDeviceRegistrationResponse,
) -> String {
    let options: CreationChallengeResponse =
        serde_json::from_str(&begun.creation_options_json).unwrap();
    let credential = authenticator
        .do_registration(Url::parse(ORIGIN).unwrap(), options)
        .expect("soft authenticator registers");
    serde_json::to_string(&credential).unwrap()
}

async fn finish(
    proxy: &mut DeviceClient,
    ceremony_id: &str,
    credential_json: String,
) -> Result<pb::Device, tonic::Status> {
    proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: ceremony_id.to_owned(),
            credential_json,
            user_agent: "soft-authenticator".into(),
            client_ip: "192.0.2.7".into(),
        })
        .await
        .map(|response| response.into_inner().device.unwrap())
}

async fn begin_authentication(
    proxy: &mut DeviceClient,
    user: &str,
) -> Result<pb::BeginDeviceAuthenticationResponse, tonic::Status> {
    proxy
        .begin_device_authentication(pb::BeginDeviceAuthenticationRequest {
            realm: "acme".into(),
            user: user.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

fn assertion(
    authenticator: &mut impl WebauthnAuthenticator,
    begun: &pb::BeginDeviceAuthenticationResponse,
) -> String {
    let options: RequestChallengeResponse =
        serde_json::from_str(&begun.request_options_json).unwrap();
    let assertion = authenticator
        .do_authentication(Url::parse(ORIGIN).unwrap(), options)
        .unwrap();
    serde_json::to_string(&assertion).unwrap()
}

async fn finish_authentication(
    proxy: &mut DeviceClient,
    ceremony_id: &str,
    assertion: String,
) -> Result<pb::Device, tonic::Status> {
    proxy
        .finish_device_authentication(pb::FinishDeviceAuthenticationRequest {
            ceremony_id: ceremony_id.to_owned(),
            credential_json: assertion,
            client_ip: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn status(proxy: &mut DeviceClient, user: &str, credential_id: &str) -> pb::EnrollmentStatus {
    let response = proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "acme".into(),
            user: user.into(),
            credential_id: credential_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    pb::EnrollmentStatus::try_from(response.status).unwrap()
}

/// Waits until the policy service answers `action` for alice with `settings` satisfied.
async fn until_policy(
    stack: &TestStack,
    done: impl Fn(&policy_pb::EvaluateEnrollmentResponse) -> bool,
) {
    let mut policy = stack.policy_admin();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = policy
            .evaluate_enrollment(policy_pb::EvaluateEnrollmentRequest {
                realm: "acme".into(),
                user: "alice".into(),
                action: policy_pb::Action::RegisterDevice as i32,
                token_type: "webauthn".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if done(&answer) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "policy change not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete_policy(stack: &TestStack, name: &str) {
    stack
        .policy_admin()
        .delete_policy(policy_pb::DeletePolicyRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn a_pending_device_is_never_enrolled_and_never_authenticates(backend: Backend) {
    let approval = realm_policy("approval", "acme", &[("require_device_approval", "true")]);
    let stack = TestStack::with_policies(backend, [approval]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let mut authenticator = SoftPasskey::new(true);
    let begun = begin_self(&mut proxy, "alice").await;
    let json = credential(&mut authenticator, &begun);
    let pending = finish(&mut proxy, &begun.ceremony_id, json).await.unwrap();
    assert_eq!(pending.state, pb::DeviceState::PendingApproval as i32);

    // CheckEnrollment says PENDING_APPROVAL whatever the caller asks, by user or credential.
    assert_eq!(
        status(&mut proxy, "alice", "").await,
        pb::EnrollmentStatus::PendingApproval
    );
    assert_eq!(
        status(&mut proxy, "alice", &pending.credential_id).await,
        pb::EnrollmentStatus::PendingApproval
    );
    // It cannot even begin an authentication.
    let refused = begin_authentication(&mut proxy, "alice").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("DEVICE_PENDING_APPROVAL"));

    // Approved, it authenticates.
    admin
        .approve_device(pb::ApproveDeviceRequest {
            id: pending.id.clone(),
            approved_by: "secops".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        status(&mut proxy, "alice", "").await,
        pb::EnrollmentStatus::Enrolled
    );
    let begun = begin_authentication(&mut proxy, "alice").await.unwrap();
    let signed = assertion(&mut authenticator, &begun);
    finish_authentication(&mut proxy, &begun.ceremony_id, signed)
        .await
        .unwrap();
}

async fn approval_is_fixed_when_registration_begins(backend: Backend) {
    let approval = realm_policy("approval", "acme", &[("require_device_approval", "true")]);
    let stack = TestStack::with_policies(backend, [approval]).await;
    let mut proxy = stack.proxy();
    let begun = begin_self(&mut proxy, "alice").await;
    // The policy drops the approval between begin and finish: the stricter one holds.
    stack
        .create_policy(realm_policy(
            "trusting",
            "acme",
            &[("require_device_approval", "false")],
        ))
        .await;
    delete_policy(&stack, "approval").await;
    until_policy(&stack, |answer| {
        !answer.settings.as_ref().unwrap().require_device_approval
    })
    .await;
    let json = credential(&mut SoftPasskey::new(true), &begun);
    let device = finish(&mut proxy, &begun.ceremony_id, json).await.unwrap();
    assert_eq!(device.state, pb::DeviceState::PendingApproval as i32);
}

async fn links_are_held_to_the_current_device_type_policy(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let early = create_link(&mut admin, "alice", pb::DeviceType::Any).await;
    let late = create_link(&mut admin, "alice", pb::DeviceType::Any).await;
    let begun = begin_link(&mut proxy, early).await.unwrap();

    stack
        .create_policy(realm_policy(
            "enclave",
            "acme",
            &[("webauthn_device_type", "enclave_only")],
        ))
        .await;
    until_policy(&stack, |answer| {
        answer.settings.as_ref().unwrap().webauthn_device_type == "enclave_only"
    })
    .await;

    // An `any` link issued before the change can no longer begin...
    let refused = begin_link(&mut proxy, late).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused).as_deref(), Some("DEVICE_TYPE_NOT_ALLOWED"));
    // ...nor finish a ceremony begun before it; that ceremony is spent.
    let json = credential(&mut SoftPasskey::new(true), &begun);
    let refused = finish(&mut proxy, &begun.ceremony_id, json.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused).as_deref(), Some("DEVICE_TYPE_NOT_ALLOWED"));
    delete_policy(&stack, "enclave").await;
    until_policy(&stack, |answer| {
        answer.settings.as_ref().unwrap().webauthn_device_type == "any"
    })
    .await;
    let again = finish(&mut proxy, &begun.ceremony_id, json)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
}

async fn a_refused_registration_burns_its_ceremony(backend: Backend) {
    let limit = realm_policy("one", "acme", &[("max_token_per_user", "1")]);
    let stack = TestStack::with_policies(backend, [limit]).await;
    let mut proxy = stack.proxy();
    let first = begin_self(&mut proxy, "alice").await;
    let second = begin_self(&mut proxy, "alice").await;
    let json = credential(&mut SoftPasskey::new(true), &first);
    finish(&mut proxy, &first.ceremony_id, json).await.unwrap();
    let json = credential(&mut SoftPasskey::new(true), &second);
    let refused = finish(&mut proxy, &second.ceremony_id, json.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // The limit goes away; the refused challenge still cannot be answered again.
    delete_policy(&stack, "one").await;
    until_policy(&stack, |answer| {
        answer
            .settings
            .as_ref()
            .unwrap()
            .max_token_per_user
            .is_none()
    })
    .await;
    let replayed = finish(&mut proxy, &second.ceremony_id, json)
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::FailedPrecondition, "{replayed:?}");
}

async fn ceremonies(stack: &TestStack, id: &str) -> i64 {
    stack
        .database
        .count(&format!(
            "SELECT COUNT(*) FROM ceremonies WHERE id = '{id}'"
        ))
        .await
}

/// A policy denial or an outage at finish burns the ceremony like every other refusal (the
/// same challenge is never answered once the obstacle is gone), but leaves the link usable:
/// a new ceremony from it registers.
async fn a_denial_or_outage_at_finish_burns_the_ceremony_not_the_link(backend: Backend) {
    let only_totp = policy("otp-only", &[("token_types", "totp")]);
    let mut stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let secret = create_link(&mut admin, "alice", pb::DeviceType::Any).await;
    let begun = begin_link(&mut proxy, secret.clone()).await.unwrap();
    let json = credential(&mut SoftPasskey::new(true), &begun);

    stack.create_policy(only_totp).await;
    until_policy(&stack, |answer| !answer.denials.is_empty()).await;
    let denied = finish(&mut proxy, &begun.ceremony_id, json.clone())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(ceremonies(&stack, &begun.ceremony_id).await, 0, "burned");
    delete_policy(&stack, "otp-only").await;
    until_policy(&stack, |answer| answer.denials.is_empty()).await;
    let replayed = finish(&mut proxy, &begun.ceremony_id, json)
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::FailedPrecondition, "{replayed:?}");
    let audit = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "register_device".into(),
            result: "denied".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(audit.len(), 1, "one audit event per refusal: {audit:?}");
    // The link is not spent: a new ceremony from it registers.
    let again = begin_link(&mut proxy, secret.clone()).await.unwrap();
    let json = credential(&mut SoftPasskey::new(true), &again);
    finish(&mut proxy, &again.ceremony_id, json).await.unwrap();

    // An outage: UNAVAILABLE, and the ceremony is burned too (audited).
    let secret = create_link(&mut admin, "bob", pb::DeviceType::Any).await;
    let begun = begin_link(&mut proxy, secret).await.unwrap();
    let json = credential(&mut SoftPasskey::new(true), &begun);
    stack.stop_policy().await;
    let unavailable = finish(&mut proxy, &begun.ceremony_id, json)
        .await
        .unwrap_err();
    assert_eq!(unavailable.code(), Code::Unavailable, "{unavailable:?}");
    assert_eq!(ceremonies(&stack, &begun.ceremony_id).await, 0, "burned");
    let audit = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "register_device".into(),
            result: "denied".into(),
            user: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(audit.len(), 1, "{audit:?}");
}

/// The device's kind is the ceremony row's `device_type`, whatever the stored state's JSON
/// says, and an `enclave_only` device is stored only under an attestation verified to a
/// configured root: rewriting a stored `any` ceremony (its state's variant or its column)
/// never records an unproven `enclave_only` device.
async fn a_tampered_ceremony_never_records_an_unproven_enclave_device(backend: Backend) {
    let (mut token, trusted) = SoftToken::new(true).unwrap();
    let stack = TestStack::builder(backend)
        .trusted_root(&trusted)
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    // Renaming the state's variant only makes it unreadable (the two states differ).
    let secret = create_link(&mut admin, "alice", pb::DeviceType::Any).await;
    let begun = begin_link(&mut proxy, secret.clone()).await.unwrap();
    stack
        .database
        .execute(&format!(
            "UPDATE ceremonies SET state = REPLACE(state, '{{\"Any\":', '{{\"EnclaveOnly\":') WHERE id = '{}'",
            begun.ceremony_id
        ))
        .await;
    let json = credential(&mut token, &begun);
    let unreadable = finish(&mut proxy, &begun.ceremony_id, json)
        .await
        .unwrap_err();
    assert!(
        unreadable.message().contains("unreadable"),
        "{unreadable:?}"
    );
    // A real enclave_only state (another user's ceremony) copied into the `any` ceremony:
    // the relying party verifies the stricter way, and the device is recorded as what the
    // column says, `any`.
    let enclave = create_link(&mut admin, "carol", pb::DeviceType::EnclaveOnly).await;
    let enclave = begin_link(&mut proxy, enclave).await.unwrap();
    let begun = begin_link(&mut proxy, secret).await.unwrap();
    stack
        .database
        .execute(&format!(
            "UPDATE ceremonies SET state = (SELECT state FROM ceremonies WHERE id = '{}') WHERE id = '{}'",
            enclave.ceremony_id, begun.ceremony_id
        ))
        .await;
    let json = credential(&mut token, &enclave);
    let device = finish(&mut proxy, &begun.ceremony_id, json).await.unwrap();
    assert_eq!(device.device_type, pb::DeviceType::Any as i32, "{device:?}");
    assert_eq!(device.user, "alice");

    // The column says enclave_only, the state `any` (no attestation asked for, none
    // verified): refused, audited and burned instead of stored as enclave_only.
    let secret = create_link(&mut admin, "bob", pb::DeviceType::Any).await;
    let begun = begin_link(&mut proxy, secret).await.unwrap();
    stack
        .database
        .execute(&format!(
            "UPDATE ceremonies SET device_type = 'enclave_only' WHERE id = '{}'",
            begun.ceremony_id
        ))
        .await;
    let json = credential(&mut SoftPasskey::new(true), &begun);
    let refused = finish(&mut proxy, &begun.ceremony_id, json)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("ATTESTATION_NOT_TRUSTED"));
    assert_eq!(ceremonies(&stack, &begun.ceremony_id).await, 0, "burned");
    let bobs = admin
        .list_devices(pb::ListDevicesRequest {
            user: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert!(bobs.is_empty(), "{bobs:?}");
}

async fn a_counter_that_does_not_advance_is_refused_as_a_clone(backend: Backend) {
    let trusting = realm_policy("trusting", "acme", &[("require_device_approval", "false")]);
    let stack = TestStack::with_policies(backend, [trusting]).await;
    let mut proxy = stack.proxy();
    let mut authenticator = SoftPasskey::new(true);
    let begun = begin_self(&mut proxy, "alice").await;
    let json = credential(&mut authenticator, &begun);
    let device = finish(&mut proxy, &begun.ceremony_id, json).await.unwrap();

    // Two ceremonies at once: the authenticator signs the first with counter 1 and the
    // second with counter 2. Once 2 is recorded, the older assertion (1) is what a clone
    // replaying an earlier state would send: refused, and audited.
    let one = begin_authentication(&mut proxy, "alice").await.unwrap();
    let two = begin_authentication(&mut proxy, "alice").await.unwrap();
    let older = assertion(&mut authenticator, &one);
    let newer = assertion(&mut authenticator, &two);
    finish_authentication(&mut proxy, &two.ceremony_id, newer)
        .await
        .unwrap();
    let refused = finish_authentication(&mut proxy, &one.ceremony_id, older)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        reason(&refused).as_deref(),
        Some("POSSIBLE_CLONED_AUTHENTICATOR")
    );
    let audit = stack
        .admin()
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "authenticate_device".into(),
            result: "denied".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        audit
            .iter()
            .any(|event| event.subject == device.id && event.reason.contains("cloned")),
        "{audit:?}"
    );
    // The next genuine use goes on.
    let three = begin_authentication(&mut proxy, "alice").await.unwrap();
    let next = assertion(&mut authenticator, &three);
    finish_authentication(&mut proxy, &three.ceremony_id, next)
        .await
        .unwrap();
}

async fn trust_anchors_come_from_configuration_never_from_the_ceremony(backend: Backend) {
    let (_, trusted) = SoftToken::new(true).unwrap();
    let (mut foreign_token, foreign) = SoftToken::new(true).unwrap();
    let mut stack = TestStack::builder(backend)
        .trusted_root(&trusted)
        .start()
        .await;
    // A second replica that trusts another root: its ceremony states name that root, as
    // a state written into the database by an attacker would.
    let roots = tempfile::tempdir().unwrap();
    let foreign_pem = roots.path().join("foreign.pem");
    {
        use crypto_glue::der::EncodePem;
        let pem = foreign
            .to_pem(crypto_glue::der::pem::LineEnding::LF)
            .unwrap();
        std::fs::write(&foreign_pem, pem).unwrap();
    }
    let other = stack
        .add_device(|config| config.webauthn.trusted_roots = vec![foreign_pem.clone()])
        .await;
    let mut admin = stack.admin();
    let mut proxy = stack.proxy();
    let mut other_proxy = stack.device_on(other, enroll_shared::auth::Role::Proxy);

    let secret = create_link(&mut admin, "alice", pb::DeviceType::EnclaveOnly).await;
    let begun = begin_link(&mut other_proxy, secret).await.unwrap();
    let json = credential(&mut foreign_token, &begun);
    // Finished on the replica whose configuration trusts only the other root: refused.
    let refused = finish(&mut proxy, &begun.ceremony_id, json)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("ATTESTATION_NOT_TRUSTED"));
}

async fn revocation_never_waits_for_the_policy_service(backend: Backend) {
    let only_totp = policy("otp-only", &[("token_types", "totp")]);
    let mut stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let begun = begin_self(&mut proxy, "alice").await;
    let json = credential(&mut SoftPasskey::new(true), &begun);
    let device = finish(&mut proxy, &begun.ceremony_id, json).await.unwrap();
    let link = admin
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "acme".into(),
            user: "bob".into(),
            created_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // A policy that excludes webauthn still lets an admin revoke.
    stack.create_policy(only_totp).await;
    until_policy(&stack, |answer| !answer.denials.is_empty()).await;
    let revoked_link = admin
        .revoke_enrollment_link(pb::RevokeEnrollmentLinkRequest {
            id: link.id.clone(),
            revoked_by: "secops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked_link.state, pb::LinkState::Revoked as i32);

    // And so does an outage of the policy service.
    stack.stop_policy().await;
    let revoked = admin
        .revoke_device(pb::RevokeDeviceRequest {
            id: device.id.clone(),
            revoked_by: "secops".into(),
            reason: "stolen".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state, pb::DeviceState::Revoked as i32);
    let audit = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "revoke_device".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        audit[0].reason.contains("no policy decision"),
        "{:?}",
        audit[0]
    );
    // Granting stays fail-closed.
    let refused = admin
        .approve_device(pb::ApproveDeviceRequest {
            id: device.id,
            approved_by: "secops".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
}

on_both_backends!(
    a_pending_device_is_never_enrolled_and_never_authenticates,
    approval_is_fixed_when_registration_begins,
    links_are_held_to_the_current_device_type_policy,
    a_refused_registration_burns_its_ceremony,
    a_counter_that_does_not_advance_is_refused_as_a_clone,
    trust_anchors_come_from_configuration_never_from_the_ceremony,
    revocation_never_waits_for_the_policy_service,
    a_denial_or_outage_at_finish_burns_the_ceremony_not_the_link,
    a_tampered_ceremony_never_records_an_unproven_enclave_device,
);
