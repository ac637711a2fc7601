//! A headless Chromium driven over the DevTools protocol, for tests of the enrollment page
//! and the gate's sign-in page: tabs with a virtual WebAuthn authenticator, navigation,
//! evaluation, the page's status, and the network requests a tab sent.
//!
//! One Chromium serves every browser test of the test binary (starting one per test cost
//! seconds each): it starts with the first test that asks, and ends with the test process.
//! Each [`Browser`] is a DevTools connection of its own, in its test's runtime, with its own
//! browser context (cookies, storage and cache apart from the other tests'), disposed
//! when the test closes or drops it.
//!
//! Without Chromium (`/usr/bin/chromium`, or `ENROLL_CHROMIUM`) [`chromium_or_skip`] prints
//! SKIPPED, unless `ENROLL_REQUIRE_BROWSER=1` (CI), which makes a missing browser a failure.
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One test drives the browser at a time: the tests run in parallel threads, and pages
/// of several tests at once on two cores would make the bounded waits below meaningless.
pub static BROWSER_SLOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the page may take to reach a state (page load, a ceremony, a redirect).
pub const STATE_WAIT: Duration = Duration::from_secs(20);
/// How long one DevTools command may take.
const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// The browser to drive (`ENROLL_CHROMIUM`, `/usr/bin/chromium`, or `chromium` on the
/// PATH), or why there is none.
pub fn chromium() -> Result<PathBuf, String> {
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
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
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

/// The test process's Chromium: its DevTools browser endpoint, and the pipe whose end
/// stops it.
struct SharedChromium {
    endpoint: String,
    /// Never written: when the test process ends, the pipe closes and the shell that
    /// started Chromium stops it and removes its profile (statics are never dropped).
    _lifeline: Mutex<ChildStdin>,
}

static SHARED: OnceLock<Result<SharedChromium, String>> = OnceLock::new();

/// Starts Chromium through a shell that waits on its stdin: the browser ends with this
/// process, however the process ends (a panic, `exit`, a signal).
fn start_shared(binary: &Path) -> Result<SharedChromium, String> {
    let dir = tempfile::Builder::new()
        .prefix("enroll-chromium-")
        .tempdir()
        .map_err(|error| format!("browser profile dir: {error}"))?
        .keep();
    const SUPERVISE: &str = r#"dir=$1; shift
"$@" </dev/null >/dev/null 2>"$dir/chromium.log" &
browser=$!
read -r _ || true
kill "$browser" 2>/dev/null
wait "$browser"
rm -rf "$dir""#;
    let mut child = Command::new("sh")
        .args(["-c", SUPERVISE, "enroll-chromium"])
        .arg(&dir)
        .arg(binary)
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
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("start {}: {error}", binary.display()))?;
    let lifeline = child
        .stdin
        .take()
        .ok_or("no stdin pipe to the browser's shell")?;
    // With port 0 Chromium picks a port and writes it, with the browser endpoint's path,
    // to DevToolsActivePort in the profile once it listens.
    let port_file = dir.join("profile").join("DevToolsActivePort");
    let deadline = Instant::now() + STATE_WAIT;
    let endpoint = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
            }
        }
        if Instant::now() >= deadline || matches!(child.try_wait(), Ok(Some(_))) {
            return Err(format!(
                "Chromium did not open its DevTools port; its log:\n{}",
                std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(SharedChromium {
        endpoint,
        _lifeline: Mutex::new(lifeline),
    })
}

/// A DevTools connection to the shared Chromium, with a browser context of its own.
pub struct Browser {
    socket: Socket,
    next_id: u64,
    context_id: String,
    /// `Network.*` events seen while waiting for answers (after `Network.enable`).
    pub network: Vec<Value>,
}

/// One tab, attached with a flattened session (commands carry its `sessionId`).
pub struct Tab {
    pub target_id: String,
    pub session_id: String,
}

impl Browser {
    /// Connects to the test process's Chromium (started from `binary` by the first test
    /// that asks) in a new browser context.
    pub async fn launch(binary: &Path) -> Self {
        let binary = binary.to_owned();
        let shared = tokio::task::spawn_blocking(move || {
            SHARED
                .get_or_init(|| start_shared(&binary))
                .as_ref()
                .map(|shared| shared.endpoint.clone())
        })
        .await
        .expect("start the browser")
        .unwrap_or_else(|error| panic!("{error}"));
        let (socket, _) = tokio_tungstenite::connect_async(shared.as_str())
            .await
            .expect("DevTools websocket");
        let mut browser = Self {
            socket,
            next_id: 0,
            context_id: String::new(),
            network: Vec::new(),
        };
        // Disposed with this connection too, should a failed test never close it.
        let context = browser
            .call(
                None,
                "Target.createBrowserContext",
                json!({"disposeOnDetach": true}),
            )
            .await;
        browser.context_id = context["browserContextId"]
            .as_str()
            .expect("browserContextId")
            .to_owned();
        browser
    }

    /// Sends one command and waits for its answer; events in between are dropped (the
    /// tests poll the page instead of following events).
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .await
            .unwrap_or_else(|error| panic!("DevTools command {method} failed: {error}"))
    }

    /// Like [`Browser::call`], with the protocol's error answer as `Err` (evaluating in a
    /// page that is just navigating away fails that way, and polling tries again).
    pub async fn try_call(
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
    pub async fn tab_with_authenticator(&mut self) -> (Tab, String) {
        let created = self
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": self.context_id}),
            )
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
    pub async fn open(&mut self, tab: &Tab, url: &str) {
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
    pub async fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        self.try_eval(tab, expression)
            .await
            .unwrap_or_else(|| panic!("`{expression}` failed in the page"))
    }

    /// `None` when the evaluation failed (threw, or the page was between documents).
    pub async fn try_eval(&mut self, tab: &Tab, expression: &str) -> Option<Value> {
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
    pub async fn status(&mut self, tab: &Tab) -> PageStatus {
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
    pub async fn wait_for_state(&mut self, tab: &Tab, wanted: &[&str]) -> PageStatus {
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

    /// Waits for an error answer with `code`: after a reload or a same-tab navigation the
    /// previous page's error may still be showing for a moment.
    pub async fn wait_for_error_code(&mut self, tab: &Tab, code: &str) -> PageStatus {
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            let status = self.status(tab).await;
            if status.state == "error" && status.code == code {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the page stayed in {status:?}, wanted the error {code}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(&mut self, tab: &Tab, selector: &str) -> String {
        let expression = format!("document.querySelector('{selector}').textContent");
        self.eval(tab, &expression)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The tab's current URL as the browser tracks it (an error page keeps the URL it
    /// failed to load).
    pub async fn url(&mut self, tab: &Tab) -> String {
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

    /// The requests `tab` sent (`Network.requestWillBeSent`'s `request`), once
    /// `Network.enable` is on for it.
    pub fn requests_sent(&self, tab: &Tab) -> Vec<Value> {
        self.network
            .iter()
            .filter(|event| {
                event["method"] == "Network.requestWillBeSent"
                    && event["sessionId"].as_str() == Some(tab.session_id.as_str())
            })
            .map(|event| event["params"]["request"].clone())
            .collect()
    }

    /// Disposes of the test's browser context (its tabs and cookies); the browser stays
    /// for the other tests.
    pub async fn close(mut self) {
        let context = self.context_id.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.try_call(
                None,
                "Target.disposeBrowserContext",
                json!({"browserContextId": context}),
            ),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.socket.close(None)).await;
    }
}

#[derive(Debug, Default)]
pub struct PageStatus {
    pub state: String,
    pub code: String,
    pub message: String,
    pub device_id: String,
    pub button_visible: bool,
    /// "Ask for a new link", shown when the link can no longer be used.
    pub hint_visible: bool,
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
