//! The event receivers of the end-to-end tests: `tests/receivers/receiver.py`, a Python
//! HTTP server that verifies every security event token (RFC 8935 push, `POST /caep`) with
//! PyJWT against the published JWKS, and every Standard Webhook (`POST /webhook`) with the
//! `standardwebhooks` reference library; it logs each request, and answers with scripted
//! failures on demand (`POST /control`, for the retry tests).
//!
//! The Python is `ENROLL_PYTHON` (the venv `scripts/python-venv.sh` makes, which `.ci/run`
//! exports), else `python3`. Without PyJWT or `standardwebhooks` there,
//! [`python_receiver_or_skip`] prints SKIPPED, unless `ENROLL_REQUIRE_BROWSER=1` (CI), which
//! makes it a failure.
//!
//! ```ignore
//! let Some(_) = python_receiver_or_skip("my_test") else { return };
//! let receiver = PythonReceiver::start(ReceiverOptions {
//!     jwks_url: device_jwks_url,
//!     issuer: "https://device.example".into(),
//!     audience: "https://receiver.example".into(),
//!     webhook_secrets: vec![secret],
//! });
//! // ... point the device service at receiver.url("/caep") and receiver.url("/webhook")
//! receiver.force("/webhook", 503, Some(1), 2).await;
//! let log = receiver.wait_for(|log| accepted(log, "webhook").len() == 1, STATE_WAIT).await;
//! ```
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::PageAnswer;

/// How long the receiver may take to start (Python importing `cryptography`).
const START_WAIT: Duration = Duration::from_secs(20);

/// The receiver script.
pub fn receiver_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("receivers/receiver.py")
}

/// The Python that runs the receiver: `ENROLL_PYTHON`, else the venv
/// `scripts/python-venv.sh` makes (`$ENROLL_PYTHON_VENV`, default
/// `~/.cache/enroll-e2e/venv`) when it exists, else `python3`.
pub fn receiver_python() -> PathBuf {
    if let Some(python) = std::env::var_os("ENROLL_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = std::env::var_os("ENROLL_PYTHON_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/enroll-e2e/venv"))
        });
    venv.map(|venv| venv.join("bin/python"))
        .filter(|python| python.exists())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The receiver's Python when it has the modules the receiver needs, or why not.
pub fn python_receiver() -> Result<PathBuf, String> {
    let python = receiver_python();
    let output = Command::new(&python)
        .args(["-c", "import jwt, cryptography, standardwebhooks"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", python.display()))?;
    if output.status.success() {
        Ok(python)
    } else {
        Err(format!(
            "{} lacks PyJWT[crypto] or standardwebhooks (run scripts/python-venv.sh and set \
             ENROLL_PYTHON to the path it prints): {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ))
    }
}

/// The receiver's Python, or `None` after a loud skip notice; a failure when required.
pub fn python_receiver_or_skip(test: &str) -> Option<PathBuf> {
    match python_receiver() {
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

/// What the receiver trusts.
#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// The JWKS the SETs' keys are published in (fetched again on an unknown `kid`).
    pub jwks_url: String,
    /// The SETs' `iss` and `aud`.
    pub issuer: String,
    pub audience: String,
    /// `whsec_...` secrets; two during a rotation (either verifies).
    pub webhook_secrets: Vec<String>,
}

/// A running `receiver.py`, killed when dropped.
pub struct PythonReceiver {
    pub addr: SocketAddr,
    child: Child,
    /// Never written: the receiver exits when it closes (the test process ended).
    _lifeline: ChildStdin,
    dir: tempfile::TempDir,
}

impl PythonReceiver {
    /// Starts the receiver on an ephemeral port and waits until it listens. Panics when the
    /// Python lacks the modules: call [`python_receiver_or_skip`] first.
    pub fn start(options: ReceiverOptions) -> Self {
        let python = python_receiver().unwrap_or_else(|reason| panic!("{reason}"));
        let dir = tempfile::Builder::new()
            .prefix("enroll-receiver-")
            .tempdir()
            .expect("receiver dir");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut command = Command::new(python);
        command
            .arg(receiver_script())
            .args(["--port", "0", "--exit-with-stdin"])
            .arg("--log")
            .arg(dir.path().join("log.jsonl"));
        if !options.jwks_url.is_empty() {
            command.args(["--jwks-url", &options.jwks_url]);
        }
        if !options.issuer.is_empty() {
            command.args(["--issuer", &options.issuer]);
        }
        if !options.audience.is_empty() {
            command.args(["--audience", &options.audience]);
        }
        for secret in &options.webhook_secrets {
            command.args(["--webhook-secret", secret]);
        }
        let mut child = command
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start receiver.py");
        let lifeline = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, ports) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = ports.recv_timeout(START_WAIT).unwrap_or_default();
        let port: u16 = match line.trim().strip_prefix("PORT ").map(str::parse) {
            Some(Ok(port)) => port,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("receiver.py did not start (stdout {line:?}): {stderr}");
            }
        };
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _lifeline: lifeline,
            dir,
        }
    }

    /// `http://127.0.0.1:<port><path>` (`/caep`, `/webhook`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The JSON-lines log the receiver appends to (one line per request).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log.jsonl")
    }

    /// What the receiver wrote to stderr (for a failure's message).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// A request to the receiver; `headers` besides Host, Connection and Content-Length.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> PageAnswer {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or_default());
        let stream = TcpStream::connect(self.addr)
            .unwrap_or_else(|error| panic!("connect to the receiver: {error}; {}", self.stderr()));
        crate::page::exchange(stream, request).await
    }

    /// `POST path` with `body` and `headers` (a SET: `Content-Type: application/secevent+jwt`).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> PageAnswer {
        self.request("POST", path, headers, Some(body)).await
    }

    /// Pushes a security event token to `/caep` as RFC 8935 says.
    pub async fn push_set(&self, token: &str) -> PageAnswer {
        self.post(
            "/caep",
            &[("Content-Type", "application/secevent+jwt")],
            token,
        )
        .await
    }

    /// Every request the receiver received, in order: `{"kind": "set"|"webhook", "ok",
    /// "accepted", "forced"?, ...}` (see receiver.py).
    pub async fn log(&self) -> Vec<Value> {
        let answer = self.request("GET", "/log", &[], None).await;
        assert_eq!(answer.status, 200, "GET /log: {answer:?}");
        match answer.json() {
            Value::Array(entries) => entries,
            other => panic!("the log is not an array: {other}"),
        }
    }

    /// The next `times` requests to `path` are answered `status` (with `Retry-After:
    /// retry_after` when given), still verified and logged with `"forced": status`.
    pub async fn force(&self, path: &str, status: u16, retry_after: Option<u64>, times: u32) {
        let order = json!({
            "path": path,
            "status": status,
            "retry_after": retry_after,
            "times": times,
        })
        .to_string();
        let answer = self
            .post("/control", &[("Content-Type", "application/json")], &order)
            .await;
        assert_eq!(answer.status, 200, "POST /control: {answer:?}");
    }

    /// The next `times` requests to `path` get no answer for `seconds` (then `status`):
    /// logged with `"held"` as they arrive.
    pub async fn hold(&self, path: &str, seconds: u64, status: u16, times: u32) {
        let order = json!({
            "path": path,
            "status": status,
            "times": times,
            "hold": seconds,
        })
        .to_string();
        let answer = self
            .post("/control", &[("Content-Type", "application/json")], &order)
            .await;
        assert_eq!(answer.status, 200, "POST /control: {answer:?}");
    }

    /// Verifies webhooks with `secrets` from now on (a stream's secret, known once the
    /// stream exists; two during a rotation).
    pub async fn set_webhook_secrets(&self, secrets: &[&str]) {
        let order = json!({ "webhook_secrets": secrets }).to_string();
        let answer = self
            .post("/control", &[("Content-Type", "application/json")], &order)
            .await;
        assert_eq!(answer.status, 200, "POST /control: {answer:?}");
    }

    /// Has the receiver poll a transmitter once as an RFC 8936 client (see receiver.py's
    /// `/control` `poll`): `order` holds `url`, `token` and optionally `max_events`,
    /// `return_immediately`, `ack` (a list of `jti`s, or `"verified"`) and `set_errs`.
    /// Returns `{"status", "sets": {jti: {"ok", "claims"}}, "moreAvailable"}`.
    pub async fn poll(&self, order: Value) -> Value {
        let order = json!({ "poll": order }).to_string();
        let answer = self
            .post("/control", &[("Content-Type", "application/json")], &order)
            .await;
        assert_eq!(answer.status, 200, "POST /control poll: {answer:?}");
        answer.json()
    }

    /// Waits until `predicate` holds for the log, and returns that log; panics with the log
    /// after `timeout`.
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&[Value]) -> bool,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log().await;
            if predicate(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver's log did not reach the expected state within {timeout:?}: {}",
                serde_json::to_string_pretty(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The entries of `kind` (`"set"`, `"webhook"`) the receiver verified and accepted (not
/// forced to fail).
pub fn accepted<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|entry| entry["kind"] == kind && entry["accepted"] == true)
        .collect()
}

/// A JWKS file served over HTTP (`GET` any path), read on every request: publishing new
/// keys in the file (e.g. [`crate::JwtIssuer::publish`]) rotates them. Stops when dropped.
pub struct JwksFileServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl JwksFileServer {
    pub async fn start(path: PathBuf) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the JWKS server");
        let addr = listener.local_addr().expect("JWKS address");
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let path = path.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0; 1024];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let body = tokio::fs::read(&path).await.unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, task }
    }

    /// `http://127.0.0.1:<port>/jwks.json`.
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }
}

impl Drop for JwksFileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
