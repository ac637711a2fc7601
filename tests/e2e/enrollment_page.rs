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
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use enroll_e2e::{
    Backend, TEST_REDIRECT_PREFIX, TestStack, link_secret, soft_passkey_registration,
};
use enroll_shared::proto::device::v1 as pb;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One Chromium at a time: the tests run in parallel threads and each browser takes a
/// core while it starts; queueing them keeps the bounded waits below meaningful.
static BROWSER_SLOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the page may take to reach a state (page load, a ceremony, a redirect).
const STATE_WAIT: Duration = Duration::from_secs(20);
/// How long one DevTools command may take.
const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// The browser to drive (`ENROLL_CHROMIUM`, `/usr/bin/chromium`, or `chromium` on the
/// PATH), or why there is none.
fn chromium() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ENROLL_CHROMIUM").map(PathBuf::from) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("ENROLL_CHROMIUM={} is not a file", path.display()))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("chromium"));
    std::iter::once(PathBuf::from("/usr/bin/chromium"))
        .chain(on_path)
        .find(|path| path.is_file())
        .ok_or_else(|| {
            "no Chromium (install the Debian package `chromium`, or set ENROLL_CHROMIUM)".to_owned()
        })
}

/// Chromium, or `None` after a loud skip notice; a failure when the browser is required.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match chromium() {
        Ok(path) => Some(path),
        Err(reason) if std::env::var("ENROLL_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("ENROLL_REQUIRE_BROWSER=1 but {reason}")
        }
        Err(reason) => {
            eprintln!("\n*** SKIPPED {test}: {reason} ***\n");
            None
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A headless Chromium with a DevTools connection to its browser endpoint.
struct Browser {
    child: Child,
    dir: tempfile::TempDir,
    socket: Socket,
    next_id: u64,
    /// `Network.*` events seen while waiting for answers (after `Network.enable`).
    network: Vec<Value>,
}

/// One tab, attached with a flattened session (commands carry its `sessionId`).
struct Tab {
    target_id: String,
    session_id: String,
}

impl Browser {
    async fn launch(binary: &PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("browser profile dir");
        let log = std::fs::File::create(dir.path().join("chromium.log")).expect("log file");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
        // With port 0 Chromium picks a port and writes it, with the browser endpoint's
        // path, to DevToolsActivePort in the profile once it listens.
        let port_file = dir.path().join("profile").join("DevToolsActivePort");
        let deadline = Instant::now() + STATE_WAIT;
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
                }
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not open its DevTools port; its log:\n{}",
                std::fs::read_to_string(dir.path().join("chromium.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("DevTools websocket");
        Self {
            child,
            dir,
            socket,
            next_id: 0,
            network: Vec::new(),
        }
    }

    /// Sends one command and waits for its answer; events in between are dropped (the
    /// tests poll the page instead of following events).
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .await
            .unwrap_or_else(|error| panic!("DevTools command {method} failed: {error}"))
    }

    /// Like [`Browser::call`], with the protocol's error answer as `Err` (evaluating in a
    /// page that is just navigating away fails that way, and polling tries again).
    async fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::Text(command.to_string().into()))
            .await
            .expect("send DevTools command");
        let answer = tokio::time::timeout(COMMAND_WAIT, async {
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .expect("DevTools connection closed")
                    .expect("DevTools read");
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
                if value["id"].as_u64() == Some(id) {
                    return value;
                }
                if value["method"]
                    .as_str()
                    .is_some_and(|method| method.starts_with("Network."))
                {
                    self.network.push(value);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("DevTools command {method} got no answer"));
        match answer.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(answer["result"].clone()),
        }
    }

    /// A new tab with a virtual authenticator: a platform-like CTAP2 authenticator with
    /// user verification that answers without a touch (otherwise `create()` waits for
    /// presence until it times out).
    async fn tab_with_authenticator(&mut self) -> (Tab, String) {
        let created = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = created["targetId"].as_str().expect("targetId").to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let session_id = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        let tab = Tab {
            target_id,
            session_id,
        };
        // Order matters: the domain first, then the authenticator, which belongs to this tab.
        self.call(Some(&tab.session_id), "WebAuthn.enable", json!({}))
            .await;
        let added = self
            .call(
                Some(&tab.session_id),
                "WebAuthn.addVirtualAuthenticator",
                json!({"options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserVerified": true,
                    "automaticPresenceSimulation": true,
                }}),
            )
            .await;
        let authenticator = added["authenticatorId"]
            .as_str()
            .expect("authenticatorId")
            .to_owned();
        (tab, authenticator)
    }

    /// Navigates and waits until a new document is the tab's document, so that polling
    /// never reads the previous page. (The URL cannot tell: the page removes the secret
    /// from it at once.) The previous document carries a marker the new one lacks.
    async fn open(&mut self, tab: &Tab, url: &str) {
        self.eval(tab, "window.__enrollTestPrevious = true").await;
        let navigated = self
            .call(Some(&tab.session_id), "Page.navigate", json!({"url": url}))
            .await;
        if let Some(error) = navigated.get("errorText") {
            panic!("cannot open {url}: {error}");
        }
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            let here = self
                .try_eval(tab, "window.__enrollTestPrevious === true")
                .await;
            if here == Some(Value::Bool(false)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the tab did not open {url} (at {here:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Evaluates an expression in the page and returns its value (promises awaited).
    async fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        self.try_eval(tab, expression)
            .await
            .unwrap_or_else(|| panic!("`{expression}` failed in the page"))
    }

    /// `None` when the evaluation failed (threw, or the page was between documents).
    async fn try_eval(&mut self, tab: &Tab, expression: &str) -> Option<Value> {
        let result = self
            .try_call(
                Some(&tab.session_id),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await
            .ok()?;
        if result.get("exceptionDetails").is_some() {
            return None;
        }
        Some(result["result"]["value"].clone())
    }

    /// What the page shows: `#status` data-state and data-code, the message, the button.
    async fn status(&mut self, tab: &Tab) -> PageStatus {
        let value = self
            .try_eval(
                tab,
                r#"(() => {
                    const status = document.querySelector('#status');
                    const button = document.querySelector('#register');
                    const hint = document.querySelector('#hint');
                    if (!status) { return null; }
                    return {
                        state: status.dataset.state || '',
                        code: status.dataset.code || '',
                        message: document.querySelector('#message').textContent,
                        device_id: status.dataset.deviceId || '',
                        button_visible: !!button && !button.hidden,
                        hint_visible: !!hint && !hint.hidden,
                    };
                })()"#,
            )
            .await;
        value
            .map(|value| PageStatus::from_value(&value))
            .unwrap_or_default()
    }

    /// Polls the page until its state is one of `wanted`.
    async fn wait_for_state(&mut self, tab: &Tab, wanted: &[&str]) -> PageStatus {
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            let status = self.status(tab).await;
            if wanted.contains(&status.state.as_str()) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the page stayed in {status:?}, wanted one of {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&mut self, tab: &Tab, selector: &str) -> String {
        let expression = format!("document.querySelector('{selector}').textContent");
        self.eval(tab, &expression)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The tab's current URL as the browser tracks it (an error page keeps the URL it
    /// failed to load).
    async fn url(&mut self, tab: &Tab) -> String {
        let info = self
            .call(
                None,
                "Target.getTargetInfo",
                json!({"targetId": tab.target_id}),
            )
            .await;
        info["targetInfo"]["url"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.socket
                .send(Message::Text(r#"{"id":0,"method":"Browser.close"}"#.into())),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Browser.close normally ended it already; this covers failed tests.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = &self.dir;
    }
}

#[derive(Debug, Default)]
struct PageStatus {
    state: String,
    code: String,
    message: String,
    device_id: String,
    button_visible: bool,
    /// "Ask for a new link", shown when the link can no longer be used.
    hint_visible: bool,
}

impl PageStatus {
    fn from_value(value: &Value) -> Self {
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
        Self {
            state: text("state"),
            code: text("code"),
            message: text("message"),
            device_id: text("device_id"),
            button_visible: value["button_visible"].as_bool().unwrap_or(false),
            hint_visible: value["hint_visible"].as_bool().unwrap_or(false),
        }
    }
}

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

/// The requests the tab sent (`Network.requestWillBeSent`'s `request`).
fn requests_sent(browser: &Browser, tab: &Tab) -> Vec<Value> {
    browser
        .network
        .iter()
        .filter(|event| {
            event["method"] == "Network.requestWillBeSent"
                && event["sessionId"].as_str() == Some(tab.session_id.as_str())
        })
        .map(|event| event["params"]["request"].clone())
        .collect()
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
    let requests = requests_sent(&browser, &tab);
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
    let unknown = browser.wait_for_state(&tab, &["ready", "error"]).await;
    assert_eq!(unknown.state, "error", "{unknown:?}");
    assert_eq!(unknown.code, "NOT_FOUND", "{unknown:?}");
    assert!(!unknown.button_visible, "{unknown:?}");

    // Reloaded after the secret was read, the page has no link left to use.
    browser.eval(&tab, "location.reload()").await;
    let reloaded = browser.wait_for_state(&tab, &["ready", "error"]).await;
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
