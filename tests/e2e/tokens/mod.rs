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

mod audit;

mod lifecycle;

mod validate;

mod lost;

mod import;

mod idempotency;

mod otp_links;
mod verify;
