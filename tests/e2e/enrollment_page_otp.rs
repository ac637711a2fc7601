//! OTP enrollment links on the enrollment page. Over plain HTTP: redemption answers with the
//! seed once and sets the redemption session as an HttpOnly, Secure, SameSite=Strict cookie
//! scoped to the OTP endpoints; the link alone then answers exactly like an unknown one,
//! the cookie alone shows the same seed again, finishing clears it; with
//! `require_identity`, the gate's verified identity (the proxy's JWT) must be the link's
//! user. In a real headless Chromium: the page reads the link, shows the QR code and the
//! key, keeps the same key across a reload, shows nothing to another browser holding the
//! link, and completes the enrollment with a code computed from the key it displays, as an
//! authenticator app would (with a PIN chosen on the page). Its screenshot is the one in
//! docs/tokens.md (`ENROLL_BLESS_DOCS=1` rewrites it).
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use enroll_e2e::{
    BROWSER_SLOT, Backend, Browser, JwtIssuer, TestStack, chromium_or_skip, gate_config,
    realm_policy, totp_code_with,
};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::time::Clock;
use serde_json::json;

const REDEEM: &str = "/enroll/api/otp/redeem";
const RESUME: &str = "/enroll/api/otp/resume";
const FINISH: &str = "/enroll/api/otp/finish";
const LOCAL: [u8; 4] = [127, 0, 0, 1];

async fn otp_link(stack: &TestStack, user: &str) -> pb::OtpEnrollmentLink {
    stack
        .admin()
        .create_otp_enrollment_link(pb::CreateOtpEnrollmentLinkRequest {
            realm: "corp".into(),
            user: user.into(),
            r#type: pb::TokenType::Totp as i32,
            created_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .expect("create OTP link")
        .into_inner()
}

fn secret_of(link: &pb::OtpEnrollmentLink) -> String {
    link.url
        .split_once("#otp-")
        .expect("an OTP link")
        .1
        .to_owned()
}

/// The session cookie pair (`name=value`) a Set-Cookie header carries.
fn session_cookie(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

fn seed_of_base32(base32: &str) -> Vec<u8> {
    // As an app takes a typed key: the spaces between the page's groups are ignored.
    let key: String = base32.split_whitespace().collect();
    totp_rs::Secret::try_from_base32(key)
        .unwrap()
        .as_ref()
        .to_vec()
}

fn current_code(stack: &TestStack, seed: &[u8]) -> String {
    let step = stack.clock().now().timestamp() as u64 / 30;
    totp_code_with(seed, step, 6)
}

async fn post_with_cookie(
    stack: &TestStack,
    cookie: &str,
    path: &str,
    body: serde_json::Value,
) -> enroll_e2e::PageAnswer {
    stack
        .page_post_from(IpAddr::from(LOCAL), &[("Cookie", cookie)], path, &body)
        .await
}

async fn the_redemption_session_alone_sees_the_seed(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let link = otp_link(&stack, "alice").await;
    let secret = secret_of(&link);
    let unknown = stack
        .page_post(REDEEM, &json!({"secret": "q".repeat(42) + "A"}))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let redeemed = stack.page_post(REDEEM, &json!({"secret": secret})).await;
    assert_eq!(redeemed.status, 200, "{}", redeemed.body);
    let set_cookie = redeemed
        .header("set-cookie")
        .expect("a session cookie")
        .to_owned();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/enroll/api/otp",
        "Max-Age=",
    ] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    assert!(
        set_cookie.starts_with("__Secure-enroll-otp="),
        "{set_cookie}"
    );
    let answer = redeemed.json();
    let shown = answer["secret"].as_str().unwrap().to_owned();
    assert!(
        answer["qr_png"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    assert_eq!(answer["user"], "alice");
    assert!(answer["otpauth_uri"].as_str().unwrap().contains(&shown));
    assert!(
        !redeemed.body.contains(&secret),
        "the link secret is never echoed"
    );
    assert_eq!(redeemed.header("cache-control"), Some("no-store"));

    // The link alone (another browser): exactly the unknown link's answer.
    let again = stack.page_post(REDEEM, &json!({"secret": secret})).await;
    assert_eq!(
        (again.status, again.body.clone()),
        (unknown.status, unknown.body.clone())
    );
    // No cookie: nothing to show.
    let bare = stack.page_post(RESUME, &json!({})).await;
    assert_eq!(bare.status, 404);
    assert!(!bare.body.contains(&shown));
    // The cookie: the same seed, never a new one.
    let cookie = session_cookie(&set_cookie);
    let resumed = post_with_cookie(&stack, &cookie, RESUME, json!({})).await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(resumed.json()["secret"], shown.as_str());

    let seed = seed_of_base32(&shown);
    let finished = post_with_cookie(
        &stack,
        &cookie,
        FINISH,
        json!({"code": current_code(&stack, &seed)}),
    )
    .await;
    assert_eq!(finished.status, 200, "{}", finished.body);
    assert_eq!(finished.json()["serial"], answer["serial"]);
    let cleared = finished
        .header("set-cookie")
        .expect("the cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = post_with_cookie(&stack, &cookie, RESUME, json!({})).await;
    assert_eq!(after.status, 404, "finished: the session shows nothing");
    let token = stack
        .admin()
        .get_token(pb::GetTokenRequest {
            serial: answer["serial"].as_str().unwrap().into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(token.enrollment_state(), pb::EnrollmentState::Enrolled);
}

async fn the_page_binds_the_link_to_the_gates_identity(backend: Backend) {
    let issuer = JwtIssuer::new();
    let gate = gate_config(&issuer, &["app.test".into()]);
    let bound = realm_policy("bound", "corp", &[("require_identity", "true")]);
    let stack = TestStack::builder(backend)
        .with_policy(bound)
        .device_config(move |config| config.gate = gate.clone())
        .start()
        .await;
    let link = otp_link(&stack, "alice").await;
    let body = json!({"secret": secret_of(&link)});
    let unknown = stack
        .page_post(REDEEM, &json!({"secret": "q".repeat(42) + "A"}))
        .await;
    let bob = issuer.token("corp", "bob");
    let forged = issuer.forged_token("corp", "alice");
    for headers in [
        vec![],
        vec![("X-Pomerium-Jwt-Assertion", bob.as_str())],
        vec![("X-Pomerium-Jwt-Assertion", forged.as_str())],
    ] {
        let refused = stack
            .page_post_from(IpAddr::from(LOCAL), &headers, REDEEM, &body)
            .await;
        assert_eq!(
            (refused.status, refused.body.clone()),
            (unknown.status, unknown.body.clone())
        );
    }
    let alice = issuer.token("corp", "alice");
    let redeemed = stack
        .page_post_from(
            IpAddr::from(LOCAL),
            &[("X-Pomerium-Jwt-Assertion", alice.as_str())],
            REDEEM,
            &body,
        )
        .await;
    assert_eq!(redeemed.status, 200, "{}", redeemed.body);
}

async fn a_browser_redeems_the_link_and_enrolls_with_its_first_code(backend: Backend) {
    let Some(binary) = chromium_or_skip("enrollment_page_otp::a_browser_enrolls") else {
        return;
    };
    let pin_rules = realm_policy(
        "pins",
        "corp",
        &[("otp_pin_minlength", "6"), ("tokenissuer", "ACME")],
    );
    let stack = TestStack::with_policies(backend, [pin_rules]).await;
    let link = otp_link(&stack, "alice").await;
    let url = stack.page_url_of(&link.url);
    let secret = secret_of(&link);
    let _slot = BROWSER_SLOT.lock().await;
    let mut browser = Browser::launch(&binary).await;
    let (tab, _) = browser.tab_with_authenticator().await;
    browser.open(&tab, &url).await;
    let ready = browser.wait_for_state(&tab, &["ready", "error"]).await;
    assert_eq!(ready.state, "ready", "{ready:?}");
    let here = browser.eval(&tab, "location.href").await;
    assert!(!here.as_str().unwrap().contains(&secret), "{here}");
    let shown = browser.text(&tab, "#otp-secret").await;
    assert!(shown.len() >= 32, "{shown}");
    assert_eq!(browser.text(&tab, "#user").await, "alice");
    let qr = browser
        .eval(&tab, "document.querySelector('#otp-qr').src")
        .await;
    assert!(qr.as_str().unwrap().starts_with("data:image/png;base64,"));
    let pin_visible = browser
        .eval(&tab, "!document.querySelector('#otp-pin-fields').hidden")
        .await;
    assert_eq!(pin_visible, json!(true), "the policy asks for a PIN");

    // A reload: the same key (the session cookie), never a new one.
    browser
        .call(Some(&tab.session_id), "Page.reload", json!({}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let reloaded = browser.wait_for_state(&tab, &["ready", "error"]).await;
    assert_eq!(reloaded.state, "ready", "{reloaded:?}");
    assert_eq!(browser.text(&tab, "#otp-secret").await, shown);

    // Another browser holding only the link: nothing.
    let mut other = Browser::launch(&binary).await;
    let (other_tab, _) = other.tab_with_authenticator().await;
    other.open(&other_tab, &url).await;
    let refused = other.wait_for_state(&other_tab, &["ready", "error"]).await;
    assert_eq!(
        (refused.state.as_str(), refused.code.as_str()),
        ("error", "NOT_FOUND"),
        "{refused:?}"
    );
    assert_eq!(other.text(&other_tab, "#otp-secret").await, "");
    other.close().await;

    // The whole card, as a phone-sized window shows it.
    browser
        .call(
            Some(&tab.session_id),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 560, "height": 1180, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    browser.eval(&tab, "window.scrollTo(0, 0) || true").await;
    let screenshot = browser
        .call(
            Some(&tab.session_id),
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )
        .await;
    let png = STANDARD
        .decode(screenshot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if std::env::var_os("ENROLL_BLESS_DOCS").is_some() && backend == Backend::Postgres {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/images/otp-enrollment-page.png"
        );
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &png).unwrap();
    }

    // As an authenticator app would: the code from the key the page shows, now.
    let code = current_code(&stack, &seed_of_base32(&shown));
    let fill = format!(
        "(() => {{ document.querySelector('#otp-code').value = '{code}'; \
         document.querySelector('#otp-pin').value = '583920'; \
         document.querySelector('#otp-pin-again').value = '583920'; \
         document.querySelector('#otp-finish').click(); return true; }})()"
    );
    browser.eval(&tab, &fill).await;
    let done = browser.wait_for_state(&tab, &["success", "error"]).await;
    assert_eq!(done.state, "success", "{done:?}");
    assert_eq!(
        browser.text(&tab, "#otp-secret").await,
        "",
        "the key is gone from the page"
    );
    browser.close().await;

    let links = stack
        .admin()
        .list_otp_enrollment_links(pb::ListOtpEnrollmentLinksRequest {
            realm: "corp".into(),
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links[0].state(), pb::OtpLinkState::Enrolled);
    let token = stack
        .admin()
        .get_token(pb::GetTokenRequest {
            serial: links[0].serial.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(token.has_pin, "the PIN chosen on the page");
}

enroll_e2e::on_both_backends!(
    the_redemption_session_alone_sees_the_seed,
    the_page_binds_the_link_to_the_gates_identity,
    a_browser_redeems_the_link_and_enrolls_with_its_first_code,
);
