//! The gate behind a real Caddy running the shipped `deploy/gate/caddy/Caddyfile`: in the
//! shared headless Chromium, a person enrolled through a link signs in on the gate's page
//! and reaches the app, and a device revoked over gRPC is refused within a second; over
//! plain HTTP, the checks `gate_nginx` runs behind nginx (invalid identities, cookies that
//! are no session, fetch versus navigation, only the gate's identity and cookies reach the
//! app, enclave_only routes, WebSocket, return URLs).
use enroll_e2e::{Backend, GateSite, ProxyKind};

use crate::gate_nginx::{
    answers_without_a_session, checks_a_websocket_when_it_opens,
    gives_the_app_only_the_gates_identity, never_passes_a_clients_identity_header_to_the_gate,
    refuses_an_any_device_on_enclave_only, refuses_cookies_that_are_no_session,
    refuses_identities_that_are_not_valid, refuses_return_urls_on_other_hosts,
    site_trusting_plain_headers,
};
use crate::gate_nginx_browser::signs_in_reaches_the_app_and_revocation_ends_it;

async fn enrolled_device_signs_in_and_revocation_ends_it(backend: Backend) {
    signs_in_reaches_the_app_and_revocation_ends_it(backend, ProxyKind::Caddy).await;
}

/// Every HTTP check on one site (each stands alone: its own users and sessions).
async fn checks_like_behind_nginx(backend: Backend) {
    let Some(site) =
        GateSite::start(backend, ProxyKind::Caddy, "gate_caddy::checks", Vec::new()).await
    else {
        return;
    };
    refuses_identities_that_are_not_valid(&site).await;
    refuses_cookies_that_are_no_session(&site).await;
    answers_without_a_session(&site).await;
    gives_the_app_only_the_gates_identity(&site).await;
    refuses_an_any_device_on_enclave_only(&site).await;
    checks_a_websocket_when_it_opens(&site).await;
    refuses_return_urls_on_other_hosts(&site).await;
}

async fn a_clients_identity_header_never_reaches_the_gate(backend: Backend) {
    let test = "gate_caddy::a_clients_identity_header_never_reaches_the_gate";
    if let Some(site) = site_trusting_plain_headers(backend, ProxyKind::Caddy, test).await {
        never_passes_a_clients_identity_header_to_the_gate(&site).await;
    }
}

enroll_e2e::on_both_backends!(
    enrolled_device_signs_in_and_revocation_ends_it,
    checks_like_behind_nginx,
    a_clients_identity_header_never_reaches_the_gate,
);
