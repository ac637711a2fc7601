//! WatchPolicySet's bounds (issue 19): for the `service` role only, at most
//! `watch.max_per_key` streams per API key and `watch.max_total` in all, each holding one of
//! `server.max_in_flight` for its whole life, and ending after `watch.max_stream_secs`.
use std::time::Duration;

use enroll_e2e::{
    Backend, OPS_KEY, SERVICE_KEY, TestDatabase, policy_client, policy_config, spawn_policy_with,
};
use enroll_shared::proto::policy::v1 as pb;
use tonic::Code;
use tonic::codec::Streaming;

async fn watch(
    client: &mut enroll_e2e::PolicyClient,
) -> Result<Streaming<pb::PolicySetState>, tonic::Status> {
    let mut stream = client
        .watch_policy_set(pb::WatchPolicySetRequest {})
        .await?
        .into_inner();
    // The first message says the stream is up (a refusal comes instead of it).
    let first = stream.message().await?.expect("the current state");
    assert!(first.serving, "{first:?}");
    Ok(stream)
}

async fn evaluate(client: &mut enroll_e2e::PolicyClient) -> Result<(), tonic::Status> {
    client
        .evaluate_enrollment(pb::EvaluateEnrollmentRequest {
            realm: "corp".into(),
            user: "alice".into(),
            client_ip: "192.0.2.1".into(),
            action: pb::Action::Enroll as i32,
            token_type: "totp".into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn streams_are_bounded_per_key_and_count_as_in_flight(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let mut config = policy_config(&database);
    config.watch.max_per_key = 2;
    config.server.max_in_flight = 3;
    let server = spawn_policy_with(config).await;
    let mut service = policy_client(&server, Some(SERVICE_KEY)).await;

    // The read-only ops key may not watch at all.
    let mut ops = policy_client(&server, Some(OPS_KEY)).await;
    let refused = ops
        .watch_policy_set(pb::WatchPolicySetRequest {})
        .await
        .expect_err("ops may not watch");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let first = watch(&mut service).await.expect("first stream");
    let second = watch(&mut service).await.expect("second stream");
    let third = watch(&mut service).await.expect_err("over the key's bound");
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(third.message().contains("watch.max_per_key"), "{third:?}");

    // Two streams hold two of the three in-flight permits: one decision at a time still
    // passes; the streams never starve decisions beyond their share.
    evaluate(&mut service).await.expect("one permit left");
    drop(first);
    // A dropped stream frees its places (the server notices the reset at once).
    let mut again = None;
    for _ in 0..100 {
        match watch(&mut service).await {
            Ok(stream) => {
                again = Some(stream);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let again = again.expect("a freed place is taken again");
    drop((second, again));
}

async fn streams_hold_in_flight_permits_for_their_life(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let mut config = policy_config(&database);
    config.server.max_in_flight = 2;
    let server = spawn_policy_with(config).await;
    let mut service = policy_client(&server, Some(SERVICE_KEY)).await;
    let held = [
        watch(&mut service).await.expect("first stream"),
        watch(&mut service).await.expect("second stream"),
    ];
    let busy = evaluate(&mut service).await.expect_err("no permit left");
    assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");
    drop(held);
    let mut answered = false;
    for _ in 0..100 {
        if evaluate(&mut service).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "the permits come back when the streams end");
}

async fn a_stream_ends_after_its_configured_life(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let mut config = policy_config(&database);
    config.watch.max_stream_secs = 1;
    let server = spawn_policy_with(config).await;
    let mut service = policy_client(&server, Some(SERVICE_KEY)).await;
    let mut stream = watch(&mut service).await.expect("stream");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(state) = stream.message().await.expect("a clean end") {
            assert!(
                !state.includes_policies,
                "heartbeats carry the version only"
            );
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived watch.max_stream_secs");
}

enroll_e2e::on_both_backends!(
    streams_are_bounded_per_key_and_count_as_in_flight,
    streams_hold_in_flight_permits_for_their_life,
    a_stream_ends_after_its_configured_life,
);
