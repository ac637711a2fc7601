//! Transport security: TLS and mutual TLS on both servers and on the device service's calls
//! to the policy service (which carry the service key, every PIN and every decision), with
//! a throw-away CA made in the test. Clients that do not trust the CA, speak plaintext or,
//! under mutual TLS, have no certificate of the CA get nothing; a missing TLS file stops
//! start-up naming the setting.
use std::time::Duration;

use enroll_e2e::{
    Backend, DEVICE_POLICY_DEPENDENCY, DEVICE_SERVICE, POLICY_SERVICE, RunningServer, TestDatabase,
    TestPki, TestStack, device_config, policy_config, realm_policy, set_token_pin,
    spawn_device_with,
};
use enroll_shared::config::TlsConfig;
use enroll_shared::proto::device::v1 as pb;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Long enough for a device server to have checked the policy service's health a few
/// times (the harness checks every 100 ms with a 1 s deadline).
const SEVERAL_HEALTH_CHECKS: Duration = Duration::from_millis(1_500);

/// A policy whose label only the policy service knows: a token labelled with it proves
/// the decision crossed the (TLS) connection.
fn label_policy() -> enroll_shared::proto::policy::v1::Policy {
    realm_policy("labels", "corp", &[("tokenlabel", "<u>@<r>")])
}

/// EnrollToken (asks the policy service for a decision) then SetPin (sends the PIN to
/// ValidatePin) on `server`, as admin.
async fn enroll_and_set_pin(server: &RunningServer) {
    let mut admin = server.device_as(enroll_shared::auth::Role::Admin);
    let token = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "alice".into(),
            r#type: pb::TokenType::Hotp as i32,
            ..Default::default()
        })
        .await
        .expect("enrollment with a policy decision")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(token.label, "alice@corp", "the policy service's label");
    set_token_pin(&mut admin, &token.serial, "7391-quartz").await;
}

/// The overall health status at `url` through `tls` (plaintext when `None`), or why no
/// answer came.
async fn health_at(url: String, tls: Option<ClientTlsConfig>) -> Result<i32, String> {
    let mut endpoint = Endpoint::from_shared(url)
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("client TLS");
    }
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|error| error.to_string())?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|response| response.into_inner().status)
        .map_err(|status| format!("{status:?}"))
}

/// Starts a device server on the stack's database with `configure` applied and checks it
/// never reaches the policy service: its policy dependency NOT_SERVING, enrollment refused
/// as UNAVAILABLE (the device's own name stays SERVING for the paths that do not need it).
async fn device_cannot_reach_policy(
    stack: &TestStack,
    configure: impl FnOnce(&mut enroll_device::config::DeviceConfig),
) {
    let mut config = stack.device_config();
    configure(&mut config);
    let device = spawn_device_with(config).await;
    tokio::time::sleep(SEVERAL_HEALTH_CHECKS).await;
    assert_eq!(
        device.health_status(DEVICE_POLICY_DEPENDENCY).await,
        ServingStatus::NotServing as i32
    );
    let refused = device
        .device_as(enroll_shared::auth::Role::Admin)
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "bob".into(),
            r#type: pb::TokenType::Hotp as i32,
            ..Default::default()
        })
        .await
        .expect_err("no decision, no enrollment");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    device.stop().await;
}

async fn the_device_service_works_against_a_tls_only_policy_service(backend: Backend) {
    let stack = TestStack::builder(backend)
        .with_policy(label_policy())
        .policy_tls(false)
        .start()
        .await;
    assert!(stack.policy_url().starts_with("https://"));
    enroll_and_set_pin(stack.device()).await;

    // The policy server speaks TLS only: a plaintext client gets no answer.
    let plaintext = health_at(format!("http://{}", stack.policy().addr), None).await;
    assert!(plaintext.is_err(), "plaintext answered: {plaintext:?}");
    // The device service checks the policy server's certificate: trusting another CA, it
    // gets no decision and refuses to enroll.
    let foreign = TestPki::new("foreign");
    device_cannot_reach_policy(&stack, |config| {
        config.policy_service.tls = Some(foreign.client_tls(false));
    })
    .await;
    // ... and its name: `domain_name` replaces the URL's host (127.0.0.1) in that check.
    device_cannot_reach_policy(&stack, |config| {
        if let Some(tls) = &mut config.policy_service.tls {
            tls.domain_name = Some("policy.elsewhere.example".into());
        }
    })
    .await;
    let mut stack = stack;
    let renamed = stack
        .add_device(|config| {
            if let Some(tls) = &mut config.policy_service.tls {
                tls.domain_name = Some("localhost".into());
            }
        })
        .await;
    enroll_and_set_pin(&stack.devices[renamed]).await;
    stack.stop().await;
}

async fn mutual_tls_refuses_clients_without_a_certificate_of_the_ca(backend: Backend) {
    let stack = TestStack::builder(backend)
        .with_policy(label_policy())
        .policy_tls(true)
        .start()
        .await;
    // The device service presents its client certificate: decisions and PINs go through.
    enroll_and_set_pin(stack.device()).await;

    let url = stack.policy_url().to_owned();
    let pki = stack.pki();
    assert_eq!(
        health_at(url.clone(), Some(pki.tonic_client(true))).await,
        Ok(ServingStatus::Serving as i32),
        "a client with a certificate of the CA gets in"
    );
    let without = health_at(url.clone(), Some(pki.tonic_client(false))).await;
    assert!(without.is_err(), "no client certificate, yet: {without:?}");
    let foreign = TestPki::new("foreign");
    let foreign_certificate = health_at(
        url.clone(),
        Some(pki.tonic_client(false).identity(foreign.identity())),
    )
    .await;
    assert!(
        foreign_certificate.is_err(),
        "a certificate of another CA, yet: {foreign_certificate:?}"
    );
    // A device service configured without its certificate never gets a decision.
    device_cannot_reach_policy(&stack, |config| {
        config.policy_service.tls = Some(pki.client_tls(false));
    })
    .await;
    stack.stop().await;
}

async fn the_device_server_serves_tls(backend: Backend) {
    let stack = TestStack::builder(backend)
        .with_policy(label_policy())
        .policy_tls(true)
        .device_tls()
        .start()
        .await;
    let device = stack.device();
    assert!(device.url().starts_with("https://"));
    // The harness's clients trust the stack's CA: health (what probes and the stack's own
    // start-up wait use) and the API both answer over TLS.
    assert_eq!(
        device.health_status(DEVICE_SERVICE).await,
        ServingStatus::Serving as i32
    );
    enroll_and_set_pin(device).await;

    let plaintext = health_at(format!("http://{}", device.addr), None).await;
    assert!(plaintext.is_err(), "plaintext answered: {plaintext:?}");
    let foreign = TestPki::new("foreign");
    let untrusted = health_at(device.url(), Some(foreign.tonic_client(false))).await;
    assert!(
        untrusted.is_err(),
        "a certificate of an untrusted CA was accepted: {untrusted:?}"
    );
    // The policy server, with the device server's CA-signed client certificate in the
    // harness, answers its own health over mutual TLS too.
    assert_eq!(
        stack.policy().health_status(POLICY_SERVICE).await,
        ServingStatus::Serving as i32
    );
    stack.stop().await;
}

/// Why building a device server with `configure` applied failed.
async fn device_start_up_error(
    database: &TestDatabase,
    configure: impl FnOnce(&mut enroll_device::config::DeviceConfig),
) -> String {
    let mut config = device_config(database, "http://127.0.0.1:1");
    configure(&mut config);
    match enroll_device::app::Application::build(config).await {
        Ok(_) => panic!("the device server started"),
        Err(error) => error.to_string(),
    }
}

async fn a_missing_or_unusable_tls_file_stops_start_up_naming_the_setting(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let pki = TestPki::new("start-up");
    let absent = pki.dir().join("absent.pem");

    let error = device_start_up_error(&database, |config| {
        config.server.tls = Some(TlsConfig {
            cert: absent.clone(),
            ..pki.server_tls(false)
        });
    })
    .await;
    assert!(
        error.contains("server.tls.cert") && error.contains("absent.pem"),
        "{error}"
    );
    // A key that is not the certificate's: refused before serving, not at the first
    // handshake.
    let error = device_start_up_error(&database, |config| {
        config.server.tls = Some(TlsConfig {
            key: pki.path("client.key"),
            ..pki.server_tls(false)
        });
    })
    .await;
    assert!(error.contains("server.tls"), "{error}");

    let error = device_start_up_error(&database, |config| {
        config.policy_service.url = "https://127.0.0.1:1".into();
        config.policy_service.tls = Some(enroll_shared::config::ClientTls {
            ca: absent.clone(),
            ..pki.client_tls(false)
        });
    })
    .await;
    assert!(error.contains("policy_service.tls.ca"), "{error}");
    let error = device_start_up_error(&database, |config| {
        config.policy_service.url = "https://127.0.0.1:1".into();
        config.policy_service.tls = Some(enroll_shared::config::ClientTls {
            key: Some(absent.clone()),
            ..pki.client_tls(true)
        });
    })
    .await;
    assert!(error.contains("policy_service.tls.key"), "{error}");
    // https:// without a TLS section, and a TLS section next to http://: neither starts.
    let error = device_start_up_error(&database, |config| {
        config.policy_service.url = "https://127.0.0.1:1".into();
    })
    .await;
    assert!(error.contains("policy_service.tls"), "{error}");
    let error = device_start_up_error(&database, |config| {
        config.policy_service.tls = Some(pki.client_tls(false));
    })
    .await;
    assert!(error.contains("not https://"), "{error}");

    // The policy server alike, for the client CA of mutual TLS.
    let mut config = policy_config(&database);
    config.server.tls = Some(TlsConfig {
        client_ca: Some(absent.clone()),
        ..pki.server_tls(true)
    });
    match enroll_policy::app::Application::build(config).await {
        Ok(_) => panic!("the policy server started"),
        Err(error) => {
            let error = error.to_string();
            assert!(error.contains("server.tls.client_ca"), "{error}");
        }
    }
}

enroll_e2e::on_both_backends!(
    the_device_service_works_against_a_tls_only_policy_service,
    mutual_tls_refuses_clients_without_a_certificate_of_the_ca,
    the_device_server_serves_tls,
    a_missing_or_unusable_tls_file_stops_start_up_naming_the_setting,
);
