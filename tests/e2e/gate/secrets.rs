//! The gate's secrets (the proxy's JWTs, the session cookie, the identity headers' values)
//! never reach the logs (TRACE, all crates), the spans or the audit trail, whatever the
//! decision: a sign-in, allowed checks, refusals of forged tokens and tampered cookies.
use enroll_e2e::{Captured, audit_events_by_action, capture, register_by_link_with};

use super::*;

async fn scenario(backend: Backend) -> (Vec<(&'static str, String)>, String) {
    let issuer = JwtIssuer::new();
    let stack = gate_stack(backend, &issuer).await;
    let mut passkey = SoftPasskey::new(true);
    register_by_link_with(
        &mut stack.admin(),
        &mut stack.proxy(),
        &mut passkey,
        "acme",
        "alice",
    )
    .await;
    let token = issuer.token("acme", "alice");
    let cookie = sign_in(&stack, &token, &mut passkey, "any").await;
    let forged = issuer.forged_token("acme", "alice");
    let bob = issuer.token("acme", "bob");
    for (jwt, cookie) in [
        (token.as_str(), cookie.as_str()),
        (forged.as_str(), cookie.as_str()),
        (bob.as_str(), cookie.as_str()),
        (token.as_str(), "__Host-enroll-gate=v1.s1.AAAAtampered"),
    ] {
        check(
            &stack,
            "/app",
            &[
                (JWT_HEADER, jwt),
                ("X-Enroll-Device-Type", "any"),
                ("Cookie", cookie),
            ],
        )
        .await;
    }
    // Let the audit flush (refusals every second, allowed decisions every second here).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let mut audit = String::new();
    for action in ["gate_check", "gate_identity", "gate_sign_in"] {
        let events = audit_events_by_action(&mut stack.admin(), action).await;
        assert!(!events.is_empty(), "{action} is audited");
        audit.push_str(&format!("{events:?}\n"));
    }
    stack.stop().await;
    let cookie_value = cookie.split_once('=').unwrap().1.to_owned();
    let secrets = vec![
        ("the JWT", token),
        ("the forged JWT", forged),
        ("bob's JWT", bob),
        ("the session cookie", cookie_value),
    ];
    (secrets, audit)
}

async fn no_secret_in_logs_spans_or_audit(backend: Backend) {
    let ((secrets, audit), Captured { logs, spans }) = capture(scenario(backend)).await;
    let logs = String::from_utf8_lossy(&logs).into_owned();
    let spans = spans.join("\n");
    assert!(logs.contains("gate"), "the scan is not vacuous");
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        // The signature part alone is enough to call it a leak.
        let tail = &secret[secret.len() - 24..];
        for (place, text) in [("logs", &logs), ("spans", &spans), ("audit", &audit)] {
            if text.contains(tail) {
                leaks.push(format!("{what} in the {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}

// Current-thread runtimes: every server task runs under the capturing subscriber.
#[tokio::test]
async fn postgres() {
    no_secret_in_logs_spans_or_audit(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite() {
    no_secret_in_logs_spans_or_audit(Backend::Sqlite).await;
}
