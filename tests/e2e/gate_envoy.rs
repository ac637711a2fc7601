//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`) on the device
//! service's gRPC port, with a client generated from Envoy's own protos sending what Envoy's
//! `ext_authz` filter sends (the request's method, scheme, host and path, its headers in a
//! lowercased map with the pseudo headers, the downstream address, the route's context
//! extensions) under the proxy's API key, and asserting the fields Envoy reads: the status,
//! a denied response's HTTP status, headers and body, and an allowed request's headers to
//! set and remove upstream and to add downstream.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use enroll_e2e::{
    Backend, Bearer, GATE_JWT_HEADER, JwtIssuer, TestStack, gate_config, gate_http, gate_sign_in,
    key_for, register_by_link_with,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderValueOption, SocketAddress, address,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    attribute_context,
};
use serde_json::{Value, json};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const HOST: &str = "app.test.example";
const REALM: &str = "corp";
const USER: &str = "alice";
/// The downstream client Envoy reports.
const CLIENT: &str = "192.0.2.7";
/// The route's context extension that requires any enrolled device.
const ANY: &[(&str, &str)] = &[("device_type", "any")];

type Envoy = AuthorizationClient<InterceptedService<Channel, Bearer>>;

/// What Envoy's ext_authz filter sends for `GET https://host/path` with the client's
/// `headers` and the route's context `extensions`.
fn envoy_check(
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    extensions: &[(&str, &str)],
) -> CheckRequest {
    let mut map: HashMap<String, String> = [
        (":authority", host),
        (":method", "GET"),
        (":path", path),
        (":scheme", "https"),
        ("user-agent", "Mozilla/5.0 (enroll-e2e)"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "6f1c1d1e-0000-4000-8000-000000000001"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    for (name, value) in headers {
        map.insert(name.to_ascii_lowercase(), (*value).to_owned());
    }
    let peer = |ip: &str, port: u32| {
        attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.to_owned(),
                port_specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                        port,
                    ),
                ),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(CLIENT, 53_012)),
            destination: Some(peer("10.0.0.5", 443)),
            request: Some(attribute_context::Request {
                time: Some(envoy_types::pb::google::protobuf::Timestamp {
                    seconds: chrono::Utc::now().timestamp(),
                    nanos: 0,
                }),
                http: Some(attribute_context::HttpRequest {
                    id: "6f1c1d1e-0000-4000-8000-000000000001".into(),
                    method: "GET".into(),
                    headers: map,
                    path: path.into(),
                    host: host.into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    size: 0,
                    ..Default::default()
                }),
            }),
            context_extensions: extensions
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            ..Default::default()
        }),
    }
}

async fn check(envoy: &mut Envoy, request: CheckRequest) -> CheckResponse {
    envoy
        .check(request)
        .await
        .expect("the check answers")
        .into_inner()
}

fn rpc_code(response: &CheckResponse) -> i32 {
    response.status.as_ref().map_or(0, |status| status.code)
}

#[track_caller]
fn denied(response: &CheckResponse) -> &DeniedHttpResponse {
    match response.http_response.as_ref() {
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(rpc_code(response), 0, "a denial is not OK");
            denied
        }
        other => panic!("not a denied response: {other:?}"),
    }
}

#[track_caller]
fn allowed(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(rpc_code(response), 0, "{response:?}");
    match response.http_response.as_ref() {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not an OK response: {other:?}"),
    }
}

fn header<'a>(options: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
    options
        .iter()
        .filter_map(|option| option.header.as_ref())
        .find(|header| header.key == name)
        .map(|header| header.value.as_str())
}

fn http_status(denied: &DeniedHttpResponse) -> i32 {
    denied.status.as_ref().map_or(0, |status| status.code)
}

fn body(denied: &DeniedHttpResponse) -> Value {
    serde_json::from_str(&denied.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", denied.body))
}

/// Asserts a denial with `status`, `code` in the body (when there is one) and in
/// `x-enroll-gate-error`.
#[track_caller]
fn assert_denied(response: &CheckResponse, status: i32, code: &str) -> Value {
    let denied = denied(response);
    assert_eq!(http_status(denied), status, "{denied:?}");
    assert_eq!(header(&denied.headers, "x-enroll-gate-error"), Some(code));
    if denied.body.is_empty() {
        return Value::Null;
    }
    let body = body(denied);
    assert_eq!(body["error"], code, "{body}");
    body
}

/// The sign-in page for `path` on the protected host, for routes requiring `device_type`.
fn sign_in_location(device_type: &str, path: &str) -> String {
    let url = format!("https://{HOST}{path}");
    format!(
        "/.enroll-gate/?type={device_type}&rd={}",
        url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    )
}

async fn envoy_checks_get_the_answers_envoy_applies(backend: Backend) {
    let issuer = JwtIssuer::new();
    let gate = gate_config(&issuer, &[HOST.into()]);
    let stack = TestStack::builder(backend)
        .device_config(move |config| config.gate = gate.clone())
        .start()
        .await;
    let server = stack.device();
    let gate_addr = server.gate_addr.expect("the gate is served");
    let mut envoy: Envoy = AuthorizationClient::with_interceptor(
        server.channel().await,
        Bearer::new(Some(key_for(Role::Proxy))),
    );
    let jwt = issuer.token(REALM, USER);
    let navigate = ("sec-fetch-mode", "navigate");
    let cors = ("sec-fetch-mode", "cors");

    // No identity, or one that is not the issuer's: 401 and nothing more, even for a
    // navigation (no sign-in page without a user to sign in).
    let forged = issuer.forged_token(REALM, USER);
    let unsigned = issuer.unsigned_token(REALM, USER);
    let unknown_key = issuer.token_with_unknown_key(REALM, USER);
    let mut identities = vec![vec![navigate]];
    for token in [&forged, &unsigned, &unknown_key] {
        identities.push(vec![navigate, (GATE_JWT_HEADER, token.as_str())]);
    }
    for headers in &identities {
        let answer = check(&mut envoy, envoy_check(HOST, "/docs", headers, ANY)).await;
        assert_eq!(rpc_code(&answer), Code::Unauthenticated as i32);
        let body = assert_denied(&answer, 401, "UNAUTHENTICATED");
        assert_eq!(
            body,
            json!({"error": "UNAUTHENTICATED", "reason": "not signed in at the identity provider"})
        );
        let denied = denied(&answer);
        assert_eq!(header(&denied.headers, "location"), None);
        assert_eq!(header(&denied.headers, "set-cookie"), None);
        assert_eq!(
            header(&denied.headers, "www-authenticate"),
            Some("Enroll-Gate")
        );
    }

    // A user without a device session: a browser navigation is sent to the sign-in page,
    // anything else is told where it is.
    let path = "/docs?page=2";
    let answer = check(
        &mut envoy,
        envoy_check(HOST, path, &[navigate, (GATE_JWT_HEADER, &jwt)], ANY),
    )
    .await;
    assert_denied(&answer, 302, "DEVICE_SESSION_REQUIRED");
    assert_eq!(
        header(&denied(&answer).headers, "location"),
        Some(sign_in_location("any", path).as_str())
    );
    let answer = check(
        &mut envoy,
        envoy_check(HOST, path, &[cors, (GATE_JWT_HEADER, &jwt)], ANY),
    )
    .await;
    let body = assert_denied(&answer, 401, "DEVICE_SESSION_REQUIRED");
    assert_eq!(body["signin"], sign_in_location("any", path));
    assert_eq!(header(&denied(&answer).headers, "location"), None);

    // The route's device type: from its context extension, else the configured header;
    // none at all (and no default) or an unknown one is refused, never widened.
    let missing = check(
        &mut envoy,
        envoy_check(HOST, "/", &[navigate, (GATE_JWT_HEADER, &jwt)], &[]),
    )
    .await;
    assert_eq!(rpc_code(&missing), Code::PermissionDenied as i32);
    assert_denied(&missing, 403, "DEVICE_TYPE_MISSING");
    let unknown = check(
        &mut envoy,
        envoy_check(
            HOST,
            "/",
            &[(GATE_JWT_HEADER, &jwt)],
            &[("device_type", "laptop")],
        ),
    )
    .await;
    assert_denied(&unknown, 403, "DEVICE_TYPE_INVALID");
    let by_header = check(
        &mut envoy,
        envoy_check(
            HOST,
            "/",
            &[
                cors,
                (GATE_JWT_HEADER, &jwt),
                ("x-enroll-device-type", "any"),
            ],
            &[],
        ),
    )
    .await;
    assert_denied(&by_header, 401, "DEVICE_SESSION_REQUIRED");
    let other_host = check(
        &mut envoy,
        envoy_check("evil.test.example", "/", &[(GATE_JWT_HEADER, &jwt)], ANY),
    )
    .await;
    assert_denied(&other_host, 403, "HOST_NOT_PROTECTED");

    // A device registered through an admin's link, signed in through the gate's page.
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let mut passkey = SoftPasskey::new(true);
    let device = register_by_link_with(&mut admin, &mut proxy, &mut passkey, REALM, USER).await;
    let session = gate_sign_in(gate_addr, HOST, &jwt, &mut passkey, "any").await;
    assert!(session.starts_with("__Host-enroll-gate="), "{session}");
    let cookies = format!("theme=dark; {session}; lang=en");
    let with_session = |extra: &[(&'static str, &'static str)]| {
        let mut headers = vec![
            (GATE_JWT_HEADER, jwt.as_str()),
            ("cookie", cookies.as_str()),
        ];
        headers.extend_from_slice(extra);
        headers
    };

    let answer = check(
        &mut envoy,
        envoy_check(
            HOST,
            "/docs",
            &with_session(&[
                navigate,
                ("x-enroll-user", "mallory"),
                ("x-enroll-cookie", "forged"),
            ]),
            ANY,
        ),
    )
    .await;
    let ok = allowed(&answer);
    assert_eq!(header(&ok.headers, "x-enroll-user"), Some(USER));
    assert_eq!(header(&ok.headers, "x-enroll-realm"), Some(REALM));
    assert_eq!(
        header(&ok.headers, "x-enroll-device-id"),
        Some(device.id.as_str())
    );
    assert_eq!(header(&ok.headers, "x-enroll-device-type"), Some("any"));
    // The app's cookies, without the gate's.
    assert_eq!(header(&ok.headers, "cookie"), Some("theme=dark; lang=en"));
    for option in &ok.headers {
        assert_eq!(
            option.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            "{option:?} replaces what the client sent"
        );
    }
    assert_eq!(ok.headers_to_remove, ["x-enroll-cookie"]);
    assert!(
        ok.response_headers_to_add.is_empty(),
        "a fresh session needs no refresh"
    );

    // Only the gate's cookie: the Cookie header is removed.
    let answer = check(
        &mut envoy,
        envoy_check(
            HOST,
            "/",
            &[(GATE_JWT_HEADER, &jwt), ("cookie", &session)],
            ANY,
        ),
    )
    .await;
    let ok = allowed(&answer);
    assert_eq!(header(&ok.headers, "cookie"), None);
    assert_eq!(ok.headers_to_remove, ["cookie"]);

    // A route requiring more than the session was signed in for; the route's extension
    // wins over a header the client sent.
    let answer = check(
        &mut envoy,
        envoy_check(
            HOST,
            "/admin",
            &with_session(&[cors, ("x-enroll-device-type", "any")]),
            &[("device_type", "enclave_only")],
        ),
    )
    .await;
    let body = assert_denied(&answer, 401, "DEVICE_TYPE_REQUIRED");
    assert_eq!(body["signin"], sign_in_location("enclave_only", "/admin"));

    // A quarter of the idle lifetime later the session is re-sealed: the new cookie goes
    // to the client beside the app's own.
    stack.clock().advance(Duration::from_secs(20 * 60));
    let answer = check(&mut envoy, envoy_check(HOST, "/", &with_session(&[]), ANY)).await;
    let ok = allowed(&answer);
    let refreshed = header(&ok.response_headers_to_add, "set-cookie").expect("a refreshed cookie");
    assert!(
        refreshed.starts_with("__Host-enroll-gate=v1."),
        "{refreshed}"
    );
    assert!(refreshed.contains("HttpOnly") && refreshed.contains("Secure"));
    assert_eq!(
        ok.response_headers_to_add[0].append_action,
        HeaderAppendAction::AppendIfExistsOrAdd as i32
    );

    // Revoking the device refuses the next check: within a second, whatever is cached.
    admin
        .revoke_device(pb::RevokeDeviceRequest {
            id: device.id.clone(),
            revoked_by: "console-admin".into(),
            reason: "lost".into(),
        })
        .await
        .expect("revoke the device");
    let revoked = Instant::now();
    let answer = loop {
        let answer = check(
            &mut envoy,
            envoy_check(HOST, "/docs", &with_session(&[cors]), ANY),
        )
        .await;
        if rpc_code(&answer) != 0 {
            break answer;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still allowed a second after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let body = assert_denied(&answer, 401, "DEVICE_REVOKED");
    assert_eq!(body["signin"], sign_in_location("any", "/docs"));
    let clear = header(&denied(&answer).headers, "set-cookie").expect("the session is deleted");
    assert!(clear.contains("Max-Age=0"), "{clear}");

    // The check needs the proxy's (or an admin's) API key, like every RPC.
    let request = || envoy_check(HOST, "/", &[(GATE_JWT_HEADER, &jwt)], ANY);
    for (key, expected) in [
        (None, Some(Code::Unauthenticated)),
        (Some("not-a-key"), Some(Code::Unauthenticated)),
        (Some(key_for(Role::Ops)), Some(Code::PermissionDenied)),
        (Some(key_for(Role::Service)), Some(Code::PermissionDenied)),
        (Some(key_for(Role::Admin)), None),
    ] {
        let mut client =
            AuthorizationClient::with_interceptor(server.channel().await, Bearer::new(key));
        let result = client.check(request()).await;
        match expected {
            Some(code) => assert_eq!(
                result.expect_err("refused before the gate").code(),
                code,
                "{key:?}"
            ),
            None => {
                result.expect("the admin key passes");
            }
        }
    }

    // Counted by name (not as `unknown`), and the gate's decisions by outcome.
    assert!(
        has_sample(
            &stack,
            "rpc_server_requests_total",
            &[
                r#"rpc_service="envoy.service.auth.v3.Authorization""#,
                r#"rpc_method="Check""#,
            ]
        )
        .await
    );
    for outcome in ["allowed", "DEVICE_REVOKED", "UNAUTHENTICATED"] {
        assert!(
            has_sample(
                &stack,
                "enroll_device_gate_decisions",
                &[&format!(r#"outcome="{outcome}""#)]
            )
            .await,
            "{outcome}"
        );
    }
}

/// Whether the device server's metrics have a sample of `name` with all of `labels`.
async fn has_sample(stack: &TestStack, name: &str, labels: &[&str]) -> bool {
    let scrape = gate_http(stack.device_metrics_addr(), "GET", "/metrics", &[], None).await;
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    scrape
        .body
        .lines()
        .any(|line| line.starts_with(name) && labels.iter().all(|label| line.contains(label)))
}

/// Without `[gate]` nothing answers Envoy: its checks fail (Envoy then refuses the request
/// with `failure_mode_allow: false`), never allow.
async fn without_a_gate_the_check_is_unimplemented(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut envoy: Envoy = AuthorizationClient::with_interceptor(
        stack.device().channel().await,
        Bearer::new(Some(key_for(Role::Proxy))),
    );
    let status = envoy
        .check(envoy_check(HOST, "/", &[], ANY))
        .await
        .expect_err("no gate, no check");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

enroll_e2e::on_both_backends!(
    envoy_checks_get_the_answers_envoy_applies,
    without_a_gate_the_check_is_unimplemented,
);
