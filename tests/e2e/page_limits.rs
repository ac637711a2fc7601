//! The enrollment page under abuse, over plain HTTP (no browser): begins are rate limited
//! per client address and per link (HTTP 429 RESOURCE_EXHAUSTED), a dead link hammered
//! writes one refusal audit event per window, `X-Forwarded-For` counts only from a trusted
//! proxy, a client that never finishes its headers is disconnected, and connections beyond
//! the limit wait until one closes.
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use enroll_e2e::{
    Backend, PageAnswer, TestStack, audit_events_by_action, link_secret, parse_page_answer, policy,
};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use serde_json::json;

const BEGIN: &str = "/enroll/api/begin";
/// The test's TCP peers: the harness's default, and a second loopback address.
const PROXY: [u8; 4] = [127, 0, 0, 1];
const STRANGER: [u8; 4] = [127, 0, 0, 2];

async fn link_for(stack: &TestStack, user: &str) -> pb::EnrollmentLink {
    stack
        .admin()
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "acme".into(),
            user: user.into(),
            created_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .expect("create enrollment link")
        .into_inner()
}

/// A begin from the TCP peer `from`, forwarded for `client` when given.
async fn begin(stack: &TestStack, from: [u8; 4], client: Option<&str>, secret: &str) -> PageAnswer {
    let headers: Vec<(&str, &str)> = client.map(|c| ("X-Forwarded-For", c)).into_iter().collect();
    stack
        .page_post_from(
            IpAddr::from(from),
            &headers,
            BEGIN,
            &json!({ "secret": secret }),
        )
        .await
}

#[track_caller]
fn assert_exhausted(answer: &PageAnswer) {
    assert_eq!(answer.status, 429, "{answer:?}");
    assert_eq!(answer.json()["code"], "RESOURCE_EXHAUSTED", "{answer:?}");
}

async fn begins_are_limited_per_address_and_per_link(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| {
            config.web.trusted_proxies = vec!["127.0.0.1".into()];
            config.web.requests_per_address = 3;
            config.web.begins_per_link = 4;
        })
        .start()
        .await;
    let secrets = [
        link_secret(&link_for(&stack, "alice").await),
        link_secret(&link_for(&stack, "bob").await),
    ];

    // One client (behind the trusted proxy): three calls, then 429.
    for _ in 0..3 {
        let answer = begin(&stack, PROXY, Some("198.51.100.1"), &secrets[0]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_exhausted(&begin(&stack, PROXY, Some("198.51.100.1"), &secrets[1]).await);
    // Another client through the same proxy is not affected.
    let other = begin(&stack, PROXY, Some("198.51.100.2"), &secrets[1]).await;
    assert_eq!(other.status, 200, "{other:?}");

    // Per link: the fourth begin on alice's link is the last, whoever asks.
    let fourth = begin(&stack, PROXY, Some("198.51.100.3"), &secrets[0]).await;
    assert_eq!(fourth.status, 200, "{fourth:?}");
    assert_exhausted(&begin(&stack, PROXY, Some("198.51.100.4"), &secrets[0]).await);
    // Bob's link has its own count.
    let bob = begin(&stack, PROXY, Some("198.51.100.4"), &secrets[1]).await;
    assert_eq!(bob.status, 200, "{bob:?}");
}

async fn a_hammered_dead_link_is_audited_once_per_window(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let link = link_for(&stack, "alice").await;
    let secret = link_secret(&link);
    admin
        .revoke_enrollment_link(pb::RevokeEnrollmentLinkRequest {
            id: link.id.clone(),
            revoked_by: "secops".into(),
        })
        .await
        .expect("revoke");
    let before = audit_events_by_action(&mut admin, "register_device")
        .await
        .len();

    for _ in 0..20 {
        let answer = begin(&stack, PROXY, None, &secret).await;
        assert_eq!(answer.status, 409, "{answer:?}");
        assert_eq!(answer.json()["code"], "FAILED_PRECONDITION", "{answer:?}");
        assert!(
            answer.json()["message"]
                .as_str()
                .unwrap_or_default()
                .contains("revoked"),
            "{answer:?}"
        );
    }
    let events = audit_events_by_action(&mut admin, "register_device").await;
    let refusals: Vec<_> = events
        .iter()
        .take(events.len() - before)
        .filter(|event| event.result == "denied")
        .collect();
    assert_eq!(refusals.len(), 1, "{events:?}");
    assert!(!refusals[0].reason.contains(&secret), "{:?}", refusals[0]);
}

/// Waits until the policy service denies webauthn registration to `client_ip`.
async fn until_denied_for(stack: &TestStack, client_ip: &str) {
    let mut policy = stack.policy_admin();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = policy
            .evaluate_enrollment(policy_pb::EvaluateEnrollmentRequest {
                realm: "acme".into(),
                user: "alice".into(),
                action: policy_pb::Action::RegisterDevice as i32,
                token_type: "webauthn".into(),
                client_ip: client_ip.into(),
                ..Default::default()
            })
            .await
            .expect("evaluate")
            .into_inner();
        if !answer.denials.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the policy never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn forwarded_for_counts_only_from_a_trusted_proxy(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| config.web.trusted_proxies = vec!["127.0.0.1/32".into()])
        .start()
        .await;
    // Clients in 198.51.100.0/24 may register OTP tokens only.
    stack
        .create_policy(policy_pb::Policy {
            clients: vec!["198.51.100.0/24".into()],
            ..policy("otp-only-there", &[("token_types", "totp")])
        })
        .await;
    until_denied_for(&stack, "198.51.100.9").await;
    let secret = link_secret(&link_for(&stack, "alice").await);

    // An untrusted peer claiming to be forwarded for that network: its own address counts.
    let stranger = begin(&stack, STRANGER, Some("198.51.100.9"), &secret).await;
    assert_eq!(stranger.status, 200, "{stranger:?}");
    // The trusted proxy forwarding for it: the policy sees the real client and refuses.
    let forwarded = begin(&stack, PROXY, Some("203.0.113.66, 198.51.100.9"), &secret).await;
    assert_eq!(forwarded.status, 403, "{forwarded:?}");
    assert_eq!(
        forwarded.json()["code"],
        "PERMISSION_DENIED",
        "{forwarded:?}"
    );
    // A client elsewhere behind the same proxy (its forged left-most entry ignored).
    let elsewhere = begin(&stack, PROXY, Some("198.51.100.9, 203.0.113.66"), &secret).await;
    assert_eq!(elsewhere.status, 200, "{elsewhere:?}");
}

/// Reads until the page closes the connection (or `limit` passes); how long that took
/// and what came back.
fn read_until_closed(mut stream: TcpStream, limit: Duration) -> (Duration, Vec<u8>, bool) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut raw = Vec::new();
    let closed = stream.read_to_end(&mut raw).is_ok();
    (started.elapsed(), raw, closed)
}

async fn slow_and_idle_clients_are_disconnected(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| config.web.header_read_timeout_secs = 1)
        .start()
        .await;
    let mut partial = stack.page_connect().await;
    partial
        .write_all(b"GET /enroll HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .expect("send part of the headers");
    let silent = stack.page_connect().await;
    for (what, stream) in [("partial headers", partial), ("silent", silent)] {
        let (took, raw, closed) =
            tokio::task::spawn_blocking(move || read_until_closed(stream, Duration::from_secs(10)))
                .await
                .expect("reader");
        assert!(closed, "{what}: still open after {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "{what}: closed after {took:?}"
        );
        // hyper may say 408 before closing; never a page.
        assert!(!String::from_utf8_lossy(&raw).contains("200 OK"), "{what}");
    }
    // The page itself still answers.
    assert_eq!(stack.page_get("/enroll").await.status, 200);
}

async fn connections_beyond_the_limit_wait(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| {
            config.web.max_connections = 2;
            config.web.header_read_timeout_secs = 60;
        })
        .start()
        .await;
    let held = [stack.page_connect().await, stack.page_connect().await];
    let mut waiting = stack.page_connect().await;
    waiting
        .write_all(b"GET /enroll HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let (waiting, nothing) = tokio::task::spawn_blocking(move || {
        waiting
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        let nothing = waiting.read(&mut byte).is_err();
        (waiting, nothing)
    })
    .await
    .expect("reader");
    assert!(nothing, "a third connection was served while two were open");

    // One held connection closes: the waiting one is served.
    drop(held);
    let (took, raw, closed) =
        tokio::task::spawn_blocking(move || read_until_closed(waiting, Duration::from_secs(10)))
            .await
            .expect("reader");
    assert!(closed, "still waiting after {took:?}");
    assert_eq!(parse_page_answer(&raw).status, 200);
}

/// The per-link table is bounded; secrets that name no link never take a place in it, so a
/// flood of made-up secrets (from many addresses) cannot push a real link's window out and
/// so forgive its begin count.
async fn made_up_secrets_never_evict_a_real_links_window(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| {
            config.web.trusted_proxies = vec!["127.0.0.1".into()];
            config.web.begins_per_link = 1;
            config.web.limiter_capacity = 4;
        })
        .start()
        .await;
    let secret = link_secret(&link_for(&stack, "alice").await);
    let first = begin(&stack, PROXY, Some("198.51.100.1"), &secret).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_exhausted(&begin(&stack, PROXY, Some("198.51.100.1"), &secret).await);
    for guess in 0..20 {
        // Well-formed (32 bytes, base64url), but no link's secret.
        let made_up = format!("{guess:0>42}A");
        let client = format!("203.0.113.{guess}");
        let answer = begin(&stack, PROXY, Some(&client), &made_up).await;
        assert_eq!(answer.status, 404, "{answer:?}");
    }
    assert_exhausted(&begin(&stack, PROXY, Some("198.51.100.2"), &secret).await);
}

enroll_e2e::on_both_backends!(
    made_up_secrets_never_evict_a_real_links_window,
    begins_are_limited_per_address_and_per_link,
    a_hammered_dead_link_is_audited_once_per_window,
    forwarded_for_counts_only_from_a_trusted_proxy,
    slow_and_idle_clients_are_disconnected,
    connections_beyond_the_limit_wait,
);
