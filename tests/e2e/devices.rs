//! WebAuthn devices over gRPC with soft authenticators: enrollment links (trust on first
//! use, single use under a 50-way race), verified enclave_only attestation, self-service
//! registration with approval, authentication, CheckEnrollment, and the failure paths
//! (expired ceremony, replayed challenge, wrong origin, reused credential, fail closed).
use std::time::Duration;

use enroll_e2e::{
    Backend, DEVICE_POLICY_DEPENDENCY, DeviceClient, TEST_REDIRECT_PREFIX, TestStack,
    link_secret as secret_of, realm_policy,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::status::reason;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_rs_proto::{CreationChallengeResponse, RequestChallengeResponse};

const ORIGIN: &str = "http://localhost:8080";

fn link_request(user: &str, device_type: pb::DeviceType) -> pb::CreateEnrollmentLinkRequest {
    pb::CreateEnrollmentLinkRequest {
        realm: "acme".into(),
        user: user.into(),
        device_type: device_type as i32,
        created_by: "console-admin".into(),
        ..Default::default()
    }
}

async fn begin_by_link(
    proxy: &mut DeviceClient,
    secret: &str,
) -> pb::BeginDeviceRegistrationResponse {
    proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: secret.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// What the browser would send: the authenticator's answer to the creation options.
fn register_with(
    authenticator: &mut impl WebauthnAuthenticator,
    begun: &pb::BeginDeviceRegistrationResponse,
    origin: &str,
) -> String {
    let options: CreationChallengeResponse =
        serde_json::from_str(&begun.creation_options_json).unwrap();
    let credential = authenticator
        .do_registration(Url::parse(origin).unwrap(), options)
        .expect("soft authenticator registers");
    serde_json::to_string(&credential).unwrap()
}

fn finish(
    begun: &pb::BeginDeviceRegistrationResponse,
    credential_json: String,
) -> pb::FinishDeviceRegistrationRequest {
    pb::FinishDeviceRegistrationRequest {
        ceremony_id: begun.ceremony_id.clone(),
        credential_json,
        user_agent: "soft-authenticator".into(),
        client_ip: "192.0.2.7".into(),
    }
}

/// Begins an authentication for `user` of `acme` and signs its challenge: the ceremony id
/// and the assertion the browser would send.
async fn signed_assertion(
    proxy: &mut DeviceClient,
    authenticator: &mut impl WebauthnAuthenticator,
    user: &str,
) -> (String, String) {
    let begun = proxy
        .begin_device_authentication(pb::BeginDeviceAuthenticationRequest {
            realm: "acme".into(),
            user: user.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let options: RequestChallengeResponse =
        serde_json::from_str(&begun.request_options_json).unwrap();
    let assertion = authenticator
        .do_authentication(Url::parse(ORIGIN).unwrap(), options)
        .unwrap();
    (
        begun.ceremony_id,
        serde_json::to_string(&assertion).unwrap(),
    )
}

async fn check(
    proxy: &mut DeviceClient,
    user: &str,
    required: pb::DeviceType,
    require_approved: bool,
) -> pb::CheckEnrollmentResponse {
    proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "acme".into(),
            user: user.into(),
            required_device_type: required as i32,
            require_approved,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn status_of(response: &pb::CheckEnrollmentResponse) -> pb::EnrollmentStatus {
    pb::EnrollmentStatus::try_from(response.status).unwrap()
}

async fn a_link_registers_one_approved_device_and_is_spent(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    assert_eq!(
        status_of(&check(&mut proxy, "alice", pb::DeviceType::Any, true).await),
        pb::EnrollmentStatus::NotEnrolled
    );
    let mut request = link_request("Alice", pb::DeviceType::Any);
    request.redirect_url = format!("{TEST_REDIRECT_PREFIX}welcome");
    let link = admin
        .create_enrollment_link(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.state, pb::LinkState::Active as i32);
    assert_eq!(link.user, "alice");
    assert!(link.url.starts_with("http://localhost:8080/enroll/"));
    let secret = secret_of(&link);
    assert_eq!(secret.len(), 43, "256-bit secret, base64url");

    let begun = begin_by_link(&mut proxy, &secret).await;
    assert_eq!(
        (begun.realm.as_str(), begun.user.as_str()),
        ("acme", "alice")
    );
    assert_eq!(begun.device_type, pb::DeviceType::Any as i32);
    let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
    let finished = proxy
        .finish_device_registration(finish(&begun, credential))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        finished.redirect_url,
        format!("{TEST_REDIRECT_PREFIX}welcome")
    );
    let registered = finished.device.unwrap();
    assert_eq!(registered.state, pb::DeviceState::Approved as i32);
    assert_eq!(registered.enrollment_link_id, link.id);
    assert_eq!(registered.approved_by, "console-admin");
    assert_eq!(registered.user, "alice");

    let enrolled = check(&mut proxy, "ALICE", pb::DeviceType::Any, true).await;
    assert_eq!(status_of(&enrolled), pb::EnrollmentStatus::Enrolled);
    assert_eq!(enrolled.device.unwrap().id, registered.id);
    let mismatch = check(&mut proxy, "alice", pb::DeviceType::EnclaveOnly, true).await;
    assert_eq!(status_of(&mismatch), pb::EnrollmentStatus::TypeMismatch);

    // Spent: a second begin with the same secret is refused, and so is an unknown secret.
    let again = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(
        again.message().contains("already used"),
        "{}",
        again.message()
    );
    let unknown = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: "A".repeat(43),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let links = admin
        .list_enrollment_links(pb::ListEnrollmentLinksRequest {
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].state, pb::LinkState::Used as i32);
    assert_eq!(links[0].device_id, registered.id);
    assert!(links[0].url.is_empty(), "the secret is never listed");

    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|event| event.action.as_str()).collect();
    assert!(actions.contains(&"create_link"), "{actions:?}");
    assert!(actions.contains(&"register_device"), "{actions:?}");
    assert!(
        events.iter().any(|event| event.action == "register_device"
            && event.result == "denied"
            && event.subject == link.id),
        "the spent link's refusal is audited under its id: {events:?}"
    );
    assert!(
        !format!("{events:?}").contains(&secret),
        "no secret in the audit trail"
    );
}

async fn link_terms_follow_the_allow_list_and_the_policy(backend: Backend) {
    let strict = [
        ("enrollment_link_ttl_hours", "2"),
        ("webauthn_device_type", "enclave_only"),
    ];
    let stack =
        TestStack::with_policies(backend, [realm_policy("strict-links", "acme", &strict)]).await;
    let mut admin = stack.admin();

    let mut evil = link_request("bob", pb::DeviceType::Unspecified);
    evil.redirect_url = "https://app.example.com.evil.test/".into();
    let refused = admin.create_enrollment_link(evil).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("redirect_url"),
        "{}",
        refused.message()
    );

    let mut long = link_request("bob", pb::DeviceType::Unspecified);
    long.ttl = Some(prost_types::Duration {
        seconds: 3 * 3600,
        nanos: 0,
    });
    let refused = admin.create_enrollment_link(long).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("strict-links"),
        "{}",
        refused.message()
    );

    let weaker = admin
        .create_enrollment_link(link_request("bob", pb::DeviceType::Any))
        .await
        .unwrap_err();
    assert_eq!(weaker.code(), Code::PermissionDenied);
    assert_eq!(reason(&weaker).as_deref(), Some("DEVICE_TYPE_NOT_ALLOWED"));

    let link = admin
        .create_enrollment_link(link_request("bob", pb::DeviceType::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        link.device_type,
        pb::DeviceType::EnclaveOnly as i32,
        "the policy's type"
    );
    let lifetime = link.expire_time.unwrap().seconds - link.create_time.unwrap().seconds;
    assert_eq!(lifetime, 2 * 3600);

    // A retried request returns the first link (same secret), never a second one.
    let mut retried = link_request("bob", pb::DeviceType::Unspecified);
    retried.request_id = "console-42".into();
    let first = admin
        .create_enrollment_link(retried.clone())
        .await
        .unwrap()
        .into_inner();
    let again = admin
        .create_enrollment_link(retried)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (first.id.as_str(), first.url.as_str()),
        (again.id.as_str(), again.url.as_str())
    );
    let bobs = admin
        .list_enrollment_links(pb::ListEnrollmentLinksRequest {
            user: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(bobs.len(), 2, "the policy-typed link and the retried one");

    let mut missing = link_request("", pb::DeviceType::Any);
    missing.created_by = String::new();
    let refused = admin.create_enrollment_link(missing).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    let revoked = admin
        .revoke_enrollment_link(pb::RevokeEnrollmentLinkRequest {
            id: link.id.clone(),
            revoked_by: "console-admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state, pb::LinkState::Revoked as i32);
    let mut proxy = stack.proxy();
    let spent = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: secret_of(&link),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(spent.code(), Code::FailedPrecondition);
    assert!(spent.message().contains("revoked"), "{}", spent.message());
}

async fn enclave_only_needs_a_trusted_attestation(backend: Backend) {
    let (mut token, ca) = SoftToken::new(true).unwrap();
    let mut stack = TestStack::builder(backend).trusted_root(&ca).start().await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    // A synced passkey (self attestation) is refused, and the link stays usable.
    let link = admin
        .create_enrollment_link(link_request("carol", pb::DeviceType::EnclaveOnly))
        .await
        .unwrap()
        .into_inner();
    let begun = begin_by_link(&mut proxy, &secret_of(&link)).await;
    let passkey = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
    let refused = proxy
        .finish_device_registration(finish(&begun, passkey))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        matches!(
            reason(&refused).as_deref(),
            Some("ATTESTATION_NOT_TRUSTED" | "BACKUP_ELIGIBLE_REFUSED")
        ),
        "{refused:?}"
    );
    assert_eq!(
        status_of(&check(&mut proxy, "carol", pb::DeviceType::Any, false).await),
        pb::EnrollmentStatus::NotEnrolled
    );

    // An attested token chained to the trusted root passes, on the same link.
    let begun = begin_by_link(&mut proxy, &secret_of(&link)).await;
    let attested = register_with(&mut token, &begun, ORIGIN);
    let registered = proxy
        .finish_device_registration(finish(&begun, attested))
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap();
    assert_eq!(registered.device_type, pb::DeviceType::EnclaveOnly as i32);
    assert!(!registered.backup_eligible);
    let enrolled = check(&mut proxy, "carol", pb::DeviceType::EnclaveOnly, true).await;
    assert_eq!(status_of(&enrolled), pb::EnrollmentStatus::Enrolled);

    // Without trusted roots enclave_only cannot even begin.
    let plain = stack.add_device(|_| {}).await;
    let mut plain_admin = stack.device_on(plain, Role::Admin);
    let mut plain_proxy = stack.device_on(plain, Role::Proxy);
    let link = plain_admin
        .create_enrollment_link(link_request("dave", pb::DeviceType::EnclaveOnly))
        .await
        .unwrap()
        .into_inner();
    let refused = plain_proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: secret_of(&link),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("trusted_roots"),
        "{}",
        refused.message()
    );
}

async fn self_registration_waits_for_approval_and_authenticates(backend: Backend) {
    let approval = realm_policy("approval", "acme", &[("require_device_approval", "true")]);
    let stack = TestStack::with_policies(backend, [approval]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    let before = check(&mut proxy, "erin", pb::DeviceType::Any, true).await;
    assert!(before.can_self_enroll, "{:?}", before.reasons);
    assert!(
        before
            .reasons
            .iter()
            .any(|reason| reason.contains("approval")),
        "{:?}",
        before.reasons
    );

    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            realm: "acme".into(),
            user: "erin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut authenticator = SoftPasskey::new(true);
    let credential = register_with(&mut authenticator, &begun, ORIGIN);
    let pending = proxy
        .finish_device_registration(finish(&begun, credential))
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap();
    assert_eq!(pending.state, pb::DeviceState::PendingApproval as i32);
    assert_eq!(
        status_of(&check(&mut proxy, "erin", pb::DeviceType::Any, true).await),
        pb::EnrollmentStatus::PendingApproval
    );
    // Pending is never enrolled, even for a caller that does not ask about approval.
    assert_eq!(
        status_of(&check(&mut proxy, "erin", pb::DeviceType::Any, false).await),
        pb::EnrollmentStatus::PendingApproval
    );
    let approved = admin
        .approve_device(pb::ApproveDeviceRequest {
            id: pending.id.clone(),
            approved_by: "secops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.state, pb::DeviceState::Approved as i32);
    assert_eq!(approved.approved_by, "secops");
    assert_eq!(
        status_of(&check(&mut proxy, "erin", pb::DeviceType::Any, true).await),
        pb::EnrollmentStatus::Enrolled
    );

    // Authentication: the assertion verifies once; replaying it is refused.
    let (ceremony_id, assertion) = signed_assertion(&mut proxy, &mut authenticator, "erin").await;
    let used = proxy
        .finish_device_authentication(pb::FinishDeviceAuthenticationRequest {
            ceremony_id: ceremony_id.clone(),
            credential_json: assertion.clone(),
            client_ip: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(used.id, pending.id);
    assert!(used.last_used_time.is_some());
    let replayed = proxy
        .finish_device_authentication(pb::FinishDeviceAuthenticationRequest {
            ceremony_id,
            credential_json: assertion,
            client_ip: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::FailedPrecondition);

    // A second authentication within the minute keeps the recorded time of use (it is
    // recorded at a one-minute grain, so authentications do not all bump the change counter).
    let (ceremony_id, assertion) = signed_assertion(&mut proxy, &mut authenticator, "erin").await;
    let again = proxy
        .finish_device_authentication(pb::FinishDeviceAuthenticationRequest {
            ceremony_id,
            credential_json: assertion,
            client_ip: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.last_used_time, used.last_used_time);

    // Revoked: no authentication, CheckEnrollment says REVOKED for that credential.
    admin
        .revoke_device(pb::RevokeDeviceRequest {
            id: pending.id.clone(),
            revoked_by: "secops".into(),
            reason: "laptop stolen".into(),
        })
        .await
        .unwrap();
    let none = proxy
        .begin_device_authentication(pb::BeginDeviceAuthenticationRequest {
            realm: "acme".into(),
            user: "erin".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::FailedPrecondition);
    let revoked = proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "acme".into(),
            user: "erin".into(),
            credential_id: pending.credential_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&revoked), pb::EnrollmentStatus::Revoked);
    let listed = admin
        .list_devices(pb::ListDevicesRequest {
            realm: "acme".into(),
            state: pb::DeviceState::Revoked as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(listed.len(), 1);
    let fetched = admin
        .get_device(pb::GetDeviceRequest {
            id: pending.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.state, pb::DeviceState::Revoked as i32);
}

async fn fifty_racing_finishes_on_one_link_register_one_device(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let link = admin
        .create_enrollment_link(link_request("frank", pb::DeviceType::Any))
        .await
        .unwrap()
        .into_inner();
    let secret = secret_of(&link);
    let mut finishes = Vec::new();
    for _ in 0..50 {
        let begun = begin_by_link(&mut proxy, &secret).await;
        let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
        finishes.push(finish(&begun, credential));
    }
    let tasks: Vec<_> = finishes
        .into_iter()
        .map(|request| {
            let mut proxy = proxy.clone();
            tokio::spawn(async move { proxy.finish_device_registration(request).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(won, 1);
    let devices = admin
        .list_devices(pb::ListDevicesRequest {
            user: "frank".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devices.len(), 1);
}

async fn a_ceremony_begun_on_one_instance_finishes_on_another(backend: Backend) {
    let stack = TestStack::builder(backend).device_replicas(2).start().await;
    let (mut admin, mut proxy_a) = (stack.admin(), stack.proxy());
    let mut proxy_b = stack.device_on(1, Role::Proxy);
    let link = admin
        .create_enrollment_link(link_request("gina", pb::DeviceType::Any))
        .await
        .unwrap()
        .into_inner();
    let begun = begin_by_link(&mut proxy_a, &secret_of(&link)).await;
    let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
    let registered = proxy_b
        .finish_device_registration(finish(&begun, credential))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.device.unwrap().user, "gina");
}

async fn expired_replayed_foreign_and_duplicate_credentials_are_refused(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let self_service = |user: &str| pb::BeginDeviceRegistrationRequest {
        realm: "acme".into(),
        user: user.into(),
        ..Default::default()
    };

    // Expired: the stored ceremony is past its expire time.
    let begun = proxy
        .begin_device_registration(self_service("hank"))
        .await
        .unwrap()
        .into_inner();
    let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
    stack
        .database
        .execute("UPDATE ceremonies SET expire_time = create_time")
        .await;
    let expired = proxy
        .finish_device_registration(finish(&begun, credential))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::FailedPrecondition);
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );

    // Replayed: the same answer twice registers once.
    let begun = proxy
        .begin_device_registration(self_service("hank"))
        .await
        .unwrap()
        .into_inner();
    let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
    proxy
        .finish_device_registration(finish(&begun, credential.clone()))
        .await
        .unwrap();
    let replayed = proxy
        .finish_device_registration(finish(&begun, credential))
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::FailedPrecondition);

    // Wrong origin: the client data names a site that is not ours.
    let begun = proxy
        .begin_device_registration(self_service("ivan"))
        .await
        .unwrap()
        .into_inner();
    let options: CreationChallengeResponse =
        serde_json::from_str(&begun.creation_options_json).unwrap();
    // A subdomain the authenticator accepts for the RP id, but not an allowed origin.
    let foreign = SoftPasskey::new(true)
        .do_registration(Url::parse("https://phish.localhost").unwrap(), options)
        .map(|credential| serde_json::to_string(&credential).unwrap())
        .expect("the soft authenticator signs for a subdomain of the RP id");
    let refused = proxy
        .finish_device_registration(finish(&begun, foreign))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        reason(&refused).as_deref(),
        Some("WEBAUTHN_VERIFICATION_FAILED")
    );

    // A credential id already registered to another user is refused.
    let begun = proxy
        .begin_device_registration(self_service("judy"))
        .await
        .unwrap()
        .into_inner();
    let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
    let credential_id = serde_json::from_str::<serde_json::Value>(&credential).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .database
        .execute(&format!(
            "UPDATE devices SET credential_id = '{credential_id}' WHERE id IN (SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id WHERE u.name = 'hank')"
        ))
        .await;
    let taken = proxy
        .finish_device_registration(finish(&begun, credential))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");

    let malformed = proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: "not-an-id".into(),
            credential_json: "{}".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().starts_with("ceremony_id"));
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
    assert!(!audit.is_empty(), "refusals are audited");
}

async fn devices_count_toward_the_user_limit_and_policy_outage_fails_closed(backend: Backend) {
    let limit = realm_policy("one-each", "acme", &[("max_token_per_user", "1")]);
    let mut stack = TestStack::with_policies(backend, [limit]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "acme".into(),
            user: "kim".into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let full = check(&mut proxy, "kim", pb::DeviceType::Any, true).await;
    assert!(!full.can_self_enroll);
    assert!(
        full.reasons
            .iter()
            .any(|r| r.contains("max_token_per_user 1 reached (policy one-each)")),
        "{:?}",
        full.reasons
    );

    let link = admin
        .create_enrollment_link(link_request("kim", pb::DeviceType::Any))
        .await
        .unwrap()
        .into_inner();
    let begun = begin_by_link(&mut proxy, &secret_of(&link)).await;
    let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
    let refused = proxy
        .finish_device_registration(finish(&begun, credential))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("one-each"));
    let still = admin
        .list_enrollment_links(pb::ListEnrollmentLinksRequest {
            user: "kim".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(
        still[0].state,
        pb::LinkState::Active as i32,
        "a refused finish does not spend the link"
    );

    // A registration begun while the policy service answered cannot finish without it.
    let pending_link = admin
        .create_enrollment_link(link_request("lena", pb::DeviceType::Any))
        .await
        .unwrap()
        .into_inner();
    let begun = begin_by_link(&mut proxy, &secret_of(&pending_link)).await;
    let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);

    stack.stop_policy().await;
    stack
        .device()
        .wait_for_health(
            DEVICE_POLICY_DEPENDENCY,
            ServingStatus::NotServing,
            Duration::from_secs(10),
        )
        .await;
    let unfinished = proxy
        .finish_device_registration(finish(&begun, credential))
        .await
        .unwrap_err();
    assert_eq!(unfinished.code(), Code::Unavailable, "{unfinished:?}");
    let lena_devices = admin
        .list_devices(pb::ListDevicesRequest {
            user: "lena".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert!(lena_devices.is_empty(), "no device without a decision");
    let down = admin
        .create_enrollment_link(link_request("lena", pb::DeviceType::Any))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable);
    let links = admin
        .list_enrollment_links(pb::ListEnrollmentLinksRequest {
            user: "lena".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links.len(), 1, "only the link created before the outage");
    assert_eq!(
        links[0].state,
        pb::LinkState::Active as i32,
        "the link is not spent by a refused finish"
    );
    // CheckEnrollment decides from the last policy set streamed, and says so; registering
    // needs the policy service itself, so nobody may self-register now.
    let answered = check(&mut proxy, "kim", pb::DeviceType::Any, true).await;
    assert!(!answered.can_self_enroll);
    assert!(
        answered.reasons.iter().any(|r| {
            r.contains("decided from the last policy set received")
                && r.contains("the policy service is unreachable")
        }),
        "{:?}",
        answered.reasons
    );
}

async fn racing_registrations_stop_at_the_user_limit(backend: Backend) {
    let limit = realm_policy("two-each", "acme", &[("max_token_per_user", "2")]);
    let stack = TestStack::builder(backend)
        .with_policy(limit)
        .device_replicas(2)
        .start()
        .await;
    let proxies = [
        stack.device_on(0, Role::Proxy),
        stack.device_on(1, Role::Proxy),
    ];
    let mut finishes = Vec::new();
    for index in 0..12 {
        let mut proxy = proxies[index % 2].clone();
        let begun = proxy
            .begin_device_registration(pb::BeginDeviceRegistrationRequest {
                realm: "acme".into(),
                user: "mia".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let credential = register_with(&mut SoftPasskey::new(true), &begun, ORIGIN);
        finishes.push((proxy, finish(&begun, credential)));
    }
    let tasks: Vec<_> = finishes
        .into_iter()
        .map(|(mut proxy, request)| {
            tokio::spawn(async move { proxy.finish_device_registration(request).await })
        })
        .collect();
    let (mut registered, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => registered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("two-each"),
                    "{}",
                    status.message()
                );
                refused += 1;
            }
        }
    }
    assert_eq!((registered, refused), (2, 10));
    let mut admin = stack.admin();
    let devices = admin
        .list_devices(pb::ListDevicesRequest {
            user: "mia".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devices.len(), 2);
}

enroll_e2e::on_both_backends!(
    racing_registrations_stop_at_the_user_limit,
    a_link_registers_one_approved_device_and_is_spent,
    link_terms_follow_the_allow_list_and_the_policy,
    enclave_only_needs_a_trusted_attestation,
    self_registration_waits_for_approval_and_authenticates,
    fifty_racing_finishes_on_one_link_register_one_device,
    a_ceremony_begun_on_one_instance_finishes_on_another,
    expired_replayed_foreign_and_duplicate_credentials_are_refused,
    devices_count_toward_the_user_limit_and_policy_outage_fails_closed,
);
