//! A device whose model the FIDO metadata flags (REVOKED) is refused at the gate by the
//! next request after the flag is recorded, as CheckEnrollment stops counting it.
use std::time::{Duration, Instant};

use enroll_e2e::{TestMetadataService, metadata_entry, metadata_payload, register_by_link_with};
use webauthn_authenticator_rs::softtoken::{AAGUID, SoftToken};

use super::*;

const MODEL: &str = "Soft token (test)";

fn entry(token_ca: &crypto_glue::x509::Certificate, revoked: bool) -> Value {
    let mut statuses = vec![("FIDO_CERTIFIED_L1", "2024-01-01")];
    if revoked {
        statuses.push(("REVOKED", "2025-01-01"));
    }
    metadata_entry(&AAGUID.to_string(), MODEL, &statuses, &[token_ca])
}

pub async fn a_model_flagged_by_the_metadata_is_refused_at_the_next_request(backend: Backend) {
    let (mut token, token_ca) = SoftToken::new(true).unwrap();
    let mds = TestMetadataService::new("mds");
    mds.publish(&mds.sign(&metadata_payload(1, vec![entry(&token_ca, false)])));
    let issuer = JwtIssuer::new();
    let gate = gate_config(&issuer, &[HOST.to_owned()]);
    let metadata = mds.config();
    let stack = TestStack::builder(backend)
        .device_config(move |device| {
            device.gate = gate.clone();
            device.webauthn.metadata = metadata.clone();
        })
        .start()
        .await;
    let device = register_by_link_with(
        &mut stack.admin(),
        &mut stack.proxy(),
        &mut token,
        "acme",
        "alice",
    )
    .await;
    assert_eq!(device.model, MODEL);
    let jwt = issuer.token("acme", "alice");
    let cookie = sign_in(&stack, &jwt, &mut token, "any").await;
    let headers = [
        (JWT_HEADER, jwt.as_str()),
        ("X-Enroll-Device-Type", "any"),
        ("Cookie", cookie.as_str()),
    ];
    assert_eq!(check(&stack, "/app", &headers).await.status, 200);
    // A later genuine BLOB marks the model REVOKED; the service refreshes every second.
    mds.publish(&mds.sign(&metadata_payload(2, vec![entry(&token_ca, true)])));
    let deadline = Instant::now() + Duration::from_secs(20);
    let flagged = loop {
        let listed = stack
            .admin()
            .get_device(enroll_shared::proto::device::v1::GetDeviceRequest {
                id: device.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if listed.model_compromised {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "never flagged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refused = loop {
        let answer = check(&stack, "/app", &headers).await;
        if answer.status != 200 || flagged.elapsed() > Duration::from_millis(1500) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.status, 401, "{}", refused.body);
    let body = refused.json();
    assert_eq!(body["error"], "DEVICE_NOT_ACCEPTED", "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("REVOKED"),
        "{body}"
    );
    stack.stop().await;
}
