//! Test harness: real servers on port 0, a fresh database per test (a new PostgreSQL
//! database, dropped afterwards, or a SQLite file in a temp dir), typed gRPC clients.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use enroll_shared::auth::{ApiKeyConfig, Role, hash_api_key};
use enroll_shared::config::{DatabaseConfig, ServerConfig};
use enroll_shared::proto::device::v1::device_service_client::DeviceServiceClient;
use enroll_shared::proto::policy::v1::policy_service_client::PolicyServiceClient;
use sea_orm::{ConnectionTrait, Database, Statement};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

mod browser;
mod capture;
mod echo_app;
mod gate;
mod gate_browser;
mod gate_client;
mod helpers;
mod killable;
mod metadata;
mod page;
mod private_pg;
mod proxies;
mod raw;
mod receivers;
mod stack;
mod tls;

pub use browser::*;
pub use capture::*;
pub use echo_app::*;
pub use gate::*;
pub use gate_browser::*;
pub use gate_client::*;
pub use helpers::*;
pub use killable::*;
pub use metadata::*;
pub use page::*;
pub use private_pg::*;
pub use proxies::*;
pub use raw::*;
pub use receivers::*;
pub use stack::*;
pub use tls::*;

/// The databases the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("ENROLL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    postgres_name: Option<String>,
    /// The server the PostgreSQL database was created on (and is dropped from).
    admin_url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::create_on_postgres(postgres_admin_url()).await,
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("enroll.db").display());
                Self {
                    url,
                    backend,
                    postgres_name: None,
                    admin_url: String::new(),
                    _dir: Some(dir),
                }
            }
        }
    }

    pub fn config(&self) -> DatabaseConfig {
        let mut config = DatabaseConfig::new(self.url.clone());
        config.max_connections = 8;
        config
    }

    /// The first column of the first row of `sql`, a count (tests that measure state).
    pub async fn count(&self, sql: &str) -> i64 {
        let db = Database::connect(&self.url).await.expect("connect");
        let backend = db.get_database_backend();
        let row = db
            .query_one_raw(Statement::from_string(backend, sql))
            .await
            .expect("query")
            .expect("a row");
        let count: i64 = row.try_get_by_index(0).expect("a count");
        db.close().await.ok();
        count
    }

    /// Runs a raw SQL statement (tests that inspect or corrupt state).
    pub async fn execute(&self, sql: &str) {
        let db = Database::connect(&self.url).await.expect("connect");
        let backend = db.get_database_backend();
        db.execute_raw(Statement::from_string(backend, sql))
            .await
            .expect("execute");
        db.close().await.ok();
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        let admin_url = std::mem::take(&mut self.admin_url);
        // Drop runs outside async context: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// The test API keys, one per role.
pub const ADMIN_KEY: &str = "test-admin-key";
pub const PROXY_KEY: &str = "test-proxy-key";
pub const OPS_KEY: &str = "test-ops-key";
pub const SERVICE_KEY: &str = "test-service-key";

pub fn key_for(role: Role) -> &'static str {
    match role {
        Role::Admin => ADMIN_KEY,
        Role::Proxy => PROXY_KEY,
        Role::Ops => OPS_KEY,
        Role::Service => SERVICE_KEY,
    }
}

pub fn api_keys() -> Vec<ApiKeyConfig> {
    Role::ALL
        .into_iter()
        .map(|role| ApiKeyConfig {
            name: format!("test-{role}"),
            role,
            sha256: hash_api_key(key_for(role)),
        })
        .collect()
}

fn ephemeral_server() -> ServerConfig {
    let mut config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.shutdown_grace_ms = 2_000;
    config
}

/// A server task and the means to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The device server's enrollment page (HTTP), when it serves one.
    pub web_addr: Option<SocketAddr>,
    /// The Prometheus endpoint (`GET /metrics`), when it is served.
    pub metrics_addr: Option<SocketAddr>,
    /// The device server's gate (forward auth and sign-in page), when `[gate]` is on.
    pub gate_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// How the harness's clients reach a server that serves TLS.
    client_tls: Option<ClientTlsConfig>,
}

impl RunningServer {
    fn spawn<F>(addr: SocketAddr, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(stopped));
        Self {
            addr,
            web_addr: None,
            metrics_addr: None,
            gate_addr: None,
            stop: Some(stop),
            task: Some(task),
            client_tls: None,
        }
    }

    /// A handle on a server running elsewhere (not stopped by this handle): its clients
    /// and health checks only.
    pub fn detached(addr: SocketAddr) -> Self {
        Self {
            addr,
            web_addr: None,
            metrics_addr: None,
            gate_addr: None,
            stop: None,
            task: None,
            client_tls: None,
        }
    }

    /// `https://` when the server serves TLS (the harness's clients then use TLS).
    pub fn url(&self) -> String {
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    fn endpoint(&self) -> Endpoint {
        let endpoint = Channel::from_shared(self.url()).expect("url");
        match &self.client_tls {
            Some(tls) => endpoint.tls_config(tls.clone()).expect("client TLS"),
            None => endpoint,
        }
    }

    pub async fn channel(&self) -> Channel {
        self.endpoint().connect().await.expect("connect")
    }

    /// A device client with `role`'s key (connects on first use).
    pub fn device_as(&self, role: Role) -> DeviceClient {
        DeviceServiceClient::with_interceptor(self.lazy_channel(), Bearer::new(Some(key_for(role))))
    }

    /// A policy client with `role`'s key (connects on first use).
    pub fn policy_as(&self, role: Role) -> PolicyClient {
        PolicyServiceClient::with_interceptor(self.lazy_channel(), Bearer::new(Some(key_for(role))))
    }

    fn lazy_channel(&self) -> Channel {
        self.endpoint().connect_lazy()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the health status of `service` is `wanted`.
    pub async fn wait_for_health(&self, service: &str, wanted: ServingStatus, within: Duration) {
        let deadline = Instant::now() + within;
        let mut client = HealthClient::new(self.channel().await);
        loop {
            let status = client
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map(|response| response.into_inner().status)
                .map_err(|status| status.code());
            if status == Ok(wanted as i32) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "health of `{service}` is {status:?}, wanted {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn health_status(&self, service: &str) -> i32 {
        HealthClient::new(self.channel().await)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map(|response| response.into_inner().status)
            .unwrap_or(-1)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Configuration of a test policy server on `database`.
pub fn policy_config(database: &TestDatabase) -> enroll_policy::config::PolicyConfig {
    enroll_policy::config::PolicyConfig {
        server: ephemeral_server(),
        database: database.config(),
        telemetry: Default::default(),
        auth: enroll_shared::config::AuthConfig {
            api_keys: api_keys(),
        },
        cache: enroll_policy::config::CacheConfig::default(),
        watch: Default::default(),
        metrics: ephemeral_metrics(),
    }
}

/// Port 0: every test server gets its own metrics port.
fn ephemeral_metrics() -> enroll_shared::metrics::MetricsConfig {
    enroll_shared::metrics::MetricsConfig::on(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Starts a policy server and waits until it is SERVING.
pub async fn spawn_policy(database: &TestDatabase) -> RunningServer {
    spawn_policy_with(policy_config(database)).await
}

pub async fn spawn_policy_with(config: enroll_policy::config::PolicyConfig) -> RunningServer {
    spawn_policy_reached_by(config, None).await
}

/// Starts a policy server that the harness's clients reach with `client_tls` (when it
/// serves TLS) and waits until it is SERVING.
pub async fn spawn_policy_reached_by(
    config: enroll_policy::config::PolicyConfig,
    client_tls: Option<ClientTlsConfig>,
) -> RunningServer {
    let app = enroll_policy::app::Application::build(config)
        .await
        .expect("build policy server");
    let mut server = start_policy(app);
    server.client_tls = client_tls;
    server
        .wait_for_health(
            POLICY_SERVICE,
            ServingStatus::Serving,
            Duration::from_secs(20),
        )
        .await;
    server
}

/// Starts a built policy server without waiting for it.
pub fn start_policy(app: enroll_policy::app::Application) -> RunningServer {
    let addr = app.local_addr().expect("addr");
    let metrics_addr = app.metrics_addr();
    let mut server = RunningServer::spawn(addr, |stopped| async move {
        let result = app
            .run_until(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = result {
            panic!("policy server failed: {error}");
        }
    });
    server.metrics_addr = metrics_addr;
    server
}

/// Configuration of a test device server on `database`, calling the policy server at
/// `policy_url`.
pub fn device_config(
    database: &TestDatabase,
    policy_url: &str,
) -> enroll_device::config::DeviceConfig {
    enroll_device::config::DeviceConfig {
        server: ephemeral_server(),
        database: database.config(),
        telemetry: Default::default(),
        auth: enroll_shared::config::AuthConfig {
            api_keys: api_keys(),
        },
        policy_service: enroll_device::config::PolicyServiceConfig {
            url: policy_url.to_owned(),
            api_key: SERVICE_KEY.to_owned(),
            timeout_ms: 1_000,
            health_check_interval_ms: 100,
            tls: None,
        },
        secrets: enroll_device::config::SecretsConfig {
            seed_keys: [("test-key-1".to_owned(), TEST_SEED_KEY.to_owned())].into(),
            active_seed_key: "test-key-1".to_owned(),
        },
        validation: Default::default(),
        webauthn: webauthn_config(),
        // Port 0: every test server gets its own page port.
        web: enroll_device::config::WebConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Default::default()
        },
        // The defaults (10 min for secrets, 24 h otherwise): tests move the clock.
        idempotency: Default::default(),
        metrics: ephemeral_metrics(),
        check_cache: Default::default(),
        // Off unless a gate test configures it (`gate::gate_config`).
        gate: Default::default(),
        // Stamped every 50 ms: events are readable soon after their change; receivers on
        // loopback (the test harness's own) are allowed.
        events: enroll_device::config::EventsConfig {
            stamp_interval_ms: 50,
            delivery_poll_ms: 50,
            expiry_scan_secs: 1,
            // Policy changes are relayed on every new policy-set version; the poll (for a
            // missed one) every second.
            policy_relay_secs: 1,
            allow_loopback_http: true,
            ..Default::default()
        },
        // The defaults: the first run at start (nothing is that old yet), the next an hour
        // later; retention tests set their own.
        retention: Default::default(),
    }
}

/// The relying party of the test device servers: `localhost` on any port (browsers accept
/// http only there), redirects to `https://app.example.com/` allowed.
pub fn webauthn_config() -> enroll_device::config::WebauthnConfig {
    enroll_device::config::WebauthnConfig {
        rp_id: "localhost".to_owned(),
        rp_origins: vec!["http://localhost".to_owned()],
        allow_any_port: true,
        enrollment_base_url: "http://localhost:8080/enroll/".to_owned(),
        redirect_allow_list: vec![TEST_REDIRECT_PREFIX.to_owned()],
        ..Default::default()
    }
}

/// Redirect URLs under this prefix are allowed on the test device servers.
pub const TEST_REDIRECT_PREFIX: &str = "https://app.example.com/";

/// The AES-256 key the test device servers seal secrets with.
pub const TEST_SEED_KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Starts a device server; it reports SERVING once its database is migrated.
pub async fn spawn_device(database: &TestDatabase, policy_url: &str) -> RunningServer {
    spawn_device_with(device_config(database, policy_url)).await
}

pub async fn spawn_device_with(config: enroll_device::config::DeviceConfig) -> RunningServer {
    spawn_device_on(
        config,
        std::sync::Arc::new(enroll_shared::time::SystemClock),
    )
    .await
}

/// A device server on `config` whose clock is `clock`.
pub async fn spawn_device_on(
    config: enroll_device::config::DeviceConfig,
    clock: enroll_shared::time::SharedClock,
) -> RunningServer {
    spawn_device_reached_by(config, clock, None).await
}

/// [`spawn_device_on`] for a device server that the harness's clients reach with
/// `client_tls` (when it serves TLS).
pub async fn spawn_device_reached_by(
    config: enroll_device::config::DeviceConfig,
    clock: enroll_shared::time::SharedClock,
    client_tls: Option<ClientTlsConfig>,
) -> RunningServer {
    let app = enroll_device::app::Application::build_with_clock(config, clock)
        .await
        .expect("build device server");
    let mut server = start_device(app);
    server.client_tls = client_tls;
    server
}

/// Starts a built device server without waiting for it.
pub fn start_device(app: enroll_device::app::Application) -> RunningServer {
    let addr = app.local_addr().expect("addr");
    let web_addr = app.web_addr();
    let metrics_addr = app.metrics_addr();
    let gate_addr = app.gate_addr();
    let mut server = RunningServer::spawn(addr, |stopped| async move {
        let result = app
            .run_until(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = result {
            panic!("device server failed: {error}");
        }
    });
    server.web_addr = web_addr;
    server.metrics_addr = metrics_addr;
    server.gate_addr = gate_addr;
    server
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(key: Option<&str>) -> Self {
        Self(key.map(|key| format!("Bearer {key}").parse().expect("ascii key")))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type PolicyClient = PolicyServiceClient<InterceptedService<Channel, Bearer>>;
pub type DeviceClient = DeviceServiceClient<InterceptedService<Channel, Bearer>>;

pub async fn policy_client(server: &RunningServer, key: Option<&str>) -> PolicyClient {
    PolicyServiceClient::with_interceptor(server.channel().await, Bearer::new(key))
}

pub async fn device_client(server: &RunningServer, key: Option<&str>) -> DeviceClient {
    DeviceServiceClient::with_interceptor(server.channel().await, Bearer::new(key))
}

/// Runs a test body once per backend, as `mod postgres` and `mod sqlite` tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await;
                }
            )*
        }
    };
}
