//! The event RPCs in the scenario: the watch, a webhook stream (its secret, then a rotated
//! one) delivering to an unreachable receiver (so delivery errors are logged too), a CAEP
//! stream, an RS256 signing key given as PKCS#8 (the private key is a secret), dead
//! letters, redelivery, pause, delete; a poll stream (its bearer token, then a rotated one)
//! polled with the token, with a wrong one and with an error report, and verified. The
//! secrets must appear nowhere.
use enroll_e2e::TestStack;
use enroll_shared::proto::device::v1 as pb;
use futures::StreamExt;

use super::Used;

/// An RSA-2048 PKCS#8 key made for the device service's signing tests.
const RSA_KEY: &[u8] = include_bytes!("../../services/device/src/events/testdata/rsa2048.pk8.der");

pub async fn run(stack: &TestStack, used: &mut Used) {
    let (mut admin, mut ops) = (stack.admin(), stack.ops());
    let mut watch = ops
        .watch_enrollment_events(pb::WatchEnrollmentEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
        .await
        .expect("an event")
        .expect("the stream")
        .unwrap();
    used.serials.push(first.subject);
    drop(watch);
    let webhook = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "siem".into(),
            encoding: pb::EventEncoding::Webhook as i32,
            // Nothing listens there: deliveries fail and are logged.
            endpoint: "http://127.0.0.1:9/hook".into(),
            from_beginning: true,
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    used.secret("webhook secret", &webhook.secret);
    let id = webhook.stream.unwrap().id;
    let rotated = admin
        .rotate_event_stream_secret(pb::RotateEventStreamSecretRequest {
            id: id.clone(),
            rotated_by: "secops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    used.secret("rotated webhook secret", &rotated.secret);
    admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "idp".into(),
            encoding: pb::EventEncoding::CaepPush as i32,
            endpoint: "http://127.0.0.1:9/caep".into(),
            audience: "https://idp.example.com".into(),
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .rotate_event_signing_key(pb::RotateEventSigningKeyRequest {
            algorithm: "RS256".into(),
            rsa_pkcs8_der: RSA_KEY.to_vec(),
            rotated_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    used.secret("RSA signing key", RSA_KEY);
    ops.list_event_streams(pb::ListEventStreamsRequest {})
        .await
        .unwrap();
    // Let the worker try (and fail) a few deliveries.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    ops.list_dead_letters(pb::ListDeadLettersRequest {
        stream_id: id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    admin
        .redeliver_events(pb::RedeliverEventsRequest {
            stream_id: id.clone(),
            requested_by: "secops".into(),
        })
        .await
        .unwrap();
    admin
        .update_event_stream(pb::UpdateEventStreamRequest {
            id: id.clone(),
            status: pb::EventStreamStatus::Paused as i32,
            updated_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    used.error(
        admin
            .create_event_stream(pb::CreateEventStreamRequest {
                name: "bad".into(),
                encoding: pb::EventEncoding::Webhook as i32,
                endpoint: "https://169.254.169.254/latest".into(),
                created_by: "secops".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    admin
        .delete_event_stream(pb::DeleteEventStreamRequest {
            id,
            deleted_by: "secops".into(),
        })
        .await
        .unwrap();
    poll(stack, used).await;
}

/// A poll stream's tokens go out once and come back in `Authorization` headers only.
async fn poll(stack: &TestStack, used: &mut Used) {
    let mut admin = stack.admin();
    let created = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "firewalled".into(),
            encoding: pb::EventEncoding::CaepPoll as i32,
            audience: "https://idp.example.com".into(),
            from_beginning: true,
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    used.secret("poll token", &created.secret);
    let id = created.stream.unwrap().id;
    let rotated = admin
        .rotate_event_stream_secret(pb::RotateEventStreamSecretRequest {
            id: id.clone(),
            rotated_by: "secops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    used.secret("rotated poll token", &rotated.secret);
    let path = format!("{}/{id}", enroll_device::web::POLL_PATH);
    let from = std::net::IpAddr::from([127, 0, 0, 1]);
    for token in [&created.secret, &rotated.secret] {
        let bearer = format!("Bearer {token}");
        let answer = stack
            .page_post_from(
                from,
                &[("Authorization", bearer.as_str())],
                &path,
                &serde_json::json!({"returnImmediately": true, "maxEvents": 2}),
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let jtis: Vec<String> = answer.json()["sets"]
            .as_object()
            .map(|sets| sets.keys().cloned().collect())
            .unwrap_or_default();
        let reported = stack
            .page_post_from(
                from,
                &[("Authorization", bearer.as_str())],
                &path,
                &serde_json::json!({
                    "returnImmediately": true,
                    "ack": jtis.iter().take(1).collect::<Vec<_>>(),
                    "setErrs": jtis.get(1).map(|jti| serde_json::json!({
                        jti.as_str(): {"err": "invalid_request", "description": "refused"}
                    })).unwrap_or_else(|| serde_json::json!({})),
                }),
            )
            .await;
        assert_eq!(reported.status, 200, "{reported:?}");
    }
    // A wrong token (the rotated one with a letter changed) and a malformed body.
    let mut wrong = rotated.secret.clone();
    wrong.pop();
    wrong.push('x');
    let refused = stack
        .page_post_from(
            from,
            &[("Authorization", format!("Bearer {wrong}").as_str())],
            &path,
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(refused.status, 401, "{refused:?}");
    admin
        .verify_event_stream(pb::VerifyEventStreamRequest {
            id,
            state: "c3RhdGU".into(),
            requested_by: "secops".into(),
        })
        .await
        .unwrap();
}
