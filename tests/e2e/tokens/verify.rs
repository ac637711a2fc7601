//! Enrollment with a verify step: a token enrolled with `verify` stays verify pending until
//! a first correct code (VerifyToken), within one step of the service's clock (TOTP) or the
//! look-ahead (HOTP), within the policy's window and attempts; it never validates while
//! pending, is not "a token the user has" for autoassignment, holds its limit slot until it
//! fails or expires; the purge erases the seeds of expired enrollments. AssignToken with a
//! possession code.
use enroll_device::domain::audit::AuditRecord;
use enroll_device::domain::otp::code;
use enroll_device::store::idempotency::Retention;
use enroll_device::store::tokens::TokenStore;
use enroll_e2e::{RFC4226_SEED_HEX, audit_events_by_action, hotp_code, seed_of, totp_parameters};
use enroll_shared::time::Clock;

use super::*;

const WINDOW: Duration = Duration::from_secs(10 * 60);

fn pending(kind: pb::TokenType, user: &str) -> pb::EnrollTokenRequest {
    pb::EnrollTokenRequest {
        r#type: kind as i32,
        verify: true,
        ..totp("corp", user)
    }
}

fn first_code(serial: &str, code: &str) -> pb::VerifyTokenRequest {
    pb::VerifyTokenRequest {
        realm: "corp".into(),
        serial: serial.into(),
        code: code.into(),
        ..Default::default()
    }
}

fn pass(user: &str, pass: &str) -> pb::ValidateRequest {
    pb::ValidateRequest {
        realm: "corp".into(),
        user: user.into(),
        pass: pass.into(),
        client_ip: "192.0.2.1".into(),
        ..Default::default()
    }
}

async fn state(client: &mut DeviceClient, serial: &str) -> pb::EnrollmentState {
    let token = client
        .get_token(pb::GetTokenRequest {
            serial: serial.into(),
        })
        .await
        .unwrap()
        .into_inner();
    token.enrollment_state()
}

async fn validates(proxy: &mut DeviceClient, user: &str, code: &str) -> bool {
    proxy
        .validate(pass(user, code))
        .await
        .unwrap()
        .into_inner()
        .ok
}

/// The device servers' TOTP step now, after moving their clock to the start of a step (so
/// no step boundary falls inside the test's next half minute).
fn aligned_step(stack: &TestStack) -> u64 {
    let seconds = stack.clock().now().timestamp() as u64;
    stack
        .clock()
        .advance(Duration::from_secs(30 - seconds % 30 + 1));
    stack.clock().now().timestamp() as u64 / 30
}

async fn first_codes_within_one_step_enroll_the_token(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let parameters = totp_parameters();
    let step = aligned_step(&stack);
    for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
        let user = format!("user{}", offset + 2);
        let enrolled = admin
            .enroll_token(pending(pb::TokenType::Totp, &user))
            .await
            .unwrap()
            .into_inner();
        let token = enrolled.token.clone().unwrap();
        assert_eq!(token.enrollment_state(), pb::EnrollmentState::VerifyPending);
        assert_eq!(
            state(&mut admin, &token.serial).await,
            pb::EnrollmentState::VerifyPending
        );
        let seed = seed_of(&enrolled);
        let at = |offset: i64| code(&parameters, &seed, step.wrapping_add_signed(offset));
        // Pending: never validates, not even with a current code.
        assert!(!validates(&mut proxy, &user, &at(0)).await);
        let answer = admin
            .verify_token(first_code(&token.serial, &at(offset)))
            .await;
        if accepted {
            let verified = answer.unwrap().into_inner();
            assert_eq!(verified.enrollment_state(), pb::EnrollmentState::Enrolled);
            // The verifying code (and every earlier one) is used up; a later one validates.
            assert!(!validates(&mut proxy, &user, &at(offset)).await);
            if offset < 1 {
                assert!(validates(&mut proxy, &user, &at(offset + 1)).await);
            }
            // Verifying an enrolled token is refused.
            let again = admin
                .verify_token(first_code(&token.serial, &at(1)))
                .await
                .unwrap_err();
            assert_eq!(
                again.code(),
                Code::FailedPrecondition,
                "{}",
                again.message()
            );
        } else {
            let status = answer.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
            assert_eq!(status.message(), "code: wrong first code; 4 attempts left");
            assert_eq!(
                state(&mut admin, &token.serial).await,
                pb::EnrollmentState::VerifyPending
            );
        }
    }
    let audited = audit_events_by_action(&mut admin, "verify_token").await;
    assert_eq!(audited.len(), 5 + 3, "{audited:?}");
}

async fn wrong_codes_fail_the_enrollment_and_erase_the_seed(backend: Backend) {
    let attempts = realm_policy("verify", "corp", &[("otp_verify_attempts", "3")]);
    let stack = TestStack::with_policies(backend, [attempts]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let enrolled = admin
        .enroll_token(pending(pb::TokenType::Hotp, "alice"))
        .await
        .unwrap()
        .into_inner();
    let serial = enrolled.token.clone().unwrap().serial;
    let seed = seed_of(&enrolled);
    for left in [2, 1] {
        let status = admin
            .verify_token(first_code(&serial, &hotp_code(&seed, 5000 + left)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            format!("code: wrong first code; {left} attempts left")
        );
    }
    let seeded =
        format!("SELECT COUNT(*) FROM tokens WHERE serial = '{serial}' AND length(seed) > 0");
    assert_eq!(stack.database.count(&seeded).await, 1);
    let last = admin
        .verify_token(first_code(&serial, &hotp_code(&seed, 6000)))
        .await
        .unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition);
    assert!(
        last.message().starts_with("code: wrong, the last attempt"),
        "{}",
        last.message()
    );
    // Failed at once, in the same transaction: no seed stored.
    assert_eq!(stack.database.count(&seeded).await, 0);
    let erased = format!(
        "SELECT COUNT(*) FROM tokens WHERE serial = '{serial}' AND length(seed) = 0 \
         AND seed_key_id = '' AND verify_state = 'failed'"
    );
    assert_eq!(stack.database.count(&erased).await, 1);
    assert_eq!(
        state(&mut admin, &serial).await,
        pb::EnrollmentState::VerifyFailed
    );
    // The right code now: refused, and it never validates.
    let late = admin
        .verify_token(first_code(&serial, &hotp_code(&seed, 0)))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(
        late.message().contains("verify failed"),
        "{}",
        late.message()
    );
    assert!(!validates(&mut proxy, "alice", &hotp_code(&seed, 0)).await);
    // Never usable, so no temporary password replaces it.
    let lost = admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(lost.code(), Code::FailedPrecondition, "{}", lost.message());
    let reasons: Vec<String> = audit_events_by_action(&mut admin, "verify_token")
        .await
        .into_iter()
        .map(|event| format!("{} {}", event.result, event.reason))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("verify failed, seed erased")),
        "{reasons:?}"
    );
}

/// Racing first codes: the right one enrolls exactly once, and wrong ones spend exactly the
/// policy's attempts (the last fails the enrollment, every later one finds it failed).
async fn racing_first_codes_verify_once_and_spend_exactly_the_attempts(backend: Backend) {
    let attempts = realm_policy("verify", "corp", &[("otp_verify_attempts", "3")]);
    let stack = TestStack::with_policies(backend, [attempts]).await;
    let mut admin = stack.admin();
    let right = admin
        .enroll_token(pending(pb::TokenType::Hotp, "alice"))
        .await
        .unwrap()
        .into_inner();
    let right_serial = right.token.clone().unwrap().serial;
    let code_0 = hotp_code(&seed_of(&right), 0);
    let verifies = futures::future::join_all((0..16).map(|_| {
        let mut admin = stack.admin();
        let request = first_code(&right_serial, &code_0);
        async move { admin.verify_token(request).await }
    }))
    .await;
    let passed = verifies.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(passed, 1, "{verifies:?}");
    assert!(
        verifies
            .iter()
            .filter_map(|answer| answer.as_ref().err())
            .all(|status| status.code() == Code::FailedPrecondition),
        "{verifies:?}"
    );

    let wrong = admin
        .enroll_token(pending(pb::TokenType::Hotp, "bob"))
        .await
        .unwrap()
        .into_inner();
    let wrong_serial = wrong.token.clone().unwrap().serial;
    let wrong_code = hotp_code(&seed_of(&wrong), 9000);
    let guesses = futures::future::join_all((0..16).map(|_| {
        let mut admin = stack.admin();
        let request = first_code(&wrong_serial, &wrong_code);
        async move { admin.verify_token(request).await }
    }))
    .await;
    let statuses: Vec<&tonic::Status> = guesses
        .iter()
        .map(|answer| answer.as_ref().expect_err("a wrong code never verifies"))
        .collect();
    let counted = statuses
        .iter()
        .filter(|status| status.message().starts_with("code: wrong"))
        .count();
    assert_eq!(counted, 3, "exactly the attempts are spent: {statuses:?}");
    assert_eq!(
        state(&mut admin, &wrong_serial).await,
        pb::EnrollmentState::VerifyFailed
    );
    let seeded =
        format!("SELECT COUNT(*) FROM tokens WHERE serial = '{wrong_serial}' AND length(seed) > 0");
    assert_eq!(stack.database.count(&seeded).await, 0);
}

async fn the_window_holds_the_limit_slot_until_it_ends(backend: Backend) {
    let one = realm_policy("one", "corp", &[("max_token_per_user", "1")]);
    let stack = TestStack::with_policies(backend, [one]).await;
    let mut admin = stack.admin();
    let early = admin
        .enroll_token(pending(pb::TokenType::Hotp, "alice"))
        .await
        .unwrap()
        .into_inner();
    let early_serial = early.token.clone().unwrap().serial;
    let late = admin
        .enroll_token(pending(pb::TokenType::Hotp, "bob"))
        .await
        .unwrap()
        .into_inner();
    let late_serial = late.token.clone().unwrap().serial;
    // Pending holds the user's slot.
    let full = admin.enroll_token(totp("corp", "alice")).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{}", full.message());

    // One second before the deadline: still pending, the first code accepted.
    stack.clock().advance(WINDOW - Duration::from_secs(1));
    let verified = admin
        .verify_token(first_code(&early_serial, &hotp_code(&seed_of(&early), 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.enrollment_state(), pb::EnrollmentState::Enrolled);

    // At the deadline: expired, refused, and the slot is free again.
    stack.clock().advance(Duration::from_secs(1));
    assert_eq!(
        state(&mut admin, &late_serial).await,
        pb::EnrollmentState::VerifyExpired
    );
    let expired = admin
        .verify_token(first_code(&late_serial, &hotp_code(&seed_of(&late), 0)))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::FailedPrecondition);
    assert!(
        expired.message().contains("verify expired"),
        "{}",
        expired.message()
    );
    admin.enroll_token(totp("corp", "bob")).await.unwrap();
    // The verified one keeps its slot.
    let still_full = admin.enroll_token(totp("corp", "alice")).await.unwrap_err();
    assert_eq!(still_full.code(), Code::ResourceExhausted);
}

async fn a_pending_token_is_not_held_for_autoassignment(backend: Backend) {
    let auto = realm_policy(
        "auto",
        "corp",
        &[("autoassignment", "true"), ("otp_pin_minlength", "4")],
    );
    let stack = TestStack::with_policies(backend, [auto]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "corp".into(),
            csv: format!("HW-AUTO,{RFC4226_SEED_HEX},hotp,6,0\n"),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let enrolled = admin
        .enroll_token(pending(pb::TokenType::Hotp, "carol"))
        .await
        .unwrap()
        .into_inner();
    let serial = enrolled.token.clone().unwrap().serial;
    let pool_code = hotp_code(enroll_e2e::RFC4226_SEED, 0);
    // Pending: the user holds no token, so a pool code starts an autoassignment.
    let answer = proxy
        .validate(pass("carol", &format!("5555{pool_code}")))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.challenge.is_some(), "{answer:?}");
    // Verified: the user holds a token, no autoassignment.
    admin
        .verify_token(first_code(&serial, &hotp_code(&seed_of(&enrolled), 0)))
        .await
        .unwrap();
    let answer = proxy
        .validate(pass("carol", &format!("5555{pool_code}")))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.challenge.is_none() && !answer.ok, "{answer:?}");
    assert!(validates(&mut proxy, "carol", &hotp_code(&seed_of(&enrolled), 1)).await);
}

async fn the_purge_erases_expired_seeds(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let mut serials = Vec::new();
    // Emil enrolls six minutes after Dora: still pending when Dora's window has ended.
    for (user, then) in [("dora", 6), ("emil", 5)] {
        let enrolled = admin
            .enroll_token(pending(pb::TokenType::Totp, user))
            .await
            .unwrap()
            .into_inner();
        serials.push(enrolled.token.unwrap().serial);
        stack.clock().advance(Duration::from_secs(then * 60));
    }
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
    assert_eq!(store.purge_expired_seeds(now, audit).await.unwrap(), 0);
    let seeded = |serial: &str| {
        format!("SELECT COUNT(*) FROM tokens WHERE serial = '{serial}' AND length(seed) > 0")
    };
    assert_eq!(stack.database.count(&seeded(&serials[0])).await, 0);
    assert_eq!(stack.database.count(&seeded(&serials[1])).await, 1);
    assert_eq!(
        state(&mut admin, &serials[0]).await,
        pb::EnrollmentState::VerifyExpired
    );
    let purged = audit_events_by_action(&mut admin, "verify_token_expired").await;
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].subject, serials[0]);
}

async fn assign_with_a_code_proves_possession(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "corp".into(),
            csv: format!("HW-PROOF,{RFC4226_SEED_HEX},hotp,6,0\n"),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let assign = |code: String| pb::AssignTokenRequest {
        serial: "HW-PROOF".into(),
        realm: "corp".into(),
        user: "fred".into(),
        code,
        ..Default::default()
    };
    let seed = enroll_e2e::RFC4226_SEED;
    let wrong = admin
        .assign_token(assign(hotp_code(seed, 500)))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied, "{}", wrong.message());
    assert_eq!(reason(&wrong).as_deref(), Some("WRONG_CODE"));
    assert!(wrong.message().starts_with("code: "), "{}", wrong.message());
    assert!(list(&mut admin, "corp", "fred").await.is_empty());
    let assigned = admin
        .assign_token(assign(hotp_code(seed, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.user, "fred");
    // The proving code is used up; the next one validates.
    assert!(!validates(&mut proxy, "fred", &hotp_code(seed, 0)).await);
    assert!(validates(&mut proxy, "fred", &hotp_code(seed, 1)).await);
    let audited = audit_events_by_action(&mut admin, "assign_token").await;
    assert!(
        audited
            .iter()
            .any(|event| event.result == "denied" && event.reason.contains("wrong code")),
        "{audited:?}"
    );
}

enroll_e2e::on_both_backends!(
    first_codes_within_one_step_enroll_the_token,
    wrong_codes_fail_the_enrollment_and_erase_the_seed,
    the_window_holds_the_limit_slot_until_it_ends,
    a_pending_token_is_not_held_for_autoassignment,
    the_purge_erases_expired_seeds,
    assign_with_a_code_proves_possession,
    racing_first_codes_verify_once_and_spend_exactly_the_attempts,
);
