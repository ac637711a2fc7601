//! OTP enrollment by one-time link over gRPC: the link carries no key material; redemption
//! (proxy role) makes the seed as a verify-pending token, once (32 racing redemptions make
//! one), only for the user the gate verified with `require_identity`; the redemption
//! session alone sees the seed again, until the verify window ends; the first code enrolls
//! it; unknown, expired, used, revoked and superseded links answer alike; a newer link
//! supersedes an unused one; label and PIN rules; limits held while pending and released
//! on expiry.
use enroll_device::domain::audit::AuditRecord;
use enroll_device::domain::otp::code;
use enroll_device::store::idempotency::Retention;
use enroll_device::store::tokens::TokenStore;
use enroll_e2e::{audit_events_by_action, totp_parameters};
use enroll_shared::time::Clock;

use super::*;

const WINDOW: Duration = Duration::from_secs(10 * 60);

fn otp_link(user: &str, kind: pb::TokenType) -> pb::CreateOtpEnrollmentLinkRequest {
    pb::CreateOtpEnrollmentLinkRequest {
        realm: "corp".into(),
        user: user.into(),
        r#type: kind as i32,
        created_by: "console-admin".into(),
        ..Default::default()
    }
}

/// The secret the link's fragment carries after `#otp-`.
fn secret_of(link: &pb::OtpEnrollmentLink) -> String {
    let (_, fragment) = link.url.split_once('#').expect("a fragment");
    let secret = fragment.strip_prefix("otp-").expect("an OTP link fragment");
    assert_eq!(secret.len(), 43, "256 bits, base64url: {secret}");
    secret.to_owned()
}

fn redeem(secret: &str) -> pb::RedeemOtpEnrollmentLinkRequest {
    pb::RedeemOtpEnrollmentLinkRequest {
        secret: secret.into(),
        client_ip: "192.0.2.7".into(),
        ..Default::default()
    }
}

fn finish(session: &str, code: &str, pin: &str) -> pb::FinishOtpEnrollmentRequest {
    pb::FinishOtpEnrollmentRequest {
        session: session.into(),
        code: code.into(),
        pin: pin.into(),
        ..Default::default()
    }
}

fn seed(enrollment: &pb::OtpEnrollment) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(&enrollment.secret_base32)
        .unwrap()
        .as_ref()
        .to_vec()
}

async fn create(
    admin: &mut DeviceClient,
    request: pb::CreateOtpEnrollmentLinkRequest,
) -> pb::OtpEnrollmentLink {
    admin
        .create_otp_enrollment_link(request)
        .await
        .unwrap()
        .into_inner()
}

async fn links(client: &mut DeviceClient, user: &str) -> Vec<pb::OtpEnrollmentLink> {
    client
        .list_otp_enrollment_links(pb::ListOtpEnrollmentLinksRequest {
            realm: "corp".into(),
            user: user.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links
}

async fn state_of(client: &mut DeviceClient, id: &str, user: &str) -> pb::OtpLinkState {
    links(client, user)
        .await
        .into_iter()
        .find(|link| link.id == id)
        .expect("the link is listed")
        .state()
}

/// The answer a bearer gets for a secret that names no link: every unusable link must
/// answer exactly this.
async fn unknown_answer(proxy: &mut DeviceClient) -> (Code, String) {
    // 43 base64url characters: 256 bits that name no link.
    let random = "q".repeat(42) + "A";
    let status = proxy
        .redeem_otp_enrollment_link(redeem(&random))
        .await
        .unwrap_err();
    (status.code(), status.message().to_owned())
}

async fn refused_alike(proxy: &mut DeviceClient, secret: &str) {
    let status = proxy
        .redeem_otp_enrollment_link(redeem(secret))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message().to_owned()),
        unknown_answer(proxy).await,
        "an unusable link answers like an unknown one"
    );
}

/// Moves the servers' clock to just after the start of a 30 s step; returns that step.
fn aligned_step(stack: &TestStack) -> u64 {
    let seconds = stack.clock().now().timestamp() as u64;
    stack
        .clock()
        .advance(Duration::from_secs(30 - seconds % 30 + 1));
    stack.clock().now().timestamp() as u64 / 30
}

async fn check(proxy: &mut DeviceClient, user: &str) -> pb::CheckEnrollmentResponse {
    proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "corp".into(),
            user: user.into(),
            required_device_type: pb::DeviceType::Any as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn validates(proxy: &mut DeviceClient, user: &str, pass: &str) -> bool {
    proxy
        .validate(pb::ValidateRequest {
            realm: "corp".into(),
            user: user.into(),
            pass: pass.into(),
            client_ip: "192.0.2.1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ok
}

async fn a_link_is_redeemed_once_and_its_first_code_enrolls_the_token(backend: Backend) {
    let one = realm_policy("one", "corp", &[("max_token_per_user", "1")]);
    let stack = TestStack::with_policies(backend, [one]).await;
    let (mut admin, mut proxy, mut ops) = (stack.admin(), stack.proxy(), stack.ops());
    let link = create(&mut admin, otp_link("alice", pb::TokenType::Totp)).await;
    let secret = secret_of(&link);
    assert!(
        link.url.starts_with("http://localhost:8080/enroll/#otp-"),
        "{}",
        link.url
    );
    assert_eq!(link.state(), pb::OtpLinkState::Issued);
    assert!(link.serial.is_empty());
    // An unredeemed link holds no slot: alice may still self-enroll.
    let before = check(&mut proxy, "alice").await;
    assert!(before.can_self_enroll, "{:?}", before.reasons);

    let step = aligned_step(&stack);
    let redeemed = proxy
        .redeem_otp_enrollment_link(redeem(&secret))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redeemed.session.len(), 43);
    assert!(!redeemed.qr_png.is_empty());
    let token = redeemed.token.clone().unwrap();
    assert_eq!(token.enrollment_state(), pb::EnrollmentState::VerifyPending);
    assert_eq!(
        (token.realm.as_str(), token.user.as_str()),
        ("corp", "alice")
    );
    assert!(redeemed.otpauth_uri.contains(&redeemed.secret_base32));
    assert_eq!(redeemed.attempts_left, 5);
    let seed = seed(&redeemed);
    let at = |offset: i64| code(&totp_parameters(), &seed, step.wrapping_add_signed(offset));

    // The link alone is now worth nothing, and says nothing.
    refused_alike(&mut proxy, &secret).await;
    // Pending: never validates; it holds alice's only slot.
    assert!(!validates(&mut proxy, "alice", &at(0)).await);
    let during = check(&mut proxy, "alice").await;
    assert!(!during.can_self_enroll, "{:?}", during.reasons);
    // Lists show where it stands, never a secret.
    let listed = links(&mut ops, "alice").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state(), pb::OtpLinkState::VerifyPending);
    assert_eq!(listed[0].serial, token.serial);
    assert!(listed[0].url.is_empty());
    assert!(listed[0].verify_deadline.is_some() && listed[0].redeem_time.is_some());

    // The session sees the same seed again (a reload), never a new one.
    let again = proxy
        .resume_otp_enrollment(pb::ResumeOtpEnrollmentRequest {
            session: redeemed.session.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.secret_base32, redeemed.secret_base32);
    assert!(again.session.is_empty());

    let wrong = proxy
        .finish_otp_enrollment(finish(&redeemed.session, &at(3), ""))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert_eq!(wrong.message(), "code: wrong first code; 4 attempts left");
    let done = proxy
        .finish_otp_enrollment(finish(&redeemed.session, &at(0), ""))
        .await
        .unwrap()
        .into_inner();
    let token = done.token.unwrap();
    assert_eq!(token.enrollment_state(), pb::EnrollmentState::Enrolled);
    assert!(done.pin.is_empty());
    // The verifying code is used up: refused as the first login code; the next one works.
    assert!(!validates(&mut proxy, "alice", &at(0)).await);
    assert!(validates(&mut proxy, "alice", &at(1)).await);
    assert_eq!(
        state_of(&mut ops, &link.id, "alice").await,
        pb::OtpLinkState::Enrolled
    );
    // Finished: the session shows nothing any more.
    let gone = proxy
        .resume_otp_enrollment(pb::ResumeOtpEnrollmentRequest {
            session: redeemed.session.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(gone.message(), "pending OTP enrollment not found");
    // An enrolled link cannot be revoked: its token is the user's.
    let revoke = admin
        .revoke_otp_enrollment_link(pb::RevokeOtpEnrollmentLinkRequest {
            id: link.id.clone(),
            revoked_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        revoke.code(),
        Code::FailedPrecondition,
        "{}",
        revoke.message()
    );
    let actions: Vec<String> = audit_events_by_action(&mut admin, "redeem_otp_link")
        .await
        .into_iter()
        .map(|event| format!("{} {}", event.result, event.reason))
        .collect();
    assert!(
        actions.iter().any(|a| a.starts_with("ok redeemed: token")),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a.contains("link is verify pending")),
        "{actions:?}"
    );
}

async fn a_link_works_until_one_second_before_its_end(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let hour = prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    };
    let early = create(
        &mut admin,
        pb::CreateOtpEnrollmentLinkRequest {
            ttl: Some(hour),
            ..otp_link("alice", pb::TokenType::Hotp)
        },
    )
    .await;
    let late = create(
        &mut admin,
        pb::CreateOtpEnrollmentLinkRequest {
            ttl: Some(hour),
            ..otp_link("bob", pb::TokenType::Hotp)
        },
    )
    .await;
    stack.clock().advance(Duration::from_secs(3599));
    proxy
        .redeem_otp_enrollment_link(redeem(&secret_of(&early)))
        .await
        .expect("one second before its end");
    stack.clock().advance(Duration::from_secs(1));
    refused_alike(&mut proxy, &secret_of(&late)).await;
    assert_eq!(
        state_of(&mut admin, &late.id, "bob").await,
        pb::OtpLinkState::Expired
    );
    let reasons: Vec<String> = audit_events_by_action(&mut admin, "redeem_otp_link")
        .await
        .into_iter()
        .map(|event| event.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "link is expired"),
        "{reasons:?}"
    );
    // A link longer than the policy allows is refused at creation.
    let long = admin
        .create_otp_enrollment_link(pb::CreateOtpEnrollmentLinkRequest {
            ttl: Some(prost_types::Duration {
                seconds: 25 * 3600,
                nanos: 0,
            }),
            ..otp_link("carol", pb::TokenType::Totp)
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    assert!(
        long.message().starts_with("ttl: longer than the 24 h"),
        "{}",
        long.message()
    );
}

async fn the_verify_window_ends_the_enrollment_and_frees_the_slot(backend: Backend) {
    let one = realm_policy("one", "corp", &[("max_token_per_user", "1")]);
    let stack = TestStack::with_policies(backend, [one]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let mut sessions = Vec::new();
    for user in ["alice", "bob"] {
        let link = create(&mut admin, otp_link(user, pb::TokenType::Hotp)).await;
        let redeemed = proxy
            .redeem_otp_enrollment_link(redeem(&secret_of(&link)))
            .await
            .unwrap()
            .into_inner();
        sessions.push((link, redeemed));
    }
    // Pending holds the slot: no second token for bob.
    let full = admin.enroll_token(totp("corp", "bob")).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{}", full.message());

    stack.clock().advance(WINDOW - Duration::from_secs(1));
    let (_, alice) = &sessions[0];
    let hotp = |enrollment: &pb::OtpEnrollment| enroll_e2e::hotp_code(&seed(enrollment), 0);
    proxy
        .finish_otp_enrollment(finish(&alice.session, &hotp(alice), ""))
        .await
        .expect("one second before the window ends");

    stack.clock().advance(Duration::from_secs(1));
    let (bob_link, bob) = &sessions[1];
    let late = proxy
        .finish_otp_enrollment(finish(&bob.session, &hotp(bob), ""))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::NotFound, "{}", late.message());
    let resumed = proxy
        .resume_otp_enrollment(pb::ResumeOtpEnrollmentRequest {
            session: bob.session.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(resumed.code(), Code::NotFound);
    assert_eq!(
        state_of(&mut admin, &bob_link.id, "bob").await,
        pb::OtpLinkState::VerifyExpired
    );
    // Expired: the slot is free again, with no sweeper having run.
    admin
        .enroll_token(totp("corp", "bob"))
        .await
        .expect("the slot is free");
    // The purge erases the expired enrollment's sealed seed (alice's enrolled one stays).
    let db = sea_orm::Database::connect(&stack.database.url)
        .await
        .unwrap();
    let store = TokenStore::new(db, Retention::default());
    let now = stack.clock().now();
    let audit = |serial: &str, realm: &str| AuditRecord {
        actor: "test".into(),
        action: "verify_token_expired",
        realm: realm.into(),
        user: String::new(),
        subject: serial.into(),
        result: "ok",
        reason: "verify window ended: seed erased".into(),
        trace_id: String::new(),
        time: now,
        event: None,
    };
    assert_eq!(store.purge_expired_seeds(now, audit).await.unwrap(), 1);
    let seeded = |serial: &str| {
        format!("SELECT COUNT(*) FROM tokens WHERE serial = '{serial}' AND length(seed) > 0")
    };
    let bob_serial = bob.token.clone().unwrap().serial;
    let alice_serial = alice.token.clone().unwrap().serial;
    assert_eq!(stack.database.count(&seeded(&bob_serial)).await, 0);
    assert_eq!(stack.database.count(&seeded(&alice_serial)).await, 1);
}

async fn racing_redemptions_make_exactly_one_token(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let link = create(&mut admin, otp_link("alice", pb::TokenType::Totp)).await;
    let secret = secret_of(&link);
    let answers = futures::future::join_all((0..32).map(|_| {
        let mut proxy = stack.proxy();
        let request = redeem(&secret);
        async move { proxy.redeem_otp_enrollment_link(request).await }
    }))
    .await;
    let redeemed = answers.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(redeemed, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter_map(|answer| answer.as_ref().err())
            .all(|status| status.code() == Code::NotFound),
        "{answers:?}"
    );
    assert_eq!(list(&mut admin, "corp", "alice").await.len(), 1);
}

async fn require_identity_binds_the_link_to_its_user(backend: Backend) {
    let bound = realm_policy("bound", "corp", &[("require_identity", "true")]);
    let stack = TestStack::with_policies(backend, [bound]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let link = create(&mut admin, otp_link("alice", pb::TokenType::Totp)).await;
    let secret = secret_of(&link);
    let unknown = unknown_answer(&mut proxy).await;
    for (realm, user) in [("", ""), ("corp", "mallory"), ("other", "alice")] {
        let status = proxy
            .redeem_otp_enrollment_link(pb::RedeemOtpEnrollmentLinkRequest {
                identity_realm: realm.into(),
                identity_user: user.into(),
                ..redeem(&secret)
            })
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message().to_owned()),
            unknown,
            "{realm}/{user}"
        );
    }
    let reasons: Vec<String> = audit_events_by_action(&mut admin, "redeem_otp_link")
        .await
        .into_iter()
        .map(|event| event.reason)
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r == "require_identity: no verified identity"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("signed in as corp/mallory, not the link's user")),
        "{reasons:?}"
    );
    // Refusals consumed nothing: alice herself redeems it.
    proxy
        .redeem_otp_enrollment_link(pb::RedeemOtpEnrollmentLinkRequest {
            identity_realm: "corp".into(),
            identity_user: "alice".into(),
            ..redeem(&secret)
        })
        .await
        .expect("the link's own user");
}

async fn a_newer_link_supersedes_an_unused_one_and_revocation_ends_either(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let first = create(&mut admin, otp_link("alice", pb::TokenType::Totp)).await;
    let second = create(&mut admin, otp_link("alice", pb::TokenType::Totp)).await;
    let other_type = create(&mut admin, otp_link("alice", pb::TokenType::Hotp)).await;
    assert_eq!(
        state_of(&mut admin, &first.id, "alice").await,
        pb::OtpLinkState::Superseded
    );
    assert_eq!(
        state_of(&mut admin, &second.id, "alice").await,
        pb::OtpLinkState::Issued
    );
    assert_eq!(
        state_of(&mut admin, &other_type.id, "alice").await,
        pb::OtpLinkState::Issued
    );
    refused_alike(&mut proxy, &secret_of(&first)).await;
    let superseded = audit_events_by_action(&mut admin, "supersede_otp_link").await;
    assert_eq!(superseded.len(), 1);
    assert_eq!(superseded[0].subject, first.id);
    assert!(
        superseded[0].reason.contains(&second.id),
        "{:?}",
        superseded[0]
    );

    let revoke = |id: &str| pb::RevokeOtpEnrollmentLinkRequest {
        id: id.into(),
        revoked_by: "console-admin".into(),
        ..Default::default()
    };
    let revoked = admin
        .revoke_otp_enrollment_link(revoke(&second.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state(), pb::OtpLinkState::Revoked);
    refused_alike(&mut proxy, &secret_of(&second)).await;

    // Revoking a redeemed, pending link deletes its token (and seed): the slot is free.
    let redeemed = proxy
        .redeem_otp_enrollment_link(redeem(&secret_of(&other_type)))
        .await
        .unwrap()
        .into_inner();
    let serial = redeemed.token.unwrap().serial;
    let revoked = admin
        .revoke_otp_enrollment_link(revoke(&other_type.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state(), pb::OtpLinkState::Revoked);
    let gone = admin
        .get_token(pb::GetTokenRequest {
            serial: serial.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let resumed = proxy
        .resume_otp_enrollment(pb::ResumeOtpEnrollmentRequest {
            session: redeemed.session,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(resumed.code(), Code::NotFound);
    // Revoking again changes nothing.
    let again = admin
        .revoke_otp_enrollment_link(revoke(&second.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state(), pb::OtpLinkState::Revoked);
    assert_eq!(
        audit_events_by_action(&mut admin, "revoke_otp_link")
            .await
            .len(),
        2
    );
    // State filter.
    let issued = admin
        .list_otp_enrollment_links(pb::ListOtpEnrollmentLinksRequest {
            state: pb::OtpLinkState::Revoked as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(issued.len(), 2);
}

async fn the_pin_step_checks_the_rules_or_makes_a_random_pin(backend: Backend) {
    let rules = realm_policy("rules", "corp", &[("otp_pin_minlength", "6")]);
    let random = realm_policy(
        "random",
        "rnd",
        &[("otp_pin_random", "8"), ("otp_pin_random_content", "n")],
    );
    let stack = TestStack::with_policies(backend, [rules, random]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let link = create(&mut admin, otp_link("alice", pb::TokenType::Hotp)).await;
    let redeemed = proxy
        .redeem_otp_enrollment_link(redeem(&secret_of(&link)))
        .await
        .unwrap()
        .into_inner();
    let rule = redeemed.pin.unwrap();
    assert!(
        rule.required && !rule.random && rule.min_length == 6,
        "{rule:?}"
    );
    let code_0 = enroll_e2e::hotp_code(&seed(&redeemed), 0);
    let missing = proxy
        .finish_otp_enrollment(finish(&redeemed.session, &code_0, ""))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().starts_with("pin: required"),
        "{}",
        missing.message()
    );
    let short = proxy
        .finish_otp_enrollment(finish(&redeemed.session, &code_0, "12"))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    assert!(
        short.message().contains("otp_pin_minlength"),
        "{}",
        short.message()
    );
    // No attempt was spent on the PIN.
    let resumed = proxy
        .resume_otp_enrollment(pb::ResumeOtpEnrollmentRequest {
            session: redeemed.session.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.attempts_left, 5);
    let done = proxy
        .finish_otp_enrollment(finish(&redeemed.session, &code_0, "493817"))
        .await
        .unwrap()
        .into_inner();
    assert!(done.token.unwrap().has_pin);
    assert!(
        validates(
            &mut proxy,
            "alice",
            &format!("493817{}", enroll_e2e::hotp_code(&seed(&redeemed), 1))
        )
        .await
    );

    let link = create(
        &mut admin,
        pb::CreateOtpEnrollmentLinkRequest {
            realm: "rnd".into(),
            ..otp_link("bob", pb::TokenType::Hotp)
        },
    )
    .await;
    let redeemed = proxy
        .redeem_otp_enrollment_link(redeem(&secret_of(&link)))
        .await
        .unwrap()
        .into_inner();
    assert!(redeemed.pin.unwrap().random);
    let done = proxy
        .finish_otp_enrollment(finish(
            &redeemed.session,
            &enroll_e2e::hotp_code(&seed(&redeemed), 0),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.pin.len(), 8);
    assert!(done.pin.chars().all(|c| c.is_ascii_digit()));
    assert!(done.token.unwrap().has_pin);
}

async fn labels_are_checked_at_creation_and_again_when_the_policy_changed(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let labelled = create(
        &mut admin,
        pb::CreateOtpEnrollmentLinkRequest {
            label: "Alice's phone".into(),
            ..otp_link("alice", pb::TokenType::Totp)
        },
    )
    .await;
    let spare = create(
        &mut admin,
        pb::CreateOtpEnrollmentLinkRequest {
            label: "Bob's phone".into(),
            ..otp_link("bob", pb::TokenType::Totp)
        },
    )
    .await;
    let redeemed = proxy
        .redeem_otp_enrollment_link(redeem(&secret_of(&labelled)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redeemed.token.unwrap().label, "Alice's phone");
    for (label, field) in [("a:b", "label"), ("x\u{7}", "label")] {
        let status = admin
            .create_otp_enrollment_link(pb::CreateOtpEnrollmentLinkRequest {
                label: label.into(),
                ..otp_link("carol", pb::TokenType::Totp)
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    // A policy that sets the label: a caller's label is refused, and a link made before
    // the change fails at redemption, saying why.
    stack
        .create_policy(realm_policy("labels", "corp", &[("tokenlabel", "<u>@<r>")]))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let answer = admin
            .create_otp_enrollment_link(pb::CreateOtpEnrollmentLinkRequest {
                label: "Carol".into(),
                ..otp_link("carol", pb::TokenType::Totp)
            })
            .await;
        match answer {
            Err(status) => break status,
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "policy change not seen"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("policy labels sets the token label"),
        "{}",
        refused.message()
    );
    let changed = proxy
        .redeem_otp_enrollment_link(redeem(&secret_of(&spare)))
        .await
        .unwrap_err();
    assert_eq!(changed.code(), Code::FailedPrecondition);
    assert!(
        changed.message().contains("the policy changed"),
        "{}",
        changed.message()
    );
    let plain = create(&mut admin, otp_link("carol", pb::TokenType::Totp)).await;
    let redeemed = proxy
        .redeem_otp_enrollment_link(redeem(&secret_of(&plain)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redeemed.token.unwrap().label, "carol@corp");
}

async fn bad_links_are_refused_naming_the_field(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    for (request, field) in [
        (
            pb::CreateOtpEnrollmentLinkRequest {
                digits: 7,
                ..otp_link("alice", pb::TokenType::Totp)
            },
            "digits",
        ),
        (otp_link("alice", pb::TokenType::Password), "type"),
        (otp_link("alice", pb::TokenType::Unspecified), "type"),
        (
            pb::CreateOtpEnrollmentLinkRequest {
                created_by: String::new(),
                ..otp_link("alice", pb::TokenType::Totp)
            },
            "created_by",
        ),
        (
            pb::CreateOtpEnrollmentLinkRequest {
                period: Some(prost_types::Duration {
                    seconds: 301,
                    nanos: 0,
                }),
                ..otp_link("alice", pb::TokenType::Totp)
            },
            "period",
        ),
        (otp_link("", pb::TokenType::Totp), "user"),
    ] {
        let status = admin.create_otp_enrollment_link(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{field}: {}",
            status.message()
        );
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    assert!(
        links(&mut admin, "alice").await.is_empty(),
        "nothing written"
    );
    let mut proxy = stack.proxy();
    let empty = proxy
        .redeem_otp_enrollment_link(redeem(""))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    refused_alike(&mut proxy, "not-a-secret").await;
    // The proxy may redeem but not issue; ops may list only.
    let denied = stack
        .ops()
        .create_otp_enrollment_link(otp_link("alice", pb::TokenType::Totp))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

/// A first code racing the link's revocation: either the token is enrolled and the link
/// stays (revocation refused), or the link is revoked and the token is gone, never an
/// enrolled token behind a revoked link.
async fn a_first_code_racing_revocation_leaves_one_consistent_outcome(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    for round in 0..8 {
        let user = format!("user{round}");
        let link = create(&mut admin, otp_link(&user, pb::TokenType::Hotp)).await;
        let redeemed = stack
            .proxy()
            .redeem_otp_enrollment_link(redeem(&secret_of(&link)))
            .await
            .unwrap()
            .into_inner();
        let serial = redeemed.token.clone().unwrap().serial;
        let code_0 = enroll_e2e::hotp_code(&seed(&redeemed), 0);
        let (mut proxy, mut other_admin) = (stack.proxy(), stack.admin());
        let (finished, revoked) = tokio::join!(
            proxy.finish_otp_enrollment(finish(&redeemed.session, &code_0, "")),
            other_admin.revoke_otp_enrollment_link(pb::RevokeOtpEnrollmentLinkRequest {
                id: link.id.clone(),
                revoked_by: "console-admin".into(),
                ..Default::default()
            }),
        );
        let token = admin
            .get_token(pb::GetTokenRequest {
                serial: serial.clone(),
            })
            .await;
        let state = state_of(&mut admin, &link.id, &user).await;
        match (finished, revoked) {
            (Ok(_), Err(refused)) => {
                assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
                assert_eq!(state, pb::OtpLinkState::Enrolled);
                assert_eq!(
                    token.unwrap().into_inner().enrollment_state(),
                    pb::EnrollmentState::Enrolled
                );
            }
            (Err(late), Ok(_)) => {
                assert_eq!(late.code(), Code::NotFound, "{late:?}");
                assert_eq!(state, pb::OtpLinkState::Revoked);
                assert_eq!(token.unwrap_err().code(), Code::NotFound);
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

enroll_e2e::on_both_backends!(
    a_link_is_redeemed_once_and_its_first_code_enrolls_the_token,
    a_link_works_until_one_second_before_its_end,
    the_verify_window_ends_the_enrollment_and_frees_the_slot,
    racing_redemptions_make_exactly_one_token,
    require_identity_binds_the_link_to_its_user,
    a_newer_link_supersedes_an_unused_one_and_revocation_ends_either,
    the_pin_step_checks_the_rules_or_makes_a_random_pin,
    labels_are_checked_at_creation_and_again_when_the_policy_changed,
    bad_links_are_refused_naming_the_field,
    a_first_code_racing_revocation_leaves_one_consistent_outcome,
);
