//! The gate's part of the scenario: a sign-in through its page and Envoy's ext_authz checks
//! with identities (valid, forged) and session cookies (valid, garbage) in play. The JWTs
//! and cookie values are secrets: none may show in the logs, the spans, the audit events or
//! the check's answers (an allowed answer passes the app's cookies, never the gate's).
use std::time::{Duration, Instant};

use enroll_e2e::{
    Bearer, GATE_JWT_HEADER, JwtIssuer, PROXY_KEY, TestStack, gate_sign_in, register_by_link_with,
};
use enroll_shared::proto::device::v1 as pb;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use super::Used;

/// The protected host of the scenario's gate.
pub const HOST: &str = "app.test.example";
const REALM: &str = "acme";
const USER: &str = "erin";
/// A cookie under the gate's name that is no session of it.
const GARBAGE_SESSION: &str = "v1.s1.Qm9ndXMtc2Vzc2lvbi1jb29raWUtOTE4MjczNjQ1NS1hYmNkZWY";

fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
    let mut map: std::collections::HashMap<String, String> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    map.insert(":authority".into(), HOST.into());
    map.insert(":path".into(), "/reports".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "192.0.2.7".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    headers: map,
                    path: "/reports".into(),
                    host: HOST.into(),
                    scheme: "https".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [("device_type".to_owned(), "any".to_owned())].into(),
            ..Default::default()
        }),
    }
}

pub async fn run(stack: &TestStack, issuer: &JwtIssuer, used: &mut Used) {
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let gate_addr = stack.device().gate_addr.expect("the gate is served");
    let jwt = issuer.token(REALM, USER);
    let forged = issuer.forged_token(REALM, USER);
    used.secret("gate JWT", &jwt);
    used.secret("forged gate JWT", &forged);
    used.secret("garbage gate cookie", GARBAGE_SESSION);

    let mut passkey = SoftPasskey::new(true);
    register_by_link_with(&mut admin, &mut proxy, &mut passkey, REALM, USER).await;
    let session = gate_sign_in(gate_addr, HOST, &jwt, &mut passkey, "any").await;
    let value = session
        .split_once('=')
        .map(|(_, value)| value.to_owned())
        .expect("name=value");
    used.secret("gate session cookie", &value);

    let mut envoy = AuthorizationClient::with_interceptor(
        stack.device().channel().await,
        Bearer::new(Some(PROXY_KEY)),
    );
    let cookies = format!("theme=dark; {session}");
    let garbage = format!("__Host-enroll-gate={GARBAGE_SESSION}");
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("allowed", &[(GATE_JWT_HEADER, &jwt), ("cookie", &cookies)]),
        (
            "forged identity",
            &[(GATE_JWT_HEADER, &forged), ("cookie", &cookies)],
        ),
        (
            "garbage session",
            &[
                (GATE_JWT_HEADER, &jwt),
                ("cookie", &garbage),
                ("sec-fetch-mode", "navigate"),
            ],
        ),
        ("no session", &[(GATE_JWT_HEADER, &jwt)]),
    ];
    for (case, headers) in cases {
        let answer = envoy
            .check(check_request(headers))
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"))
            .into_inner();
        // The whole answer (headers for the app and the client, bodies) is searched.
        used.errors.push(format!("{case}: {answer:?}"));
    }
    let refused =
        AuthorizationClient::with_interceptor(stack.device().channel().await, Bearer::new(None))
            .check(check_request(&[(GATE_JWT_HEADER, &jwt)]))
            .await
            .expect_err("no API key");
    used.error(refused);

    // The gate audits from a background task (refusals within a second): wait for its
    // events so the scan sees them.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = admin
            .list_audit_events(pb::ListAuditEventsRequest {
                action: "gate_check".into(),
                ..Default::default()
            })
            .await
            .expect("list audit events")
            .into_inner()
            .events;
        if events.len() >= 2 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
