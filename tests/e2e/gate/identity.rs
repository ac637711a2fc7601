//! Who may claim an identity: only a JWT the configured issuer signed with a listed key,
//! for the configured audience, now; or, in header mode, a header from a trusted proxy.
//! Everything else is the same bare 401.
use super::*;

async fn assert_bare_401(stack: &TestStack, headers: &[(&str, &str)], case: &str) {
    let answer = check(
        stack,
        "/app",
        &[headers, &[("X-Enroll-Device-Type", "any")]].concat(),
    )
    .await;
    assert_eq!(answer.status, 401, "{case}: {}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"], "UNAUTHENTICATED", "{case}");
    assert!(body.get("signin").is_none(), "{case}: {body}");
    assert!(answer.header("location").is_none(), "{case}");
    assert!(answer.header("x-enroll-user").is_none(), "{case}");
}

pub async fn no_valid_identity_gets_401_and_nothing_more(backend: Backend) {
    let issuer = JwtIssuer::new();
    let stack = gate_stack(backend, &issuer).await;
    let (realm, user) = ("acme", "alice");
    let expired = issuer.token_with(realm, user, |claims| {
        claims["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
        claims["nbf"] = json!(chrono::Utc::now().timestamp() - 7200);
    });
    let not_yet = issuer.token_with(realm, user, |claims| {
        claims["nbf"] = json!(chrono::Utc::now().timestamp() + 3600);
    });
    let wrong_audience = issuer.token_with(realm, user, |claims| {
        claims["aud"] = json!("another-app");
    });
    let wrong_issuer = issuer.token_with(realm, user, |claims| {
        claims["iss"] = json!("https://evil.example");
    });
    let no_user = issuer.token_with(realm, user, |claims| {
        claims.as_object_mut().unwrap().remove("email");
    });
    let bad_name = issuer.token_with(realm, user, |claims| {
        claims["email"] = json!("../../etc/passwd\u{0}");
    });
    let forged = issuer.forged_token(realm, user);
    let unsigned = issuer.unsigned_token(realm, user);
    let hmac = issuer.hmac_with_public_key(realm, user);
    let unknown_kid = issuer.token_with_unknown_key(realm, user);
    let oversized = "a".repeat(20_000);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no JWT", vec![]),
        ("empty JWT", vec![(JWT_HEADER, "")]),
        ("garbage", vec![(JWT_HEADER, "not.a.jwt")]),
        ("oversized", vec![(JWT_HEADER, oversized.as_str())]),
        ("expired", vec![(JWT_HEADER, expired.as_str())]),
        ("not yet valid", vec![(JWT_HEADER, not_yet.as_str())]),
        (
            "wrong audience",
            vec![(JWT_HEADER, wrong_audience.as_str())],
        ),
        ("wrong issuer", vec![(JWT_HEADER, wrong_issuer.as_str())]),
        ("no user claim", vec![(JWT_HEADER, no_user.as_str())]),
        ("bad user name", vec![(JWT_HEADER, bad_name.as_str())]),
        ("forged signature", vec![(JWT_HEADER, forged.as_str())]),
        ("alg none", vec![(JWT_HEADER, unsigned.as_str())]),
        (
            "HMAC with the public key",
            vec![(JWT_HEADER, hmac.as_str())],
        ),
        ("unknown kid", vec![(JWT_HEADER, unknown_kid.as_str())]),
        // Header mode is off: a plain header proves nothing.
        ("plain header", vec![("X-Forwarded-User", "alice")]),
    ];
    for (case, headers) in &cases {
        assert_bare_401(&stack, headers, case).await;
    }
    // The page's API says the same and starts nothing.
    for (case, jwt) in [("forged", forged.as_str()), ("alg none", unsigned.as_str())] {
        let answer = page_api(&stack, jwt, "status", &json!({"type": "any"})).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.body);
        let answer = page_api(&stack, jwt, "authenticate/begin", &json!({"type": "any"})).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.body);
    }
    // The valid token of the same user is accepted (it gets as far as the device session).
    let valid = issuer.token(realm, user);
    let answer = check(
        &stack,
        "/app",
        &[
            (JWT_HEADER, valid.as_str()),
            ("X-Enroll-Device-Type", "any"),
        ],
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.json()["error"], "DEVICE_SESSION_REQUIRED");
    stack.stop().await;
}

pub async fn a_plain_header_counts_only_from_the_gates_trusted_proxies(backend: Backend) {
    let issuer = JwtIssuer::new();
    let mut config = gate_config(&issuer, &[HOST.to_owned()]);
    config.identity.mode = enroll_device::config::IdentityMode::Header;
    config.identity.header = "X-Forwarded-User".to_owned();
    config.identity.realm = "acme".to_owned();
    // Only a proxy at 127.0.0.2 may vouch; the test's connections come from 127.0.0.1.
    config.trusted_proxies = vec!["127.0.0.2".to_owned()];
    let untrusted = config.clone();
    let stack = TestStack::builder(backend)
        .device_config(move |device| device.gate = untrusted.clone())
        .start()
        .await;
    let answer = check(
        &stack,
        "/app",
        &[
            ("X-Forwarded-User", "alice"),
            ("X-Enroll-Device-Type", "any"),
        ],
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.json()["error"], "UNAUTHENTICATED");
    stack.stop().await;

    config.trusted_proxies = vec!["127.0.0.1".to_owned()];
    let stack = TestStack::builder(backend)
        .device_config(move |device| device.gate = config.clone())
        .start()
        .await;
    let answer = check(
        &stack,
        "/app",
        &[
            ("X-Forwarded-User", "alice"),
            ("X-Enroll-Device-Type", "any"),
        ],
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(
        answer.json()["error"],
        "DEVICE_SESSION_REQUIRED",
        "a trusted proxy's header names the user"
    );
    stack.stop().await;
}

pub async fn a_new_signing_key_is_fetched_on_its_first_unknown_kid(backend: Backend) {
    let issuer = JwtIssuer::new();
    let stack = gate_stack(backend, &issuer).await;
    // The identity provider rotates: a second key joins the JWKS, and tokens signed with it
    // name a kid the gate has not seen yet.
    let rotated = JwtIssuer::with_kid("test-key-2");
    let token = rotated.token("acme", "alice");
    let headers = [
        (JWT_HEADER, token.as_str()),
        ("X-Enroll-Device-Type", "any"),
    ];
    let before = check(&stack, "/app", &headers).await;
    assert_eq!(
        before.json()["error"],
        "UNAUTHENTICATED",
        "not published yet"
    );
    // Past the refresh interval (1 s in the test configuration) since that refresh.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    issuer.publish(&[issuer.jwk.clone(), rotated.jwk.clone()]);
    let after = check(&stack, "/app", &headers).await;
    assert_eq!(
        after.json()["error"],
        "DEVICE_SESSION_REQUIRED",
        "the new key is read on its first unknown kid: {}",
        after.body
    );
    // The old key still verifies during the overlap.
    let old = issuer.token("acme", "alice");
    let answer = check(
        &stack,
        "/app",
        &[(JWT_HEADER, old.as_str()), ("X-Enroll-Device-Type", "any")],
    )
    .await;
    assert_eq!(answer.json()["error"], "DEVICE_SESSION_REQUIRED");
    // A stream of made-up kids costs at most one read per interval, and fails closed.
    for _ in 0..20 {
        let unknown = issuer.token_with_unknown_key("acme", "alice");
        let answer = check(
            &stack,
            "/app",
            &[
                (JWT_HEADER, unknown.as_str()),
                ("X-Enroll-Device-Type", "any"),
            ],
        )
        .await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.json()["error"], "UNAUTHENTICATED");
    }
    stack.stop().await;
}

pub async fn routes_without_a_valid_device_type_or_host_are_refused(backend: Backend) {
    let issuer = JwtIssuer::new();
    let stack = gate_stack(backend, &issuer).await;
    let token = issuer.token("acme", "alice");
    let jwt = (JWT_HEADER, token.as_str());
    let missing = check(&stack, "/app", &[jwt]).await;
    assert_eq!(missing.status, 403, "{}", missing.body);
    assert_eq!(missing.json()["error"], "DEVICE_TYPE_MISSING");
    for bad in ["", "ANYTHING", "enclave", "any,enclave_only"] {
        let answer = check(&stack, "/app", &[jwt, ("X-Enroll-Device-Type", bad)]).await;
        let expected = if bad.is_empty() {
            "DEVICE_TYPE_MISSING"
        } else {
            "DEVICE_TYPE_INVALID"
        };
        assert_eq!(answer.status, 403, "{bad}: {}", answer.body);
        assert_eq!(answer.json()["error"], expected, "{bad}");
    }
    // The query parameter works as the header does.
    let answer = gate_request(
        &stack,
        "GET",
        "/auth-request?device_type=enclave_only",
        &[jwt, ("X-Original-URL", &format!("http://{HOST}/x"))],
        None,
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.json()["error"], "DEVICE_SESSION_REQUIRED");
    // A host the gate does not protect.
    let answer = gate_request(
        &stack,
        "GET",
        "/forward-auth",
        &[
            jwt,
            ("X-Enroll-Device-Type", "any"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "other.example"),
            ("X-Forwarded-Uri", "/"),
        ],
        None,
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.json()["error"], "HOST_NOT_PROTECTED");
    stack.stop().await;
}
