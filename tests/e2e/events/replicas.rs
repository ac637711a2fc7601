//! Two device replicas deliver one stream: the lease lets one send at a time, so a normal
//! run sends every event once; a crashed holder's lease (it can no longer renew it) lapses
//! on the clock and the other replica delivers, at least once. A signing-key rotation keeps
//! the old key in the JWKS, and PyJWT verifies tokens under both.
use std::time::Duration;

use enroll_e2e::{Backend, PythonReceiver, TestStack, accepted, python_receiver_or_skip};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::time::Clock;
use serde_json::Value;

use super::support::{AUDIENCE, enroll_hotp, reference_receiver, webhook_stream};

async fn two_replicas(backend: Backend) -> (TestStack, PythonReceiver) {
    let stack = TestStack::builder(backend).device_replicas(2).start().await;
    let receiver = reference_receiver(&stack);
    (stack, receiver)
}

async fn enroll_many(stack: &TestStack, count: usize) {
    let mut admin = stack.admin();
    for n in 0..count {
        enroll_hotp(&mut admin, "corp", &format!("user{n}")).await;
    }
}

fn delivered_ids(log: &[Value]) -> Vec<String> {
    accepted(log, "webhook")
        .iter()
        .map(|entry| entry["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn two_replicas_send_every_event_once(backend: Backend) {
    if python_receiver_or_skip("events::replicas::every_event_once").is_none() {
        return;
    }
    let (stack, receiver) = two_replicas(backend).await;
    webhook_stream(&mut stack.admin(), &receiver, "siem").await;
    enroll_many(&stack, 20).await;
    receiver
        .wait_for(
            |log| delivered_ids(log).len() >= 20,
            Duration::from_secs(30),
        )
        .await;
    // A moment more for a duplicate to show, if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = delivered_ids(&receiver.log().await);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (20, 20), "{ids:?}");
}

async fn a_crashed_holders_lease_lapses_and_the_other_replica_delivers(backend: Backend) {
    if python_receiver_or_skip("events::replicas::crashed_holder").is_none() {
        return;
    }
    let (stack, receiver) = two_replicas(backend).await;
    let id = webhook_stream(&mut stack.admin(), &receiver, "siem")
        .await
        .id;
    // An instance that took the lease and died: it will never renew or release it. (The
    // replicas may hold it this moment: taken once it is free.)
    let db = sea_orm::Database::connect(&stack.database.url)
        .await
        .unwrap();
    let store = enroll_device::store::streams::StreamStore::new(db);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // A replica's lease lives `events.lease_secs` (30 s) on the clock: move past it, and
        // take the lease before a replica renews it.
        stack.clock().advance(Duration::from_secs(31));
        let now = stack.clock().now();
        if store
            .lease(
                &id,
                "crashed-instance",
                now,
                now + chrono::Duration::seconds(120),
            )
            .await
            .unwrap()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease was never free"
        );
    }
    enroll_many(&stack, 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        delivered_ids(&receiver.log().await).is_empty(),
        "nobody delivers while the crashed instance's lease lives"
    );
    stack.clock().advance(Duration::from_secs(121));
    let log = receiver
        .wait_for(|log| delivered_ids(log).len() >= 3, Duration::from_secs(20))
        .await;
    assert_eq!(delivered_ids(&log).len(), 3, "{log:#?}");
}

async fn a_rotated_signing_key_stays_published_and_both_verify(backend: Backend) {
    if python_receiver_or_skip("events::replicas::key_rotation").is_none() {
        return;
    }
    let (stack, receiver) = two_replicas(backend).await;
    let mut admin = stack.admin();
    admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "idp".into(),
            encoding: pb::EventEncoding::CaepPush as i32,
            endpoint: receiver.url("/caep"),
            audience: AUDIENCE.into(),
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    enroll_many(&stack, 1).await;
    let first = receiver
        .wait_for(
            |log| accepted(log, "set").len() == 1,
            Duration::from_secs(20),
        )
        .await;
    let old_kid = accepted(&first, "set")[0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = admin
        .rotate_event_signing_key(pb::RotateEventSigningKeyRequest {
            rotated_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let jwks: Value = serde_json::from_str(&rotated.jwks).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&rotated.kid.as_str()),
        "{kids:?}"
    );
    // The signing-key cache lives 5 s per replica: after it, tokens carry the new key.
    tokio::time::sleep(Duration::from_secs(6)).await;
    enroll_many(&stack, 1).await;
    let log = receiver
        .wait_for(
            |log| accepted(log, "set").len() == 2,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(accepted(&log, "set")[1]["kid"], rotated.kid.as_str());
    // The published JWKS serves both during the overlap.
    let published = stack.page_get(enroll_device::web::JWKS_PATH).await;
    assert_eq!(published.status, 200);
    let published = published.json();
    assert_eq!(
        published["keys"].as_array().unwrap().len(),
        2,
        "{published}"
    );
    assert!(!published.to_string().contains("\"d\""), "no private part");
}

enroll_e2e::on_both_backends!(
    two_replicas_send_every_event_once,
    a_crashed_holders_lease_lapses_and_the_other_replica_delivers,
    a_rotated_signing_key_stays_published_and_both_verify,
);
