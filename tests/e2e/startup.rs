//! Start-up a newcomer can act on, and the `healthcheck` subcommand: a service whose
//! database is not there yet already answers health (NOT_SERVING), logs the redacted URL and
//! the cause of every attempt, and becomes SERVING when the database appears; a wrong role
//! is named in plain words; `healthcheck` answers SERVING, NOT_SERVING, and for a closed
//! port, quickly.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use enroll_e2e::{
    Backend, Captured, DEVICE_POLICY_DEPENDENCY, DEVICE_SERVICE, POLICY_SERVICE, TestDatabase,
    TestStack, capture, device_config, on_both_backends, policy_config, postgres_admin_url,
    start_policy,
};
use enroll_shared::auth::Role;
use enroll_shared::config::ServerConfig;
use enroll_shared::db_startup::Cause;
use enroll_shared::healthcheck::{HealthcheckArgs, Verdict, check};
use enroll_shared::proto::device::v1 as device_pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use sea_orm::{ConnectionTrait, Database};
use tokio::net::{TcpListener, TcpStream};
use tonic_health::pb::health_check_response::ServingStatus;

/// A password that must never appear in a log line or an error.
const DB_PASSWORD: &str = "s3cret-start-up-pw";

/// A port of 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Forwards every connection to `listener` to `target`: the database "appears" on the
/// port the service was configured with.
async fn forward(listener: TcpListener, target: SocketAddr) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

fn text(captured: &Captured) -> String {
    String::from_utf8_lossy(&captured.logs).into_owned()
}

async fn health(server: &enroll_e2e::RunningServer, service: &str) -> i32 {
    server.health_status(service).await
}

/// PostgreSQL on a closed port: the policy server listens at once with both health names
/// NOT_SERVING and logs every attempt (host, "connection refused", never the password);
/// when the port starts answering it migrates, turns SERVING and answers an RPC.
#[tokio::test]
async fn postgres_on_a_closed_port_then_appearing() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let port = closed_port();
    let mut url = url::Url::parse(&database.url).expect("test database URL");
    let real = SocketAddr::new(
        url.host_str()
            .and_then(|host| host.parse().ok())
            .unwrap_or([127, 0, 0, 1].into()),
        url.port().unwrap_or(5432),
    );
    url.set_port(Some(port)).expect("port");
    url.set_password(Some(DB_PASSWORD)).expect("password");
    let mut config = policy_config(&database);
    config.database.url = url.to_string();
    config.database.startup_retry_secs = 60;

    let ((), captured) = capture(async {
        let started = Instant::now();
        let app = enroll_policy::app::Application::build(config)
            .await
            .expect("builds without a database");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no wait in build"
        );
        let server = start_policy(app);
        let not_serving = ServingStatus::NotServing as i32;
        assert_eq!(health(&server, "").await, not_serving);
        assert_eq!(health(&server, POLICY_SERVICE).await, not_serving);
        // Several attempts fail first (0.5 s, then 1 s apart).
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(health(&server, POLICY_SERVICE).await, not_serving);
        // An RPC before start-up finished is refused as retryable, never run against a
        // database that is not there (or not migrated yet).
        let early = server
            .policy_as(Role::Admin)
            .list_policies(policy_pb::ListPoliciesRequest {
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .expect_err("refused while starting");
        assert_eq!(
            early.code(),
            tonic::Code::Unavailable,
            "{}",
            early.message()
        );
        assert!(early.message().contains("starting"), "{}", early.message());

        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the closed port is free");
        let forwarder = tokio::spawn(forward(listener, real));
        server
            .wait_for_health(
                POLICY_SERVICE,
                ServingStatus::Serving,
                Duration::from_secs(20),
            )
            .await;
        let listed = server
            .policy_as(Role::Admin)
            .list_policies(policy_pb::ListPoliciesRequest {
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .expect("answers once the database is there");
        assert!(listed.into_inner().policies.is_empty());
        server.stop().await;
        forwarder.abort();
    })
    .await;

    let logs = text(&captured);
    assert!(!logs.contains(DB_PASSWORD), "the password is logged");
    let host = format!("127.0.0.1:{port}");
    let refused: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("database not reachable yet"))
        .collect();
    assert!(refused.len() >= 2, "{logs}");
    for line in &refused {
        for wanted in [
            host.as_str(),
            "connection refused",
            "attempt=",
            "retry_in_ms=",
        ] {
            assert!(line.contains(wanted), "`{wanted}` missing: {line}");
        }
        assert!(line.contains("postgres:***@"), "redacted URL: {line}");
    }
    assert!(logs.contains("database reachable"), "{logs}");
}

/// SQLite in a directory that does not exist yet: the device server says so, waits with
/// health NOT_SERVING, and serves once the directory is created.
#[tokio::test]
async fn sqlite_directory_created_later() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let late = dir.path().join("created-later");
    let mut config = device_config(&database, "http://127.0.0.1:1");
    config.database.url = format!("sqlite://{}", late.join("enroll.db").display());

    let ((), captured) = capture(async {
        let app = enroll_device::app::Application::build(config)
            .await
            .expect("builds without a database");
        let server = enroll_e2e::start_device(app);
        let not_serving = ServingStatus::NotServing as i32;
        assert_eq!(health(&server, "").await, not_serving);
        assert_eq!(health(&server, DEVICE_SERVICE).await, not_serving);
        let early = server
            .device_as(Role::Admin)
            .list_tokens(device_pb::ListTokensRequest {
                realm: "corp".into(),
                page_size: 10,
                ..Default::default()
            })
            .await
            .expect_err("refused while starting");
        assert_eq!(
            early.code(),
            tonic::Code::Unavailable,
            "{}",
            early.message()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        std::fs::create_dir_all(&late).expect("create the directory");
        server
            .wait_for_health(
                DEVICE_SERVICE,
                ServingStatus::Serving,
                Duration::from_secs(20),
            )
            .await;
        server
            .device_as(Role::Admin)
            .list_tokens(device_pb::ListTokensRequest {
                realm: "corp".into(),
                page_size: 10,
                ..Default::default()
            })
            .await
            .expect("answers once the directory exists");
        server.stop().await;
    })
    .await;

    let logs = text(&captured);
    let first = logs
        .lines()
        .find(|line| line.contains("database not reachable yet"))
        .unwrap_or_else(|| panic!("no attempt logged: {logs}"));
    assert!(first.contains("cannot open the SQLite file"), "{first}");
    assert!(first.contains("does not exist"), "{first}");
}

/// A role PostgreSQL does not know: named in plain words (no "at line ..."), by the
/// server's start-up and by `migrate`, at once when retries are off.
#[tokio::test]
async fn an_unknown_role_is_named() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let mut url = url::Url::parse(&database.url).expect("test database URL");
    url.set_username("no_such_role_enroll").expect("user");
    url.set_password(Some(DB_PASSWORD)).expect("password");
    let mut config = policy_config(&database);
    config.database.url = url.to_string();
    config.database.startup_retry_secs = 0;

    let started = Instant::now();
    let error = enroll_policy::app::migrate(&config)
        .await
        .expect_err("an unknown role cannot migrate");
    let message = error.to_string();
    assert!(started.elapsed() < Duration::from_secs(3), "{message}");
    for wanted in [
        "unknown role",
        "role \"no_such_role_enroll\" does not exist",
        "no_such_role_enroll:***@",
        "startup_retry_secs = 0",
    ] {
        assert!(message.contains(wanted), "`{wanted}` missing: {message}");
    }
    assert!(
        !message.contains(DB_PASSWORD) && !message.contains("at line"),
        "{message}"
    );

    let app = enroll_policy::app::Application::build(config)
        .await
        .expect("builds without a database");
    let error = app
        .run_until(std::future::pending())
        .await
        .expect_err("the server gives up");
    assert!(error.to_string().contains("unknown role"), "{error}");
    if let enroll_policy::app::StartError::DatabaseStart(error) = error {
        assert_eq!(error.cause(), Cause::UnknownRole);
    } else {
        panic!("not a database start-up error: {error}");
    }
}

/// A database that does not exist yet (an init job creates it): waited for, then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_created_later() {
    let name = format!("enroll_late_{}", uuid::Uuid::new_v4().simple());
    let admin_url = postgres_admin_url();
    let base = admin_url
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin_url);
    let placeholder = TestDatabase::create(Backend::Sqlite).await;
    let mut config = policy_config(&placeholder);
    config.database.url = format!("{base}/{name}");
    let app = enroll_policy::app::Application::build(config)
        .await
        .expect("builds without a database");
    let server = start_policy(app);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        health(&server, POLICY_SERVICE).await,
        ServingStatus::NotServing as i32
    );
    let admin = Database::connect(&admin_url).await.expect("admin");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the database");
    server
        .wait_for_health(
            POLICY_SERVICE,
            ServingStatus::Serving,
            Duration::from_secs(20),
        )
        .await;
    server.stop().await;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

/// An API key named like one of the service's own actors (the enrollment page, the FIDO
/// metadata refresh, the demo seeding) stops start-up naming it: its holder's actions would
/// read as the service's own in the audit trail.
async fn a_key_named_like_an_internal_actor_stops_start_up(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let key = |name: &str| enroll_shared::auth::ApiKeyConfig {
        name: name.to_owned(),
        role: Role::Admin,
        sha256: enroll_shared::auth::hash_api_key("any key"),
    };
    for name in ["enrollment-page", "FIDO-metadata"] {
        let mut config = device_config(&database, "http://127.0.0.1:1");
        config.auth.api_keys = vec![key(name)];
        let Err(error) = enroll_device::app::Application::build(config).await else {
            panic!("a key named `{name}` was accepted");
        };
        let message = error.to_string();
        assert!(
            message.contains(&format!("auth.api_keys `{name}`"))
                && message.contains("records its own actions under"),
            "{message}"
        );
    }
    let mut config = policy_config(&database);
    config.auth.api_keys = vec![key("seed-demo")];
    let Err(error) = enroll_policy::app::Application::build(config).await else {
        panic!("a key named `seed-demo` was accepted");
    };
    assert!(
        error.to_string().contains("auth.api_keys `seed-demo`"),
        "{error}"
    );
}

fn server_at(addr: SocketAddr) -> ServerConfig {
    ServerConfig::new(addr)
}

fn args(service: &str) -> HealthcheckArgs {
    HealthcheckArgs {
        service: service.to_owned(),
        ..Default::default()
    }
}

/// `healthcheck` against running servers: SERVING is exit 0; the device's policy
/// dependency while the policy service is down is NOT_SERVING (exit 1); an unknown name and
/// a closed port are exit 1, the closed port at once.
async fn healthcheck_answers(backend: Backend) {
    let mut stack = TestStack::start(backend).await;
    let policy = server_at(stack.policy().addr);
    let device = server_at(stack.device().addr);
    for (server, service) in [
        (&policy, ""),
        (&policy, POLICY_SERVICE),
        (&device, ""),
        (&device, DEVICE_SERVICE),
        (&device, DEVICE_POLICY_DEPENDENCY),
    ] {
        let verdict = check(server, &args(service)).await;
        assert!(verdict.serving, "{service}: {verdict:?}");
        assert!(verdict.line.starts_with("SERVING: "), "{verdict:?}");
    }

    stack.stop_policy().await;
    stack
        .device()
        .wait_for_health(
            DEVICE_POLICY_DEPENDENCY,
            ServingStatus::NotServing,
            Duration::from_secs(10),
        )
        .await;
    let Verdict { serving, line } = check(&device, &args(DEVICE_POLICY_DEPENDENCY)).await;
    assert!(!serving && line.starts_with("NOT_SERVING: "), "{line}");
    assert!(
        check(&device, &args("")).await.serving,
        "the device itself serves"
    );

    let unknown = check(&device, &args("no.such.Service")).await;
    assert!(
        !unknown.serving && unknown.line.starts_with("UNKNOWN"),
        "{unknown:?}"
    );

    let closed = server_at(SocketAddr::from(([127, 0, 0, 1], closed_port())));
    let started = Instant::now();
    let verdict = check(&closed, &args("")).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{verdict:?}");
    assert!(
        !verdict.serving && verdict.line.starts_with("UNREACHABLE"),
        "{verdict:?}"
    );
    assert!(verdict.line.contains("refused"), "{verdict:?}");
}

/// `healthcheck` with the server's own TLS config: trusting the CA given with `--ca` (the
/// server certificate file holds the leaf only), and for mutual TLS trusting the client CA
/// and presenting `--cert`/`--key`; without what it needs it fails and says what to pass.
async fn healthcheck_over_tls(backend: Backend) {
    for mutual in [false, true] {
        let stack = TestStack::builder(backend)
            .policy_tls(mutual)
            .policy_only()
            .start()
            .await;
        let pki = stack.pki();
        let mut server = server_at(stack.policy().addr);
        server.tls = Some(pki.server_tls(mutual));
        let mut args = args(POLICY_SERVICE);
        if mutual {
            args.cert = Some(pki.path("client.pem"));
            args.key = Some(pki.path("client.key"));
        } else {
            args.ca = Some(pki.path("ca.pem"));
        }
        let verdict = check(&server, &args).await;
        assert!(verdict.serving, "mutual {mutual}: {verdict:?}");

        let bare = check(&server, &HealthcheckArgs::default()).await;
        assert!(!bare.serving, "mutual {mutual}: {bare:?}");
        let wanted = if mutual { "--cert" } else { "--ca" };
        assert!(bare.line.contains(wanted), "mutual {mutual}: {bare:?}");
    }
}

on_both_backends!(
    healthcheck_answers,
    healthcheck_over_tls,
    a_key_named_like_an_internal_actor_stops_start_up
);
