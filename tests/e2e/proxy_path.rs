//! The proxy's path fails closed (issue 18, findings 1 and 4), over real gRPC on both
//! backends: a client address that is no IP address, or none while a policy matches on
//! client networks, is INVALID_ARGUMENT instead of a way around the model rules; while the
//! policy service is down CheckEnrollment and device authentication decide from the last
//! policy set it streamed (persisted: a replica started during the outage has it), and with
//! no set known no device counts; a device registered without an admin's link waits for
//! approval unless a policy says otherwise; authentication refuses devices of a flagged
//! model and devices the current model rules refuse.
use std::time::{Duration, Instant};

use enroll_e2e::{
    Backend, DEVICE_POLICY_DEPENDENCY, DeviceClient, TEST_ORIGIN, TestStack, assert_invalid_field,
    audit_events_by_action, create, realm_policy, register_by_link_with,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use enroll_shared::status::reason;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs_proto::{CreationChallengeResponse, RequestChallengeResponse};

/// The proxy's client address in these tests.
const CLIENT: &str = "192.0.2.7";

async fn finish_registration(
    proxy: &mut DeviceClient,
    authenticator: &mut SoftPasskey,
    begun: pb::BeginDeviceRegistrationResponse,
) -> pb::Device {
    let options: CreationChallengeResponse =
        serde_json::from_str(&begun.creation_options_json).unwrap();
    let credential = authenticator
        .do_registration(Url::parse(TEST_ORIGIN).unwrap(), options)
        .expect("the soft passkey registers");
    proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&credential).unwrap(),
            user_agent: "soft-authenticator".into(),
            client_ip: CLIENT.into(),
        })
        .await
        .expect("finish registration")
        .into_inner()
        .device
        .expect("the registered device")
}

/// A whole authentication of `realm`/`user` with `authenticator`.
async fn authenticate(
    proxy: &mut DeviceClient,
    authenticator: &mut SoftPasskey,
    realm: &str,
    user: &str,
) -> Result<pb::Device, tonic::Status> {
    let begun = proxy
        .begin_device_authentication(pb::BeginDeviceAuthenticationRequest {
            realm: realm.into(),
            user: user.into(),
            client_ip: CLIENT.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let options: RequestChallengeResponse =
        serde_json::from_str(&begun.request_options_json).unwrap();
    let assertion = authenticator
        .do_authentication(Url::parse(TEST_ORIGIN).unwrap(), options)
        .unwrap();
    proxy
        .finish_device_authentication(pb::FinishDeviceAuthenticationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&assertion).unwrap(),
            client_ip: CLIENT.into(),
        })
        .await
        .map(|answer| answer.into_inner())
}

async fn check(
    proxy: &mut DeviceClient,
    realm: &str,
    user: &str,
    client_ip: &str,
) -> Result<pb::CheckEnrollmentResponse, tonic::Status> {
    proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: realm.into(),
            user: user.into(),
            required_device_type: pb::DeviceType::Any as i32,
            client_ip: client_ip.into(),
            ..Default::default()
        })
        .await
        .map(|answer| answer.into_inner())
}

fn status_of(answer: &pb::CheckEnrollmentResponse) -> pb::EnrollmentStatus {
    pb::EnrollmentStatus::try_from(answer.status).unwrap()
}

/// Asks until CheckEnrollment answers `wanted` (a policy change reaches the device service
/// within a second), then returns that answer.
async fn until_status(
    proxy: &mut DeviceClient,
    realm: &str,
    user: &str,
    wanted: pb::EnrollmentStatus,
) -> pb::CheckEnrollmentResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = check(proxy, realm, user, CLIENT).await.unwrap();
        if status_of(&answer) == wanted {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{realm}/{user} still {:?}: {:?}",
            status_of(&answer),
            answer.reasons
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn policy_outage(stack: &mut TestStack) {
    stack.stop_policy().await;
    stack
        .device()
        .wait_for_health(
            DEVICE_POLICY_DEPENDENCY,
            ServingStatus::NotServing,
            Duration::from_secs(10),
        )
        .await;
}

/// Finding 1: a realm's model rule (minimum certification) refuses a passkey whose
/// attestation was not verified. A client address the policy service would refuse, or an
/// outage, used to turn that into ENROLLED.
async fn model_rules_hold_on_a_bad_address_and_through_an_outage(backend: Backend) {
    let mut stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let (mut alices, mut bobs) = (SoftPasskey::new(true), SoftPasskey::new(true));
    register_by_link_with(&mut admin, &mut proxy, &mut alices, "acme", "alice").await;
    register_by_link_with(&mut admin, &mut proxy, &mut bobs, "lab", "bob").await;
    create(
        &mut stack.policy_admin(),
        realm_policy(
            "certified",
            "acme",
            &[("webauthn_min_certification", "FIDO_CERTIFIED_L1")],
        ),
    )
    .await
    .unwrap();
    let refused = until_status(
        &mut proxy,
        "acme",
        "alice",
        pb::EnrollmentStatus::TypeMismatch,
    )
    .await;
    assert!(
        refused.reasons[0].contains("certified"),
        "{:?}",
        refused.reasons
    );
    for bad in ["1.2.3.4:443", "localhost", "10.0.0.1/8", "::1%eth0"] {
        assert_invalid_field(check(&mut proxy, "acme", "alice", bad).await, "client_ip");
    }
    let authenticated = authenticate(&mut proxy, &mut alices, "acme", "alice")
        .await
        .unwrap_err();
    assert_eq!(authenticated.code(), Code::FailedPrecondition);
    assert_eq!(
        reason(&authenticated).as_deref(),
        Some("DEVICE_MODEL_REFUSED")
    );
    authenticate(&mut proxy, &mut bobs, "lab", "bob")
        .await
        .expect("a realm without model rules authenticates");

    // The outage: the last policy set streamed decides, and says so.
    policy_outage(&mut stack).await;
    let during = check(&mut proxy, "acme", "alice", CLIENT).await.unwrap();
    assert_eq!(status_of(&during), pb::EnrollmentStatus::TypeMismatch);
    assert!(
        during.reasons[0].contains("certified")
            && during
                .reasons
                .iter()
                .any(|r| r.contains("decided from the last policy set received")),
        "{:?}",
        during.reasons
    );
    let bob = check(&mut proxy, "lab", "bob", CLIENT).await.unwrap();
    assert_eq!(status_of(&bob), pb::EnrollmentStatus::Enrolled, "{bob:?}");
    let refused = authenticate(&mut proxy, &mut alices, "acme", "alice")
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("DEVICE_MODEL_REFUSED"));
    authenticate(&mut proxy, &mut bobs, "lab", "bob")
        .await
        .expect("everyone else keeps working through the outage");
    let audited = audit_events_by_action(&mut admin, "authenticate_device").await;
    assert!(
        audited
            .iter()
            .filter(|event| event.result == "denied" && event.user == "alice")
            .count()
            >= 2,
        "{audited:?}"
    );

    // A replica started during the outage has the stored set.
    let late = stack.add_device(|_| {}).await;
    let mut late_proxy = stack.device_on(late, Role::Proxy);
    let late_answer = check(&mut late_proxy, "acme", "alice", CLIENT)
        .await
        .unwrap();
    assert_eq!(status_of(&late_answer), pb::EnrollmentStatus::TypeMismatch);
    assert_eq!(
        status_of(&check(&mut late_proxy, "lab", "bob", CLIENT).await.unwrap()),
        pb::EnrollmentStatus::Enrolled
    );

    // No set known at all (none was ever stored): no device counts, and the reason names
    // the outage.
    stack
        .database
        .execute("DELETE FROM policy_set_snapshots")
        .await;
    let blind = stack.add_device(|_| {}).await;
    let mut blind_proxy = stack.device_on(blind, Role::Proxy);
    for (realm, user) in [("acme", "alice"), ("lab", "bob")] {
        let answer = check(&mut blind_proxy, realm, user, CLIENT).await.unwrap();
        assert_eq!(
            status_of(&answer),
            pb::EnrollmentStatus::TypeMismatch,
            "{realm}/{user}"
        );
        assert!(
            answer.reasons[0].contains("cannot be checked")
                && answer.reasons[0].contains("no policy set has been received"),
            "{:?}",
            answer.reasons
        );
    }
    let blind_auth = authenticate(&mut blind_proxy, &mut bobs, "lab", "bob")
        .await
        .unwrap_err();
    assert_eq!(reason(&blind_auth).as_deref(), Some("DEVICE_MODEL_REFUSED"));
}

/// Finding 1: without a client address, a policy restricted to client networks used to be
/// skipped silently. It is now required for the subjects such a policy matches, at both
/// services, and decided from the last known set during an outage alike.
async fn the_client_address_is_required_while_policies_match_on_networks(backend: Backend) {
    let mut office = realm_policy(
        "office",
        "acme",
        &[("webauthn_device_type", "enclave_only")],
    );
    office.clients = vec!["10.0.0.0/8".into()];
    let mut stack = TestStack::builder(backend)
        .with_policy(office)
        .start()
        .await;
    let mut proxy = stack.proxy();
    assert_invalid_field(check(&mut proxy, "acme", "alice", "").await, "client_ip");
    let inside = check(&mut proxy, "acme", "alice", "10.1.2.3")
        .await
        .unwrap();
    assert!(
        inside
            .reasons
            .iter()
            .any(|r| r.contains("enclave_only") && r.contains("office")),
        "{:?}",
        inside.reasons
    );
    check(&mut proxy, "acme", "alice", "192.0.2.1")
        .await
        .expect("outside the network: the policy does not match");
    check(&mut proxy, "lab", "alice", "")
        .await
        .expect("no policy of that realm matches on networks");
    let mut policies = stack.policy_service();
    let status = policies
        .evaluate_enrollment(policy_pb::EvaluateEnrollmentRequest {
            realm: "acme".into(),
            user: "alice".into(),
            action: policy_pb::Action::RegisterDevice as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("office"), "{status:?}");
    assert_eq!(
        enroll_shared::status::field(&status).as_deref(),
        Some("client_ip")
    );

    policy_outage(&mut stack).await;
    assert_invalid_field(check(&mut proxy, "acme", "alice", "").await, "client_ip");
    let inside = check(&mut proxy, "acme", "alice", "10.1.2.3")
        .await
        .unwrap();
    assert!(
        inside.reasons.iter().any(|r| r.contains("office")),
        "{:?}",
        inside.reasons
    );
}

/// Finding 4: with no policy saying otherwise, a device registered without an admin's link
/// waits for approval (a stolen proxy key cannot register an approved passkey); an admin's
/// link stays pre-approved; a policy can allow unapproved self-registration.
async fn self_registered_devices_wait_for_approval_by_default(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let mut mallorys = SoftPasskey::new(true);
    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            realm: "acme".into(),
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let device = finish_registration(&mut proxy, &mut mallorys, begun).await;
    assert_eq!(device.state, pb::DeviceState::PendingApproval as i32);
    let answer = check(&mut proxy, "acme", "alice", CLIENT).await.unwrap();
    assert_eq!(status_of(&answer), pb::EnrollmentStatus::PendingApproval);
    let refused = authenticate(&mut proxy, &mut mallorys, "acme", "alice")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    let mut alices = SoftPasskey::new(true);
    let by_link = register_by_link_with(&mut admin, &mut proxy, &mut alices, "acme", "bea").await;
    assert_eq!(by_link.state, pb::DeviceState::Approved as i32);

    create(
        &mut stack.policy_admin(),
        realm_policy("trusting", "lab", &[("require_device_approval", "false")]),
    )
    .await
    .unwrap();
    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            realm: "lab".into(),
            user: "carl".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let carls = finish_registration(&mut proxy, &mut SoftPasskey::new(true), begun).await;
    assert_eq!(carls.state, pb::DeviceState::Approved as i32);
}

/// Finding 4: a device of a model the FIDO metadata flagged compromised no longer
/// authenticates (it already did not count in CheckEnrollment).
async fn flagged_devices_do_not_authenticate(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let mut passkey = SoftPasskey::new(true);
    let device = register_by_link_with(&mut admin, &mut proxy, &mut passkey, "acme", "dana").await;
    authenticate(&mut proxy, &mut passkey, "acme", "dana")
        .await
        .expect("authenticates before the flag");
    // The flag as the metadata refresher sets it (its own tests cover how a BLOB sets it).
    stack
        .database
        .execute(&format!(
            "UPDATE devices SET model_compromise = 'model Soft Passkey is REVOKED' WHERE id = '{}'",
            device.id
        ))
        .await;
    let refused = authenticate(&mut proxy, &mut passkey, "acme", "dana")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        reason(&refused).as_deref(),
        Some("DEVICE_MODEL_COMPROMISED")
    );
    assert!(refused.message().contains("REVOKED"), "{refused:?}");
    let audited = audit_events_by_action(&mut admin, "authenticate_device").await;
    assert!(
        audited
            .iter()
            .any(|event| event.result == "denied" && event.reason.contains("compromised")),
        "{audited:?}"
    );
}

enroll_e2e::on_both_backends!(
    model_rules_hold_on_a_bad_address_and_through_an_outage,
    the_client_address_is_required_while_policies_match_on_networks,
    self_registered_devices_wait_for_approval_by_default,
    flagged_devices_do_not_authenticate,
);
