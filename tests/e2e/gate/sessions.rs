//! Device sessions: without one browsers are sent to the sign-in page and everything else
//! gets 401 with where to go; with one every request is re-checked, so revoking the device
//! or a policy that no longer accepts it refuses the next request within the coherence
//! bound; sessions do not cross users or device types, and tampered cookies are refused.
use std::time::{Duration, Instant};

use enroll_e2e::{audit_events_by_action, create, realm_policy, register_by_link_with};
use enroll_shared::proto::device::v1 as pb;

use super::*;

/// The coherence bound: a change refuses the next request within this.
const COHERENCE: Duration = Duration::from_secs(1);

/// Registers a soft passkey for acme/`user` through a link; the device and the passkey.
async fn enrolled(stack: &TestStack, user: &str) -> (pb::Device, SoftPasskey) {
    let mut passkey = SoftPasskey::new(true);
    let device = register_by_link_with(
        &mut stack.admin(),
        &mut stack.proxy(),
        &mut passkey,
        "acme",
        user,
    )
    .await;
    (device, passkey)
}

/// Checks until the answer's status is `status`, for at most the coherence bound (plus
/// the request's own time); the last answer.
async fn check_until(
    stack: &TestStack,
    headers: &[(&str, &str)],
    status: u16,
    since: Instant,
) -> PageAnswer {
    loop {
        let answer = check(stack, "/app", headers).await;
        if answer.status == status || since.elapsed() > COHERENCE + Duration::from_millis(500) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn without_a_session_browsers_are_sent_to_the_page_and_scripts_get_401(backend: Backend) {
    let issuer = JwtIssuer::new();
    let stack = gate_stack(backend, &issuer).await;
    let token = issuer.token("acme", "alice");
    let jwt = (JWT_HEADER, token.as_str());
    let any = ("X-Enroll-Device-Type", "any");
    let navigation = check(
        &stack,
        "/app?q=1",
        &[jwt, any, ("Sec-Fetch-Mode", "navigate")],
    )
    .await;
    assert_eq!(navigation.status, 302, "{}", navigation.body);
    assert_eq!(
        navigation.header("location"),
        Some("/.enroll-gate/?type=any&rd=http%3A%2F%2Flocalhost%3A8080%2Fapp%3Fq%3D1")
    );
    // fetch/XHR, WebSocket upgrades and API clients: 401 with the reason and the page.
    for (case, headers) in [
        ("fetch", vec![("Sec-Fetch-Mode", "cors")]),
        (
            "xhr",
            vec![
                ("X-Requested-With", "XMLHttpRequest"),
                ("Accept", "text/html"),
            ],
        ),
        (
            "websocket",
            vec![
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-Fetch-Mode", "websocket"),
            ],
        ),
        ("curl", vec![("Accept", "*/*")]),
    ] {
        let answer = check(&stack, "/app", &[&[jwt, any], headers.as_slice()].concat()).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.body);
        assert!(answer.header("location").is_none(), "{case}");
        let body = answer.json();
        assert_eq!(body["error"], "DEVICE_SESSION_REQUIRED", "{case}");
        assert!(
            body["signin"]
                .as_str()
                .unwrap()
                .starts_with("/.enroll-gate/?type=any&rd="),
            "{case}: {body}"
        );
    }
    // nginx's auth_request endpoint never redirects (nginx accepts only 2xx, 401, 403).
    let answer = gate_request(
        &stack,
        "GET",
        "/auth-request",
        &[
            jwt,
            any,
            ("Sec-Fetch-Mode", "navigate"),
            ("X-Original-URL", "http://localhost:8080/app"),
        ],
        None,
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(
        answer.header("x-enroll-gate-error"),
        Some("DEVICE_SESSION_REQUIRED")
    );
    stack.stop().await;
}

pub async fn a_device_session_passes_until_the_device_is_revoked(backend: Backend) {
    let issuer = JwtIssuer::new();
    let stack = gate_stack(backend, &issuer).await;
    let (device, mut passkey) = enrolled(&stack, "alice").await;
    let token = issuer.token("acme", "alice");
    let cookie = sign_in(&stack, &token, &mut passkey, "any").await;
    let cookies = format!("theme=dark; {cookie}; lang=en");
    let headers = [
        (JWT_HEADER, token.as_str()),
        ("X-Enroll-Device-Type", "any"),
        ("Cookie", cookies.as_str()),
    ];
    let allowed = check(&stack, "/app", &headers).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.header("x-enroll-user"), Some("alice"));
    assert_eq!(allowed.header("x-enroll-realm"), Some("acme"));
    assert_eq!(
        allowed.header("x-enroll-device-id"),
        Some(device.id.as_str())
    );
    assert_eq!(allowed.header("x-enroll-device-type"), Some("any"));
    // The app gets its own cookies back, never the gate's.
    assert_eq!(
        allowed.header("x-enroll-cookie"),
        Some("theme=dark; lang=en")
    );
    // A policy that no longer accepts the device's model refuses the next request.
    let since = Instant::now();
    create(
        &mut stack.policy_admin(),
        realm_policy(
            "yubikeys-only",
            "acme",
            &[(
                "webauthn_aaguid_allow",
                "cb69481e-8ff7-4039-93ec-0a2729a154a8",
            )],
        ),
    )
    .await
    .expect("create the policy");
    let refused = check_until(&stack, &headers, 401, since).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(
        refused.json()["error"],
        "DEVICE_NOT_ACCEPTED",
        "{}",
        refused.body
    );
    assert!(
        refused.json()["reason"]
            .as_str()
            .unwrap()
            .contains("yubikeys-only"),
        "the reason names the policy: {}",
        refused.body
    );
    let policies = stack
        .policy_admin()
        .list_policies(enroll_shared::proto::policy::v1::ListPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .policies;
    let policy = policies.iter().find(|p| p.name == "yubikeys-only").unwrap();
    stack
        .policy_admin()
        .delete_policy(enroll_shared::proto::policy::v1::DeletePolicyRequest {
            name: policy.name.clone(),
            ..Default::default()
        })
        .await
        .expect("delete the policy");
    let since = Instant::now();
    let allowed_again = check_until(&stack, &headers, 200, since).await;
    assert_eq!(allowed_again.status, 200, "{}", allowed_again.body);
    // Revoked over gRPC: refused within the coherence bound, the cookie cleared.
    let since = Instant::now();
    stack
        .admin()
        .revoke_device(pb::RevokeDeviceRequest {
            id: device.id.clone(),
            revoked_by: "console-admin".into(),
            reason: "laptop stolen".into(),
        })
        .await
        .expect("revoke");
    let revoked = check_until(&stack, &headers, 401, since).await;
    assert!(
        since.elapsed() <= COHERENCE + Duration::from_millis(500),
        "refused after {:?}",
        since.elapsed()
    );
    assert_eq!(revoked.status, 401, "{}", revoked.body);
    assert_eq!(revoked.json()["error"], "DEVICE_REVOKED");
    assert!(
        revoked
            .header("set-cookie")
            .is_some_and(|set| set.contains("Max-Age=0")),
        "the dead session's cookie is cleared"
    );
    // And no new session starts with it.
    let again = page_api(
        &stack,
        &token,
        "authenticate/begin",
        &json!({"type": "any"}),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
    stack.stop().await;
}

pub async fn sessions_do_not_cross_users_types_or_tampering(backend: Backend) {
    let issuer = JwtIssuer::new();
    let stack = gate_stack(backend, &issuer).await;
    let (_, mut passkey) = enrolled(&stack, "alice").await;
    let alice = issuer.token("acme", "alice");
    let cookie = sign_in(&stack, &alice, &mut passkey, "any").await;
    // Bob presents alice's cookie with his own identity.
    let bob = issuer.token("acme", "bob");
    let answer = check(
        &stack,
        "/app",
        &[
            (JWT_HEADER, bob.as_str()),
            ("X-Enroll-Device-Type", "any"),
            ("Cookie", cookie.as_str()),
        ],
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.json()["error"], "DEVICE_SESSION_OTHER_USER");
    // An `any` session on an enclave_only route: refused, naming the type.
    let answer = check(
        &stack,
        "/admin",
        &[
            (JWT_HEADER, alice.as_str()),
            ("X-Enroll-Device-Type", "enclave_only"),
            ("Cookie", cookie.as_str()),
        ],
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"], "DEVICE_TYPE_REQUIRED");
    assert!(
        body["reason"].as_str().unwrap().contains("enclave_only"),
        "{body}"
    );
    // Signing in for enclave_only with an `any` device is refused too.
    let begun = page_api(
        &stack,
        &alice,
        "authenticate/begin",
        &json!({"type": "enclave_only"}),
    )
    .await;
    assert_ne!(begun.status, 200, "{}", begun.body);
    assert!(begun.body.contains("enclave_only"), "{}", begun.body);
    // Garbage, oversized and tampered cookies: 401, never a 5xx.
    let (name, value) = cookie.split_once('=').unwrap();
    let mut flipped = value.to_owned().into_bytes();
    let at = flipped.len() - 5;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{name}={}", String::from_utf8(flipped).unwrap());
    let oversized = format!("{name}=v1.s1.{}", "A".repeat(6000));
    for garbage in [
        format!("{name}="),
        format!("{name}=garbage"),
        format!("{name}=v1.nokey.AAAA"),
        format!("{name}=v1.s1.%00%ff"),
        flipped,
        oversized,
    ] {
        let answer = check(
            &stack,
            "/app",
            &[
                (JWT_HEADER, alice.as_str()),
                ("X-Enroll-Device-Type", "any"),
                ("Cookie", garbage.as_str()),
            ],
        )
        .await;
        assert_eq!(
            answer.status,
            401,
            "{}: {}",
            &garbage[..garbage.len().min(40)],
            answer.body
        );
        let error = answer.json()["error"].clone();
        assert!(
            error == "DEVICE_SESSION_INVALID" || error == "DEVICE_SESSION_REQUIRED",
            "{error}"
        );
    }
    stack.stop().await;
}

pub async fn the_page_refuses_other_origins_and_foreign_return_urls(backend: Backend) {
    let issuer = JwtIssuer::new();
    let limit = realm_policy("one-each", "acme", &[("max_token_per_user", "1")]);
    let config = gate_config(&issuer, &[HOST.to_owned()]);
    let stack = TestStack::builder(backend)
        .with_policy(limit)
        .device_config(move |device| device.gate = config.clone())
        .start()
        .await;
    let alice = issuer.token("acme", "alice");
    // Another origin, or none: refused before anything runs.
    for origin in [
        Some("http://evil.example"),
        Some("http://localhost:9999"),
        None,
    ] {
        let mut headers = vec![(JWT_HEADER, alice.as_str())];
        if let Some(origin) = origin {
            headers.push(("Origin", origin));
        }
        let answer = gate_request(
            &stack,
            "POST",
            "/.enroll-gate/api/status",
            &headers,
            Some(&json!({"type": "any"})),
        )
        .await;
        assert_eq!(answer.status, 403, "{origin:?}: {}", answer.body);
    }
    // A return URL on another host: refused (no open redirect).
    for foreign in [
        "https://evil.example/",
        "//evil.example/",
        "javascript:alert(1)",
        "http://localhost:8080.evil.example/",
    ] {
        let answer = page_api(
            &stack,
            &alice,
            "status",
            &json!({"type": "any", "rd": foreign}),
        )
        .await;
        assert_eq!(answer.status, 400, "{foreign}: {}", answer.body);
        assert_eq!(answer.json()["code"], "RETURN_URL_REFUSED");
    }
    // A user with no device who may self-register is offered registration.
    let answer = page_api(
        &stack,
        &alice,
        "status",
        &json!({"type": "any", "rd": "http://localhost:8080/app"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let status = answer.json();
    assert_eq!(status["next"], "register", "{status}");
    assert_eq!(status["return_url"], "http://localhost:8080/app");
    // A user at their token limit may not: "ask your administrator", with the reason.
    stack
        .admin()
        .enroll_token(pb::EnrollTokenRequest {
            realm: "acme".into(),
            user: "kim".into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let kim = issuer.token("acme", "kim");
    let answer = page_api(&stack, &kim, "status", &json!({"type": "any"})).await;
    let status = answer.json();
    assert_eq!(status["next"], "ask_admin", "{status}");
    assert!(
        status["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|reason| reason.as_str().unwrap().contains("one-each")),
        "{status}"
    );
    // Sign-out clears the cookie (from the page's origin only).
    let answer = page_api(&stack, &alice, "signout", &json!({})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.header("set-cookie").unwrap().contains("Max-Age=0"));
    stack.stop().await;
}

pub async fn decisions_are_audited_without_secrets(backend: Backend) {
    let issuer = JwtIssuer::new();
    let stack = gate_stack(backend, &issuer).await;
    let (device, mut passkey) = enrolled(&stack, "alice").await;
    let token = issuer.token("acme", "alice");
    let cookie = sign_in(&stack, &token, &mut passkey, "any").await;
    let headers = [
        (JWT_HEADER, token.as_str()),
        ("X-Enroll-Device-Type", "any"),
        ("Cookie", cookie.as_str()),
    ];
    for _ in 0..3 {
        assert_eq!(check(&stack, "/app", &headers).await.status, 200);
    }
    let forged = issuer.forged_token("acme", "alice");
    check(
        &stack,
        "/app",
        &[
            (JWT_HEADER, forged.as_str()),
            ("X-Enroll-Device-Type", "any"),
        ],
    )
    .await;
    // Refusals are written within a second, allowed decisions every interval (1 s here).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (checks, identities, sign_ins) = loop {
        let mut admin = stack.admin();
        let checks = audit_events_by_action(&mut admin, "gate_check").await;
        let identities = audit_events_by_action(&mut admin, "gate_identity").await;
        let sign_ins = audit_events_by_action(&mut admin, "gate_sign_in").await;
        if (checks.iter().any(|event| event.result == "ok")
            && !identities.is_empty()
            && !sign_ins.is_empty())
            || Instant::now() > deadline
        {
            break (checks, identities, sign_ins);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let allowed = checks
        .iter()
        .find(|event| event.result == "ok")
        .expect("allowed checks are audited");
    assert_eq!(allowed.actor, "gate");
    assert_eq!(
        (allowed.realm.as_str(), allowed.user.as_str()),
        ("acme", "alice")
    );
    assert_eq!(allowed.subject, device.id);
    assert!(
        allowed.reason.contains("allowed to localhost:8080"),
        "{}",
        allowed.reason
    );
    assert!(
        identities.iter().any(
            |event| event.result == "denied" && event.reason.contains("IDENTITY_BAD_SIGNATURE")
        ),
        "{identities:?}"
    );
    assert!(
        sign_ins.iter().any(|event| event.result == "ok"),
        "{sign_ins:?}"
    );
    // And counted, by outcome (a closed set of codes).
    let metrics = metrics_text(stack.device_metrics_addr()).await;
    let count = |outcome: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with("enroll_device_gate_decisions_total{"))
            .filter(|line| line.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(count("allowed") >= 3.0, "{metrics}");
    assert!(count("UNAUTHENTICATED") >= 1.0, "{metrics}");
    let cookie_value = cookie.split_once('=').unwrap().1;
    assert!(!metrics.contains(cookie_value) && !metrics.contains("alice"));
    for event in checks.iter().chain(&identities).chain(&sign_ins) {
        let text = format!("{event:?}");
        assert!(
            !text.contains(&token) && !text.contains(&forged),
            "a JWT in {text}"
        );
        assert!(!text.contains(cookie_value), "the cookie in {text}");
    }
    stack.stop().await;
}

/// The device service's Prometheus text.
async fn metrics_text(addr: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect to /metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        text
    })
    .await
    .expect("scrape")
}

pub async fn the_page_is_rate_limited_per_client_address(backend: Backend) {
    let issuer = JwtIssuer::new();
    let mut config = gate_config(&issuer, &[HOST.to_owned()]);
    config.requests_per_address = 3;
    let stack = TestStack::builder(backend)
        .device_config(move |device| device.gate = config.clone())
        .start()
        .await;
    let alice = issuer.token("acme", "alice");
    let body = json!({"type": "any"});
    let statuses: Vec<u16> =
        futures::future::join_all((0..5).map(|_| page_api(&stack, &alice, "status", &body)))
            .await
            .iter()
            .map(|answer| answer.status)
            .collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|status| **status == 429).count(),
        2,
        "{statuses:?}"
    );
    // The proxy's checks are not the page's: they are never rate limited here.
    for _ in 0..10 {
        let answer = check(
            &stack,
            "/app",
            &[
                (JWT_HEADER, alice.as_str()),
                ("X-Enroll-Device-Type", "any"),
            ],
        )
        .await;
        assert_eq!(answer.status, 401);
    }
    stack.stop().await;
}
