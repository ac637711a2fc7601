//! Real nginx and Caddy in front of the echo app, running the configurations shipped in
//! `deploy/gate/` (nginx: the placeholders replaced; Caddy: the file itself, with its
//! environment variables), on ephemeral ports, killed on drop. Plain HTTP/1.1 requests
//! through them, and a sign-in through the gate's page API with a soft passkey (what the
//! page's script does, without a browser).
//!
//! Without nginx or Caddy the tests print SKIPPED, unless `ENROLL_REQUIRE_BROWSER=1` (CI,
//! which installs the browser and the proxies together), which makes it a failure.
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{EchoApp, PageAnswer};

/// The shipped configurations the tests run.
pub const NGINX_CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/gate/nginx/enroll-gate.conf"
);
pub const CADDYFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/gate/caddy/Caddyfile"
);

/// The header the test gates read the identity from (see `gate_config`).
pub const IDENTITY_HEADER: &str = "X-Pomerium-Jwt-Assertion";

/// How long a proxy may take to answer after it started.
const START_WAIT: Duration = Duration::from_secs(15);

/// A port that was free a moment ago, for a proxy whose address must be in the gate's
/// configuration before the proxy starts (seconds later: the stack starts in between).
/// Chosen at random below the kernel's ephemeral range (32768 and up by default), never
/// by binding port 0: the kernel hands ports of that range to every other listener and
/// outgoing connection of the test process, and one of them could take the port before
/// the proxy binds it.
pub fn free_port() -> u16 {
    const BELOW_EPHEMERAL: std::ops::Range<u128> = 20_000..32_000;
    for _ in 0..1_000 {
        let span = BELOW_EPHEMERAL.end - BELOW_EPHEMERAL.start;
        let port = (BELOW_EPHEMERAL.start + uuid::Uuid::new_v4().as_u128() % span) as u16;
        if std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

/// An external program: `$env_name`, else the first of `candidates` that exists, else
/// `name` on the PATH.
fn find_tool(name: &str, env_name: &str, candidates: &[&str]) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env_name).map(PathBuf::from) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env_name}={} is not a file", path.display()))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name));
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|path| path.is_file())
        .ok_or_else(|| format!("no {name} (install it, or set {env_name})"))
}

fn tool_or_skip(test: &str, found: Result<PathBuf, String>) -> Option<PathBuf> {
    match found {
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

/// nginx (`ENROLL_NGINX`, `/usr/sbin/nginx`, or on the PATH), or `None` after a loud skip
/// notice.
pub fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    tool_or_skip(
        test,
        find_tool("nginx", "ENROLL_NGINX", &["/usr/sbin/nginx"]),
    )
}

/// Caddy (`ENROLL_CADDY`, `/usr/bin/caddy`, or on the PATH), or `None` after a loud skip
/// notice.
pub fn caddy_or_skip(test: &str) -> Option<PathBuf> {
    tool_or_skip(
        test,
        find_tool("caddy", "ENROLL_CADDY", &["/usr/bin/caddy"]),
    )
}

/// A running proxy (nginx or Caddy) on `127.0.0.1:port`, in front of the gate and an app.
pub struct Proxy {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// nginx running the shipped `enroll-gate.conf` on `port` for the server name
    /// `localhost`, with the gate at `gate` and the app at `app`.
    pub async fn nginx(binary: &Path, port: u16, gate: SocketAddr, app: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("nginx prefix dir");
        let shipped = std::fs::read_to_string(NGINX_CONF).expect("read the shipped nginx file");
        let mut server = shipped;
        for (placeholder, value) in [
            ("__LISTEN__", format!("127.0.0.1:{port}")),
            ("__SERVER_NAME__", "localhost".to_owned()),
            ("__GATE__", gate.to_string()),
            ("__APP__", app.to_string()),
        ] {
            assert!(
                server.contains(placeholder),
                "the shipped nginx file lost its {placeholder} placeholder"
            );
            server = server.replace(placeholder, &value);
        }
        let server_path = dir.path().join("enroll-gate.conf");
        std::fs::write(&server_path, server).expect("write the nginx server file");
        // One process the test can kill: with a master, a killed master leaves its workers
        // behind; and no worker user that could not read the temp dir (root in CI).
        let main = format!(
            "master_process off;\nevents {{ worker_connections 256; }}\n\
             http {{\n    access_log {access};\n    include {server};\n}}\n",
            access = dir.path().join("access.log").display(),
            server = server_path.display(),
        );
        let main_path = dir.path().join("nginx.conf");
        std::fs::write(&main_path, main).expect("write nginx.conf");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("nginx log");
        let globals = format!(
            "daemon off; pid {}; error_log stderr notice;",
            dir.path().join("nginx.pid").display()
        );
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&main_path)
            .args(["-e", "stderr", "-g", &globals])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
        let mut proxy = Self { port, child, dir };
        proxy.wait_until_answering().await;
        proxy
    }

    /// Caddy running the shipped `Caddyfile` for the site `http://localhost:port` (no
    /// automatic HTTPS for an http:// site), admin endpoint off, with the gate at `gate`
    /// and the app at `app`. Caddy's data and config directories are the test's own.
    pub async fn caddy(binary: &Path, port: u16, gate: SocketAddr, app: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("caddy dir");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("caddy log");
        let child = Command::new(binary)
            .args(["run", "--adapter", "caddyfile", "--config", CADDYFILE])
            .env("ENROLL_GATE_SITE", format!("http://localhost:{port}"))
            .env("ENROLL_GATE_UPSTREAM", gate.to_string())
            .env("ENROLL_APP_UPSTREAM", app.to_string())
            .env("ENROLL_CADDY_ADMIN", "off")
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
        let mut proxy = Self { port, child, dir };
        proxy.wait_until_answering().await;
        proxy
    }

    async fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the proxy exited ({status}); its log:\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy does not answer on {}; its log:\n{}",
                self.addr(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The host the browser sees (`localhost:port`: http is a secure context only there,
    /// and an IP address is no relying-party id).
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.host())
    }

    /// What the proxy wrote to stderr (and nginx's access log).
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("proxy.log"), read("access.log"))
    }

    /// `method path` through the proxy, with `Host: localhost:port` and `headers`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> PageAnswer {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: enroll-e2e\r\n",
            self.host()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or_default());
        raw_http(self.addr(), request).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> PageAnswer {
        self.request("GET", path, headers, None).await
    }

    /// A call of the gate page's API as its script makes it: POST JSON from the page's
    /// own origin, with the identity header of the proxy in front.
    pub async fn page_api(&self, path: &str, jwt: &str, body: &Value) -> PageAnswer {
        let origin = self.origin();
        let headers = [
            ("Origin", origin.as_str()),
            (IDENTITY_HEADER, jwt),
            ("Sec-Fetch-Site", "same-origin"),
            ("Sec-Fetch-Mode", "cors"),
        ];
        self.request(
            "POST",
            &format!("/.enroll-gate/api/{path}"),
            &headers,
            Some(&body.to_string()),
        )
        .await
    }

    /// Signs in through the page's API with `authenticator` (which holds a device of the
    /// JWT's user) for device type `any`: the gate's `Set-Cookie` as a `Cookie` pair
    /// (`name=value`).
    pub async fn sign_in(
        &self,
        jwt: &str,
        authenticator: &mut impl webauthn_authenticator_rs::WebauthnAuthenticator,
    ) -> String {
        let begun = self
            .page_api("authenticate/begin", jwt, &json!({"type": "any"}))
            .await;
        assert_eq!(begun.status, 200, "begin: {begun:?}");
        let begun = begun.json();
        let options: webauthn_rs_proto::RequestChallengeResponse =
            serde_json::from_value(begun["options"].clone()).expect("request options");
        let credential = authenticator
            .do_authentication(url::Url::parse(&self.origin()).expect("origin"), options)
            .expect("the authenticator signs");
        let finished = self
            .page_api(
                "authenticate/finish",
                jwt,
                &json!({
                    "ceremony_id": begun["ceremony_id"],
                    "credential": serde_json::to_value(&credential).expect("credential JSON"),
                    "type": "any",
                    "rd": format!("{}/after", self.origin()),
                }),
            )
            .await;
        assert_eq!(finished.status, 200, "finish: {finished:?}");
        assert_eq!(
            finished.json()["redirect"],
            json!(format!("{}/after", self.origin()))
        );
        session_cookie(&finished).expect("the gate set its session cookie")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` (a whole HTTP/1.1 request saying `Connection: close`) to `addr` from
/// 127.0.0.1 and reads the answer.
pub async fn raw_http(addr: SocketAddr, request: String) -> PageAnswer {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0))
        .expect("bind");
    let stream = socket.connect(addr).await.expect("connect");
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    crate::page::exchange(stream, request).await
}

/// The gate's session cookie an answer sets, as a `Cookie` pair (`name=value`); `None`
/// when it sets none (or one that deletes it).
pub fn session_cookie(answer: &PageAnswer) -> Option<String> {
    answer
        .headers
        .iter()
        .filter(|(name, _)| name == "set-cookie")
        .filter_map(|(_, value)| value.split(';').next())
        .map(str::trim)
        .find(|pair| {
            pair.split_once('=').is_some_and(|(name, value)| {
                name.ends_with("-enroll-gate") && name.starts_with("__") && !value.is_empty()
            })
        })
        .map(str::to_owned)
}

/// Whether an answer deletes the gate's session cookie (`Max-Age=0`).
pub fn clears_session(answer: &PageAnswer) -> bool {
    answer.headers.iter().any(|(name, value)| {
        name == "set-cookie" && value.contains("-enroll-gate=;") && value.contains("Max-Age=0")
    })
}

/// Which shipped configuration a [`GateSite`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Nginx,
    Caddy,
}

/// A protected site: a stack whose device server runs the gate for `localhost:<port>`
/// (trusting the test's JWT issuer), the echo app, and a real proxy running the shipped
/// configuration on that port in front of both.
///
/// Fields drop in order: the proxy first, the stack (and its database) last.
pub struct GateSite {
    pub kind: ProxyKind,
    pub proxy: Proxy,
    pub app: EchoApp,
    pub stack: crate::TestStack,
    pub issuer: crate::JwtIssuer,
}

impl GateSite {
    /// The site behind `kind`, with `policies` stored first; `None` (after a skip notice)
    /// when the proxy is not installed.
    pub async fn start(
        backend: crate::Backend,
        kind: ProxyKind,
        test: &str,
        policies: Vec<enroll_shared::proto::policy::v1::Policy>,
    ) -> Option<Self> {
        Self::start_with(backend, kind, test, policies, |_| {}).await
    }

    /// [`GateSite::start`] with the gate's configuration changed by `configure`.
    pub async fn start_with(
        backend: crate::Backend,
        kind: ProxyKind,
        test: &str,
        policies: Vec<enroll_shared::proto::policy::v1::Policy>,
        configure: impl Fn(&mut enroll_device::config::GateConfig),
    ) -> Option<Self> {
        let binary = match kind {
            ProxyKind::Nginx => nginx_or_skip(test)?,
            ProxyKind::Caddy => caddy_or_skip(test)?,
        };
        let issuer = crate::JwtIssuer::new();
        // The proxy's address is in the gate's configuration, so it is chosen first.
        let port = free_port();
        let mut gate = crate::gate_config(&issuer, &[format!("localhost:{port}")]);
        configure(&mut gate);
        let stack = policies
            .into_iter()
            .fold(crate::TestStack::builder(backend), |builder, policy| {
                builder.with_policy(policy)
            })
            .device_config(move |config| config.gate = gate.clone())
            .start()
            .await;
        let gate_addr = stack.device().gate_addr.expect("the gate listens");
        let app = EchoApp::start().await;
        let proxy = match kind {
            ProxyKind::Nginx => Proxy::nginx(&binary, port, gate_addr, app.addr).await,
            ProxyKind::Caddy => Proxy::caddy(&binary, port, gate_addr, app.addr).await,
        };
        Some(Self {
            kind,
            proxy,
            app,
            stack,
            issuer,
        })
    }

    /// A valid identity token for `user` of realm `acme`.
    pub fn jwt(&self, user: &str) -> String {
        self.issuer.token("acme", user)
    }

    /// Registers a soft passkey for `user` of `acme` through an enrollment link (over
    /// gRPC) and signs in with it through the proxy's page API: the device, the
    /// authenticator and the session cookie (`name=value`).
    pub async fn enrolled_session(
        &self,
        user: &str,
    ) -> (
        enroll_shared::proto::device::v1::Device,
        webauthn_authenticator_rs::softpasskey::SoftPasskey,
        String,
    ) {
        let mut passkey = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
        let (mut admin, mut proxy) = (self.stack.admin(), self.stack.proxy());
        let device =
            crate::register_by_link_with(&mut admin, &mut proxy, &mut passkey, "acme", user).await;
        let cookie = self.proxy.sign_in(&self.jwt(user), &mut passkey).await;
        (device, passkey, cookie)
    }
}
