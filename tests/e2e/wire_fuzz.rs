//! Wire fuzzing of both running servers: every RPC of DeviceService and PolicyService (and
//! Envoy's ext_authz check, served with the device server's gate) gets
//! random bytes, random well-formed protobuf with arbitrary fields, and mutated encodings
//! of a valid request (bits flipped, bytes inserted, deleted, overwritten, truncated,
//! spliced), on the real channel with the admin key so bodies get past auth. Bad input must
//! never be answered INTERNAL, UNAVAILABLE, UNKNOWN or DATA_LOSS (a server fault a client
//! would retry or page on), and both servers must be healthy and serve a normal request
//! afterwards.
//!
//! A body that is not protobuf (or not this message) is INVALID_ARGUMENT too: the server
//! shell maps tonic's codec answer (INTERNAL "failed to decode Protobuf message") before it
//! leaves the server, so no INTERNAL is tolerated here.
//!
//! `ENROLL_WIRE_FUZZ_ITERATIONS` sets the number of requests per backend (default 5,000,
//! spread round-robin over the RPCs); `ENROLL_WIRE_FUZZ_SEED` replays a run (the seed is
//! printed). The counts are printed at the end (`--nocapture`).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use enroll_e2e::{
    ADMIN_KEY, Backend, DEVICE_SERVICE, JwtIssuer, POLICY_SERVICE, TestStack, gate_config,
};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use futures::StreamExt;
use http::uri::PathAndQuery;
use prost::bytes::{Buf, BufMut};
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

mod mutations;
mod seeds;

use mutations::{Rng, mutate, mutate_fields, random_fields};
use seeds::valid_requests;

const DEFAULT_ITERATIONS: u64 = 5_000;
/// Requests in flight at once: enough to interleave handlers, few enough that the servers'
/// own load shedding (which rightly answers UNAVAILABLE) does not kick in.
const CONCURRENCY: usize = 8;

/// Sends and receives raw protobuf bodies: the request is whatever bytes the test makes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut body = vec![0; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}

/// How the servers answered: counts by status, and the answers that are server faults.
#[derive(Default)]
struct Tally {
    by_status: BTreeMap<String, u64>,
    faults: Vec<String>,
}

impl Tally {
    fn record(&mut self, rpc: &str, body: &[u8], answer: Result<(), Status>) {
        let key = match &answer {
            Ok(()) => "OK".to_owned(),
            Err(status) => {
                if matches!(
                    status.code(),
                    Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss
                ) {
                    self.faults.push(format!(
                        "{rpc} body={} -> {:?}: {}",
                        hex::encode(body),
                        status.code(),
                        status.message()
                    ));
                }
                format!("{:?}", status.code())
            }
        };
        *self.by_status.entry(key).or_default() += 1;
    }
}

async fn call(channel: Channel, service: &str, rpc: &str, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(format!("channel: {error}")))?;
    let mut request = tonic::Request::new(body);
    // The watch is the device services' own (role service); everything else admin may call.
    let key = if rpc == "WatchPolicySet" {
        enroll_e2e::SERVICE_KEY
    } else {
        ADMIN_KEY
    };
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii key"),
    );
    let path = PathAndQuery::try_from(format!("/{service}/{rpc}")).expect("path");
    if rpc == "WatchEnrollmentEvents" {
        // Server streaming that may have nothing to send: the response headers (or the
        // refusal) are the answer; dropping the stream ends the call.
        return grpc
            .server_streaming(request, path, RawCodec)
            .await
            .map(|_| ());
    }
    if rpc == "WatchPolicySet" {
        // Server streaming: the first message (or the refusal) is the answer; dropping the
        // stream ends the call.
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        return stream.message().await.map(|_| ());
    }
    grpc.unary(request, path, RawCodec).await.map(|_| ())
}

async fn random_and_mutated_bodies_never_fault_and_leave_the_servers_healthy(backend: Backend) {
    let iterations = std::env::var("ENROLL_WIRE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let seed = std::env::var("ENROLL_WIRE_FUZZ_SEED")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let issuer = JwtIssuer::new();
    let gate = gate_config(&issuer, &["app.test.example".into()]);
    let stack = TestStack::builder(backend)
        .device_config(move |config| config.gate = gate.clone())
        .start()
        .await;
    let device = stack.device().channel().await;
    let policies = stack.policy().channel().await;
    let corpus = valid_requests(&issuer.token("acme", "kate"));
    // xorshift never leaves 0.
    let mut rng = Rng(seed | 1);
    // Bodies are made up front so the run replays exactly from the seed.
    let bodies: Vec<(usize, Vec<u8>)> = (0..iterations as usize)
        .map(|i| {
            let index = i % corpus.len();
            let other = &corpus[rng.below(corpus.len())].2;
            // Half the bodies stay protobuf so they reach the handlers' validation.
            let body = match rng.below(10) {
                0 => rng.bytes(64),
                1 => random_fields(&mut rng),
                2 => corpus[index].2.clone(),
                3..=5 => mutate(&mut rng, &corpus[index].2, other),
                _ => mutate_fields(&mut rng, &corpus[index].2),
            };
            (index, body)
        })
        .collect();

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut answers = futures::stream::iter(bodies)
        .map(|(index, body)| {
            let (service, rpc, _) = &corpus[index];
            let channel = if *service == POLICY_SERVICE {
                policies.clone()
            } else {
                device.clone()
            };
            async move {
                let answer = call(channel, service, rpc, body.clone()).await;
                (*rpc, body, answer)
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some((rpc, body, answer)) = answers.next().await {
        tally.record(rpc, &body, answer);
    }
    println!(
        "wire fuzz on {backend:?}: seed {seed}, {iterations} requests over {} RPCs in {:.1?}: {:?}",
        corpus.len(),
        started.elapsed(),
        tally.by_status
    );
    assert!(
        tally.faults.is_empty(),
        "{} server faults on bad input (seed {seed}):\n{}",
        tally.faults.len(),
        tally
            .faults
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Both servers are still up and serve an ordinary request.
    const WITHIN: Duration = Duration::from_secs(10);
    stack
        .device()
        .wait_for_health(DEVICE_SERVICE, ServingStatus::Serving, WITHIN)
        .await;
    stack
        .policy()
        .wait_for_health(POLICY_SERVICE, ServingStatus::Serving, WITHIN)
        .await;
    stack
        .policy_admin()
        .list_policies(policy_pb::ListPoliciesRequest::default())
        .await
        .expect("the policy service still answers");
    stack
        .admin()
        .enroll_token(pb::EnrollTokenRequest {
            realm: "acme".into(),
            user: "after-fuzz".into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .expect("the device service still enrolls");
}

/// Found by the wire fuzz (UpdatePolicy with an action named by 2,781 `x`s): the refusal
/// echoed the whole name into the status message and its details, and the answer's headers
/// outgrew what an HTTP/2 client accepts, so the client saw INTERNAL "h2 protocol error"
/// instead of INVALID_ARGUMENT.
async fn a_huge_unknown_action_name_is_invalid_argument(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.policy_admin();
    for length in [2_781, 20_000] {
        let name = "x".repeat(length);
        let rule = enroll_e2e::policy("huge", &[(name.as_str(), "1")]);
        let created = admin
            .create_policy(policy_pb::CreatePolicyRequest {
                policy: Some(rule.clone()),
                actor: "fuzz".into(),
                validate_only: false,
            })
            .await;
        let updated = admin
            .update_policy(policy_pb::UpdatePolicyRequest {
                policy: Some(rule),
                etag: "1".into(),
                actor: "fuzz".into(),
                validate_only: false,
            })
            .await;
        for answer in [created.map(|_| ()), updated.map(|_| ())] {
            let status = answer.expect_err("an unknown action is refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{length}: {status:?}");
        }
    }
}

enroll_e2e::on_both_backends!(
    random_and_mutated_bodies_never_fault_and_leave_the_servers_healthy,
    a_huge_unknown_action_name_is_invalid_argument,
);
