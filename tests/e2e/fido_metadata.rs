//! The FIDO Metadata Service (MDS3) BLOB, signed by a throw-away root made in the test and
//! loaded from a file: the model and its certification recorded on a device, certified
//! models' roots as `enclave_only` anchors, forged and older BLOBs refused with the last
//! good one kept, a later BLOB marking the model REVOKED flags (or revokes) its devices and
//! refuses new registrations, a new replica takes the stored BLOB from the database, and
//! the policy's model rules apply to verified attestations only: those whose certificate
//! binds the model, not those under a blanket root (which still prove `enclave_only`).
use std::time::{Duration, Instant};

use enroll_e2e::{
    Backend, DeviceClient, TestMetadataService, TestStack, audit_events_by_action, create,
    link_secret as secret_of, metadata_entry, metadata_payload, realm_policy,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::status::reason;
use tonic::Code;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::{AAGUID, SoftToken};
use webauthn_rs_proto::CreationChallengeResponse;

const ORIGIN: &str = "http://localhost:8080";
const MODEL: &str = "Soft token (test)";

/// Registers `authenticator` for `user` of realm `acme` through a link of `device_type`.
async fn register(
    admin: &mut DeviceClient,
    proxy: &mut DeviceClient,
    authenticator: &mut impl WebauthnAuthenticator,
    user: &str,
    device_type: pb::DeviceType,
) -> Result<pb::Device, tonic::Status> {
    register_in(admin, proxy, authenticator, "acme", user, device_type).await
}

async fn register_in(
    admin: &mut DeviceClient,
    proxy: &mut DeviceClient,
    authenticator: &mut impl WebauthnAuthenticator,
    realm: &str,
    user: &str,
    device_type: pb::DeviceType,
) -> Result<pb::Device, tonic::Status> {
    let link = admin
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: realm.into(),
            user: user.into(),
            device_type: device_type as i32,
            created_by: "console-admin".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: secret_of(&link),
            ..Default::default()
        })
        .await?
        .into_inner();
    let options: CreationChallengeResponse =
        serde_json::from_str(&begun.creation_options_json).unwrap();
    let credential = authenticator
        .do_registration(Url::parse(ORIGIN).unwrap(), options)
        .expect("soft token registers");
    let finished = proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&credential).unwrap(),
            user_agent: "soft-token".into(),
            client_ip: "192.0.2.7".into(),
        })
        .await?;
    Ok(finished.into_inner().device.expect("device"))
}

async fn check(
    proxy: &mut DeviceClient,
    user: &str,
    required: pb::DeviceType,
) -> pb::CheckEnrollmentResponse {
    check_in(proxy, "acme", user, required).await
}

async fn check_in(
    proxy: &mut DeviceClient,
    realm: &str,
    user: &str,
    required: pb::DeviceType,
) -> pb::CheckEnrollmentResponse {
    proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: realm.into(),
            user: user.into(),
            required_device_type: required as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn device(admin: &mut DeviceClient, id: &str) -> pb::Device {
    admin
        .get_device(pb::GetDeviceRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Waits (up to 20 s: the servers refresh every second) until the device is flagged.
async fn until_flagged(admin: &mut DeviceClient, id: &str) -> pb::Device {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let device = device(admin, id).await;
        if device.model_compromised {
            return device;
        }
        assert!(Instant::now() < deadline, "never flagged: {device:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Certified (level 1) since 2024, and REVOKED since 2025 when `revoked`.
fn soft_token_entry(token_ca: &crypto_glue::x509::Certificate, revoked: bool) -> serde_json::Value {
    let mut statuses = vec![("FIDO_CERTIFIED_L1", "2024-01-01")];
    if revoked {
        statuses.push(("REVOKED", "2025-01-01"));
    }
    metadata_entry(&AAGUID.to_string(), MODEL, &statuses, &[token_ca])
}

async fn a_blob_records_models_and_a_later_one_flags_revoked_models(backend: Backend) {
    let (mut token, token_ca) = SoftToken::new(true).unwrap();
    let mds = TestMetadataService::new("mds");
    mds.publish(&mds.sign(&metadata_payload(
        1,
        vec![soft_token_entry(&token_ca, false)],
    )));
    let config = mds.config();
    // No webauthn.trusted_roots: enclave_only can only trust the metadata's certified model.
    let mut stack = TestStack::builder(backend)
        .device_config(move |device| device.webauthn.metadata = config.clone())
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    // The model, its certification and the anchor it was verified to are recorded.
    let registered = register(
        &mut admin,
        &mut proxy,
        &mut token,
        "alice",
        pb::DeviceType::EnclaveOnly,
    )
    .await
    .expect("a certified model registers as enclave_only through the metadata's roots");
    assert_eq!(registered.model, MODEL);
    assert_eq!(registered.certification_level, "FIDO_CERTIFIED_L1");
    assert_eq!(registered.attestation_root, "fido-metadata");
    assert_eq!(registered.aaguid, AAGUID.to_string());
    assert!(!registered.model_compromised);
    assert_eq!(registered.acceptance.len(), 2);
    assert!(
        registered.acceptance.iter().all(|answer| answer.acceptable),
        "{:?}",
        registered.acceptance
    );
    let listed = admin
        .list_devices(pb::ListDevicesRequest {
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(listed[0].model, MODEL);
    let enrolled = check(&mut proxy, "alice", pb::DeviceType::EnclaveOnly).await;
    assert_eq!(enrolled.status, pb::EnrollmentStatus::Enrolled as i32);
    assert!(
        enrolled.reasons[0].contains(MODEL),
        "{:?}",
        enrolled.reasons
    );

    // A BLOB under another root (same names, other keys) is refused; the last good stays.
    let impostor = TestMetadataService::new("mds");
    mds.publish(&impostor.sign(&metadata_payload(
        2,
        vec![soft_token_entry(&token_ca, true)],
    )));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!device(&mut admin, &registered.id).await.model_compromised);
    let still = check(&mut proxy, "alice", pb::DeviceType::EnclaveOnly).await;
    assert_eq!(still.status, pb::EnrollmentStatus::Enrolled as i32);

    // A genuine later BLOB marks the model REVOKED: the device is flagged, audited, and no
    // longer counts as enrolled for any type.
    mds.publish(&mds.sign(&metadata_payload(
        3,
        vec![soft_token_entry(&token_ca, true)],
    )));
    let flagged = until_flagged(&mut admin, &registered.id).await;
    assert!(
        flagged
            .model_compromise_reason
            .contains("REVOKED since 2025-01-01"),
        "{}",
        flagged.model_compromise_reason
    );
    assert_eq!(
        flagged.state,
        pb::DeviceState::Approved as i32,
        "flagged only"
    );
    assert!(flagged.acceptance.iter().all(|answer| !answer.acceptable));
    for required in [pb::DeviceType::Any, pb::DeviceType::EnclaveOnly] {
        let answer = check(&mut proxy, "alice", required).await;
        assert_eq!(answer.status, pb::EnrollmentStatus::TypeMismatch as i32);
        assert!(
            answer.reasons[0].contains("REVOKED"),
            "{:?}",
            answer.reasons
        );
    }
    let events = audit_events_by_action(&mut admin, "flag_device").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subject, registered.id);
    assert_eq!(events[0].actor, "fido-metadata");
    assert!(events[0].reason.contains(MODEL), "{}", events[0].reason);

    // New registrations of the model are refused, naming the model and the status.
    let refused = register(
        &mut admin,
        &mut proxy,
        &mut token,
        "bob",
        pb::DeviceType::Any,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        reason(&refused).as_deref(),
        Some("AUTHENTICATOR_COMPROMISED")
    );
    assert!(
        refused.message().contains(MODEL) && refused.message().contains("REVOKED"),
        "{}",
        refused.message()
    );
    let denied = audit_events_by_action(&mut admin, "register_device").await;
    assert!(
        denied
            .iter()
            .any(|event| event.user == "bob" && event.result == "denied"),
        "{denied:?}"
    );

    // An older BLOB (a replay of a certified one) is refused: the model stays revoked.
    mds.publish(&mds.sign(&metadata_payload(
        2,
        vec![soft_token_entry(&token_ca, false)],
    )));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = register(
        &mut admin,
        &mut proxy,
        &mut token,
        "bob",
        pb::DeviceType::Any,
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason(&refused).as_deref(),
        Some("AUTHENTICATOR_COMPROMISED")
    );

    // A new replica whose source cannot be read takes the stored BLOB from the database.
    let mut unreachable = mds.config();
    unreachable.source = "file:///nonexistent/enroll-blob.jwt".to_owned();
    unreachable.refresh_interval_secs = 3600;
    let replica = stack
        .add_device(move |device| device.webauthn.metadata = unreachable)
        .await;
    let (mut replica_admin, mut replica_proxy) = (
        stack.device_on(replica, Role::Admin),
        stack.device_on(replica, Role::Proxy),
    );
    let refused = register(
        &mut replica_admin,
        &mut replica_proxy,
        &mut token,
        "carol",
        pb::DeviceType::Any,
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason(&refused).as_deref(),
        Some("AUTHENTICATOR_COMPROMISED")
    );
}

async fn revoke_compromised_revokes_the_devices_of_a_revoked_model(backend: Backend) {
    let (mut token, token_ca) = SoftToken::new(true).unwrap();
    let mds = TestMetadataService::new("mds");
    mds.publish(&mds.sign(&metadata_payload(
        1,
        vec![soft_token_entry(&token_ca, false)],
    )));
    let mut config = mds.config();
    config.revoke_compromised = true;
    let stack = TestStack::builder(backend)
        .device_config(move |device| device.webauthn.metadata = config.clone())
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let registered = register(
        &mut admin,
        &mut proxy,
        &mut token,
        "dave",
        pb::DeviceType::Any,
    )
    .await
    .unwrap();
    assert_eq!(registered.model, MODEL);
    // An `any` registration's chain is verified too when a root (here the metadata's) fits.
    assert_eq!(registered.attestation_root, "fido-metadata");

    mds.publish(&mds.sign(&metadata_payload(
        2,
        vec![soft_token_entry(&token_ca, true)],
    )));
    let flagged = until_flagged(&mut admin, &registered.id).await;
    assert_eq!(flagged.state, pb::DeviceState::Revoked as i32);
    let events = audit_events_by_action(&mut admin, "flag_device").await;
    assert!(
        events[0].reason.contains("revoke_compromised"),
        "{}",
        events[0].reason
    );
    let answer = check(&mut proxy, "dave", pb::DeviceType::Any).await;
    assert_eq!(answer.status, pb::EnrollmentStatus::NotEnrolled as i32);
}

/// Registers `authenticator` in `realm` and expects AUTHENTICATOR_NOT_ALLOWED naming
/// `setting`'s refusal (`why`) and the deciding policy.
async fn refused_by_policy(
    stack: &TestStack,
    authenticator: &mut impl WebauthnAuthenticator,
    realm: &str,
    why: &str,
    policy: &str,
) {
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let refused = register_in(
        &mut admin,
        &mut proxy,
        authenticator,
        realm,
        "erin",
        pb::DeviceType::Any,
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "{realm}: {refused:?}"
    );
    assert_eq!(
        reason(&refused).as_deref(),
        Some("AUTHENTICATOR_NOT_ALLOWED"),
        "{realm}: {refused:?}"
    );
    assert!(
        refused.message().contains(why)
            && refused.message().contains(&format!("(policy {policy})")),
        "{realm}: {}",
        refused.message()
    );
}

async fn the_policy_model_rules_trust_only_verified_attestations(backend: Backend) {
    let (mut token, token_ca) = SoftToken::new(true).unwrap();
    let mds = TestMetadataService::new("mds");
    mds.publish(&mds.sign(&metadata_payload(
        1,
        vec![soft_token_entry(&token_ca, false)],
    )));
    let config = mds.config();
    let stack = TestStack::builder(backend)
        .with_policy(realm_policy(
            "soft-only",
            "allowed",
            &[("webauthn_aaguid_allow", MODEL)],
        ))
        .with_policy(realm_policy(
            "no-soft",
            "denied",
            &[("webauthn_aaguid_deny", &AAGUID.to_string())],
        ))
        .with_policy(realm_policy(
            "level-2",
            "certified",
            &[("webauthn_min_certification", "FIDO_CERTIFIED_L2")],
        ))
        .device_config(move |device| device.webauthn.metadata = config.clone())
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    // A rule on the model makes even an `any` registration ask for the attestation (without
    // it browsers may hide the model behind a zero AAGUID).
    let link = admin
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "allowed".into(),
            user: "gina".into(),
            device_type: pb::DeviceType::Any as i32,
            created_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: secret_of(&link),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let options: serde_json::Value = serde_json::from_str(&begun.creation_options_json).unwrap();
    assert_eq!(options["publicKey"]["attestation"], "direct", "{options}");

    // An allow-list by model name: the verified soft token passes, a passkey (no verified
    // attestation) never does.
    let allowed = register_in(
        &mut admin,
        &mut proxy,
        &mut token,
        "allowed",
        "frank",
        pb::DeviceType::Any,
    )
    .await
    .expect("the allowed model registers");
    assert_eq!(allowed.model, MODEL);
    refused_by_policy(
        &stack,
        &mut SoftPasskey::new(true),
        "allowed",
        "not verified",
        "soft-only",
    )
    .await;
    // A deny-list by AAGUID; a minimum level the model does not reach.
    refused_by_policy(
        &stack,
        &mut token,
        "denied",
        "webauthn_aaguid_deny",
        "no-soft",
    )
    .await;
    refused_by_policy(
        &stack,
        &mut token,
        "certified",
        "it is FIDO_CERTIFIED_L1",
        "level-2",
    )
    .await;
    let denied = audit_events_by_action(&mut admin, "register_device").await;
    assert!(
        denied
            .iter()
            .filter(|event| event.result == "denied")
            .count()
            >= 3,
        "{denied:?}"
    );

    // A device registered before a deny rule no longer counts as enrolled, and says why.
    let enrolled = check_in(&mut proxy, "allowed", "frank", pb::DeviceType::Any).await;
    assert_eq!(enrolled.status, pb::EnrollmentStatus::Enrolled as i32);
    let mut policies = stack.policy_admin();
    create(
        &mut policies,
        realm_policy("no-soft-now", "allowed", &[("webauthn_aaguid_deny", MODEL)]),
    )
    .await
    .unwrap();
    // Within CheckEnrollment's coherence bound (a cached decision of the old set may be
    // served until the policy set's stream reports the change).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let refused = loop {
        let answer = check_in(&mut proxy, "allowed", "frank", pb::DeviceType::Any).await;
        if answer.status != pb::EnrollmentStatus::Enrolled as i32
            || std::time::Instant::now() > deadline
        {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(refused.status, pb::EnrollmentStatus::TypeMismatch as i32);
    assert!(
        refused.reasons[0].contains("webauthn_aaguid_deny")
            && refused.reasons[0].contains("no-soft-now"),
        "{:?}",
        refused.reasons
    );
}

/// A blanket root (the soft token's CA as an operator root, standing in for the Apple,
/// Microsoft TPM and Google Android roots, under which software builds the authenticator
/// data) proves the key, not the model: two soft tokens claim the same certified model, one
/// chained to the metadata's root for that model alone, the other to a blanket root without
/// the FIDO AAGUID extension. Only the first passes an allow-list or a minimum
/// certification; the second still proves `enclave_only` and records its model as a claim.
async fn a_blanket_root_proves_the_hardware_not_the_model(backend: Backend) {
    let (mut bound, bound_ca) = SoftToken::new(true).unwrap();
    let (mut claimed, claimed_ca) = SoftToken::new(true).unwrap();
    let mds = TestMetadataService::new("mds");
    mds.publish(&mds.sign(&metadata_payload(
        1,
        vec![soft_token_entry(&bound_ca, false)],
    )));
    let config = mds.config();
    let stack = TestStack::builder(backend)
        .trusted_root(&claimed_ca)
        .with_policy(realm_policy(
            "soft-only",
            "allowed",
            &[("webauthn_aaguid_allow", &AAGUID.to_string())],
        ))
        .with_policy(realm_policy(
            "level-1",
            "certified",
            &[("webauthn_min_certification", "FIDO_CERTIFIED_L1")],
        ))
        .device_config(move |device| device.webauthn.metadata = config.clone())
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    refused_by_policy(&stack, &mut claimed, "allowed", "only a claim", "soft-only").await;
    refused_by_policy(&stack, &mut claimed, "certified", "only a claim", "level-1").await;
    for (realm, user) in [("allowed", "frank"), ("certified", "cara")] {
        let device = register_in(
            &mut admin,
            &mut proxy,
            &mut bound,
            realm,
            user,
            pb::DeviceType::Any,
        )
        .await
        .unwrap_or_else(|status| panic!("{realm}: the bound model registers: {status:?}"));
        assert_eq!(device.attestation_root, "fido-metadata", "{realm}");
        assert!(device.aaguid_verified, "{realm}: {device:?}");
    }

    // The blanket root still proves the hardware: enclave_only registers it.
    let enclave = register(
        &mut admin,
        &mut proxy,
        &mut claimed,
        "hana",
        pb::DeviceType::EnclaveOnly,
    )
    .await
    .expect("a blanket root proves enclave_only");
    assert!(
        enclave.attestation_root.starts_with("trusted_roots:"),
        "{enclave:?}"
    );
    assert_eq!(enclave.aaguid, AAGUID.to_string());
    assert!(!enclave.aaguid_verified, "{enclave:?}");
    let reason = &device(&mut admin, &enclave.id).await.acceptance[0].reason;
    assert!(reason.contains("model only claimed"), "{reason}");
}

/// A certified model's root binds its AAGUID whatever the model is, but stands in for a
/// vendor root under `enclave_only` only when the metadata says its keys are in hardware
/// inside the device.
async fn a_metadata_root_proves_an_enclave_only_for_internal_hardware_keys(backend: Backend) {
    let (mut token, token_ca) = SoftToken::new(true).unwrap();
    for (key_protection, attachment_hint) in [("software", "internal"), ("hardware", "external")] {
        let mut entry = soft_token_entry(&token_ca, false);
        entry["metadataStatement"]["keyProtection"] = serde_json::json!([key_protection]);
        entry["metadataStatement"]["attachmentHint"] = serde_json::json!([attachment_hint]);
        let mds = TestMetadataService::new("mds");
        mds.publish(&mds.sign(&metadata_payload(1, vec![entry])));
        let config = mds.config();
        let stack = TestStack::builder(backend)
            .with_policy(realm_policy(
                "soft-only",
                "allowed",
                &[("webauthn_aaguid_allow", MODEL)],
            ))
            .device_config(move |device| device.webauthn.metadata = config.clone())
            .start()
            .await;
        let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
        let refused = register(
            &mut admin,
            &mut proxy,
            &mut token,
            "ivan",
            pb::DeviceType::EnclaveOnly,
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert_eq!(reason(&refused).as_deref(), Some("ATTESTATION_NOT_TRUSTED"));
        assert!(
            refused
                .message()
                .contains("does not describe this model as an internal authenticator"),
            "{key_protection}/{attachment_hint}: {}",
            refused.message()
        );
        let allowed = register_in(
            &mut admin,
            &mut proxy,
            &mut token,
            "allowed",
            "ivan",
            pb::DeviceType::Any,
        )
        .await
        .expect("the model is still bound by its root");
        assert!(allowed.aaguid_verified);
    }
}

enroll_e2e::on_both_backends!(
    a_blob_records_models_and_a_later_one_flags_revoked_models,
    revoke_compromised_revokes_the_devices_of_a_revoked_model,
    the_policy_model_rules_trust_only_verified_attestations,
    a_blanket_root_proves_the_hardware_not_the_model,
    a_metadata_root_proves_an_enclave_only_for_internal_hardware_keys,
);
