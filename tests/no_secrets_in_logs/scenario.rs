//! One scenario that calls every RPC of both services (and Envoy's ext_authz check of the
//! gate) with secrets in play, and records each secret it used (and each error message it
//! received).
use enroll_e2e::{
    ADMIN_KEY, Backend, JwtIssuer, OPS_KEY, PROXY_KEY, SERVICE_KEY, TEST_ORIGIN, TEST_SEED_KEY,
    TestStack, gate_config, hotp_code_with, link_secret, now_step, realm_policy, seed_of,
    totp_code_with, validate_request,
};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use super::Used;

/// Long and distinctive, so that finding one is never a coincidence (OTP codes have 8 digits:
/// the logs hold few runs of 8 decimal digits, so a chance match is very unlikely).
const ALICE_PIN: &str = "739184263517";
const WRONG_PIN: &str = "Wr0ngPin-58203917";
const AUTO_PIN: &str = "582047193664";
const DAVE_PIN: &str = "Dave-Pin-90417725";
const CHECKED_PIN: &str = "Checked-Pin-6610482";
const FORGED_LINK_SECRET: &str = "Zq8vN3xW5tY7uR2pL9mK4jH6gF1dS0aQxE2cV7bN4mA";
const DIGITS: u32 = 8;

fn random_seed() -> Vec<u8> {
    [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ]
    .concat()
}

pub async fn run(backend: Backend) -> Used {
    let rules = [
        ("otp_pin_random", "16"),
        ("autoassignment", "true"),
        ("lostTokenPWLen", "20"),
        ("require_device_approval", "true"),
    ];
    let issuer = JwtIssuer::new();
    let gate = gate_config(&issuer, &[super::envoy::HOST.into()]);
    let stack = TestStack::builder(backend)
        .with_policy(realm_policy("corp", "corp", &rules))
        .device_config(move |config| config.gate = gate.clone())
        .start()
        .await;
    let mut used = Used::default();
    for (role, key) in [
        ("admin", ADMIN_KEY),
        ("proxy", PROXY_KEY),
        ("ops", OPS_KEY),
        ("service", SERVICE_KEY),
    ] {
        used.secret(&format!("{role} API key"), key);
    }
    used.secret("seed encryption key", TEST_SEED_KEY);
    tokens(&stack, &mut used).await;
    super::otp_links::run(&stack, &mut used).await;
    super::events::run(&stack, &mut used).await;
    devices(&stack, &mut used).await;
    policies(&stack, &mut used).await;
    metadata(&stack, &mut used).await;
    super::envoy::run(&stack, &issuer, &mut used).await;
    audit(&stack, &mut used).await;
    stack.stop().await;
    // Spans are exported when they close; a server's connection task may still hold a
    // request's span for a moment after the client has its answer (seen once in a while
    // on SQLite: "FinishDeviceRegistration is in no span"). Let those tasks finish on this
    // thread before the capture ends.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    used
}

async fn enroll(
    admin: &mut enroll_e2e::DeviceClient,
    user: &str,
    kind: pb::TokenType,
) -> pb::EnrollTokenResponse {
    admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: user.into(),
            r#type: kind as i32,
            digits: DIGITS,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn validate(
    proxy: &mut enroll_e2e::DeviceClient,
    user: &str,
    pass: &str,
) -> pb::ValidateResponse {
    proxy
        .validate(validate_request("corp", user, pass))
        .await
        .unwrap()
        .into_inner()
}

async fn tokens(stack: &TestStack, used: &mut Used) {
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    // HOTP with a random PIN, replaced by SetPin; a right pass and a wrong OTP.
    let alice = enroll(&mut admin, "alice", pb::TokenType::Hotp).await;
    let seed = seed_of(&alice);
    let serial = alice.token.clone().unwrap().serial;
    used.seed("alice's seed", &seed);
    used.secret("alice's enrollment secret", &alice.secret_base32);
    used.secret("alice's otpauth URI", &alice.otpauth_uri);
    used.secret("alice's random PIN", &alice.pin);
    admin
        .set_pin(pb::SetPinRequest {
            serial: serial.clone(),
            pin: ALICE_PIN.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    used.secret("alice's PIN", ALICE_PIN);
    let code = hotp_code_with(&seed, 0, DIGITS);
    let good = format!("{ALICE_PIN}{code}");
    assert!(validate(&mut proxy, "alice", &good).await.ok);
    let wrong_otp = format!("{ALICE_PIN}{}", hotp_code_with(&seed, 1_000_000, DIGITS));
    assert!(!validate(&mut proxy, "alice", &wrong_otp).await.ok);
    used.secret("alice's OTP", &code);
    used.secret("alice's pass", &good);
    used.secret("alice's wrong pass", &wrong_otp);
    used.serials.push(serial.clone());

    // TOTP used with the random PIN it was enrolled with.
    let erin = enroll(&mut admin, "erin", pb::TokenType::Totp).await;
    let erin_seed = seed_of(&erin);
    let erin_code = totp_code_with(&erin_seed, now_step(), DIGITS);
    let erin_pass = format!("{}{erin_code}", erin.pin);
    assert!(validate(&mut proxy, "erin", &erin_pass).await.ok);
    used.seed("erin's seed", &erin_seed);
    used.secret("erin's random PIN", &erin.pin);
    used.secret("erin's pass", &erin_pass);
    used.secret("erin's OTP", &erin_code);

    // TOTP enrolled verify pending: a wrong first code, then the right one.
    let frank = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "frank".into(),
            r#type: pb::TokenType::Totp as i32,
            digits: DIGITS,
            verify: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let frank_seed = seed_of(&frank);
    let frank_serial = frank.token.clone().unwrap().serial;
    let frank_code = totp_code_with(&frank_seed, now_step(), DIGITS);
    let frank_wrong = totp_code_with(&frank_seed, now_step() + 1000, DIGITS);
    let first_code = |code: &str| pb::VerifyTokenRequest {
        realm: "corp".into(),
        serial: frank_serial.clone(),
        code: code.into(),
        ..Default::default()
    };
    let refused = admin
        .verify_token(first_code(&frank_wrong))
        .await
        .unwrap_err();
    used.error(refused);
    admin.verify_token(first_code(&frank_code)).await.unwrap();
    used.seed("frank's seed", &frank_seed);
    used.secret("frank's enrollment secret", &frank.secret_base32);
    used.secret("frank's first code", &frank_code);
    used.secret("frank's wrong first code", &frank_wrong);
    used.serials.push(frank_serial);

    // Lost token: a temporary password that works.
    let lost = admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(validate(&mut proxy, "alice", &lost.password).await.ok);
    used.secret("lost-token password", &lost.password);

    // Pool tokens: one autoassigned (two consecutive codes), one assigned by the admin.
    let (auto_seed, dave_seed) = (random_seed(), random_seed());
    let imported = admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "corp".into(),
            csv: format!(
                "HYG-AUTO,{},hotp,8,0\nHYG-DAVE,{},hotp,8,0\n",
                hex::encode(&auto_seed),
                hex::encode_upper(&dave_seed)
            ),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.imported, 2, "{imported:?}");
    used.seed("autoassigned seed", &auto_seed);
    used.seed("dave's seed", &dave_seed);
    let codes = [0, 1].map(|counter| hotp_code_with(&auto_seed, counter, DIGITS));
    let [first, second] = codes.clone().map(|code| format!("{AUTO_PIN}{code}"));
    for code in codes {
        used.secret("autoassignment OTP", code);
    }
    // The first pass answers a challenge; the second answers it with its transaction id.
    let challenged = validate(&mut proxy, "bob", &first).await;
    let challenge = challenged.challenge.expect("a challenge");
    let mut request = validate_request("corp", "bob", &second);
    request.transaction_id = challenge.transaction_id;
    let answer = proxy.validate(request).await.unwrap().into_inner();
    assert!(answer.autoassigned, "{answer:?}");
    used.secret("autoassignment PIN", AUTO_PIN);
    used.secret("first autoassignment pass", &first);
    used.secret("second autoassignment pass", &second);
    used.serials.push("HYG-AUTO".into());

    // Assigned with a possession proof (a wrong code first).
    let proof = hotp_code_with(&dave_seed, 0, DIGITS);
    let wrong_proof = hotp_code_with(&dave_seed, 1_000_000, DIGITS);
    let assign = |code: &str| pb::AssignTokenRequest {
        serial: "HYG-DAVE".into(),
        realm: "corp".into(),
        user: "dave".into(),
        code: code.into(),
        ..Default::default()
    };
    used.error(admin.assign_token(assign(&wrong_proof)).await.unwrap_err());
    admin.assign_token(assign(&proof)).await.unwrap();
    used.secret("dave's possession code", &proof);
    used.secret("dave's wrong possession code", &wrong_proof);
    admin
        .set_pin(pb::SetPinRequest {
            serial: "HYG-DAVE".into(),
            pin: DAVE_PIN.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The right OTP behind a wrong PIN.
    let dave_code = hotp_code_with(&dave_seed, 1, DIGITS);
    let wrong_pin = format!("{WRONG_PIN}{dave_code}");
    used.secret("dave's OTP", &dave_code);
    assert!(!validate(&mut proxy, "dave", &wrong_pin).await.ok);
    used.secret("dave's PIN", DAVE_PIN);
    used.secret("wrong PIN", WRONG_PIN);
    used.secret("wrong-PIN pass", &wrong_pin);
    admin
        .disable_token(pb::DisableTokenRequest {
            serial: "HYG-DAVE".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .enable_token(pb::EnableTokenRequest {
            serial: "HYG-DAVE".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .unassign_token(pb::UnassignTokenRequest {
            serial: "HYG-DAVE".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let listed = admin
        .list_tokens(pb::ListTokensRequest {
            realm: "corp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tokens.len() >= 4, "{listed:?}");
    admin
        .get_token(pb::GetTokenRequest {
            serial: "HYG-DAVE".into(),
        })
        .await
        .unwrap();
    admin
        .delete_token(pb::DeleteTokenRequest {
            serial: "HYG-DAVE".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn devices(stack: &TestStack, used: &mut Used) {
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let origin = url::Url::parse(TEST_ORIGIN).unwrap();
    let link = |user: &str| pb::CreateEnrollmentLinkRequest {
        realm: "corp".into(),
        user: user.into(),
        device_type: pb::DeviceType::Any as i32,
        created_by: "console".into(),
        ..Default::default()
    };

    // A link that is revoked unused, and a forged secret: neither secret is echoed back.
    let revoked = admin
        .create_enrollment_link(link("frank"))
        .await
        .unwrap()
        .into_inner();
    used.secret("revoked link secret", link_secret(&revoked));
    admin
        .revoke_enrollment_link(pb::RevokeEnrollmentLinkRequest {
            id: revoked.id.clone(),
            revoked_by: "console".into(),
        })
        .await
        .unwrap();
    for secret in [link_secret(&revoked), FORGED_LINK_SECRET.to_owned()] {
        let refused = proxy
            .begin_device_registration(pb::BeginDeviceRegistrationRequest {
                link_secret: secret,
                ..Default::default()
            })
            .await
            .unwrap_err();
        used.error(refused);
    }
    used.secret("forged link secret", FORGED_LINK_SECRET);

    // Registration through a link, approval, authentication, revocation.
    let created = admin
        .create_enrollment_link(link("carol"))
        .await
        .unwrap()
        .into_inner();
    used.secret("link secret", link_secret(&created));
    let listed = admin
        .list_enrollment_links(pb::ListEnrollmentLinksRequest {
            realm: "corp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.links.len(), 2, "{listed:?}");
    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: link_secret(&created),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut authenticator = SoftPasskey::new(true);
    let credential = authenticator
        .do_registration(
            origin.clone(),
            serde_json::from_str(&begun.creation_options_json).unwrap(),
        )
        .unwrap();
    let device = proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&credential).unwrap(),
            user_agent: "hygiene-agent".into(),
            client_ip: "192.0.2.7".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap();
    admin
        .approve_device(pb::ApproveDeviceRequest {
            id: device.id.clone(),
            approved_by: "secops".into(),
        })
        .await
        .unwrap();
    let begun = proxy
        .begin_device_authentication(pb::BeginDeviceAuthenticationRequest {
            realm: "corp".into(),
            user: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let assertion = authenticator
        .do_authentication(
            origin,
            serde_json::from_str(&begun.request_options_json).unwrap(),
        )
        .unwrap();
    proxy
        .finish_device_authentication(pb::FinishDeviceAuthenticationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&assertion).unwrap(),
            client_ip: String::new(),
        })
        .await
        .unwrap();
    let checked = proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "corp".into(),
            user: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(checked.status, pb::EnrollmentStatus::Enrolled as i32);
    let devices = admin
        .list_devices(pb::ListDevicesRequest {
            realm: "corp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(devices.devices.len(), 1);
    admin
        .get_device(pb::GetDeviceRequest {
            id: device.id.clone(),
        })
        .await
        .unwrap();
    admin
        .revoke_device(pb::RevokeDeviceRequest {
            id: device.id,
            revoked_by: "secops".into(),
            reason: "rotation".into(),
        })
        .await
        .unwrap();
}

async fn policies(stack: &TestStack, used: &mut Used) {
    let (mut admin, mut service) = (stack.policy_admin(), stack.policy_service());
    let decision = service
        .evaluate_enrollment(policy_pb::EvaluateEnrollmentRequest {
            realm: "corp".into(),
            user: "alice".into(),
            action: policy_pb::Action::Enroll as i32,
            token_type: "hotp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(decision.allowed, "{decision:?}");
    service
        .validate_pin(policy_pb::ValidatePinRequest {
            realm: "corp".into(),
            user: "alice".into(),
            pin: CHECKED_PIN.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    used.secret("PIN checked by ValidatePin", CHECKED_PIN);

    let corp = admin
        .get_policy(policy_pb::GetPolicyRequest {
            name: "corp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .update_policy(policy_pb::UpdatePolicyRequest {
            etag: corp.etag.clone(),
            policy: Some(policy_pb::Policy {
                description: "reviewed".into(),
                ..corp
            }),
            actor: "console".into(),
            validate_only: false,
        })
        .await
        .unwrap();
    let scratch = admin
        .create_policy(policy_pb::CreatePolicyRequest {
            policy: Some(realm_policy(
                "scratch",
                "other",
                &[("otp_pin_minlength", "8")],
            )),
            actor: "console".into(),
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .delete_policy(policy_pb::DeletePolicyRequest {
            name: "scratch".into(),
            etag: scratch.etag,
            actor: "console".into(),
        })
        .await
        .unwrap();
    let listed = admin
        .list_policies(policy_pb::ListPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.policies.len(), 1, "{listed:?}");
    let history = admin
        .list_policy_history(policy_pb::ListPolicyHistoryRequest {
            name: "corp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(history.changes.len() >= 2, "{history:?}");
    // The device service's own watch runs too; this is an explicit call for the scan.
    let state = stack
        .policy_service()
        .watch_policy_set(policy_pb::WatchPolicySetRequest {})
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("the current policy-set state");
    assert!(state.serving && state.version > 0, "{state:?}");
}

/// Every audit event, page by page.
/// The FIDO metadata's admin RPCs: the status, and an acceptance with no jump waiting (no
/// metadata source is configured here), which is refused.
async fn metadata(stack: &TestStack, used: &mut Used) {
    let mut admin = stack.admin();
    let status = admin
        .get_metadata_status(pb::GetMetadataStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.no, 0, "no BLOB is loaded here: {status:?}");
    match admin
        .accept_metadata_jump(pb::AcceptMetadataJumpRequest {
            no: 9_000,
            accepted_by: "secops".into(),
            reason: "checked with the FIDO Alliance".into(),
        })
        .await
    {
        Ok(accepted) => panic!("nothing waits for acceptance: {accepted:?}"),
        Err(status) => used.error(status),
    }
}

async fn audit(stack: &TestStack, used: &mut Used) {
    let mut admin = stack.admin();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        used.audit
            .extend(page.events.iter().map(|event| format!("{event:?}")));
        if page.next_page_token.is_empty() {
            return;
        }
        page_token = page.next_page_token;
    }
}
