//! The Prometheus endpoints of both services, scraped over real HTTP: the per-RPC series,
//! the policy service's decisions and policy-set gauges, and the device service's limit
//! hits, autoassignment outcomes, link changes and counts, ceremonies, pool size and policy
//! dependency move with the calls that cause them, and no name or secret becomes a label.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use enroll_e2e::{
    ADMIN_KEY, Backend, PROXY_KEY, SERVICE_KEY, TestStack, enroll_token, link_secret,
    parse_page_answer, realm_policy, register_passkey,
};
use enroll_shared::proto::device::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// Hex seeds of the three hardware tokens imported into the pool.
const POOL_SEEDS: [&str; 3] = [
    "a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7b8b9c0",
    "c1c2c3c4c5c6c7c8c9d0d1d2d3d4d5d6d7d8d9e0",
    "e1e2e3e4e5e6e7e8e9f0f1f2f3f4f5f6f7f8f9a0",
];
// Long and unlike any number, so a match in a scrape is never a histogram value by chance.
const AUTOASSIGN_PIN: &str = "metricspin5839";

/// One sample of a scrape: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape, and its text (for the secrets check and failure messages).
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of the samples of `name` whose labels include `labels`; 0 when none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
            })
            .map(|sample| sample.value)
            .sum()
    }

    /// Whether any sample of `name` is present.
    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|sample| sample.name == name)
    }

    /// The values label `key` takes on the samples of `name`.
    fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter_map(|sample| sample.labels.get(key).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// Parses the Prometheus text format (0.0.4): comments skipped, `name{k="v",...} value`.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other.parse().unwrap_or_else(|_| panic!("value of {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    (name.to_owned(), parse_labels(body))
                }
            };
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// `k="v",k2="v2"` (values escape `\`, `"` and newlines).
fn parse_labels(mut body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (key, rest) = body.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => match chars.next().expect("escaped character").1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (at, '"') => break at,
                (_, other) => value.push(other),
            }
        };
        labels.insert(key.to_owned(), value);
        body = rest[end + 1..].trim_start_matches(',');
    }
    labels
}

/// `GET path` on `addr` over HTTP/1.1; status and body.
async fn http_get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the metrics endpoint answers in time")
        .expect("read the answer");
    let answer = parse_page_answer(&raw);
    if path == "/metrics" && answer.status == 200 {
        let content_type = answer.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
    }
    (answer.status, answer.body)
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, text) = http_get(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{text}");
    Scrape {
        samples: parse(&text),
        text,
    }
}

/// `name{labels}` moved by exactly `by` between two scrapes.
fn assert_moved(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)], by: f64) {
    let moved = after.value(name, labels) - before.value(name, labels);
    assert_eq!(
        moved, by,
        "{name}{labels:?} moved by {moved}, wanted {by}; after:\n{}",
        after.text
    );
}

const DEVICE: &str = "enroll.device.v1.DeviceService";

async fn series_move_with_the_calls(backend: Backend) {
    // Realm corp: HOTP only, one token a user, autoassignment on.
    let rules = realm_policy(
        "corp-rules",
        "corp",
        &[
            ("token_types", "hotp,webauthn"),
            ("max_token_per_user", "1"),
            ("autoassignment", "true"),
            ("otp_pin_minlength", "4"),
        ],
    );
    let stack = TestStack::builder(backend).with_policy(rules).start().await;
    let (policy_addr, device_addr) = (stack.policy_metrics_addr(), stack.device_metrics_addr());

    // The endpoint answers `/` with a pointer, anything else with 404, writes with 405.
    let (status, body) = http_get(device_addr, "GET", "/").await;
    assert_eq!((status, body.contains("/metrics")), (200, true), "{body}");
    assert_eq!(http_get(policy_addr, "GET", "/nothing").await.0, 404);
    assert_eq!(http_get(policy_addr, "POST", "/metrics").await.0, 405);

    let (policy_before, device_before) = (scrape(policy_addr).await, scrape(device_addr).await);
    let mut admin = stack.admin();
    let mut proxy = stack.proxy();

    // The pool: three hardware tokens.
    let csv: String = POOL_SEEDS
        .iter()
        .enumerate()
        .map(|(i, seed)| format!("METRICPOOL{i},{seed},hotp,6,0\n"))
        .collect();
    let imported = admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "corp".into(),
            csv,
            request_id: String::new(),
        })
        .await
        .expect("import")
        .into_inner();
    assert!(imported.errors.is_empty(), "{:?}", imported.errors);

    // An allowed enrollment, a denied one (token type), and a limit hit (one per user).
    let alices = enroll_token(&mut admin, "corp", "alice", pb::TokenType::Hotp).await;
    let enroll = |user: &str, kind: pb::TokenType| pb::EnrollTokenRequest {
        realm: "corp".into(),
        user: user.into(),
        r#type: kind as i32,
        ..Default::default()
    };
    let denied = admin
        .enroll_token(enroll("bob", pb::TokenType::Totp))
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "{}",
        denied.message()
    );
    let limited = admin
        .enroll_token(enroll("alice", pb::TokenType::Hotp))
        .await
        .unwrap_err();
    assert_eq!(
        limited.code(),
        Code::ResourceExhausted,
        "{}",
        limited.message()
    );

    // A link created and revoked, and one redeemed by a registration.
    let link = admin
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "corp".into(),
            user: "carol".into(),
            device_type: pb::DeviceType::Any as i32,
            created_by: "metrics-admin".into(),
            ..Default::default()
        })
        .await
        .expect("create link")
        .into_inner();
    let secret = link_secret(&link);
    admin
        .revoke_enrollment_link(pb::RevokeEnrollmentLinkRequest {
            id: link.id.clone(),
            revoked_by: "metrics-admin".into(),
        })
        .await
        .expect("revoke link");
    register_passkey(&stack, "corp", "dora").await;

    // A tokenless user's Validate: an autoassignment attempt no pool token matches (a
    // decoy challenge, counted like a real one).
    let refused = proxy
        .validate(pb::ValidateRequest {
            realm: "corp".into(),
            user: "erin".into(),
            pass: format!("{AUTOASSIGN_PIN}000000"),
            client_ip: "198.51.100.23".into(),
            ..Default::default()
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(!refused.ok && !refused.autoassigned && refused.challenge.is_some());

    let (policy_after, device_after) = (scrape(policy_addr).await, scrape(device_addr).await);

    // Per RPC, on the device service: one success, one denial, one limit hit.
    let requests = "rpc_server_requests_total";
    let enroll_rpc = [("rpc_service", DEVICE), ("rpc_method", "EnrollToken")];
    for (code, by) in [("0", 1.0), ("7", 1.0), ("8", 1.0)] {
        let labels = [enroll_rpc[0], enroll_rpc[1], ("rpc_grpc_status_code", code)];
        assert_moved(&device_before, &device_after, requests, &labels, by);
    }
    assert_moved(
        &device_before,
        &device_after,
        "rpc_server_duration_seconds_count",
        &enroll_rpc,
        3.0,
    );
    assert!(
        device_after.value(
            "rpc_server_duration_seconds_bucket",
            &[
                enroll_rpc[0],
                enroll_rpc[1],
                ("rpc_grpc_status_code", "0"),
                ("le", "+Inf")
            ]
        ) >= 1.0
    );
    // The policy service answered the device service's questions.
    let evaluated = [
        ("rpc_service", "enroll.policy.v1.PolicyService"),
        ("rpc_method", "EvaluateEnrollment"),
        ("rpc_grpc_status_code", "0"),
    ];
    assert!(
        policy_after.value(requests, &evaluated) - policy_before.value(requests, &evaluated) >= 3.0,
        "{}",
        policy_after.text
    );

    // Decisions and denials.
    let decisions = "enroll_policy_decisions_total";
    let enroll_allowed = [("action", "enroll"), ("outcome", "allowed")];
    // The import, Alice's first enrollment and the one that then hit the device-side limit.
    assert_moved(
        &policy_before,
        &policy_after,
        decisions,
        &enroll_allowed,
        3.0,
    );
    let enroll_denied = [("action", "enroll"), ("outcome", "denied")];
    assert_moved(
        &policy_before,
        &policy_after,
        decisions,
        &enroll_denied,
        1.0,
    );
    let type_denied = [("action", "enroll"), ("code", "TOKEN_TYPE_NOT_ALLOWED")];
    assert_moved(
        &policy_before,
        &policy_after,
        "enroll_policy_denials_total",
        &type_denied,
        1.0,
    );
    let create_link = [("action", "create_link"), ("outcome", "allowed")];
    assert_moved(&policy_before, &policy_after, decisions, &create_link, 2.0);
    for outcome in policy_after.label_values(decisions, "outcome") {
        assert!(
            ["allowed", "denied", "conflict", "unavailable"].contains(&outcome.as_str()),
            "{outcome}"
        );
    }

    // The policy set: one policy, confirmed recently.
    assert_eq!(policy_after.value("enroll_policy_set_policies", &[]), 1.0);
    assert_eq!(policy_after.value("enroll_policy_set_unreadable", &[]), 0.0);
    assert!(policy_after.value("enroll_policy_set_version", &[]) >= 1.0);
    let age = policy_after.value("enroll_policy_set_age_seconds", &[]);
    assert!(
        policy_after.has("enroll_policy_set_age_seconds") && (0.0..30.0).contains(&age),
        "{age}"
    );

    // Device-side outcomes.
    assert_moved(
        &device_before,
        &device_after,
        "enroll_device_limit_hits_total",
        &[("limit", "max_token_per_user")],
        1.0,
    );
    assert_eq!(
        device_after.label_values("enroll_device_limit_hits_total", "limit"),
        ["max_token_per_user"]
    );
    let changes = "enroll_device_link_changes_total";
    for (change, by) in [("created", 2.0), ("revoked", 1.0), ("redeemed", 1.0)] {
        assert_moved(
            &device_before,
            &device_after,
            changes,
            &[("change", change)],
            by,
        );
    }
    assert_moved(
        &device_before,
        &device_after,
        "enroll_device_webauthn_ceremonies_total",
        &[("ceremony", "registration"), ("outcome", "success")],
        1.0,
    );
    assert_moved(
        &device_before,
        &device_after,
        "enroll_device_autoassign_attempts_total",
        &[("outcome", "challenged")],
        1.0,
    );
    assert_moved(
        &device_before,
        &device_after,
        "enroll_device_autoassign_attempts_total",
        &[],
        1.0,
    );

    // Gauges counted from the database (at most once a second, so a scrape right after
    // the previous count may show the previous values): links by state, the pool, and
    // the policy dependency.
    let wanted = [
        ("active", 0.0),
        ("used", 1.0),
        ("revoked", 1.0),
        ("expired", 0.0),
    ];
    let counted = |scrape: &Scrape| {
        wanted.iter().all(|(state, count)| {
            scrape.value("enroll_device_links", &[("state", state)]) == *count
        }) && scrape.value("enroll_device_pool_tokens", &[]) == 3.0
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut gauges = scrape(device_addr).await;
    while !counted(&gauges) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "links and pool not counted:\n{}",
            gauges.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        gauges = scrape(device_addr).await;
    }
    assert_eq!(gauges.value("enroll_device_policy_service_up", &[]), 1.0);

    // Bounded labels: no user, realm, serial, address, link id or secret, no API key.
    let token_serial = alices.serial.clone();
    for text in [&policy_after.text, &device_after.text] {
        for secret in [
            "alice",
            "bob",
            "carol",
            "dora",
            "erin",
            "corp",
            "198.51.100.23",
            "192.0.2.7",
            "METRICPOOL",
            &token_serial,
            &link.id,
            &secret,
            POOL_SEEDS[0],
            AUTOASSIGN_PIN,
            ADMIN_KEY,
            PROXY_KEY,
            SERVICE_KEY,
        ] {
            assert!(!text.contains(secret), "`{secret}` in a scrape:\n{text}");
        }
    }
}

/// A path nobody implements is counted as `unknown`, not under the path a client chose.
async fn unknown_methods_share_one_series(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let addr = stack.policy_metrics_addr();
    let before = scrape(addr).await;
    let channel = stack.policy().channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    for path in [
        "/made.up.Service/Anything",
        "/enroll.policy.v1.PolicyService/Nope",
    ] {
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                http::uri::PathAndQuery::from_static(path),
                EmptyCodec,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), Code::Unimplemented | Code::Unauthenticated),
            "{status:?}"
        );
    }
    let after = scrape(addr).await;
    let unknown = [("rpc_service", "unknown"), ("rpc_method", "unknown")];
    assert_moved(&before, &after, "rpc_server_requests_total", &unknown, 2.0);
    assert!(!after.text.contains("made.up"), "{}", after.text);
    assert!(!after.text.contains("Nope"), "{}", after.text);
}

/// Encodes and decodes nothing: a call whose answer only matters by its status.
#[derive(Debug, Clone, Copy)]
struct EmptyCodec;

impl tonic::codec::Codec for EmptyCodec {
    type Encode = ();
    type Decode = ();
    type Encoder = EmptyCodec;
    type Decoder = EmptyCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EmptyCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EmptyCodec
    }
}

impl tonic::codec::Encoder for EmptyCodec {
    type Item = ();
    type Error = tonic::Status;

    fn encode(&mut self, _: (), _: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl tonic::codec::Decoder for EmptyCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, _: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        Ok(Some(()))
    }
}

enroll_e2e::on_both_backends!(series_move_with_the_calls, unknown_methods_share_one_series);
