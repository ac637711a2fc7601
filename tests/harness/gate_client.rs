//! A client of the gate's HTTP listener, as the proxy in front forwards a browser's requests
//! to it: raw HTTP/1.1 to any path, and a whole sign-in through the page's API with a soft
//! passkey (what the page's script does with `navigator.credentials.get()`), which yields
//! the device session cookie the checks then see.
use std::net::SocketAddr;

use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;

use crate::{PageAnswer, TEST_ORIGIN};

/// The identity header of the test gates (`gate_config`): the proxy's JWT.
pub const GATE_JWT_HEADER: &str = "x-pomerium-jwt-assertion";
/// The gate's path prefix (the configuration's default).
pub const GATE_PREFIX: &str = "/.enroll-gate";

/// `method path` on the gate at `gate_addr` with `headers` (a `Host` is added when they
/// name none) and a JSON `body`, over a fresh connection from 127.0.0.1 (a trusted proxy
/// of the test gates).
pub async fn gate_http(
    gate_addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> PageAnswer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {gate_addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let stream = tokio::net::TcpStream::connect(gate_addr)
        .await
        .expect("connect to the gate")
        .into_std()
        .expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    crate::page::exchange(stream, request).await
}

/// Signs `jwt`'s user in on the gate page of `host` (`app.example.com` or `localhost:port`,
/// one of the gate's hosts) with `passkey`, a device registered for that user, for routes
/// requiring `device_type` (`any`, `enclave_only`). Returns the session cookie as a `Cookie`
/// header carries it (`__Host-enroll-gate=v1.…`).
///
/// The page's calls carry what the proxy forwards: `Host`, the page's `Origin` and the JWT.
/// The WebAuthn origin is the host's own when it is `localhost` (the test relying party's
/// id), else [`TEST_ORIGIN`]: the relying party checks the origin in the assertion, not
/// the HTTP `Origin`, so a gate host outside `localhost` still signs in.
pub async fn gate_sign_in(
    gate_addr: SocketAddr,
    host: &str,
    jwt: &str,
    passkey: &mut impl WebauthnAuthenticator,
    device_type: &str,
) -> String {
    let origin = format!("http://{host}");
    let headers = [
        ("Host", host),
        ("Origin", origin.as_str()),
        (GATE_JWT_HEADER, jwt),
    ];
    let begun = gate_http(
        gate_addr,
        "POST",
        &format!("{GATE_PREFIX}/api/authenticate/begin"),
        &headers,
        Some(&json!({"type": device_type})),
    )
    .await;
    assert_eq!(begun.status, 200, "authenticate/begin: {}", begun.body);
    let begun = begun.json();
    let options: webauthn_rs_proto::RequestChallengeResponse =
        serde_json::from_value(begun["options"].clone()).expect("request options");
    let webauthn_origin = if is_localhost(host) {
        origin.clone()
    } else {
        TEST_ORIGIN.to_owned()
    };
    let assertion = passkey
        .do_authentication(url::Url::parse(&webauthn_origin).expect("origin"), options)
        .expect("the passkey answers get()");
    let finished = gate_http(
        gate_addr,
        "POST",
        &format!("{GATE_PREFIX}/api/authenticate/finish"),
        &headers,
        Some(&json!({
            "ceremony_id": begun["ceremony_id"],
            "credential": serde_json::to_value(&assertion).expect("assertion JSON"),
            "type": device_type,
        })),
    )
    .await;
    assert_eq!(
        finished.status, 200,
        "authenticate/finish: {}",
        finished.body
    );
    let set_cookie = finished
        .header("set-cookie")
        .expect("the sign-in sets the session cookie");
    set_cookie
        .split(';')
        .next()
        .expect("name=value")
        .trim()
        .to_owned()
}

/// `localhost` or `localhost:port` (an IP address is no relying-party id).
fn is_localhost(host: &str) -> bool {
    let name = host.split_once(':').map_or(host, |(name, _)| name);
    name.eq_ignore_ascii_case("localhost")
}
