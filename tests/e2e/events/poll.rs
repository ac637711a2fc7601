//! RFC 8936 poll delivery to a receiver behind a firewall: the Python receiver
//! (`tests/receivers/receiver.py`) polls `POST /events/poll/<stream id>` with the stream's
//! bearer token and verifies every security event token with PyJWT against the published
//! JWKS. Unacknowledged events come again with the same `jti`; acknowledgements may come
//! in any order; `setErrs` become dead letters that RedeliverEvents serves again; a long
//! poll wakes when an event is stamped; anything wrong about the caller is the same 401;
//! two replicas answer polls of one stream; the SSF verification event goes to its stream
//! alone.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use enroll_e2e::{
    Backend, DeviceClient, PythonReceiver, ReceiverOptions, TestStack, accepted,
    python_receiver_or_skip,
};
use enroll_shared::proto::device::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;

use super::support::{ISSUER, enroll_hotp};

/// The tokens' issuer in the test stacks: the origin of the enrollment base URL.
const AUDIENCE: &str = "https://receiver.test/poll";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// A stack whose long polls wait at most `wait_secs`.
async fn stack(backend: Backend, replicas: usize, wait_secs: u64) -> TestStack {
    TestStack::builder(backend)
        .device_replicas(replicas)
        .device_config(move |config| config.events.poll_wait_secs = wait_secs)
        .start()
        .await
}

fn receiver(stack: &TestStack) -> PythonReceiver {
    PythonReceiver::start(ReceiverOptions {
        jwks_url: format!("{}{}", stack.page_origin(), enroll_device::web::JWKS_PATH),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        webhook_secrets: Vec::new(),
    })
}

/// A poll stream: its id and its bearer token.
async fn poll_stream(admin: &mut DeviceClient, name: &str) -> (String, String) {
    let created = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: name.into(),
            encoding: pb::EventEncoding::CaepPoll as i32,
            audience: AUDIENCE.into(),
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let stream = created.stream.unwrap();
    assert_eq!(stream.encoding, pb::EventEncoding::CaepPoll as i32);
    assert!(stream.endpoint.is_empty());
    assert!(created.secret.starts_with("ptk_"), "{}", created.secret);
    (stream.id, created.secret)
}

/// The poll URL of `stream` on device replica `replica`.
fn poll_url(stack: &TestStack, replica: usize, stream: &str) -> String {
    let port = stack.devices[replica].web_addr.expect("page").port();
    format!(
        "http://127.0.0.1:{port}{}/{stream}",
        enroll_device::web::POLL_PATH
    )
}

/// The ids of the first `count` events, in order (from the gRPC watch).
async fn event_ids(stack: &TestStack, count: usize) -> Vec<String> {
    super::events(&mut stack.ops(), 0, count)
        .await
        .into_iter()
        .map(|event| event.id)
        .collect()
}

/// The `jti`s a poll answer lists, in its order; every one verified by PyJWT.
fn polled(answer: &Value) -> Vec<String> {
    assert_eq!(answer["status"], 200, "{answer:#}");
    let order: Vec<String> = answer["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|jti| jti.as_str().unwrap().to_owned())
        .collect();
    for jti in &order {
        assert_eq!(
            answer["sets"][jti]["ok"], true,
            "PyJWT refused {jti}: {answer:#}"
        );
    }
    order
}

async fn stream_state(admin: &mut DeviceClient, id: &str) -> pb::EventStream {
    admin
        .list_event_streams(pb::ListEventStreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .streams
        .into_iter()
        .find(|stream| stream.id == id)
        .unwrap()
}

async fn acks_kept(stack: &TestStack) -> i64 {
    stack
        .database
        .count("SELECT COUNT(*) FROM event_poll_acks")
        .await
}

async fn a_poll_receiver_acknowledges_out_of_order_and_gets_the_rest_again(backend: Backend) {
    if python_receiver_or_skip("events::poll::acknowledges").is_none() {
        return;
    }
    let stack = stack(backend, 1, 5).await;
    let receiver = receiver(&stack);
    let mut admin = stack.admin();
    let (id, token) = poll_stream(&mut admin, "firewalled").await;
    let start = stream_state(&mut admin, &id).await.cursor;
    enroll_hotp(&mut admin, "corp", "alice").await;
    // Not a credential event: never polled, and the cursor passes it.
    admin
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "corp".into(),
            user: "dave".into(),
            device_type: pb::DeviceType::Any as i32,
            created_by: "console".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    enroll_hotp(&mut admin, "corp", "bob").await;
    enroll_hotp(&mut admin, "corp", "carol").await;
    let ids = event_ids(&stack, 4).await;
    let (alice, bob, carol) = (&ids[0], &ids[2], &ids[3]);
    let url = poll_url(&stack, 0, &id);

    let first = receiver
        .poll(json!({"url": url, "token": token, "max_events": 2}))
        .await;
    assert_eq!(polled(&first), [alice.clone(), bob.clone()]);
    assert_eq!(first["moreAvailable"], true);
    let claims = &first["sets"][alice]["claims"];
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub_id"]["sub"], "corp/alice");
    assert_eq!(
        claims["events"][CREDENTIAL_CHANGE]["change_type"], "create",
        "{claims:#}"
    );

    // Bob's acknowledged first: alice's comes again (the same jti), with carol's.
    let second = receiver
        .poll(json!({"url": url, "token": token, "ack": [bob]}))
        .await;
    assert_eq!(polled(&second), [alice.clone(), carol.clone()]);
    assert_eq!(second["moreAvailable"], false);
    assert_eq!(
        stream_state(&mut admin, &id).await.cursor,
        start,
        "alice open"
    );
    assert_eq!(acks_kept(&stack).await, 1);

    // Everything acknowledged: nothing outstanding, the cursor past all four events.
    let third = receiver
        .poll(json!({"url": url, "token": token, "ack": [carol, alice]}))
        .await;
    assert!(polled(&third).is_empty(), "{third:#}");
    assert_eq!(stream_state(&mut admin, &id).await.cursor, start + 4);
    assert_eq!(acks_kept(&stack).await, 0);
    // Each set verified by PyJWT is in the receiver's log.
    let log = receiver.log().await;
    assert_eq!(accepted(&log, "poll_set").len(), 4, "{log:#?}");
}

/// A raw poll from 127.0.0.1 with `authorization` (when given) and `body`.
async fn raw_poll(
    stack: &TestStack,
    from: [u8; 4],
    stream: &str,
    authorization: Option<&str>,
    body: &Value,
) -> enroll_e2e::PageAnswer {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| vec![("Authorization", value)])
        .unwrap_or_default();
    stack
        .page_post_from(
            IpAddr::from(from),
            &headers,
            &format!("{}/{stream}", enroll_device::web::POLL_PATH),
            body,
        )
        .await
}

async fn callers_are_refused_alike_tokens_rotate_and_paused_streams_hold(backend: Backend) {
    let stack = stack(backend, 1, 5).await;
    let mut admin = stack.admin();
    let ssf = stack
        .page_get(enroll_device::web::SSF_CONFIGURATION_PATH)
        .await
        .json();
    assert_eq!(
        ssf["delivery_methods_supported"],
        json!(["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"]),
        "{ssf:#}"
    );
    assert!(ssf.get("verification_endpoint").is_none(), "{ssf:#}");
    let (id, token) = poll_stream(&mut admin, "firewalled").await;
    let push = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "push".into(),
            encoding: pb::EventEncoding::CaepPush as i32,
            endpoint: "https://receiver.example.com/caep".into(),
            audience: AUDIENCE.into(),
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .stream
        .unwrap();
    let bearer = format!("Bearer {token}");
    let quick = json!({"returnImmediately": true});
    let unknown = uuid::Uuid::new_v4().to_string();
    let wrong = format!("Bearer ptk_{}", "A".repeat(43));
    let refusals = [
        (id.as_str(), None),
        (id.as_str(), Some(wrong.as_str())),
        (id.as_str(), Some(token.as_str())),
        (unknown.as_str(), Some(bearer.as_str())),
        ("not-a-stream", Some(bearer.as_str())),
        (push.id.as_str(), Some(bearer.as_str())),
    ];
    let mut bodies = BTreeSet::new();
    for (stream, authorization) in refusals {
        let answer = raw_poll(&stack, [127, 0, 0, 2], stream, authorization, &quick).await;
        assert_eq!(answer.status, 401, "{stream} {authorization:?}: {answer:?}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        assert!(!answer.body.contains(&token));
        bodies.insert(answer.body);
    }
    assert_eq!(bodies.len(), 1, "one answer for every refusal: {bodies:?}");
    let malformed = stack
        .page_post_from(
            IpAddr::from([127, 0, 0, 1]),
            &[("Authorization", bearer.as_str())],
            &format!("{}/{id}", enroll_device::web::POLL_PATH),
            &json!({"maxEvents": "ten"}),
        )
        .await;
    assert_eq!(malformed.status, 400, "{malformed:?}");
    assert_eq!(malformed.json()["err"], "invalid_request");

    // A rotation: the new token and the previous one both poll.
    let rotated = admin
        .rotate_event_stream_secret(pb::RotateEventStreamSecretRequest {
            id: id.clone(),
            rotated_by: "secops".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert!(rotated.starts_with("ptk_") && rotated != token);
    for current in [&rotated, &token] {
        let answer = raw_poll(
            &stack,
            [127, 0, 0, 1],
            &id,
            Some(&format!("Bearer {current}")),
            &quick,
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json(), json!({"sets": {}, "moreAvailable": false}));
    }

    // Paused: held, nothing returned; resumed: there.
    admin
        .update_event_stream(pb::UpdateEventStreamRequest {
            id: id.clone(),
            status: pb::EventStreamStatus::Paused as i32,
            updated_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    enroll_hotp(&mut admin, "corp", "alice").await;
    event_ids(&stack, 1).await;
    let paused = raw_poll(&stack, [127, 0, 0, 1], &id, Some(&bearer), &quick).await;
    assert_eq!(paused.json()["sets"], json!({}), "{paused:?}");
    admin
        .update_event_stream(pb::UpdateEventStreamRequest {
            id: id.clone(),
            status: pb::EventStreamStatus::Enabled as i32,
            updated_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let resumed = raw_poll(&stack, [127, 0, 0, 1], &id, Some(&bearer), &quick).await;
    assert_eq!(
        resumed.json()["sets"].as_object().map(|sets| sets.len()),
        Some(1),
        "{resumed:?}"
    );
}

async fn set_errors_become_dead_letters_and_redelivery_polls_them_again(backend: Backend) {
    if python_receiver_or_skip("events::poll::set_errors").is_none() {
        return;
    }
    let stack = stack(backend, 1, 5).await;
    let receiver = receiver(&stack);
    let mut admin = stack.admin();
    let (id, token) = poll_stream(&mut admin, "firewalled").await;
    let url = poll_url(&stack, 0, &id);
    enroll_hotp(&mut admin, "corp", "alice").await;
    enroll_hotp(&mut admin, "corp", "bob").await;
    let ids = event_ids(&stack, 2).await;
    let (alice, bob) = (&ids[0], &ids[1]);
    let first = receiver.poll(json!({"url": url, "token": token})).await;
    assert_eq!(polled(&first), [alice.clone(), bob.clone()]);
    let errs = json!({ alice.as_str(): {"err": "invalid_key", "description": "unknown kid"} });
    let second = receiver
        .poll(json!({"url": url, "token": token, "ack": [bob], "set_errs": errs}))
        .await;
    assert!(polled(&second).is_empty(), "{second:#}");
    let letters = admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            stream_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].event.as_ref().unwrap().id, *alice);
    assert!(
        letters[0].reason.contains("invalid_key") && letters[0].reason.contains("unknown kid"),
        "{letters:#?}"
    );
    assert!(!letters[0].redelivering);
    assert_eq!(acks_kept(&stack).await, 0, "the cursor passed both");

    // A new event, then the dead letter queued again: the dead letter first.
    enroll_hotp(&mut admin, "corp", "carol").await;
    let carol = event_ids(&stack, 3).await.remove(2);
    let queued = admin
        .redeliver_events(pb::RedeliverEventsRequest {
            stream_id: id.clone(),
            requested_by: "secops".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .queued;
    assert_eq!(queued, 1);
    let third = receiver.poll(json!({"url": url, "token": token})).await;
    assert_eq!(polled(&third), [alice.clone(), carol.clone()]);
    let fourth = receiver
        .poll(json!({"url": url, "token": token, "ack": "verified"}))
        .await;
    assert!(polled(&fourth).is_empty(), "{fourth:#}");
    let left = admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            stream_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(left.is_empty(), "{left:#?}");
    // Counted as deliveries of the poll encoding.
    let metrics = metrics_text(&stack).await;
    assert!(
        metrics
            .lines()
            .any(|line| line.contains("caep_poll") && line.contains("rejected")),
        "{metrics}"
    );
}

/// The first device server's Prometheus text.
async fn metrics_text(stack: &TestStack) -> String {
    let addr = stack.device_metrics_addr();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    })
    .await
    .unwrap()
}

async fn a_long_poll_waits_and_wakes_when_an_event_is_stamped(backend: Backend) {
    if python_receiver_or_skip("events::poll::long_poll").is_none() {
        return;
    }
    // The wait is wall time (a held connection), not the service's clock.
    let stack = stack(backend, 1, 4).await;
    let receiver = receiver(&stack);
    let mut admin = stack.admin();
    let (id, token) = poll_stream(&mut admin, "firewalled").await;
    let url = poll_url(&stack, 0, &id);
    let started = Instant::now();
    let idle = receiver
        .poll(json!({"url": url, "token": token, "return_immediately": false}))
        .await;
    assert!(polled(&idle).is_empty(), "{idle:#}");
    assert!(
        started.elapsed() >= Duration::from_millis(3_500),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let (woken, _) = tokio::join!(
        receiver.poll(json!({"url": url, "token": token, "return_immediately": false})),
        async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            enroll_hotp(&mut admin, "corp", "alice").await;
        }
    );
    assert_eq!(polled(&woken).len(), 1, "{woken:#}");
    assert!(
        started.elapsed() < Duration::from_millis(3_500),
        "woken by the event, not the end of the wait: {:?}",
        started.elapsed()
    );
}

async fn two_replicas_answer_polls_without_losing_or_repeating_acknowledged_events(
    backend: Backend,
) {
    if python_receiver_or_skip("events::poll::replicas").is_none() {
        return;
    }
    let stack = stack(backend, 2, 5).await;
    let receiver = receiver(&stack);
    let mut admin = stack.admin();
    let (id, token) = poll_stream(&mut admin, "firewalled").await;
    for n in 0..12 {
        enroll_hotp(&mut admin, "corp", &format!("user{n}")).await;
    }
    let ids = event_ids(&stack, 12).await;
    let mut received = Vec::new();
    let mut acknowledged = BTreeSet::new();
    for round in 0..20 {
        let url = poll_url(&stack, round % 2, &id);
        let answer = receiver
            .poll(json!({"url": url, "token": token, "max_events": 5, "ack": "verified"}))
            .await;
        // What the previous round verified is acknowledged by this one.
        acknowledged.extend(received.iter().cloned());
        let got = polled(&answer);
        for jti in &got {
            assert!(
                !acknowledged.contains(jti),
                "{jti} again after its ack: {answer:#}"
            );
        }
        received.extend(got.iter().cloned());
        if got.is_empty() && answer["moreAvailable"] == false {
            break;
        }
    }
    assert_eq!(received, ids, "every event once, in order");
    assert_eq!(acks_kept(&stack).await, 0);
    let stream = stream_state(
        &mut stack.device_on(1, enroll_shared::auth::Role::Admin),
        &id,
    )
    .await;
    assert_eq!(stream.backlog, 0, "{stream:?}");
}

async fn the_verification_event_goes_to_its_stream_alone(backend: Backend) {
    if python_receiver_or_skip("events::poll::verification").is_none() {
        return;
    }
    let stack = stack(backend, 1, 5).await;
    let receiver = receiver(&stack);
    let mut admin = stack.admin();
    let (id, token) = poll_stream(&mut admin, "firewalled").await;
    let (other, other_token) = poll_stream(&mut admin, "other").await;
    let verify = |id: &str, state: &str| pb::VerifyEventStreamRequest {
        id: id.to_owned(),
        state: state.to_owned(),
        requested_by: "secops".into(),
    };
    let event_id = admin
        .verify_event_stream(verify(&id, "c3RhdGU"))
        .await
        .unwrap()
        .into_inner()
        .event_id;
    // A long poll: answered once the event is stamped.
    let answer = receiver
        .poll(json!({"url": poll_url(&stack, 0, &id), "token": token, "return_immediately": false}))
        .await;
    assert_eq!(polled(&answer), std::slice::from_ref(&event_id));
    let claims = &answer["sets"][&event_id]["claims"];
    assert_eq!(claims["sub_id"], json!({"format": "opaque", "id": id}));
    assert_eq!(
        claims["events"],
        json!({ VERIFICATION: {"state": "c3RhdGU"} })
    );
    assert_eq!(claims["aud"], AUDIENCE);
    // Not the other stream's, and no watcher's.
    let answer = receiver
        .poll(json!({"url": poll_url(&stack, 0, &other), "token": other_token}))
        .await;
    assert!(polled(&answer).is_empty(), "{answer:#}");
    enroll_hotp(&mut admin, "corp", "alice").await;
    let watched = super::events(&mut stack.ops(), 0, 1).await;
    assert_eq!(super::kinds(&watched), ["token.enrolled"], "{watched:#?}");
    let audit = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "verify_event_stream".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(!audit[0].reason.contains("c3RhdGU"), "{audit:?}");

    let unknown = admin
        .verify_event_stream(verify(&uuid::Uuid::new_v4().to_string(), ""))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    admin
        .update_event_stream(pb::UpdateEventStreamRequest {
            id: other.clone(),
            status: pb::EventStreamStatus::Disabled as i32,
            updated_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let disabled = admin
        .verify_event_stream(verify(&other, ""))
        .await
        .unwrap_err();
    assert_eq!(disabled.code(), Code::FailedPrecondition, "{disabled:?}");
    let denied = stack
        .ops()
        .verify_event_stream(verify(&id, ""))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
}

/// Push side of the verification event: its stream alone gets it, verified by PyJWT (and
/// the webhook stream its own `stream.verification` webhook only).
async fn the_verification_event_is_pushed_to_its_stream_alone(backend: Backend) {
    if python_receiver_or_skip("events::poll::verification_push").is_none() {
        return;
    }
    let stack = stack(backend, 1, 5).await;
    let receiver = receiver(&stack);
    let mut admin = stack.admin();
    let create =
        |name: &str, encoding: pb::EventEncoding, path: &str| pb::CreateEventStreamRequest {
            name: name.into(),
            encoding: encoding as i32,
            endpoint: receiver.url(path),
            audience: AUDIENCE.into(),
            created_by: "secops".into(),
            ..Default::default()
        };
    let push = admin
        .create_event_stream(create("idp", pb::EventEncoding::CaepPush, "/caep"))
        .await
        .unwrap()
        .into_inner()
        .stream
        .unwrap()
        .id;
    let webhook = admin
        .create_event_stream(create("siem", pb::EventEncoding::Webhook, "/webhook"))
        .await
        .unwrap()
        .into_inner();
    receiver.set_webhook_secrets(&[&webhook.secret]).await;
    let webhook = webhook.stream.unwrap().id;
    let verify = |id: &str, state: &str| pb::VerifyEventStreamRequest {
        id: id.to_owned(),
        state: state.to_owned(),
        requested_by: "secops".into(),
    };
    let pushed = admin
        .verify_event_stream(verify(&push, "s-push"))
        .await
        .unwrap()
        .into_inner()
        .event_id;
    let hooked = admin
        .verify_event_stream(verify(&webhook, "s-hook"))
        .await
        .unwrap()
        .into_inner()
        .event_id;
    enroll_hotp(&mut admin, "corp", "alice").await;
    let log = receiver
        .wait_for(
            |log| accepted(log, "set").len() == 2 && accepted(log, "webhook").len() == 2,
            Duration::from_secs(30),
        )
        .await;
    // Different subjects (the stream, the user) go out side by side: found by id.
    let sets = accepted(&log, "set");
    let verification = sets
        .iter()
        .find(|set| set["jti"] == pushed.as_str())
        .unwrap_or_else(|| panic!("{sets:#?}"));
    assert_eq!(
        verification["claims"]["sub_id"],
        json!({"format": "opaque", "id": push})
    );
    assert_eq!(
        verification["claims"]["events"],
        json!({ VERIFICATION: {"state": "s-push"} })
    );
    let other = sets
        .iter()
        .find(|set| set["jti"] != pushed.as_str())
        .unwrap_or_else(|| panic!("{sets:#?}"));
    assert!(
        other["claims"]["events"][CREDENTIAL_CHANGE].is_object(),
        "{sets:#?}"
    );
    let hooks = accepted(&log, "webhook");
    let verification = hooks
        .iter()
        .find(|hook| hook["id"] == hooked.as_str())
        .unwrap_or_else(|| panic!("{hooks:#?}"));
    assert_eq!(verification["type"], "stream.verification");
    assert_eq!(
        verification["payload"]["data"]["stream_id"],
        webhook.as_str()
    );
    assert_eq!(verification["payload"]["data"]["state"], "s-hook");
    let types: Vec<&str> = hooks
        .iter()
        .map(|hook| hook["type"].as_str().unwrap_or_default())
        .collect();
    assert!(
        types.contains(&"token.enrolled") && types.len() == 2,
        "{hooks:#?}"
    );
}

enroll_e2e::on_both_backends!(
    a_poll_receiver_acknowledges_out_of_order_and_gets_the_rest_again,
    callers_are_refused_alike_tokens_rotate_and_paused_streams_hold,
    set_errors_become_dead_letters_and_redelivery_polls_them_again,
    a_long_poll_waits_and_wakes_when_an_event_is_stamped,
    two_replicas_answer_polls_without_losing_or_repeating_acknowledged_events,
    the_verification_event_goes_to_its_stream_alone,
    the_verification_event_is_pushed_to_its_stream_alone,
);
