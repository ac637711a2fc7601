//! OTP token enrollment over gRPC: policy-rendered labels, secrets returned once, limits
//! exact under concurrency (one and two device instances), idempotent retries, fail-closed.
use std::time::Duration;

use enroll_e2e::{Backend, DeviceClient, TestStack, policy, realm_policy};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::status::reason;
use tonic::Code;

fn totp(realm: &str, user: &str) -> pb::EnrollTokenRequest {
    pb::EnrollTokenRequest {
        realm: realm.into(),
        user: user.into(),
        r#type: pb::TokenType::Totp as i32,
        ..Default::default()
    }
}

async fn list(client: &mut DeviceClient, realm: &str, user: &str) -> Vec<pb::Token> {
    client
        .list_tokens(pb::ListTokensRequest {
            realm: realm.into(),
            user: user.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
}

async fn enroll_returns_the_secret_once_with_the_policy_label(backend: Backend) {
    let labels = [
        ("tokenlabel", "<u>@<r>"),
        ("tokenissuer", "ACME <r>"),
        ("otp_pin_random", "6"),
        ("otp_pin_random_content", "n"),
    ];
    let stack = TestStack::with_policies(backend, [realm_policy("labels", "corp", &labels)]).await;
    let mut admin = stack.admin();

    let enrolled = admin
        .enroll_token(totp("Corp", "Alice"))
        .await
        .unwrap()
        .into_inner();
    let token = enrolled.token.clone().unwrap();
    assert!(token.serial.starts_with("TOTP"), "{}", token.serial);
    assert_eq!(token.label, "alice@corp");
    assert_eq!(
        (token.realm.as_str(), token.user.as_str()),
        ("corp", "alice")
    );
    assert_eq!(token.digits, 6);
    assert_eq!(token.period.unwrap().seconds, 30);
    assert!(token.has_pin);
    assert_eq!(enrolled.pin.len(), 6);
    assert!(enrolled.pin.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(enrolled.secret_base32.len(), 32, "160-bit SHA1 seed");
    assert!(
        enrolled
            .otpauth_uri
            .starts_with("otpauth://totp/ACME%20corp:alice%40corp?secret="),
        "{}",
        enrolled.otpauth_uri
    );
    assert!(enrolled.otpauth_uri.contains(&enrolled.secret_base32));
    assert!(enrolled.qr_png.is_empty(), "no QR code unless asked for");

    // Reads never carry the secret or the PIN.
    let mut ops = stack.ops();
    let fetched = ops
        .get_token(pb::GetTokenRequest {
            serial: token.serial.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, token);
    let listed = list(&mut ops, "corp", "alice").await;
    assert_eq!(listed, vec![token.clone()]);

    // HOTP, 8 digits, SHA256, into the realm's pool (no user).
    let hotp = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            r#type: pb::TokenType::Hotp as i32,
            digits: 8,
            algorithm: pb::HashAlgorithm::Sha256 as i32,
            include_qr_png: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        hotp.otpauth_uri.starts_with("otpauth://hotp/")
            && hotp.otpauth_uri.ends_with("&digits=8&counter=0")
    );
    // The QR code of the URI, as a PNG (signature, then the IHDR chunk).
    assert!(
        hotp.qr_png.starts_with(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR"),
        "{:?}",
        hotp.qr_png.get(..16)
    );
    assert!(hotp.qr_png.len() > 200);
    let pool = ops
        .list_tokens(pb::ListTokensRequest {
            realm: "corp".into(),
            assigned: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(pool.len(), 1);
    assert_eq!(pool[0].serial, hotp.token.unwrap().serial);

    // The seed is encrypted at rest: its bytes are nowhere in the row.
    let missing = ops
        .get_token(pb::GetTokenRequest {
            serial: "TOTPNOPE".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

async fn bad_input_names_the_field_and_writes_nothing(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let cases = [
        (
            pb::EnrollTokenRequest {
                digits: 7,
                ..totp("corp", "alice")
            },
            "digits",
        ),
        (
            pb::EnrollTokenRequest {
                period: Some(prost_types::Duration {
                    seconds: 301,
                    nanos: 0,
                }),
                ..totp("corp", "alice")
            },
            "period",
        ),
        (
            pb::EnrollTokenRequest {
                r#type: pb::TokenType::Unspecified as i32,
                ..totp("corp", "alice")
            },
            "type",
        ),
        (totp("", "alice"), "realm"),
        (totp("corp", "al ice"), "user"),
    ];
    for (request, field) in cases {
        let status = admin.enroll_token(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{field}: {}",
            status.message()
        );
        assert!(
            status.message().starts_with(field),
            "{} should name {field}",
            status.message()
        );
    }
    assert!(list(&mut admin, "", "").await.is_empty());
}

/// 200 concurrent enrollments for one user against max_token_per_user = 3.
async fn user_limit_is_exact_under_concurrency(backend: Backend) {
    // Two device instances on one database.
    let limit = policy("three-each", &[("max_token_per_user", "3")]);
    let stack = TestStack::builder(backend)
        .with_policy(limit)
        .device_replicas(2)
        .start()
        .await;
    let clients = [
        stack.device_on(0, Role::Admin),
        stack.device_on(1, Role::Admin),
    ];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut client = clients[i % 2].clone();
            tokio::spawn(async move { client.enroll_token(totp("corp", "alice")).await })
        })
        .collect();
    let mut ok = 0;
    let mut exhausted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::ResourceExhausted,
                    "{}",
                    status.message()
                );
                assert_eq!(
                    status.message(),
                    "max_token_per_user 3 reached (policy three-each)"
                );
                assert_eq!(reason(&status).as_deref(), Some("MAX_TOKEN_PER_USER"));
                exhausted += 1;
            }
        }
    }
    assert_eq!((ok, exhausted), (3, 197));
    let mut reader = clients[0].clone();
    assert_eq!(list(&mut reader, "corp", "alice").await.len(), 3);
}

/// 60 concurrent enrollments for different users (and the pool) against
/// max_token_per_realm = 5, spread over two device instances on one database.
async fn realm_limit_is_exact_under_concurrency(backend: Backend) {
    let limit = realm_policy("corp-pool", "corp", &[("max_token_per_realm", "5")]);
    let stack = TestStack::builder(backend)
        .with_policy(limit)
        .device_replicas(2)
        .start()
        .await;
    let clients = [
        stack.device_on(0, Role::Admin),
        stack.device_on(1, Role::Admin),
    ];
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let mut client = clients[i % 2].clone();
            // Pool tokens and users' tokens count alike.
            let user = if i % 3 == 0 {
                String::new()
            } else {
                format!("user{i}")
            };
            tokio::spawn(async move { client.enroll_token(totp("corp", &user)).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(
                    status.message().contains("max_token_per_realm 5"),
                    "{}",
                    status.message()
                );
            }
        }
    }
    assert_eq!(ok, 5);
    let mut reader = clients[1].clone();
    assert_eq!(list(&mut reader, "corp", "").await.len(), 5);
}

async fn a_retried_request_returns_the_first_result(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let request = pb::EnrollTokenRequest {
        request_id: "req-42".into(),
        ..totp("corp", "bob")
    };
    let first = admin
        .enroll_token(request.clone())
        .await
        .unwrap()
        .into_inner();
    let retries: Vec<_> = (0..5)
        .map(|_| {
            let mut admin = admin.clone();
            let request = request.clone();
            tokio::spawn(async move { admin.enroll_token(request).await.unwrap().into_inner() })
        })
        .collect();
    for retry in retries {
        assert_eq!(retry.await.unwrap(), first);
    }
    assert_eq!(list(&mut admin, "corp", "bob").await.len(), 1);
}

async fn no_policy_service_means_unavailable_and_nothing_written(backend: Backend) {
    // A port that accepts connections but never answers, then nothing at all.
    let timeout =
        |config: &mut enroll_device::config::DeviceConfig| config.policy_service.timeout_ms = 300;
    let stack = TestStack::builder(backend)
        .policy_down()
        .device_config(timeout)
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut admin = stack.admin();
    let status = admin.enroll_token(totp("corp", "carol")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("nothing was changed"),
        "{}",
        status.message()
    );
    assert!(list(&mut admin, "", "").await.is_empty());
}

async fn policy_denials_are_refused(backend: Backend) {
    let only_hotp = policy("only-hotp", &[("token_types", "hotp,webauthn")]);
    let stack = TestStack::with_policies(backend, [only_hotp]).await;
    let mut admin = stack.admin();
    let status = admin.enroll_token(totp("corp", "dave")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status).as_deref(), Some("TOKEN_TYPE_NOT_ALLOWED"));
    assert!(status.message().contains("totp"), "{}", status.message());
    assert!(list(&mut admin, "", "").await.is_empty());
}

enroll_e2e::on_both_backends!(
    enroll_returns_the_secret_once_with_the_policy_label,
    bad_input_names_the_field_and_writes_nothing,
    user_limit_is_exact_under_concurrency,
    realm_limit_is_exact_under_concurrency,
    a_retried_request_returns_the_first_result,
    no_policy_service_means_unavailable_and_nothing_written,
    policy_denials_are_refused,
);

mod audit {
    use super::*;

    async fn every_enrollment_and_denial_is_audited_without_secrets(backend: Backend) {
        let one = realm_policy(
            "one-each",
            "corp",
            &[("max_token_per_user", "1"), ("otp_pin_random", "8")],
        );
        let lab = realm_policy("lab-no-totp", "lab", &[("token_types", "hotp")]);
        let stack = TestStack::with_policies(backend, [one, lab]).await;
        let mut admin = stack.admin();

        let enrolled = admin
            .enroll_token(totp("corp", "erin"))
            .await
            .unwrap()
            .into_inner();
        let serial = enrolled.token.as_ref().unwrap().serial.clone();
        admin.enroll_token(totp("corp", "erin")).await.unwrap_err();
        admin.enroll_token(totp("lab", "erin")).await.unwrap_err();

        let mut ops = stack.ops();
        let events = ops
            .list_audit_events(pb::ListAuditEventsRequest {
                user: "Erin".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let summary: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| (e.realm.as_str(), e.result.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "lab",
                    "denied",
                    "enroll_token denied by policy: token type `totp` is not in token_types `hotp`"
                ),
                (
                    "corp",
                    "denied",
                    "max_token_per_user 1 reached (policy one-each)"
                ),
                ("corp", "ok", ""),
            ]
        );
        assert!(
            events
                .iter()
                .all(|e| e.actor == "test-admin" && e.action == "enroll_token")
        );
        assert_eq!(events[2].subject, serial);
        for event in &events {
            let text = format!("{event:?}");
            assert!(!text.contains(&enrolled.secret_base32) && !text.contains(&enrolled.pin));
        }

        // Filters and pagination.
        let page = ops
            .list_audit_events(pb::ListAuditEventsRequest {
                result: "denied".into(),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.events.len(), 1);
        let rest = ops
            .list_audit_events(pb::ListAuditEventsRequest {
                result: "denied".into(),
                page_size: 1,
                page_token: page.next_page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.events.len(), 1);
        assert!(rest.events[0].id < page.events[0].id);
    }

    enroll_e2e::on_both_backends!(every_enrollment_and_denial_is_audited_without_secrets);
}

mod lifecycle {
    use super::*;

    async fn assign_pin_enable_disable_unassign_delete(backend: Backend) {
        let rules = [
            ("max_token_per_user", "1"),
            ("otp_pin_minlength", "4"),
            ("otp_pin_contents", "n"),
        ];
        let stack =
            TestStack::with_policies(backend, [realm_policy("corp-rules", "corp", &rules)]).await;
        let mut admin = stack.admin();

        let pooled = admin
            .enroll_token(totp("corp", ""))
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap();
        let second = admin
            .enroll_token(totp("corp", ""))
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap();
        assert_eq!(pooled.user, "");
        let assign = |serial: &str, realm: &str, user: &str| pb::AssignTokenRequest {
            serial: serial.into(),
            realm: realm.into(),
            user: user.into(),
            ..Default::default()
        };

        let wrong_realm = admin
            .assign_token(assign(&pooled.serial, "lab", "alice"))
            .await
            .unwrap_err();
        assert_eq!(wrong_realm.code(), Code::FailedPrecondition);
        assert!(
            wrong_realm.message().contains("realm `corp`"),
            "{}",
            wrong_realm.message()
        );
        let unknown = admin
            .assign_token(assign("TOTPNOPE", "corp", "alice"))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);

        let assigned = admin
            .assign_token(assign(&pooled.serial, "corp", "Alice"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(assigned.user, "alice");
        let again = admin
            .assign_token(assign(&pooled.serial, "corp", "bob"))
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition);
        let over = admin
            .assign_token(assign(&second.serial, "corp", "alice"))
            .await
            .unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted);
        assert!(
            over.message().contains("max_token_per_user 1"),
            "{}",
            over.message()
        );

        let weak = admin
            .set_pin(pb::SetPinRequest {
                serial: pooled.serial.clone(),
                pin: "ab".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(weak.code(), Code::InvalidArgument);
        assert!(
            weak.message().starts_with("pin: ") && weak.message().contains("otp_pin_minlength 4"),
            "{}",
            weak.message()
        );
        assert!(!weak.message().contains("\"ab\""));
        let pool_pin = admin
            .set_pin(pb::SetPinRequest {
                serial: second.serial.clone(),
                pin: "1234".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(pool_pin.code(), Code::FailedPrecondition);
        let with_pin = admin
            .set_pin(pb::SetPinRequest {
                serial: pooled.serial.clone(),
                pin: "9876".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(with_pin.has_pin);

        let disabled = admin
            .disable_token(pb::DisableTokenRequest {
                serial: pooled.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(disabled.state, pb::TokenState::Disabled as i32);
        let enabled = admin
            .enable_token(pb::EnableTokenRequest {
                serial: pooled.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(enabled.state, pb::TokenState::Enabled as i32);
        let unassigned = admin
            .unassign_token(pb::UnassignTokenRequest {
                serial: pooled.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unassigned.user, "");
        assert!(!unassigned.has_pin, "the PIN goes with the user");

        admin
            .delete_token(pb::DeleteTokenRequest {
                serial: pooled.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let gone = admin
            .get_token(pb::GetTokenRequest {
                serial: pooled.serial.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        let gone = admin
            .delete_token(pb::DeleteTokenRequest {
                serial: pooled.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);

        let actions: Vec<String> = admin
            .list_audit_events(pb::ListAuditEventsRequest {
                serial: pooled.serial.clone(),
                result: "ok".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .into_iter()
            .map(|event| event.action)
            .collect();
        assert_eq!(
            actions,
            [
                "delete_token",
                "unassign_token",
                "enable_token",
                "disable_token",
                "set_pin",
                "assign_token",
                "enroll_token"
            ]
        );
    }

    /// Granting access fails closed without the policy service (removing it does not: see
    /// `token_safety::removal`).
    async fn mutations_fail_closed_without_the_policy_service(backend: Backend) {
        let mut stack = TestStack::start(backend).await;
        let mut admin = stack.admin();
        let token = admin
            .enroll_token(totp("corp", ""))
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap();
        let owned = admin
            .enroll_token(totp("corp", "bob"))
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap();
        stack.stop_policy().await;
        let serial = token.serial.clone();
        let status = admin
            .enable_token(pb::EnableTokenRequest {
                serial: serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        let status = admin
            .assign_token(pb::AssignTokenRequest {
                serial: serial.clone(),
                realm: "corp".into(),
                user: "alice".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        let status = admin
            .set_pin(pb::SetPinRequest {
                serial: owned.serial.clone(),
                pin: "1234".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        let unchanged = admin
            .get_token(pb::GetTokenRequest { serial })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unchanged, token);
        let unchanged = admin
            .get_token(pb::GetTokenRequest {
                serial: owned.serial.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unchanged, owned);
    }

    enroll_e2e::on_both_backends!(
        assign_pin_enable_disable_unassign_delete,
        mutations_fail_closed_without_the_policy_service,
    );
}

mod validate {
    use super::*;
    use enroll_device::domain::otp::code;
    use enroll_e2e::{hotp_parameters, now_step, seed_of as seed, totp_parameters};

    fn check(realm: &str, user: &str, pass: &str) -> pb::ValidateRequest {
        pb::ValidateRequest {
            realm: realm.into(),
            user: user.into(),
            pass: pass.into(),
            client_ip: "192.0.2.1".into(),
            ..Default::default()
        }
    }

    async fn pin_and_code_validate_once_and_failures_back_off(backend: Backend) {
        let stack = TestStack::start(backend).await;
        let mut admin = stack.admin();
        let mut proxy = stack.proxy();

        let totp_token = admin
            .enroll_token(totp("corp", "alice"))
            .await
            .unwrap()
            .into_inner();
        let serial = totp_token.token.as_ref().unwrap().serial.clone();
        admin
            .set_pin(pb::SetPinRequest {
                serial: serial.clone(),
                pin: "4321".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let parameters = totp_parameters();
        let current = code(&parameters, &seed(&totp_token), now_step());

        // Wrong PIN with the right code, then the right pass, then its replay.
        let wrong_pin = proxy
            .validate(check("corp", "alice", &format!("1111{current}")))
            .await
            .unwrap()
            .into_inner();
        assert!(!wrong_pin.ok);
        assert_eq!(wrong_pin.message, "wrong pass");
        let ok = proxy
            .validate(check("CORP", "Alice", &format!("4321{current}")))
            .await
            .unwrap()
            .into_inner();
        assert!(ok.ok, "{}", ok.message);
        assert_eq!(ok.serial, serial);
        let replay = proxy
            .validate(check("corp", "alice", &format!("4321{current}")))
            .await
            .unwrap()
            .into_inner();
        assert!(!replay.ok, "a code is accepted once");

        // HOTP: concurrent submissions of one code: exactly one wins.
        let hotp_token = admin
            .enroll_token(pb::EnrollTokenRequest {
                r#type: pb::TokenType::Hotp as i32,
                ..totp("corp", "bob")
            })
            .await
            .unwrap()
            .into_inner();
        let hotp = hotp_parameters();
        let first = code(&hotp, &seed(&hotp_token), 0);
        let racers: Vec<_> = (0..10)
            .map(|_| {
                let mut proxy = proxy.clone();
                let pass = first.clone();
                tokio::spawn(async move {
                    proxy
                        .validate(check("corp", "bob", &pass))
                        .await
                        .unwrap()
                        .into_inner()
                        .ok
                })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            winners += usize::from(racer.await.unwrap());
        }
        assert_eq!(winners, 1);
        // Racers that read the token after the winner saw a used code: each counted as a
        // failure of this client, which may have backed it off (at most 2^5 s for nine):
        // the back-off ends, and EnableToken resets the token's counter.
        let hotp_serial = hotp_token.token.as_ref().unwrap().serial.clone();
        admin
            .enable_token(pb::EnableTokenRequest {
                serial: hotp_serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        stack.clock().advance(Duration::from_secs(33));
        let later = code(&hotp, &seed(&hotp_token), 3);
        assert!(
            proxy
                .validate(check("corp", "bob", &later))
                .await
                .unwrap()
                .into_inner()
                .ok,
            "look-ahead window"
        );

        // Failures back the client off (3 free, then 1 s doubling): while it backs off even
        // the right code from it is refused like a wrong pass, and uncounted; then it
        // validates.
        for _ in 0..4 {
            assert!(
                !proxy
                    .validate(check("corp", "bob", "000000"))
                    .await
                    .unwrap()
                    .into_inner()
                    .ok
            );
        }
        let backing_off = admin
            .get_token(pb::GetTokenRequest {
                serial: hotp_serial.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (backing_off.state, backing_off.failure_count),
            (pb::TokenState::Enabled as i32, 4)
        );
        let next = code(&hotp, &seed(&hotp_token), 4);
        let refused = proxy
            .validate(check("corp", "bob", &next))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (refused.ok, refused.message.as_str()),
            (false, "wrong pass")
        );
        stack.clock().advance(Duration::from_millis(1_100));
        assert!(
            proxy
                .validate(check("corp", "bob", &next))
                .await
                .unwrap()
                .into_inner()
                .ok
        );
        let reset = admin
            .get_token(pb::GetTokenRequest {
                serial: hotp_serial,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reset.failure_count, 0, "a success ends the run of failures");

        let bad = proxy
            .validate(check("corp", "", "123456"))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().starts_with("user"));
    }

    enroll_e2e::on_both_backends!(pin_and_code_validate_once_and_failures_back_off);
}

mod lost {
    use super::*;

    async fn a_lost_token_is_replaced_by_a_temporary_password(backend: Backend) {
        let rules = [
            ("lostTokenPWLen", "12"),
            ("lostTokenPWContents", "Cn"),
            ("lostTokenValid", "3"),
        ];
        let stack =
            TestStack::with_policies(backend, [realm_policy("lost-rules", "corp", &rules)]).await;
        let mut admin = stack.admin();
        let mut proxy = stack.proxy();

        let pooled = admin
            .enroll_token(totp("corp", ""))
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap();
        let not_assigned = admin
            .report_lost_token(pb::ReportLostTokenRequest {
                serial: pooled.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(not_assigned.code(), Code::FailedPrecondition);

        let original = admin
            .enroll_token(totp("corp", "frank"))
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap();
        let replaced = admin
            .report_lost_token(pb::ReportLostTokenRequest {
                serial: original.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replaced.password.len(), 12);
        assert!(
            replaced
                .password
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
            "{}",
            replaced.password
        );
        let replacement = replaced.token.unwrap();
        assert!(replacement.serial.starts_with("PASS"));
        assert_eq!(
            (replacement.user.as_str(), replacement.r#type),
            ("frank", pb::TokenType::Password as i32)
        );
        let valid_for =
            replaced.expire_time.unwrap().seconds - replacement.create_time.unwrap().seconds;
        assert_eq!(valid_for, 3 * 24 * 3600);
        let old = admin
            .get_token(pb::GetTokenRequest {
                serial: original.serial.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(old.state, pb::TokenState::Lost as i32);
        let twice = admin
            .report_lost_token(pb::ReportLostTokenRequest {
                serial: original.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(twice.code(), Code::FailedPrecondition);

        let check = |pass: &str| pb::ValidateRequest {
            realm: "corp".into(),
            user: "frank".into(),
            pass: pass.into(),
            client_ip: "192.0.2.1".into(),
            ..Default::default()
        };
        let ok = proxy
            .validate(check(&replaced.password))
            .await
            .unwrap()
            .into_inner();
        assert!(ok.ok && ok.serial == replacement.serial, "{ok:?}");
        assert!(
            !proxy
                .validate(check("WRONGPASSWORD"))
                .await
                .unwrap()
                .into_inner()
                .ok
        );

        // Once expired, the password no longer works.
        stack
            .database
            .execute("UPDATE tokens SET expire_time = create_time WHERE token_type = 'password'")
            .await;
        let expired = proxy
            .validate(check(&replaced.password))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (expired.ok, expired.message.as_str()),
            (false, "wrong pass")
        );
    }

    enroll_e2e::on_both_backends!(a_lost_token_is_replaced_by_a_temporary_password);
}

mod import {
    use super::*;
    use enroll_device::domain::otp::code;
    use enroll_e2e::{RFC4226_SEED_HEX as RFC_SEED_HEX, hotp_parameters};

    async fn csv_rows_import_with_line_errors_and_the_realm_limit(backend: Backend) {
        let limit = realm_policy("pool-limit", "corp", &[("max_token_per_realm", "4")]);
        let stack = TestStack::with_policies(backend, [limit]).await;
        let mut admin = stack.admin();

        let csv = format!(
            "# serial,seed,type,digits,period_or_counter\n\
             HW0001,{RFC_SEED_HEX},hotp,6,2\n\
             HW0002,base32:GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,totp,8,60\n\
             HW0003,{RFC_SEED_HEX},totp,6,\n\
             HW0004,nothex,totp,6,30\n\
             HW0005,{RFC_SEED_HEX},totp,9,30\n"
        );
        let import = |csv: String| pb::ImportTokensRequest {
            realm: "corp".into(),
            csv,
            request_id: String::new(),
        };
        let first = admin
            .import_tokens(import(csv.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.imported, 3);
        let errors: Vec<(u32, &str, &str)> = first
            .errors
            .iter()
            .map(|e| (e.line, e.serial.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            errors,
            [
                (5, "HW0004", "INVALID_ARGUMENT"),
                (6, "HW0005", "INVALID_ARGUMENT")
            ]
        );
        assert!(first.errors[1].reason.starts_with("digits"));

        let again = admin.import_tokens(import(csv)).await.unwrap().into_inner();
        assert_eq!(again.imported, 0);
        assert_eq!(
            again
                .errors
                .iter()
                .filter(|e| e.code == "ALREADY_EXISTS")
                .count(),
            3
        );
        assert_eq!(again.errors[0].line, 2);

        // 3 in the pool, limit 4: two more would exceed it, so none is imported.
        let over = admin
            .import_tokens(import(format!(
                "HW0010,{RFC_SEED_HEX},totp,6,30\nHW0011,{RFC_SEED_HEX},totp,6,30\n"
            )))
            .await
            .unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted);
        let pool = admin
            .list_tokens(pb::ListTokensRequest {
                realm: "corp".into(),
                assigned: Some(false),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tokens;
        assert_eq!(
            pool.iter().map(|t| t.serial.as_str()).collect::<Vec<_>>(),
            ["HW0001", "HW0002", "HW0003"]
        );

        // An imported HOTP token works from its start counter once assigned.
        admin
            .assign_token(pb::AssignTokenRequest {
                serial: "HW0001".into(),
                realm: "corp".into(),
                user: "gina".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let hotp = hotp_parameters();
        let mut proxy = stack.proxy();
        let check = |pass: String| pb::ValidateRequest {
            realm: "corp".into(),
            user: "gina".into(),
            pass,
            client_ip: "192.0.2.1".into(),
            ..Default::default()
        };
        assert!(
            !proxy
                .validate(check(code(&hotp, b"12345678901234567890", 1)))
                .await
                .unwrap()
                .into_inner()
                .ok,
            "below the start counter"
        );
        assert!(
            proxy
                .validate(check(code(&hotp, b"12345678901234567890", 2)))
                .await
                .unwrap()
                .into_inner()
                .ok
        );

        let bad = admin
            .import_tokens(pb::ImportTokensRequest {
                realm: String::new(),
                csv: String::new(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
    }

    enroll_e2e::on_both_backends!(csv_rows_import_with_line_errors_and_the_realm_limit);
}

mod idempotency {
    use super::*;

    /// How many audit events of `action` the trail holds.
    async fn audited(client: &mut DeviceClient, action: &str) -> usize {
        client
            .list_audit_events(pb::ListAuditEventsRequest {
                action: action.into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .len()
    }

    /// Every token mutation with a request id: a retry (sequential or racing) returns the
    /// first result, changes nothing more and writes no second audit event; the id is
    /// scoped to its RPC.
    async fn retried_mutations_return_the_first_result(backend: Backend) {
        let stack = TestStack::start(backend).await;
        let mut admin = stack.admin();
        let pool = |i: usize| -> String {
            let seed: String = (0..20)
                .map(|b| format!("{:02x}", (i * 13 + b) % 251))
                .collect();
            format!("IDEM{i},{seed},hotp,6,0\n")
        };

        // ImportTokens: the retry reports the first import, not ALREADY_EXISTS rows.
        let import = pb::ImportTokensRequest {
            realm: "corp".into(),
            csv: format!("{}{}{}", pool(1), pool(2), pool(3)),
            request_id: "import-1".into(),
        };
        let imported = admin
            .import_tokens(import.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!((imported.imported, imported.errors.len()), (3, 0));
        let again = admin.import_tokens(import).await.unwrap().into_inner();
        assert_eq!(again, imported);
        assert_eq!(audited(&mut admin, "import_tokens").await, 1);

        // AssignToken: a retry returns the first; the same id with another body is another
        // request and is refused (it used to be answered with the first response: the
        // defect tests/e2e/idempotency.rs covers).
        let assign = pb::AssignTokenRequest {
            serial: "IDEM1".into(),
            realm: "corp".into(),
            user: "alice".into(),
            request_id: "assign-1".into(),
            ..Default::default()
        };
        let assigned = admin
            .assign_token(assign.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(assigned.user, "alice");
        let retried = admin
            .assign_token(assign.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(retried, assigned);
        let other_body = admin
            .assign_token(pb::AssignTokenRequest {
                serial: "IDEM2".into(),
                user: "bob".into(),
                ..assign.clone()
            })
            .await
            .unwrap_err();
        assert_eq!(
            other_body.code(),
            Code::FailedPrecondition,
            "{other_body:?}"
        );
        assert_eq!(
            reason(&other_body).as_deref(),
            Some("IDEMPOTENCY_KEY_REUSED")
        );
        assert_eq!(list(&mut admin, "corp", "bob").await.len(), 0);
        assert_eq!(audited(&mut admin, "assign_token").await, 1);

        // SetPin.
        let set_pin = pb::SetPinRequest {
            serial: "IDEM1".into(),
            pin: "4321".into(),
            request_id: "pin-1".into(),
            ..Default::default()
        };
        let pinned = admin.set_pin(set_pin.clone()).await.unwrap().into_inner();
        assert!(pinned.has_pin);
        assert_eq!(admin.set_pin(set_pin).await.unwrap().into_inner(), pinned);
        assert_eq!(audited(&mut admin, "set_pin").await, 1);

        // DisableToken, then EnableToken; the disable's retry returns its first result and
        // does not disable the token again.
        let disable = pb::DisableTokenRequest {
            serial: "IDEM1".into(),
            request_id: "state-1".into(),
        };
        let disabled = admin
            .disable_token(disable.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(disabled.state, pb::TokenState::Disabled as i32);
        // The same id on another RPC is another request.
        let enabled = admin
            .enable_token(pb::EnableTokenRequest {
                serial: "IDEM1".into(),
                request_id: "state-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(enabled.state, pb::TokenState::Enabled as i32);
        assert_eq!(
            admin.disable_token(disable).await.unwrap().into_inner(),
            disabled
        );
        let now = admin
            .get_token(pb::GetTokenRequest {
                serial: "IDEM1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(now.state, pb::TokenState::Enabled as i32);
        assert_eq!(audited(&mut admin, "disable_token").await, 1);
        assert_eq!(audited(&mut admin, "enable_token").await, 1);

        // ReportLostToken, retried concurrently: one replacement, one password, returned
        // to every retry (stored sealed).
        let lost = pb::ReportLostTokenRequest {
            serial: "IDEM1".into(),
            request_id: "lost-1".into(),
            ..Default::default()
        };
        let reports: Vec<_> = (0..6)
            .map(|_| {
                let (mut admin, lost) = (admin.clone(), lost.clone());
                tokio::spawn(async move { admin.report_lost_token(lost).await })
            })
            .collect();
        let mut responses = Vec::new();
        for report in reports {
            responses.push(report.await.unwrap().unwrap().into_inner());
        }
        assert!(responses[0].password.len() >= 10);
        assert!(responses.iter().all(|response| *response == responses[0]));
        let alice = list(&mut admin, "corp", "alice").await;
        assert_eq!(alice.len(), 2, "the lost token and one password token");
        assert_eq!(audited(&mut admin, "report_lost_token").await, 1);

        // UnassignToken and DeleteToken (the retry of a deletion finds no token, and still
        // returns the first result).
        admin
            .assign_token(pb::AssignTokenRequest {
                serial: "IDEM2".into(),
                realm: "corp".into(),
                user: "carol".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let unassign = pb::UnassignTokenRequest {
            serial: "IDEM2".into(),
            request_id: "unassign-1".into(),
        };
        let unassigned = admin
            .unassign_token(unassign.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unassigned.user, "");
        assert_eq!(
            admin.unassign_token(unassign).await.unwrap().into_inner(),
            unassigned
        );
        assert_eq!(audited(&mut admin, "unassign_token").await, 1);
        let delete = pb::DeleteTokenRequest {
            serial: "IDEM3".into(),
            request_id: "delete-1".into(),
        };
        let deletes: Vec<_> = (0..4)
            .map(|_| {
                let (mut admin, delete) = (admin.clone(), delete.clone());
                tokio::spawn(async move { admin.delete_token(delete).await })
            })
            .collect();
        for delete in deletes {
            delete.await.unwrap().unwrap();
        }
        assert_eq!(audited(&mut admin, "delete_token").await, 1);
        let gone = admin
            .delete_token(pb::DeleteTokenRequest {
                serial: "IDEM3".into(),
                request_id: "delete-2".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    }

    enroll_e2e::on_both_backends!(retried_mutations_return_the_first_result);
}
