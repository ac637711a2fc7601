//! The test stack: one call starts a policy server and the device server(s) on a fresh
//! database and hands out typed clients per role.
//!
//! ```text
//! let stack = TestStack::start(backend).await;
//! let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
//! ```
//!
//! Variants go through [`StackBuilder`]: policies stored before the device service starts,
//! a changed device configuration, trusted attestation roots, device replicas, a policy
//! service that is down (or started later), or no device service at all.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use enroll_device::config::DeviceConfig;
use enroll_shared::auth::Role;
use enroll_shared::proto::policy::v1 as policy_pb;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    ADMIN_KEY, Backend, DEVICE_SERVICE, DeviceClient, PolicyClient, RunningServer, TestDatabase,
    TestPki, Transport, create, device_config, policy_client, policy_config,
    spawn_device_reached_by, spawn_policy, spawn_policy_reached_by, start_policy,
};

/// The device servers' clock: the system clock, moved forward by [`TestClock::advance`]
/// so a test can outwait a back-off without sleeping. (TOTP codes follow the device
/// servers' time: tests that advance it use HOTP.)
#[derive(Debug, Default)]
pub struct TestClock {
    ahead_ms: AtomicI64,
}

impl TestClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).expect("a test advances by less than ages");
        self.ahead_ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl enroll_shared::time::Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let ahead = chrono::Duration::milliseconds(self.ahead_ms.load(Ordering::SeqCst));
        enroll_shared::time::SystemClock.now() + ahead
    }
}

/// How long a device server may take to report SERVING.
const DEVICE_READY_WITHIN: Duration = Duration::from_secs(10);

/// What the policy service does while the device servers start.
enum PolicyState {
    /// Running and SERVING (the default).
    Running,
    /// Started, then stopped: the device servers start against an address where nothing
    /// answers.
    Stopped,
    /// Built (its port bound) but not serving until [`TestStack::start_policy`].
    NotStarted,
}

type Configure = Box<dyn Fn(&mut DeviceConfig)>;

/// Options of a [`TestStack`]; [`StackBuilder::start`] starts it.
pub struct StackBuilder {
    backend: Backend,
    policies: Vec<policy_pb::Policy>,
    device_replicas: usize,
    configure: Vec<Configure>,
    trusted_roots: Vec<String>,
    policy_state: PolicyState,
    transport: Transport,
    database: Option<TestDatabase>,
}

impl StackBuilder {
    /// Runs the stack on `database` instead of a fresh one on the builder's backend (the
    /// fault tests' database on a [`crate::PrivateCluster`]).
    pub fn on_database(mut self, database: TestDatabase) -> Self {
        self.database = Some(database);
        self
    }

    /// A policy stored (through the admin policy client) before the device servers start.
    pub fn with_policy(mut self, policy: policy_pb::Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// How many device servers to start on the database (1 by default; 0: policy only).
    pub fn device_replicas(mut self, replicas: usize) -> Self {
        self.device_replicas = replicas;
        self
    }

    /// Only the policy service.
    pub fn policy_only(self) -> Self {
        self.device_replicas(0)
    }

    /// Changes the device servers' configuration (e.g. validation or timeouts).
    pub fn device_config(mut self, configure: impl Fn(&mut DeviceConfig) + 'static) -> Self {
        self.configure.push(Box::new(configure));
        self
    }

    /// Trusts this CA as an attestation root of the device servers (enclave_only).
    pub fn trusted_root(mut self, ca: &crypto_glue::x509::Certificate) -> Self {
        use crypto_glue::der::EncodePem;
        let pem = ca
            .to_pem(crypto_glue::der::pem::LineEnding::LF)
            .expect("PEM of the trusted root");
        self.trusted_roots.push(pem);
        self
    }

    /// The policy server serves TLS with the stack's throw-away PKI ([`TestStack::pki`]),
    /// requiring client certificates when `mutual`; the device servers (and the harness's
    /// policy clients) call it over https:// trusting that CA, with the client certificate
    /// when `mutual`.
    pub fn policy_tls(mut self, mutual: bool) -> Self {
        self.transport.set_policy(mutual);
        self
    }

    /// The device servers serve TLS with the stack's PKI; the harness's device clients
    /// trust its CA.
    pub fn device_tls(mut self) -> Self {
        self.transport.set_device();
        self
    }

    /// The policy service is started and stopped again before the device servers start:
    /// they are configured with an address where nothing answers any more.
    pub fn policy_down(mut self) -> Self {
        self.policy_state = PolicyState::Stopped;
        self
    }

    /// The policy server is built (its port bound) but answers nothing until
    /// [`TestStack::start_policy`].
    pub fn policy_not_started(mut self) -> Self {
        self.policy_state = PolicyState::NotStarted;
        self
    }

    /// Starts the policy server, stores the policies, starts the device servers and waits
    /// until they are SERVING.
    pub async fn start(self) -> TestStack {
        let database = match self.database {
            Some(database) => database,
            None => TestDatabase::create(self.backend).await,
        };
        let clock = Arc::new(TestClock::default());
        let (policy, pending_policy, policy_url) = match self.policy_state {
            PolicyState::Running => {
                let mut config = policy_config(&database);
                self.transport.policy_server(&mut config);
                let server = spawn_policy_reached_by(config, self.transport.policy_client()).await;
                let url = server.url();
                (Some(server), None, url)
            }
            PolicyState::Stopped => {
                let server = spawn_policy(&database).await;
                let url = server.url();
                server.stop().await;
                (None, None, url)
            }
            PolicyState::NotStarted => {
                let app = enroll_policy::app::Application::build(policy_config(&database))
                    .await
                    .expect("build policy server");
                let url = format!("http://{}", app.local_addr().expect("addr"));
                (None, Some(app), url)
            }
        };
        if !self.policies.is_empty() {
            let server = policy
                .as_ref()
                .expect("policies need a running policy service");
            let mut admin = policy_client(server, Some(ADMIN_KEY)).await;
            for policy in self.policies {
                create(&mut admin, policy).await.expect("create policy");
            }
        }
        let roots_dir = (!self.trusted_roots.is_empty())
            .then(|| tempfile::tempdir().expect("temp dir for trusted roots"));
        let mut trusted_roots = Vec::new();
        if let Some(dir) = &roots_dir {
            for (index, pem) in self.trusted_roots.iter().enumerate() {
                let path = dir.path().join(format!("trusted-root-{index}.pem"));
                std::fs::write(&path, pem).expect("write trusted root");
                trusted_roots.push(path);
            }
        }
        let mut devices = Vec::new();
        for _ in 0..self.device_replicas {
            let mut config = device_config(&database, &policy_url);
            self.transport.device_server(&mut config);
            if !trusted_roots.is_empty() {
                config.webauthn.trusted_roots = trusted_roots.clone();
            }
            for configure in &self.configure {
                configure(&mut config);
            }
            devices.push(
                spawn_device_reached_by(config, clock.clone(), self.transport.device_client())
                    .await,
            );
        }
        // SERVING once the database is migrated, whether or not the policy service runs
        // (its reachability has its own health name); before that every RPC is UNAVAILABLE.
        for device in &devices {
            device
                .wait_for_health(DEVICE_SERVICE, ServingStatus::Serving, DEVICE_READY_WITHIN)
                .await;
        }
        TestStack {
            devices,
            policy,
            policy_replicas: Vec::new(),
            pending_policy,
            policy_url,
            clock,
            _trusted_roots: roots_dir,
            transport: self.transport,
            database,
        }
    }
}

/// A policy server and device server(s) on one fresh database.
///
/// Fields drop in order: servers first, the database last.
pub struct TestStack {
    /// The device servers (replicas on the same database); clients default to the first.
    pub devices: Vec<RunningServer>,
    policy: Option<RunningServer>,
    /// Further policy servers on the same database ([`TestStack::add_policy_replica`]).
    pub policy_replicas: Vec<RunningServer>,
    pending_policy: Option<enroll_policy::app::Application>,
    policy_url: String,
    clock: Arc<TestClock>,
    _trusted_roots: Option<tempfile::TempDir>,
    transport: Transport,
    pub database: TestDatabase,
}

impl TestStack {
    /// Options for a stack on `backend`.
    pub fn builder(backend: Backend) -> StackBuilder {
        StackBuilder {
            backend,
            policies: Vec::new(),
            device_replicas: 1,
            configure: Vec::new(),
            trusted_roots: Vec::new(),
            policy_state: PolicyState::Running,
            transport: Transport::default(),
            database: None,
        }
    }

    /// The default stack: a policy server and one SERVING device server.
    pub async fn start(backend: Backend) -> Self {
        Self::builder(backend).start().await
    }

    /// The default stack with `policies` stored before the device server starts.
    pub async fn with_policies(
        backend: Backend,
        policies: impl IntoIterator<Item = policy_pb::Policy>,
    ) -> Self {
        policies
            .into_iter()
            .fold(Self::builder(backend), StackBuilder::with_policy)
            .start()
            .await
    }

    /// The running policy server.
    pub fn policy(&self) -> &RunningServer {
        self.policy
            .as_ref()
            .expect("the policy service is not running")
    }

    /// The URL the device servers call the policy service at.
    pub fn policy_url(&self) -> &str {
        &self.policy_url
    }

    /// The throw-away PKI of [`StackBuilder::policy_tls`] / [`StackBuilder::device_tls`].
    pub fn pki(&self) -> &TestPki {
        self.transport.test_pki().expect("the stack serves no TLS")
    }

    /// The policy server's Prometheus endpoint (`http://addr/metrics`).
    pub fn policy_metrics_addr(&self) -> std::net::SocketAddr {
        self.policy()
            .metrics_addr
            .expect("the policy server serves no metrics")
    }

    /// The first device server's Prometheus endpoint (`http://addr/metrics`).
    pub fn device_metrics_addr(&self) -> std::net::SocketAddr {
        self.device()
            .metrics_addr
            .expect("the device server serves no metrics")
    }

    /// The device servers' clock (one for all of them).
    pub fn clock(&self) -> &TestClock {
        &self.clock
    }

    /// The first device server.
    pub fn device(&self) -> &RunningServer {
        self.devices.first().expect("no device server")
    }

    /// A device client with `role`'s key on device server `replica`.
    pub fn device_on(&self, replica: usize, role: Role) -> DeviceClient {
        self.devices[replica].device_as(role)
    }

    /// Device clients on the first device server, per role.
    pub fn admin(&self) -> DeviceClient {
        self.device().device_as(Role::Admin)
    }

    pub fn proxy(&self) -> DeviceClient {
        self.device().device_as(Role::Proxy)
    }

    pub fn ops(&self) -> DeviceClient {
        self.device().device_as(Role::Ops)
    }

    /// Policy clients on the policy server, per role.
    pub fn policy_admin(&self) -> PolicyClient {
        self.policy().policy_as(Role::Admin)
    }

    pub fn policy_service(&self) -> PolicyClient {
        self.policy().policy_as(Role::Service)
    }

    pub fn policy_ops(&self) -> PolicyClient {
        self.policy().policy_as(Role::Ops)
    }

    /// Stores `policy` through the admin policy client.
    pub async fn create_policy(&self, policy: policy_pb::Policy) -> policy_pb::Policy {
        create(&mut self.policy_admin(), policy)
            .await
            .expect("create policy")
    }

    /// Starts another policy server on the database; returns its index in
    /// `policy_replicas`.
    pub async fn add_policy_replica(&mut self) -> usize {
        self.policy_replicas
            .push(spawn_policy(&self.database).await);
        self.policy_replicas.len() - 1
    }

    /// The harness's device configuration on this stack: its database, its policy URL and
    /// its TLS (not the builder's other changes).
    pub fn device_config(&self) -> DeviceConfig {
        let mut config = device_config(&self.database, &self.policy_url);
        self.transport.device_server(&mut config);
        config
    }

    /// Starts another device server on the database with the harness defaults (not the
    /// builder's changes) plus `configure`, and waits until it is SERVING; returns its
    /// index in `devices`.
    pub async fn add_device(&mut self, configure: impl FnOnce(&mut DeviceConfig)) -> usize {
        let mut config = self.device_config();
        configure(&mut config);
        let device =
            spawn_device_reached_by(config, self.clock.clone(), self.transport.device_client())
                .await;
        device
            .wait_for_health(DEVICE_SERVICE, ServingStatus::Serving, DEVICE_READY_WITHIN)
            .await;
        self.devices.push(device);
        self.devices.len() - 1
    }

    /// Starts a device server on the database (harness defaults plus `configure`) that
    /// [`KillableDevice::kill`] kills as a process dies.
    pub async fn add_killable_device(
        &self,
        configure: impl FnOnce(&mut DeviceConfig),
    ) -> crate::KillableDevice {
        let mut config = device_config(&self.database, &self.policy_url);
        configure(&mut config);
        crate::spawn_killable_device(config, self.clock.clone()).await
    }

    /// Starts the policy server built by [`StackBuilder::policy_not_started`], without
    /// waiting for it.
    pub fn start_policy(&mut self) -> &RunningServer {
        let app = self
            .pending_policy
            .take()
            .expect("no policy server waits to start");
        self.policy.insert(start_policy(app))
    }

    /// Stops the policy server gracefully and waits for it.
    pub async fn stop_policy(&mut self) {
        if let Some(policy) = self.policy.take() {
            policy.stop().await;
        }
    }

    /// Starts a policy server again on the address the device servers call (after
    /// [`TestStack::stop_policy`]) and waits until it is SERVING: an outage that ends.
    pub async fn restart_policy(&mut self) -> &RunningServer {
        assert!(self.policy.is_none(), "the policy service is running");
        let mut config = policy_config(&self.database);
        self.transport.policy_server(&mut config);
        config.server.listen = self
            .policy_url
            .split_once("://")
            .map(|(_, address)| address)
            .unwrap_or(&self.policy_url)
            .parse()
            .expect("the policy URL is http(s)://address:port");
        let server = spawn_policy_reached_by(config, self.transport.policy_client()).await;
        self.policy.insert(server)
    }

    /// Stops every server gracefully (device servers first) and waits for them.
    pub async fn stop(mut self) {
        for device in self.devices.drain(..) {
            device.stop().await;
        }
        self.stop_policy().await;
        for replica in self.policy_replicas.drain(..) {
            replica.stop().await;
        }
    }
}
