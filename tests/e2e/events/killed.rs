//! A replica killed in the middle of a delivery (its runtime dropped while the receiver
//! holds the request unanswered: no graceful shutdown, its lease never given back): once
//! the lease lapses on the clock, another replica delivers that event again and the rest,
//! each user's in order: at least once.
use std::time::Duration;

use enroll_e2e::{
    Backend, PythonReceiver, ReceiverOptions, TestStack, accepted, python_receiver_or_skip,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use serde_json::Value;

use super::support::{AUDIENCE, ISSUER, enroll_hotp, webhook_stream};

async fn a_replica_killed_mid_delivery_leaves_the_event_to_another(backend: Backend) {
    if python_receiver_or_skip("events::killed::mid_delivery").is_none() {
        return;
    }
    let mut stack = TestStack::builder(backend).device_replicas(0).start().await;
    // One request at a time, so the held request is the stream's only one in flight.
    let doomed = stack
        .add_killable_device(|config| config.events.delivery_concurrency = 1)
        .await;
    // Webhooks only: no replica publishes a JWKS before the stack has one.
    let receiver = PythonReceiver::start(ReceiverOptions {
        jwks_url: String::new(),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        webhook_secrets: Vec::new(),
    });
    let mut admin = doomed.device_as(Role::Admin);
    webhook_stream(&mut admin, &receiver, "siem").await;
    // The first delivery gets no answer for a minute.
    receiver.hold("/webhook", 60, 202, 1).await;
    let mut serials = Vec::new();
    for user in ["alice", "bob"] {
        serials.push(enroll_hotp(&mut admin, "corp", user).await);
    }
    admin
        .disable_token(pb::DisableTokenRequest {
            serial: serials[0].clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let log = receiver
        .wait_for(
            |log| log.iter().any(|entry| entry.get("held").is_some()),
            Duration::from_secs(10),
        )
        .await;
    let held = log
        .iter()
        .find(|entry| entry.get("held").is_some())
        .and_then(|entry| entry["id"].as_str())
        .unwrap()
        .to_owned();
    drop(admin);
    doomed.kill();

    let survivor = stack.add_device(|_| {}).await;
    // The dead replica's lease (30 s) lapses on the clock; the survivor takes the stream.
    let mut delivered = Vec::new();
    for _ in 0..100 {
        let log = receiver.log().await;
        delivered = accepted(&log, "webhook")
            .into_iter()
            .cloned()
            .collect::<Vec<Value>>();
        if delivered.len() >= 3 {
            break;
        }
        stack.clock().advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<&str> = delivered
        .iter()
        .map(|entry| entry["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids.len(), 3, "{delivered:#?}");
    assert!(ids.contains(&held.as_str()), "the held event went again");
    let alice: Vec<&str> = delivered
        .iter()
        .filter(|entry| entry["payload"]["data"]["user"] == "alice")
        .map(|entry| entry["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(alice, ["token.enrolled", "token.disabled"]);
    // Nothing is left behind for the stream.
    let streams = stack
        .device_on(survivor, Role::Admin)
        .list_event_streams(pb::ListEventStreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert_eq!(streams[0].backlog, 0, "{streams:#?}");
}

enroll_e2e::on_both_backends!(a_replica_killed_mid_delivery_leaves_the_event_to_another,);
