//! The device service's enrollment page in a real headless Chromium, driven over the
//! DevTools protocol, with a virtual WebAuthn authenticator: the URL CreateEnrollmentLink
//! returns (secret in the fragment) is opened on `http://localhost:<page port>`, the page
//! registers the authenticator, and CheckEnrollment then says ENROLLED; the secret never
//! travels in a request URL; deprecated path links still work; the spent link's page then
//! shows the error. Without a browser: the page's HTML and script hold no secret, and the
//! page's finish refuses a self-service ceremony begun over gRPC.
//!
//! Without Chromium (`/usr/bin/chromium`, or `ENROLL_CHROMIUM`) the tests print SKIPPED,
//! unless `ENROLL_REQUIRE_BROWSER=1` (CI), which makes a missing browser a failure.
//! The browser driver is the harness's `browser` module.
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use enroll_e2e::{
    BROWSER_SLOT, Backend, Browser, PageStatus, STATE_WAIT, TEST_REDIRECT_PREFIX, Tab, TestStack,
    chromium_or_skip, link_secret, soft_passkey_registration,
};
use enroll_shared::proto::device::v1 as pb;
use serde_json::{Value, json};

/// A link for acme/alice (ANY device), with a redirect URL.
async fn link(stack: &TestStack, redirect_url: &str) -> pb::EnrollmentLink {
    stack
        .admin()
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "acme".into(),
            user: "alice".into(),
            device_type: pb::DeviceType::Any as i32,
            redirect_url: redirect_url.into(),
            created_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .expect("create enrollment link")
        .into_inner()
}

async fn check_enrollment(stack: &TestStack) -> pb::CheckEnrollmentResponse {
    stack
        .proxy()
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "acme".into(),
            user: "alice".into(),
            required_device_type: pb::DeviceType::Any as i32,
            ..Default::default()
        })
        .await
        .expect("check enrollment")
        .into_inner()
}

/// Opens `url` (holding `secret`) in a fresh tab with an authenticator, checks that the
/// address bar and history no longer show the secret and what the page says the link is
/// for, registers, and waits for success. Returns the page's final status.
async fn register_through_the_page(
    browser: &mut Browser,
    url: &str,
    secret: &str,
) -> (Tab, String, PageStatus) {
    let (tab, authenticator) = browser.tab_with_authenticator().await;
    browser
        .call(Some(&tab.session_id), "Network.enable", json!({}))
        .await;
    browser.open(&tab, url).await;
    let ready = browser.wait_for_state(&tab, &["ready", "error"]).await;
    assert_eq!(ready.state, "ready", "the page could not start: {ready:?}");
    assert!(ready.button_visible, "{ready:?}");
    let here = browser.eval(&tab, "location.href").await;
    let here = here.as_str().unwrap_or_default();
    assert!(
        !here.contains(secret) && here.ends_with("/enroll/"),
        "the page removes the secret from the address bar: {here}"
    );
    let history = browser
        .call(
            Some(&tab.session_id),
            "Page.getNavigationHistory",
            json!({}),
        )
        .await;
    let entries = history["entries"].as_array().expect("history entries");
    for entry in entries {
        let url = entry["url"].as_str().unwrap_or_default();
        assert!(
            !url.contains(secret),
            "a history entry keeps the secret: {url}"
        );
    }
    assert_eq!(browser.text(&tab, "#realm").await, "acme");
    assert_eq!(browser.text(&tab, "#user").await, "alice");
    let device_type = browser.text(&tab, "#device-type").await;
    assert!(
        device_type.starts_with("Any authenticator"),
        "{device_type}"
    );

    browser
        .eval(&tab, "document.querySelector('#register').click()")
        .await;
    let done = browser.wait_for_state(&tab, &["success", "error"]).await;
    assert_eq!(done.state, "success", "registration failed: {done:?}");
    (tab, authenticator, done)
}

async fn page_registers_a_device_and_check_enrollment_says_enrolled(backend: Backend) {
    let Some(binary) = chromium_or_skip("enrollment_page::registers_a_device") else {
        return;
    };
    let stack = TestStack::start(backend).await;
    let redirect = format!("{TEST_REDIRECT_PREFIX}welcome");
    let link = link(&stack, &redirect).await;
    let secret = link_secret(&link);
    // The URL CreateEnrollmentLink returns: the configured base, the secret as fragment.
    assert_eq!(link.url, format!("http://localhost:8080/enroll/#{secret}"));
    assert_eq!(
        check_enrollment(&stack).await.status,
        pb::EnrollmentStatus::NotEnrolled as i32
    );

    let _slot = BROWSER_SLOT.lock().await;
    let mut browser = Browser::launch(&binary).await;
    let url = stack.page_url_of(&link.url);
    let (tab, authenticator, done) = register_through_the_page(&mut browser, &url, &secret).await;

    // The server never saw the secret in a request line or header: the page's requests
    // carry it only in the begin call's body.
    let requests = browser.requests_sent(&tab);
    assert!(
        requests.len() >= 5,
        "page, script, styles, begin, finish: {requests:#?}"
    );
    let mut begun = 0;
    for request in &requests {
        let url = request["url"].as_str().unwrap_or_default();
        assert!(
            !url.contains(&secret),
            "the secret went out in a URL: {url}"
        );
        let headers = request["headers"].to_string();
        assert!(
            !headers.contains(&secret),
            "the secret went out in a header: {headers}"
        );
        if url.ends_with("/enroll/api/begin") {
            begun += 1;
            let body = request["postData"].as_str().unwrap_or_default();
            let body: Value = serde_json::from_str(body).expect("begin body");
            assert_eq!(body, json!({ "secret": secret }));
        } else {
            let body = request["postData"].as_str().unwrap_or_default();
            assert!(!body.contains(&secret), "{url} carried the secret: {body}");
        }
    }
    assert_eq!(begun, 1, "{requests:#?}");

    // The device the page registered is the one CheckEnrollment reports, and its credential
    // is the one the virtual authenticator holds.
    let check = check_enrollment(&stack).await;
    assert_eq!(
        check.status,
        pb::EnrollmentStatus::Enrolled as i32,
        "{check:?}"
    );
    let device = check.device.expect("the enrolled device");
    assert_eq!(device.id, done.device_id);
    assert_eq!(device.state, pb::DeviceState::Approved as i32);
    assert_eq!(device.device_type, pb::DeviceType::Any as i32);
    assert!(
        !device.user_agent.is_empty(),
        "the browser's user agent is kept"
    );
    let credentials = browser
        .call(
            Some(&tab.session_id),
            "WebAuthn.getCredentials",
            json!({"authenticatorId": authenticator}),
        )
        .await;
    let held: Vec<String> = credentials["credentials"]
        .as_array()
        .expect("credentials")
        .iter()
        .filter_map(|credential| credential["credentialId"].as_str())
        .map(|id| URL_SAFE_NO_PAD.encode(STANDARD.decode(id).expect("base64 credential id")))
        .collect();
    assert_eq!(held, vec![device.credential_id.clone()]);

    // After showing success the page sends the user to the link's redirect URL.
    let deadline = Instant::now() + STATE_WAIT;
    loop {
        let url = browser.url(&tab).await;
        if url == redirect {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not redirect to {redirect} (at {url})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.close().await;
}

async fn deprecated_path_links_still_register(backend: Backend) {
    let Some(binary) = chromium_or_skip("enrollment_page::deprecated_path_links_still_register")
    else {
        return;
    };
    let stack = TestStack::start(backend).await;
    let secret = link_secret(&link(&stack, "").await);

    let _slot = BROWSER_SLOT.lock().await;
    let mut browser = Browser::launch(&binary).await;
    let url = stack.legacy_page_url(&secret);
    let (_, _, done) = register_through_the_page(&mut browser, &url, &secret).await;
    assert!(done.message.contains("close this page"), "{done:?}");
    let check = check_enrollment(&stack).await;
    assert_eq!(check.status, pb::EnrollmentStatus::Enrolled as i32);
    browser.close().await;
}

async fn spent_link_page_shows_the_error(backend: Backend) {
    let Some(binary) = chromium_or_skip("enrollment_page::spent_link_page_shows_the_error") else {
        return;
    };
    let stack = TestStack::start(backend).await;
    let link = link(&stack, "").await;
    let secret = link_secret(&link);
    let url = stack.page_url_of(&link.url);

    let _slot = BROWSER_SLOT.lock().await;
    let mut browser = Browser::launch(&binary).await;
    let (_, _, done) = register_through_the_page(&mut browser, &url, &secret).await;
    assert!(
        done.message.contains("close this page"),
        "no redirect URL: the page says it is done: {done:?}"
    );

    // The same link again, in a new tab: the error shows at once, with nothing to press.
    let (tab, _) = browser.tab_with_authenticator().await;
    browser.open(&tab, &url).await;
    let spent = browser.wait_for_state(&tab, &["ready", "error"]).await;
    assert_eq!(spent.state, "error", "{spent:?}");
    assert_eq!(spent.code, "FAILED_PRECONDITION", "{spent:?}");
    assert!(
        spent.message.to_lowercase().contains("used"),
        "the message says the link was used: {spent:?}"
    );
    assert!(!spent.button_visible, "{spent:?}");
    assert!(spent.hint_visible, "{spent:?}");

    // An unknown secret in the same tab: only the fragment changes (no new page load), the
    // page reloads itself to read it, and shows the same kind of answer, no button either.
    let unknown = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let unknown_url = format!("{}#{unknown}", url.split('#').next().unwrap_or_default());
    browser.open(&tab, &unknown_url).await;
    let unknown = browser.wait_for_error_code(&tab, "NOT_FOUND").await;
    assert_eq!(unknown.state, "error", "{unknown:?}");
    assert_eq!(unknown.code, "NOT_FOUND", "{unknown:?}");
    assert!(!unknown.button_visible, "{unknown:?}");

    // Reloaded after the secret was read, the page has no link left to use.
    browser.eval(&tab, "location.reload()").await;
    let reloaded = browser.wait_for_error_code(&tab, "INVALID_ARGUMENT").await;
    assert_eq!(reloaded.code, "INVALID_ARGUMENT", "{reloaded:?}");

    // Still one device: the failed visits wrote nothing.
    let check = check_enrollment(&stack).await;
    assert_eq!(check.status, pb::EnrollmentStatus::Enrolled as i32);
    browser.close().await;
}

/// Without a browser: what the server sends and accepts. The page and script for a link's
/// URL hold no secret (the fragment is never sent, and nothing is templated); begin takes
/// only a link secret; and a self-service ceremony an authenticated caller began over gRPC
/// cannot be finished through the anonymous page, though the caller can still finish it.
async fn page_holds_no_secret_and_finishes_only_link_ceremonies(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let link = link(&stack, "").await;
    let secret = link_secret(&link);

    // What a browser requests for the link: the URL up to the fragment.
    let sent = url::Url::parse(&link.url).expect("link URL");
    assert_eq!(sent.fragment(), Some(secret.as_str()));
    let path = sent.path();
    assert!(!path.contains(&secret), "{path}");
    for asset in [
        path,
        "/enroll/assets/enroll.js",
        "/enroll/assets/enroll.css",
    ] {
        let answer = stack.page_get(asset).await;
        assert_eq!(answer.status, 200, "{asset}: {answer:?}");
        assert!(!answer.body.contains(&secret), "{asset} holds the secret");
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
    }

    // Begin: the secret in the body; a realm and user are refused, not ignored.
    let refused = stack
        .page_post(
            "/enroll/api/begin",
            &json!({"secret": secret, "realm": "acme", "user": "bob"}),
        )
        .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.json()["code"], "INVALID_ARGUMENT");
    let begun = stack
        .page_post("/enroll/api/begin", &json!({ "secret": secret }))
        .await;
    assert_eq!(begun.status, 200, "{begun:?}");
    assert_eq!(begun.json()["user"], "alice");

    // A self-service ceremony, begun by the proxy over gRPC.
    let mut proxy = stack.proxy();
    let ceremony = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            realm: "acme".into(),
            user: "bob".into(),
            ..Default::default()
        })
        .await
        .expect("self-service begin")
        .into_inner();
    let credential =
        soft_passkey_registration(&ceremony.creation_options_json, &stack.page_origin());
    let credential: Value = serde_json::from_str(&credential).expect("credential");
    let finished = stack
        .page_post(
            "/enroll/api/finish",
            &json!({"ceremony_id": ceremony.ceremony_id, "credential": credential}),
        )
        .await;
    assert_eq!(finished.status, 409, "{finished:?}");
    let answer = finished.json();
    assert_eq!(answer["code"], "FAILED_PRECONDITION", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("enrollment link"),
        "{answer}"
    );

    // The refusal spent nothing: the caller that began it finishes it over gRPC.
    let registered = proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: ceremony.ceremony_id,
            credential_json: credential.to_string(),
            user_agent: "soft-authenticator".into(),
            client_ip: "192.0.2.7".into(),
        })
        .await
        .expect("the caller finishes its own ceremony")
        .into_inner();
    assert_eq!(registered.device.expect("device").user, "bob");
}

enroll_e2e::on_both_backends!(
    page_registers_a_device_and_check_enrollment_says_enrolled,
    deprecated_path_links_still_register,
    spent_link_page_shows_the_error,
    page_holds_no_secret_and_finishes_only_link_ceremonies,
);
