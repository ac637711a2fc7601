//! The gate behind a real nginx running the shipped `deploy/gate/nginx/enroll-gate.conf`, in
//! the shared headless Chromium with a virtual authenticator; the identity proxy in front
//! is simulated by the tab's extra header carrying the JWT. A person enrolled through a
//! link visits the app, is sent to the sign-in page, authenticates with the same
//! authenticator and lands on the URL they asked for, with the gate's identity; signing
//! out ends the session; a device revoked over gRPC is refused within a second. Without a
//! device the page says why (ask the administrator) or offers registration when a policy
//! allows it; a return URL on another host is refused.
use std::time::{Duration, Instant};

use enroll_e2e::{
    BROWSER_SLOT, Backend, Browser, Echo, GateSite, IDENTITY_HEADER, ProxyKind, chromium_or_skip,
    realm_policy,
};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;

/// The site, and the browser once this test holds the browser slot; `None` when Chromium
/// or the proxy is missing (skipped).
async fn start(
    backend: Backend,
    kind: ProxyKind,
    test: &str,
    policies: Vec<policy_pb::Policy>,
) -> Option<(GateSite, Browser, tokio::sync::MutexGuard<'static, ()>)> {
    let chromium = chromium_or_skip(test)?;
    let site = GateSite::start(backend, kind, test, policies).await?;
    let slot = BROWSER_SLOT.lock().await;
    let browser = Browser::launch(&chromium).await;
    Some((site, browser, slot))
}

/// The whole way through `kind`: enrolled by link in the browser, sign-in on the gate's
/// page, the app on the original URL, sign-out, and revocation refused within 1 s.
pub async fn signs_in_reaches_the_app_and_revocation_ends_it(backend: Backend, kind: ProxyKind) {
    let test = "gate_browser::signs_in_reaches_the_app";
    let Some((site, mut browser, _slot)) = start(backend, kind, test, Vec::new()).await else {
        return;
    };
    let (tab, _) = browser.tab_with_authenticator().await;
    let device_id = browser
        .register_by_link(&tab, &site.stack, "acme", "alice")
        .await;
    let jwt = site.jwt("alice");
    browser.set_identity(&tab, &jwt).await;
    let origin = site.proxy.origin();
    let wanted = format!("{origin}/reports/q3?sort=desc&page=2");

    // No session: the navigation ends on the sign-in page, which knows where to return.
    browser.open(&tab, &wanted).await;
    let page = browser.wait_for_gate_state(&tab, &["ready", "error"]).await;
    assert_eq!(page.state, "ready", "{page:?}");
    assert_eq!(page.next, "authenticate", "{page:?}");
    assert_eq!(page.user, "alice");
    assert!(page.button_visible && page.signout_visible, "{page:?}");
    let here = browser.url(&tab).await;
    let encoded: String = url::form_urlencoded::byte_serialize(wanted.as_bytes()).collect();
    assert_eq!(
        here,
        format!("{origin}/.enroll-gate/?type=any&rd={encoded}")
    );

    // WebAuthn with the authenticator that registered, then the app on the original URL.
    browser
        .eval(&tab, "document.querySelector('#action').click()")
        .await;
    browser.wait_for_url(&tab, |url| url == wanted).await;
    let echo = browser.app_echo(&tab).await;
    assert_eq!(echo.path(), "/reports/q3?sort=desc&page=2");
    assert_eq!(echo.header("x-enroll-user").as_deref(), Some("alice"));
    assert_eq!(echo.header("x-enroll-realm").as_deref(), Some("acme"));
    assert_eq!(echo.header("x-enroll-device-id"), Some(device_id.clone()));
    assert_eq!(echo.header("x-enroll-device-type").as_deref(), Some("any"));
    assert!(
        !echo.text().contains("enroll-gate="),
        "the gate's cookie: {echo:?}"
    );
    let cookies = browser.cookies(&tab, &origin).await;
    let session = cookies
        .iter()
        .find(|cookie| cookie["name"] == "__Host-enroll-gate")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    let cookie = format!(
        "__Host-enroll-gate={}",
        session["value"].as_str().unwrap_or_default()
    );

    // A script's fetch on the app with the session: the app answers.
    let fetched = browser
        .eval(
            &tab,
            "fetch('/api/items', {headers: {'Accept': 'application/json'}}).then((r) => r.status)",
        )
        .await;
    assert_eq!(fetched, 200);

    // Sign-out on the page: the session is gone, the app sends the browser back there.
    browser
        .open(&tab, &format!("{origin}/.enroll-gate/?type=any"))
        .await;
    let page = browser.wait_for_gate_state(&tab, &["ready"]).await;
    assert!(page.signout_visible, "{page:?}");
    browser
        .eval(&tab, "document.querySelector('#signout').click()")
        .await;
    let signed_out = browser.wait_for_gate_state(&tab, &["success"]).await;
    assert_eq!(signed_out.code, "SIGNED_OUT", "{signed_out:?}");
    let cookies = browser.cookies(&tab, &origin).await;
    assert!(
        cookies
            .iter()
            .all(|cookie| cookie["name"] != "__Host-enroll-gate"),
        "{cookies:?}"
    );
    // A script's fetch without a session: 401 JSON, not a redirect to the page.
    let fetched = browser
        .eval(
            &tab,
            "fetch('/api/items', {headers: {'Accept': 'application/json'}}) \
             .then(async (r) => [r.status, r.redirected, (await r.json()).error])",
        )
        .await;
    assert_eq!(
        fetched,
        serde_json::json!([401, false, "DEVICE_SESSION_REQUIRED"])
    );
    browser.open(&tab, &wanted).await;
    browser.wait_for_gate_state(&tab, &["ready"]).await;
    assert!(
        browser
            .url(&tab)
            .await
            .starts_with(&format!("{origin}/.enroll-gate/?"))
    );

    // Signed in again; then the device is revoked over gRPC and the next request, with
    // the session the browser holds, is refused within a second.
    browser
        .eval(&tab, "document.querySelector('#action').click()")
        .await;
    browser.wait_for_url(&tab, |url| url == wanted).await;
    let cookies = browser.cookies(&tab, &origin).await;
    let cookie = cookies
        .iter()
        .find(|cookie| cookie["name"] == "__Host-enroll-gate")
        .map(|cookie| {
            format!(
                "__Host-enroll-gate={}",
                cookie["value"].as_str().unwrap_or_default()
            )
        })
        .unwrap_or(cookie);
    let headers = [
        (IDENTITY_HEADER, jwt.as_str()),
        ("Cookie", cookie.as_str()),
        ("Accept", "application/json"),
        ("Sec-Fetch-Mode", "cors"),
    ];
    let before = site.proxy.get("/reports", &headers).await;
    assert_eq!(before.status, 200, "{before:?}");
    site.stack
        .admin()
        .revoke_device(pb::RevokeDeviceRequest {
            id: device_id.clone(),
            revoked_by: "console-admin".into(),
            reason: "lost".into(),
        })
        .await
        .expect("revoke the device");
    let revoked_at = Instant::now();
    let refused = loop {
        let answer = site.proxy.get("/reports", &headers).await;
        if answer.status != 200 {
            break answer;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "still allowed 1 s after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.json()["error"], "DEVICE_REVOKED", "{refused:?}");
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        revoked_at.elapsed()
    );
    // The browser too lands on the sign-in page again.
    browser.open(&tab, &wanted).await;
    browser.wait_for_gate_state(&tab, &["ready", "error"]).await;
    assert!(
        browser
            .url(&tab)
            .await
            .starts_with(&format!("{origin}/.enroll-gate/?"))
    );
    browser.close().await;
}

async fn enrolled_device_signs_in_and_revocation_ends_it(backend: Backend) {
    signs_in_reaches_the_app_and_revocation_ends_it(backend, ProxyKind::Nginx).await;
}

/// Without a device and without the right to register one, the page says so with the
/// policy's reason; a return URL on another host is refused before anything else.
async fn without_a_device_the_page_says_ask_the_administrator(backend: Backend) {
    let no_webauthn = realm_policy("otp-only", "acme", &[("token_types", "totp")]);
    let test = "gate_nginx_browser::without_a_device";
    let Some((site, mut browser, _slot)) =
        start(backend, ProxyKind::Nginx, test, vec![no_webauthn]).await
    else {
        return;
    };
    let (tab, _) = browser.tab_with_authenticator().await;
    browser.set_identity(&tab, &site.jwt("carol")).await;
    let origin = site.proxy.origin();
    browser.open(&tab, &format!("{origin}/reports")).await;
    let page = browser.wait_for_gate_state(&tab, &["ready", "error"]).await;
    assert_eq!(page.state, "error", "{page:?}");
    assert_eq!(page.next, "ask_admin", "{page:?}");
    assert_eq!(page.code, "NOT_ENROLLED", "{page:?}");
    assert!(page.message.contains("Ask your administrator"), "{page:?}");
    assert!(!page.button_visible, "{page:?}");
    assert!(
        page.reasons
            .iter()
            .any(|reason| reason.contains("otp-only")),
        "the reason names the policy: {page:?}"
    );

    // The sign-in page asked to return to another host.
    browser
        .open(
            &tab,
            &format!("{origin}/.enroll-gate/?type=any&rd=https%3A%2F%2Fevil.example%2F"),
        )
        .await;
    let page = browser.wait_for_gate_state(&tab, &["ready", "error"]).await;
    assert_eq!(page.code, "RETURN_URL_REFUSED", "{page:?}");
    assert!(!page.button_visible, "{page:?}");
    browser.close().await;
}

/// A policy that lets users register without approval: the page offers registration,
/// registers the tab's authenticator, signs in with it and returns to the app.
async fn self_registration_when_a_policy_allows_it(backend: Backend) {
    let self_service = realm_policy(
        "self-service",
        "acme",
        &[("require_device_approval", "false")],
    );
    let test = "gate_nginx_browser::self_registration";
    let Some((site, mut browser, _slot)) =
        start(backend, ProxyKind::Nginx, test, vec![self_service]).await
    else {
        return;
    };
    let (tab, _) = browser.tab_with_authenticator().await;
    browser.set_identity(&tab, &site.jwt("dave")).await;
    let wanted = format!("{}/projects?id=7", site.proxy.origin());
    browser.open(&tab, &wanted).await;
    let page = browser.wait_for_gate_state(&tab, &["ready", "error"]).await;
    assert_eq!(
        (page.state.as_str(), page.next.as_str()),
        ("ready", "register"),
        "{page:?}"
    );
    assert!(page.button_visible, "{page:?}");
    browser
        .eval(&tab, "document.querySelector('#action').click()")
        .await;
    browser.wait_for_url(&tab, |url| url == wanted).await;
    let echo: Echo = browser.app_echo(&tab).await;
    assert_eq!(echo.header("x-enroll-user").as_deref(), Some("dave"));
    let check = site
        .stack
        .proxy()
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "acme".into(),
            user: "dave".into(),
            required_device_type: pb::DeviceType::Any as i32,
            ..Default::default()
        })
        .await
        .expect("check enrollment")
        .into_inner();
    assert_eq!(check.status, pb::EnrollmentStatus::Enrolled as i32);
    assert_eq!(
        echo.header("x-enroll-device-id"),
        check.device.map(|device| device.id)
    );
    browser.close().await;
}

enroll_e2e::on_both_backends!(
    enrolled_device_signs_in_and_revocation_ends_it,
    without_a_device_the_page_says_ask_the_administrator,
    self_registration_when_a_policy_allows_it,
);
