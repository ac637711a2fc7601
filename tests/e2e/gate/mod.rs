//! The gate over its own HTTP listener, as a proxy calls it (no proxy in between: the
//! real proxies have their own tests): who may pass, what everyone else learns, how a
//! device session starts and ends, and what is audited. On both backends.
use std::net::SocketAddr;

use enroll_e2e::{Backend, JwtIssuer, PageAnswer, TEST_ORIGIN, TestStack, gate_config, gate_http};
use serde_json::{Value, json};
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs_proto::RequestChallengeResponse;

mod identity;
mod models;
mod secrets;
mod sessions;

use identity::*;
use models::*;
use sessions::*;

/// The protected host in these tests: the relying party's origin (localhost, any port).
const HOST: &str = "localhost:8080";
const JWT_HEADER: &str = "X-Pomerium-Jwt-Assertion";

/// A stack whose device service runs a gate trusting `issuer`, protecting [`HOST`].
async fn gate_stack(backend: Backend, issuer: &JwtIssuer) -> TestStack {
    let config = gate_config(issuer, &[HOST.to_owned()]);
    TestStack::builder(backend)
        .device_config(move |device| device.gate = config.clone())
        .start()
        .await
}

fn gate_addr(stack: &TestStack) -> SocketAddr {
    stack.device().gate_addr.expect("the gate listens")
}

/// One HTTP/1.1 request to the gate for [`HOST`], from 127.0.0.1 (a trusted proxy).
async fn gate_request(
    stack: &TestStack,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> PageAnswer {
    let mut all = vec![("Host", HOST)];
    all.extend_from_slice(headers);
    gate_http(gate_addr(stack), method, path, &all, body).await
}

/// A forward-auth check as nginx sends it (`X-Original-URL`), with `headers` of the
/// original request.
async fn check(stack: &TestStack, path: &str, headers: &[(&str, &str)]) -> PageAnswer {
    let original = format!("http://{HOST}{path}");
    let mut all = vec![("X-Original-URL", original.as_str())];
    all.extend_from_slice(headers);
    gate_request(stack, "GET", "/forward-auth", &all, None).await
}

/// A call of the sign-in page's API, from the page's own origin.
async fn page_api(stack: &TestStack, jwt: &str, path: &str, body: &Value) -> PageAnswer {
    gate_request(
        stack,
        "POST",
        &format!("/.enroll-gate/api/{path}"),
        &[(JWT_HEADER, jwt), ("Origin", TEST_ORIGIN)],
        Some(body),
    )
    .await
}

/// Signs in through the page's API with `passkey` for `device_type`; the session cookie
/// (`name=value`).
async fn sign_in(
    stack: &TestStack,
    jwt: &str,
    passkey: &mut impl WebauthnAuthenticator,
    device_type: &str,
) -> String {
    let back = format!("http://{HOST}/app?from=gate");
    let answer = sign_in_answer(stack, jwt, passkey, device_type, &back).await;
    assert_eq!(answer.status, 200, "sign-in: {}", answer.body);
    assert_eq!(
        answer.json()["redirect"],
        back.as_str(),
        "back to where they came from"
    );
    session_cookie(&answer)
}

async fn sign_in_answer(
    stack: &TestStack,
    jwt: &str,
    passkey: &mut impl WebauthnAuthenticator,
    device_type: &str,
    return_url: &str,
) -> PageAnswer {
    let begun = page_api(
        stack,
        jwt,
        "authenticate/begin",
        &json!({"type": device_type}),
    )
    .await;
    assert_eq!(begun.status, 200, "begin: {}", begun.body);
    let begun = begun.json();
    let options: RequestChallengeResponse =
        serde_json::from_value(begun["options"].clone()).expect("request options");
    let credential = passkey
        .do_authentication(Url::parse(TEST_ORIGIN).unwrap(), options)
        .expect("the soft passkey signs");
    page_api(
        stack,
        jwt,
        "authenticate/finish",
        &json!({
            "ceremony_id": begun["ceremony_id"],
            "credential": credential,
            "type": device_type,
            "rd": return_url,
        }),
    )
    .await
}

/// `name=value` of the answer's session cookie.
fn session_cookie(answer: &PageAnswer) -> String {
    let set = answer
        .header("set-cookie")
        .expect("the answer sets the session cookie");
    set.split(';').next().unwrap_or_default().trim().to_owned()
}

enroll_e2e::on_both_backends!(
    no_valid_identity_gets_401_and_nothing_more,
    a_plain_header_counts_only_from_the_gates_trusted_proxies,
    a_new_signing_key_is_fetched_on_its_first_unknown_kid,
    routes_without_a_valid_device_type_or_host_are_refused,
    without_a_session_browsers_are_sent_to_the_page_and_scripts_get_401,
    a_device_session_passes_until_the_device_is_revoked,
    sessions_do_not_cross_users_types_or_tampering,
    the_page_refuses_other_origins_and_foreign_return_urls,
    decisions_are_audited_without_secrets,
    the_page_is_rate_limited_per_client_address,
    a_model_flagged_by_the_metadata_is_refused_at_the_next_request,
);
