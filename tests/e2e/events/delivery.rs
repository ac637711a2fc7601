//! Delivery to real receivers: a Python receiver (`tests/receivers/receiver.py`) verifies
//! every security event token with PyJWT against the JWKS the service publishes and every
//! webhook with the `standardwebhooks` reference library. Retries and back-off run on the
//! test clock: a receiver down for a while loses nothing and keeps the order and the ids;
//! dead letters hold the user's later events and go out again in order; 410 disables the
//! stream; receivers on private or metadata addresses are refused.
use std::time::Duration;

use enroll_e2e::{
    Backend, DeviceClient, PythonReceiver, TestStack, accepted, python_receiver_or_skip,
    register_by_link_with,
};
use enroll_shared::proto::device::v1 as pb;
use serde_json::Value;
use tonic::Code;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use super::support::{AUDIENCE, ISSUER, enroll_hotp, reference_receiver, webhook_stream};

async fn stream(
    admin: &mut DeviceClient,
    name: &str,
    encoding: pb::EventEncoding,
    endpoint: String,
) -> pb::CreateEventStreamResponse {
    admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: name.into(),
            encoding: encoding as i32,
            endpoint,
            audience: AUDIENCE.into(),
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn disable(admin: &mut DeviceClient, serial: &str) {
    admin
        .disable_token(pb::DisableTokenRequest {
            serial: serial.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn ids(entries: &[&Value], field: &str) -> Vec<String> {
    entries
        .iter()
        .map(|entry| entry[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Advances the servers' clock in steps until `done` holds for the receiver's log.
async fn advance_until(
    stack: &TestStack,
    receiver: &PythonReceiver,
    step: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..200 {
        let log = receiver.log().await;
        if done(&log) {
            return log;
        }
        stack.clock().advance(step);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the receiver never got there: {:#?}", receiver.log().await);
}

async fn every_event_reaches_both_reference_receivers_verified(backend: Backend) {
    if python_receiver_or_skip("events::delivery::reference_receivers").is_none() {
        return;
    }
    let stack = TestStack::start(backend).await;
    let receiver = reference_receiver(&stack);
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    webhook_stream(&mut admin, &receiver, "siem").await;
    stream(
        &mut admin,
        "idp",
        pb::EventEncoding::CaepPush,
        receiver.url("/caep"),
    )
    .await;

    let serial = enroll_hotp(&mut admin, "corp", "alice").await;
    disable(&mut admin, &serial).await;
    let mut passkey = SoftPasskey::new(true);
    register_by_link_with(&mut admin, &mut proxy, &mut passkey, "corp", "carol").await;
    admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // token.enrolled, token.disabled, link.created, link.used, device.registered, token.lost
    let log = receiver
        .wait_for(
            |log| accepted(log, "webhook").len() == 6 && accepted(log, "set").len() == 4,
            Duration::from_secs(30),
        )
        .await;
    let webhooks = accepted(&log, "webhook");
    // Users' events go out side by side: the order holds per user.
    assert_eq!(
        per_user(&webhooks, |entry| entry["type"]
            .as_str()
            .unwrap_or_default()
            .to_owned()),
        vec![
            owned("alice", &["token.enrolled", "token.disabled", "token.lost"]),
            owned("carol", &["link.created", "link.used", "device.registered"]),
        ],
        "{webhooks:#?}"
    );
    // Only credential events of a user are security events; each verified by PyJWT.
    let sets = accepted(&log, "set");
    let change = |entry: &Value| {
        let change = &entry["claims"]["events"]["https://schemas.openid.net/secevent/caep/event-type/credential-change"];
        format!(
            "{} {}",
            change["credential_type"].as_str().unwrap_or_default(),
            change["change_type"].as_str().unwrap_or_default()
        )
    };
    let set_user = |entry: &Value| {
        let sub = entry["claims"]["sub_id"]["sub"]
            .as_str()
            .unwrap_or_default();
        sub.trim_start_matches("corp/").to_owned()
    };
    let mut changes: Vec<(String, Vec<String>)> = Vec::new();
    for set in &sets {
        let user = set_user(set);
        match changes.iter_mut().find(|(seen, _)| *seen == user) {
            Some((_, list)) => list.push(change(set)),
            None => changes.push((user, vec![change(set)])),
        }
    }
    changes.sort();
    assert_eq!(
        changes,
        vec![
            owned("alice", &["app create", "app update", "app revoke"]),
            owned("carol", &["fido2-roaming create"]),
        ],
        "{sets:#?}"
    );
    for set in &sets {
        let claims = &set["claims"];
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], AUDIENCE);
        assert_eq!(claims["sub_id"]["format"], "iss_sub");
        assert!(
            claims["sub_id"]["sub"]
                .as_str()
                .unwrap()
                .starts_with("corp/")
        );
        assert!(claims.get("sub").is_none() && claims.get("exp").is_none());
    }
    // The same ids as the native stream (the jti and webhook-id are the event id).
    let mut ops = stack.ops();
    let mut watched = ops
        .watch_enrollment_events(pb::WatchEnrollmentEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut native = Vec::new();
    while native.len() < 6 {
        native.push(watched.message().await.unwrap().unwrap().id);
    }
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    assert_eq!(sorted(ids(&webhooks, "id")), sorted(native.clone()));
    let credential_ids: Vec<String> = [0, 1, 4, 5].iter().map(|i| native[*i].clone()).collect();
    assert_eq!(sorted(ids(&sets, "jti")), sorted(credential_ids));
}

/// Each user's webhooks' `field`, in the order they arrived, users by name.
fn per_user(entries: &[&Value], field: impl Fn(&Value) -> String) -> Vec<(String, Vec<String>)> {
    let mut users: Vec<(String, Vec<String>)> = Vec::new();
    for entry in entries {
        let user = entry["payload"]["data"]["user"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match users.iter_mut().find(|(seen, _)| *seen == user) {
            Some((_, list)) => list.push(field(entry)),
            None => users.push((user, vec![field(entry)])),
        }
    }
    users.sort();
    users
}

fn owned(user: &str, items: &[&str]) -> (String, Vec<String>) {
    (
        user.to_owned(),
        items.iter().map(|item| (*item).to_owned()).collect(),
    )
}

async fn a_receiver_down_for_a_while_loses_nothing(backend: Backend) {
    if python_receiver_or_skip("events::delivery::down_for_a_while").is_none() {
        return;
    }
    // One request at a time: the receiver's forced answers then meet the events in order.
    let stack = TestStack::builder(backend)
        .device_config(|config| config.events.delivery_concurrency = 1)
        .start()
        .await;
    let receiver = reference_receiver(&stack);
    let mut admin = stack.admin();
    webhook_stream(&mut admin, &receiver, "siem").await;
    receiver.force("/webhook", 500, None, 2).await;
    receiver.force("/webhook", 429, Some(120), 1).await;
    let serials = [
        enroll_hotp(&mut admin, "corp", "alice").await,
        enroll_hotp(&mut admin, "corp", "bob").await,
    ];
    disable(&mut admin, &serials[0]).await;
    // The first attempt fails at once; later ones come only as the clock moves.
    receiver
        .wait_for(|log| !log.is_empty(), Duration::from_secs(10))
        .await;
    let log = advance_until(&stack, &receiver, Duration::from_secs(30), |log| {
        accepted(log, "webhook").len() == 3
    })
    .await;
    let delivered = accepted(&log, "webhook");
    let types: Vec<&str> = delivered
        .iter()
        .map(|entry| entry["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        ["token.enrolled", "token.enrolled", "token.disabled"]
    );
    // Every attempt at the first event carried the same id; it was tried four times.
    let first = delivered[0]["id"].as_str().unwrap();
    let attempts = log
        .iter()
        .filter(|entry| entry["id"].as_str() == Some(first))
        .count();
    assert_eq!(attempts, 4, "{log:#?}");
    // 429 with Retry-After: 120 held the next attempt at least that long.
    let streams = admin
        .list_event_streams(pb::ListEventStreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert_eq!(streams[0].attempts, 0);
    assert_eq!(streams[0].backlog, 0);

    // 410: the stream is disabled, and says why.
    receiver.force("/webhook", 410, None, 1).await;
    enroll_hotp(&mut admin, "corp", "carol").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let streams = admin
            .list_event_streams(pb::ListEventStreamsRequest {})
            .await
            .unwrap()
            .into_inner()
            .streams;
        if streams[0].status() == pb::EventStreamStatus::Disabled {
            assert!(streams[0].last_error.starts_with("410"), "{:?}", streams[0]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{streams:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn dead_letters_hold_the_users_later_events_and_redeliver_in_order(backend: Backend) {
    if python_receiver_or_skip("events::delivery::dead_letters").is_none() {
        return;
    }
    let stack = TestStack::builder(backend)
        .device_config(|config| {
            config.events.dead_letter_after_secs = 60;
            // One request at a time: the receiver's forced answers meet alice's event.
            config.events.delivery_concurrency = 1;
        })
        .start()
        .await;
    let receiver = reference_receiver(&stack);
    let mut admin = stack.admin();
    let siem = webhook_stream(&mut admin, &receiver, "siem").await;
    // Three failures 40 s apart: the third comes after the 60 s dead-letter time.
    receiver.force("/webhook", 503, None, 3).await;
    let alice = enroll_hotp(&mut admin, "corp", "alice").await;
    disable(&mut admin, &alice).await;
    enroll_hotp(&mut admin, "corp", "bob").await;
    receiver
        .wait_for(|log| !log.is_empty(), Duration::from_secs(10))
        .await;
    // Past the dead-letter time: alice's first event is given up, her second held behind
    // it, bob's delivered.
    let log = advance_until(&stack, &receiver, Duration::from_secs(40), |log| {
        accepted(log, "webhook").len() == 1
    })
    .await;
    assert_eq!(
        accepted(&log, "webhook")[0]["payload"]["data"]["user"],
        "bob"
    );
    let letters = admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            stream_id: siem.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    let kinds: Vec<&str> = letters
        .iter()
        .map(|letter| letter.event.as_ref().unwrap().r#type.as_str())
        .collect();
    assert_eq!(kinds, ["token.enrolled", "token.disabled"], "{letters:#?}");
    assert!(letters[0].reason.starts_with("503"), "{letters:#?}");
    assert!(letters[1].reason.starts_with("held behind"), "{letters:#?}");
    // Redelivered: in order, then gone from the dead letters.
    let queued = admin
        .redeliver_events(pb::RedeliverEventsRequest {
            stream_id: siem.id.clone(),
            requested_by: "secops".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .queued;
    assert_eq!(queued, 2);
    let log = receiver
        .wait_for(
            |log| accepted(log, "webhook").len() == 3,
            Duration::from_secs(10),
        )
        .await;
    let users: Vec<(&str, &str)> = accepted(&log, "webhook")
        .iter()
        .map(|entry| {
            (
                entry["payload"]["data"]["user"]
                    .as_str()
                    .unwrap_or_default(),
                entry["type"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        users,
        [
            ("bob", "token.enrolled"),
            ("alice", "token.enrolled"),
            ("alice", "token.disabled")
        ]
    );
    let left = admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            stream_id: siem.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(left.is_empty(), "{left:#?}");
}

async fn receivers_on_private_or_metadata_addresses_are_refused(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    for endpoint in [
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.7/hook",
        "https://[fd00:ec2::254]/hook",
        "https://100.100.100.200/hook",
        "http://receiver.example.com/hook",
        "ftp://receiver.example.com/hook",
    ] {
        let refused = admin
            .create_event_stream(pb::CreateEventStreamRequest {
                name: "bad".into(),
                encoding: pb::EventEncoding::Webhook as i32,
                endpoint: endpoint.into(),
                created_by: "secops".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{endpoint}: {refused:?}"
        );
        assert!(
            refused.message().starts_with("endpoint"),
            "{endpoint}: {refused:?}"
        );
    }
    let no_audience = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "idp".into(),
            encoding: pb::EventEncoding::CaepPush as i32,
            endpoint: "https://receiver.example.com/caep".into(),
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        no_audience.message().starts_with("audience"),
        "{no_audience:?}"
    );
    let streams = admin
        .list_event_streams(pb::ListEventStreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert!(streams.is_empty());
}

enroll_e2e::on_both_backends!(
    every_event_reaches_both_reference_receivers_verified,
    a_receiver_down_for_a_while_loses_nothing,
    dead_letters_hold_the_users_later_events_and_redeliver_in_order,
    receivers_on_private_or_metadata_addresses_are_refused,
);
