//! The event receivers verify for real, without the device service: a security event token
//! signed by the test's own ES256 key and published in a JWKS over HTTP is accepted (202)
//! and logged with its claims; a tampered one, one with `sub` or `exp`, another `typ`, the
//! wrong audience or issuer, or two events are refused with 400 and RFC 8935's error JSON;
//! a key added to the JWKS after the receiver started is found (refresh on an unknown
//! `kid`). A webhook signed by hand (HMAC-SHA256 of `id.timestamp.body`) is accepted (204),
//! also among several signatures and under the second secret of a rotation; the wrong
//! secret, a changed body or a stale timestamp are refused with 400. Forced answers
//! (`/control`) come first, with `Retry-After`, and are logged but not accepted.
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use enroll_e2e::{
    JwksFileServer, JwtIssuer, PythonReceiver, ReceiverOptions, accepted, python_receiver_or_skip,
};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

const ISSUER: &str = "https://device.test.example";
const AUDIENCE: &str = "https://receiver.test.example";
const WAIT: Duration = Duration::from_secs(10);
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

fn secret() -> (String, Vec<u8>) {
    let mut key = vec![0; 24];
    SystemRandom::new().fill(&mut key).expect("random");
    (format!("whsec_{}", STANDARD.encode(&key)), key)
}

fn set_claims(jti: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": chrono::Utc::now().timestamp(),
        "jti": jti,
        "sub_id": {"format": "opaque", "id": "device-1"},
        "events": {SESSION_REVOKED: {"event_timestamp": chrono::Utc::now().timestamp()}},
    })
}

/// The signature header value for `body` under `key` (Standard Webhooks, v1).
fn webhook_signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        format!("{id}.{timestamp}.{body}").as_bytes(),
    );
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}

fn webhook_body(kind: &str) -> String {
    json!({
        "type": kind,
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "data": {"device_id": "device-1", "realm": "acme"},
    })
    .to_string()
}

async fn post_webhook(
    receiver: &PythonReceiver,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &str,
) -> enroll_e2e::PageAnswer {
    let timestamp = timestamp.to_string();
    receiver
        .post(
            "/webhook",
            &[
                ("Content-Type", "application/json"),
                ("webhook-id", id),
                ("webhook-timestamp", &timestamp),
                ("webhook-signature", signature),
            ],
            body,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_event_tokens_are_verified_with_pyjwt() {
    if python_receiver_or_skip("security_event_tokens_are_verified_with_pyjwt").is_none() {
        return;
    }
    let keys = JwtIssuer::with_kid("set-key-1");
    let jwks = JwksFileServer::start(keys.jwks_path()).await;
    let receiver = PythonReceiver::start(ReceiverOptions {
        jwks_url: jwks.url(),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        webhook_secrets: Vec::new(),
    });

    // A valid SET: 202, logged with its claims and key.
    let token = keys.sign_typed("secevent+jwt", &set_claims("jti-valid"));
    let answer = receiver.push_set(&token).await;
    assert_eq!(answer.status, 202, "{answer:?} {}", receiver.stderr());
    let log = receiver
        .wait_for(|log| accepted(log, "set").len() == 1, WAIT)
        .await;
    let entry = accepted(&log, "set")[0];
    assert_eq!(entry["ok"], true);
    assert_eq!(entry["jti"], "jti-valid");
    assert_eq!(entry["kid"], "set-key-1");
    assert_eq!(entry["claims"]["sub_id"]["id"], "device-1");
    assert!(entry["claims"]["events"][SESSION_REVOKED].is_object());

    // Refused: each answer is 400 with RFC 8935's error code, and logged as not ok.
    let tampered = {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims = set_claims("jti-valid");
        claims["sub_id"]["id"] = json!("device-2");
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        parts.join(".")
    };
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = set_claims("jti-refused");
        change(&mut claims);
        keys.sign_typed("secevent+jwt", &claims)
    };
    let refused: Vec<(&str, String, &str)> = vec![
        ("tampered", tampered, "invalid_key"),
        (
            "sub",
            with(&|claims| claims["sub"] = json!("device-1")),
            "invalid_request",
        ),
        (
            "exp",
            with(&|claims| claims["exp"] = json!(chrono::Utc::now().timestamp() + 300)),
            "invalid_request",
        ),
        (
            "no jti",
            with(&|claims| {
                claims.as_object_mut().unwrap().remove("jti");
            }),
            "invalid_request",
        ),
        (
            "no iat",
            with(&|claims| {
                claims.as_object_mut().unwrap().remove("iat");
            }),
            "invalid_request",
        ),
        (
            "two events",
            with(&|claims| claims["events"]["urn:example:other"] = json!({})),
            "invalid_request",
        ),
        (
            "audience",
            with(&|claims| claims["aud"] = json!("https://other.example")),
            "invalid_audience",
        ),
        (
            "issuer",
            with(&|claims| claims["iss"] = json!("https://other.example")),
            "invalid_issuer",
        ),
        (
            "typ JWT",
            keys.sign_typed("JWT", &set_claims("jti-typ")),
            "invalid_request",
        ),
        (
            "unknown key",
            JwtIssuer::with_kid("set-key-2").sign_typed("secevent+jwt", &set_claims("jti-key")),
            "invalid_key",
        ),
        (
            "forged",
            JwtIssuer::with_kid("set-key-1").sign_typed("secevent+jwt", &set_claims("jti-f")),
            "invalid_key",
        ),
        (
            "alg none",
            keys.unsigned_token("acme", "someone"),
            "invalid_request",
        ),
    ];
    for (case, token, err) in &refused {
        let answer = receiver.push_set(token).await;
        assert_eq!(answer.status, 400, "{case}: {answer:?}");
        assert_eq!(answer.json()["err"], *err, "{case}: {answer:?}");
        assert!(answer.json()["description"].is_string(), "{case}");
    }
    // The wrong media type is refused too.
    let answer = receiver
        .post("/caep", &[("Content-Type", "application/jwt")], &token)
        .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.json()["err"], "invalid_request");

    let log = receiver.log().await;
    assert_eq!(log.len(), refused.len() + 2, "{log:#?}");
    assert_eq!(
        accepted(&log, "set").len(),
        1,
        "only the valid SET: {log:#?}"
    );
    assert!(log[1..].iter().all(|entry| entry["ok"] == false));

    // Key rotation: a key published after the receiver fetched the JWKS is found.
    let next = JwtIssuer::with_kid("set-key-3");
    keys.publish(&[keys.jwk.clone(), next.jwk.clone()]);
    let answer = receiver
        .push_set(&next.sign_typed("secevent+jwt", &set_claims("jti-rotated")))
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let log = receiver
        .wait_for(|log| accepted(log, "set").len() == 2, WAIT)
        .await;
    assert_eq!(accepted(&log, "set")[1]["kid"], "set-key-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_with_standardwebhooks() {
    if python_receiver_or_skip("webhooks_are_verified_with_standardwebhooks").is_none() {
        return;
    }
    let (old_secret, old_key) = secret();
    let (new_secret, new_key) = secret();
    let (_, wrong_key) = secret();
    let receiver = PythonReceiver::start(ReceiverOptions {
        webhook_secrets: vec![old_secret, new_secret],
        ..Default::default()
    });
    let now = chrono::Utc::now().timestamp();

    // Signed under the first secret: 204, logged with its payload.
    let body = webhook_body("device.enrolled");
    let signature = webhook_signature(&old_key, "msg_1", now, &body);
    let answer = post_webhook(&receiver, "msg_1", now, &signature, &body).await;
    assert_eq!(answer.status, 204, "{answer:?} {}", receiver.stderr());
    // Several signatures, space-separated, the second one valid (under the second secret).
    let body2 = webhook_body("device.revoked");
    let signatures = format!(
        "v1,{} {}",
        STANDARD.encode([0u8; 32]),
        webhook_signature(&new_key, "msg_2", now, &body2)
    );
    let answer = post_webhook(&receiver, "msg_2", now, &signatures, &body2).await;
    assert_eq!(answer.status, 204, "{answer:?}");
    let log = receiver
        .wait_for(|log| accepted(log, "webhook").len() == 2, WAIT)
        .await;
    let entries = accepted(&log, "webhook");
    assert_eq!(entries[0]["id"], "msg_1");
    assert_eq!(entries[0]["type"], "device.enrolled");
    assert_eq!(entries[0]["payload"]["data"]["device_id"], "device-1");
    assert_eq!(entries[0]["secret_index"], 0);
    assert_eq!(entries[1]["id"], "msg_2");
    assert_eq!(entries[1]["type"], "device.revoked");
    assert_eq!(entries[1]["secret_index"], 1);

    // Refused with 400: the wrong secret, a changed body, another id, a stale timestamp.
    let stale = now - 3600;
    let cases = [
        (
            "wrong secret",
            "msg_3",
            now,
            webhook_signature(&wrong_key, "msg_3", now, &body),
            body.clone(),
        ),
        (
            "changed body",
            "msg_4",
            now,
            webhook_signature(&old_key, "msg_4", now, &body),
            body.replace("device-1", "device-2"),
        ),
        (
            "other id",
            "msg_5",
            now,
            webhook_signature(&old_key, "msg_1", now, &body),
            body.clone(),
        ),
        (
            "stale",
            "msg_6",
            stale,
            webhook_signature(&old_key, "msg_6", stale, &body),
            body.clone(),
        ),
    ];
    for (case, id, timestamp, signature, body) in &cases {
        let answer = post_webhook(&receiver, id, *timestamp, signature, body).await;
        assert_eq!(answer.status, 400, "{case}: {answer:?}");
    }
    let log = receiver.log().await;
    assert_eq!(log.len(), 2 + cases.len(), "{log:#?}");
    assert!(
        log[2..].iter().all(|entry| entry["ok"] == false),
        "{log:#?}"
    );
    assert_eq!(accepted(&log, "webhook").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_answers_come_first_then_success() {
    if python_receiver_or_skip("forced_answers_come_first_then_success").is_none() {
        return;
    }
    let (secret, key) = secret();
    let receiver = PythonReceiver::start(ReceiverOptions {
        webhook_secrets: vec![secret],
        ..Default::default()
    });
    receiver.force("/webhook", 500, None, 1).await;
    receiver.force("/webhook", 429, Some(2), 1).await;
    let now = chrono::Utc::now().timestamp();
    let body = webhook_body("device.enrolled");
    let signature = webhook_signature(&key, "msg_retry", now, &body);
    // The same delivery three times, as a sender retrying.
    let first = post_webhook(&receiver, "msg_retry", now, &signature, &body).await;
    assert_eq!(first.status, 500, "{first:?}");
    let second = post_webhook(&receiver, "msg_retry", now, &signature, &body).await;
    assert_eq!(second.status, 429, "{second:?}");
    assert_eq!(second.header("retry-after"), Some("2"));
    let third = post_webhook(&receiver, "msg_retry", now, &signature, &body).await;
    assert_eq!(third.status, 204, "{third:?}");

    let log = receiver.log().await;
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[0]["forced"], 500);
    assert_eq!(log[1]["forced"], 429);
    assert!(log[2].get("forced").is_none());
    // All three verified; only the last accepted.
    assert!(log.iter().all(|entry| entry["ok"] == true), "{log:#?}");
    let entries = accepted(&log, "webhook");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], "msg_retry");

    // The log file holds the same requests, one JSON line each.
    let lines = std::fs::read_to_string(receiver.log_path()).expect("log file");
    assert_eq!(lines.lines().count(), 3);
    for line in lines.lines() {
        let entry: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(entry["kind"], "webhook");
    }

    // /caep too: forced 503 twice (e.g. SETs are retried), answered without verifying
    // anything accepted.
    receiver.force("/caep", 503, Some(1), 2).await;
    for _ in 0..2 {
        let answer = receiver.push_set("not.a.jwt").await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    let answer = receiver.push_set("not.a.jwt").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.json()["err"], "invalid_request");
}
