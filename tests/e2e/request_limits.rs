//! Request limits of the gRPC server shell (issue 10): message size caps per service, the
//! client's deadline honoured by cancelling the work, a global in-flight cap that sheds,
//! HTTP/2 concurrent streams that queue, and a malformed body answered INVALID_ARGUMENT.
use std::time::{Duration, Instant};

use enroll_e2e::{
    Backend, DEVICE_SERVICE, POLICY_SERVICE, RFC4226_SEED_HEX, TestStack, assert_invalid_field,
    enroll_token, raw_unary,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use prost::Message;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const MIB: usize = 1024 * 1024;
const GET_TOKEN: &str = "/enroll.device.v1.DeviceService/GetToken";
const IMPORT_TOKENS: &str = "/enroll.device.v1.DeviceService/ImportTokens";
const CREATE_POLICY: &str = "/enroll.policy.v1.PolicyService/CreatePolicy";

/// Rows enough for an import of a second or more (PostgreSQL inserts them more slowly).
fn slow_rows(backend: Backend) -> usize {
    match backend {
        Backend::Postgres => 10_000,
        Backend::Sqlite => 40_000,
    }
}

/// `rows` valid hardware-token rows: enough of them make an import that takes a while.
fn token_csv(rows: usize) -> String {
    (0..rows)
        .map(|row| format!("SLOW{row:07},{RFC4226_SEED_HEX},totp,6,30\n"))
        .collect()
}

fn import(csv: String) -> pb::ImportTokensRequest {
    pb::ImportTokensRequest {
        realm: "corp".into(),
        csv,
        request_id: String::new(),
    }
}

async fn a_missing_token(client: &mut enroll_e2e::DeviceClient) -> Result<(), tonic::Status> {
    client
        .get_token(pb::GetTokenRequest {
            serial: "NO-SUCH-TOKEN".into(),
        })
        .await
        .map(drop)
}

async fn assert_serving(stack: &TestStack) {
    assert_eq!(
        stack.device().health_status(DEVICE_SERVICE).await,
        ServingStatus::Serving as i32
    );
    assert_eq!(
        stack.policy().health_status(POLICY_SERVICE).await,
        ServingStatus::Serving as i32
    );
}

/// The device server took tonic's 4 MiB default, so ImportTokens refused a CSV far below
/// its own 16 MiB limit as OUT_OF_RANGE. Now each service has its own cap: the device's
/// holds the largest import, past it (and past the policy service's 4 MiB) a request is
/// refused before its body is read, and both servers keep serving.
async fn message_size_caps_fit_each_service(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();

    // 5 MiB: past tonic's default, within the device cap, so the handler answers.
    let refused = admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "not a realm!".into(),
            ..import("x".repeat(5 * MIB))
        })
        .await;
    assert_invalid_field(refused, "realm");
    // Just past the import limit: still the handler's answer, naming the field.
    assert_invalid_field(
        admin.import_tokens(import("x".repeat(16 * MIB + 1))).await,
        "csv",
    );
    // Past the device cap: refused by the transport.
    let oversized = admin
        .import_tokens(import("x".repeat(18 * MIB)))
        .await
        .unwrap_err();
    assert_eq!(oversized.code(), Code::OutOfRange, "{oversized:?}");
    // The policy service needs no more than 4 MiB.
    let oversized = raw_unary(
        stack.policy(),
        Role::Admin,
        CREATE_POLICY,
        &[0; 5 * MIB],
        None,
    )
    .await;
    assert_eq!(oversized.code(), Code::OutOfRange, "{oversized:?}");

    assert_serving(&stack).await;
    enroll_token(&mut stack.admin(), "acme", "kate", pb::TokenType::Totp).await;
}

/// An expired deadline was answered CANCELLED, by a timeout that only knew the server's
/// own limit. The client's `grpc-timeout` bounds the request: DEADLINE_EXCEEDED when it
/// passes, and the work is dropped, so the import's transaction never commits. (A raw
/// client: tonic's own client gives up at the deadline itself and reports CANCELLED.)
async fn a_client_deadline_cancels_the_work(backend: Backend) {
    let rows = slow_rows(backend);
    let stack = TestStack::start(backend).await;

    let started = Instant::now();
    let body = import(token_csv(rows)).encode_to_vec();
    let expired = raw_unary(
        stack.device(),
        Role::Admin,
        IMPORT_TOKENS,
        &body,
        Some("150m"),
    )
    .await;
    let answered = started.elapsed();
    assert_eq!(expired.code(), Code::DeadlineExceeded, "{expired:?}");
    assert!(
        expired.message().contains("client's deadline"),
        "{expired:?}"
    );
    assert!(
        answered < Duration::from_secs(3),
        "answered after {answered:?}"
    );

    // Had the work gone on, these serials would exist by now and import as duplicates.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let report = stack
        .admin()
        .import_tokens(import(token_csv(rows)))
        .await
        .expect("import without a deadline")
        .into_inner();
    let full = started.elapsed();
    assert_eq!(report.imported, rows as u32, "{:?}", report.errors.first());
    assert!(
        full > Duration::from_millis(150),
        "the import took {full:?}: too fast to show cancellation"
    );
    println!("deadline answered after {answered:?}; the full import takes {full:?}");
    assert_serving(&stack).await;
}

/// The server's own `request_timeout_ms` holds when the client sets no deadline.
async fn the_server_timeout_bounds_a_request_without_deadline(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| config.server.request_timeout_ms = 150)
        .start()
        .await;
    let expired = stack
        .admin()
        .import_tokens(import(token_csv(slow_rows(backend))))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::DeadlineExceeded, "{expired:?}");
    assert!(
        expired.message().contains("server's request timeout"),
        "{expired:?}"
    );
    let served = a_missing_token(&mut stack.admin()).await.unwrap_err();
    assert_eq!(served.code(), Code::NotFound, "{served:?}");
}

/// Past `max_in_flight` requests across connections a request is refused at once with
/// RESOURCE_EXHAUSTED rather than queued (health checks excepted); served again once the
/// load is gone.
async fn requests_past_max_in_flight_are_shed(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| config.server.max_in_flight = 1)
        .start()
        .await;
    let mut slow_client = stack.admin();
    let slow = tokio::spawn(async move {
        slow_client
            .import_tokens(import(token_csv(slow_rows(backend))))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let shed = a_missing_token(&mut stack.admin()).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    // Health checks are not shed: a busy replica must not look dead.
    assert_eq!(
        stack.device().health_status(DEVICE_SERVICE).await,
        ServingStatus::Serving as i32
    );
    assert!(!slow.is_finished(), "the import must still be running");

    slow.await.expect("task").expect("import");
    let served = a_missing_token(&mut stack.admin()).await.unwrap_err();
    assert_eq!(served.code(), Code::NotFound, "{served:?}");
}

/// `max_concurrent_streams` is advertised to the client, which queues further streams on
/// that connection (nothing refused); another connection is not held up.
async fn streams_past_max_concurrent_streams_wait(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| config.server.max_concurrent_streams = 1)
        .start()
        .await;
    let connection = stack.admin();
    let mut slow_client = connection.clone();
    let slow = tokio::spawn(async move {
        let report = slow_client
            .import_tokens(import(token_csv(slow_rows(backend))))
            .await;
        (report, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut queued_client = connection.clone();
    let queued = tokio::spawn(async move {
        let answer = a_missing_token(&mut queued_client).await;
        (answer, Instant::now())
    });
    let other = a_missing_token(&mut stack.admin()).await;
    let other_done = Instant::now();
    assert_eq!(other.unwrap_err().code(), Code::NotFound);

    let (report, slow_done) = slow.await.expect("task");
    report.expect("import");
    let (answer, queued_done) = queued.await.expect("task");
    assert_eq!(
        answer.unwrap_err().code(),
        Code::NotFound,
        "queued, not refused"
    );
    assert!(
        other_done < slow_done,
        "another connection waits for nothing"
    );
    assert!(
        queued_done >= slow_done,
        "the second stream on the connection waited for the first"
    );
}

/// A body that is not protobuf was answered INTERNAL, a server fault by its code. It is
/// the caller's fault: INVALID_ARGUMENT, on both services, and nothing breaks.
async fn a_malformed_body_is_invalid_argument(backend: Backend) {
    let stack = TestStack::start(backend).await;
    // Field 1 claims 5 bytes and has one; field 1 is not UTF-8; a wire type that does not
    // exist.
    for body in [vec![0x0a, 0x05, 0x41], vec![0x0a, 0x01, 0xff], vec![0x0f]] {
        let refused = raw_unary(stack.device(), Role::Admin, GET_TOKEN, &body, None).await;
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("protobuf"), "{refused:?}");
        let refused = raw_unary(stack.policy(), Role::Admin, CREATE_POLICY, &body, None).await;
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    assert_serving(&stack).await;
    enroll_token(&mut stack.admin(), "acme", "kate", pb::TokenType::Totp).await;
}

enroll_e2e::on_both_backends!(
    message_size_caps_fit_each_service,
    a_client_deadline_cancels_the_work,
    the_server_timeout_bounds_a_request_without_deadline,
    requests_past_max_in_flight_are_shed,
    streams_past_max_concurrent_streams_wait,
    a_malformed_body_is_invalid_argument,
);
