//! Request ids: the first response is replayed to a retry, but only for a while and only
//! to the same request. Records used to keep the first response (with its secret: seed,
//! random PIN, temporary password, link URL) forever, and replayed it to whoever repeated
//! the request id under that key name, even with other parameters. Now a record expires
//! (`idempotency.secret_ttl_secs`, 10 min by default, when the response carries a secret;
//! `idempotency.ttl_secs`, 24 h, otherwise), is bound to a digest of the request's
//! parameters, and API key names are unique.
use std::time::Duration;

use enroll_e2e::{Backend, TestDatabase, TestStack, api_keys, audit_events, device_config};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::status::{field, reason};
use tonic::Code;

fn enroll(user: &str, request_id: &str) -> pb::EnrollTokenRequest {
    pb::EnrollTokenRequest {
        realm: "corp".into(),
        user: user.into(),
        r#type: pb::TokenType::Totp as i32,
        request_id: request_id.into(),
        ..Default::default()
    }
}

#[track_caller]
fn assert_reused(result: Result<impl std::fmt::Debug, tonic::Status>) {
    let status = result.expect_err("the same request id with other parameters is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));
    assert_eq!(field(&status).as_deref(), Some("request_id"));
    assert!(status.message().contains("request_id"), "{status:?}");
}

async fn tokens_of(admin: &mut enroll_e2e::DeviceClient, user: &str) -> Vec<pb::Token> {
    admin
        .list_tokens(pb::ListTokensRequest {
            realm: "corp".into(),
            user: user.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
}

async fn a_secret_is_replayed_only_to_the_same_request_and_only_for_a_while(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();

    let first = admin
        .enroll_token(enroll("bob", "req-1"))
        .await
        .unwrap()
        .into_inner();
    // Within the retention, a retry gets the first response and nothing more is done.
    stack.clock().advance(Duration::from_secs(5 * 60));
    let retried = admin
        .enroll_token(enroll("bob", "req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first);
    // The same id with other parameters is another request: refused, not answered with
    // bob's seed, and nothing is written.
    assert_reused(admin.enroll_token(enroll("mallory", "req-1")).await);
    let mut other_type = enroll("bob", "req-1");
    other_type.r#type = pb::TokenType::Hotp as i32;
    assert_reused(admin.enroll_token(other_type).await);
    assert!(tokens_of(&mut admin, "mallory").await.is_empty());
    assert_eq!(tokens_of(&mut admin, "bob").await.len(), 1);
    assert_eq!(audit_events(&mut admin, "", "enroll_token").await.len(), 1);

    // Past the secret retention (10 min) the seed is no longer replayable: the same
    // request does the work again.
    stack.clock().advance(Duration::from_secs(6 * 60));
    let again = admin
        .enroll_token(enroll("bob", "req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.secret_base32, first.secret_base32);
    assert_ne!(again.token, first.token);
    assert_eq!(tokens_of(&mut admin, "bob").await.len(), 2);
    // And the new response is the one replayed now.
    let retried = admin
        .enroll_token(enroll("bob", "req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, again);
    stack.stop().await;
}

async fn a_response_without_a_secret_is_kept_for_the_longer_retention(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let token = enroll_e2e::enroll_token(&mut admin, "corp", "bob", pb::TokenType::Totp).await;
    let disable = pb::DisableTokenRequest {
        serial: token.serial.clone(),
        request_id: "state-1".into(),
    };
    let disabled = admin
        .disable_token(disable.clone())
        .await
        .unwrap()
        .into_inner();
    let enable = |request_id: &str| pb::EnableTokenRequest {
        serial: token.serial.clone(),
        request_id: request_id.into(),
    };
    admin.enable_token(enable("enable-1")).await.unwrap();

    // An hour later (past the secret retention) the disable is still replayed: the token
    // stays enabled and no second event is written.
    stack.clock().advance(Duration::from_secs(3_600));
    assert_eq!(
        admin
            .disable_token(disable.clone())
            .await
            .unwrap()
            .into_inner(),
        disabled
    );
    let state = enroll_e2e::get_token(&mut admin, &token.serial).await.state;
    assert_eq!(state, pb::TokenState::Enabled as i32);
    assert_eq!(audit_events(&mut admin, "", "disable_token").await.len(), 1);
    // Another token under the same id is another request.
    let other = enroll_e2e::enroll_token(&mut admin, "corp", "bob", pb::TokenType::Hotp).await;
    assert_reused(
        admin
            .disable_token(pb::DisableTokenRequest {
                serial: other.serial.clone(),
                request_id: "state-1".into(),
            })
            .await,
    );
    let state = enroll_e2e::get_token(&mut admin, &other.serial).await.state;
    assert_eq!(state, pb::TokenState::Enabled as i32);

    // Past 24 h the disable is done again.
    stack.clock().advance(Duration::from_secs(24 * 3_600));
    let again = admin.disable_token(disable).await.unwrap().into_inner();
    assert_eq!(again.state, pb::TokenState::Disabled as i32);
    assert_eq!(audit_events(&mut admin, "", "disable_token").await.len(), 2);
    stack.stop().await;
}

async fn pins_and_links_are_bound_to_their_parameters(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let token = enroll_e2e::enroll_token(&mut admin, "corp", "bob", pb::TokenType::Hotp).await;
    let set_pin = |pin: &str| pb::SetPinRequest {
        serial: token.serial.clone(),
        pin: pin.into(),
        request_id: "pin-1".into(),
        ..Default::default()
    };
    let pinned = admin.set_pin(set_pin("4321")).await.unwrap().into_inner();
    assert_eq!(
        admin.set_pin(set_pin("4321")).await.unwrap().into_inner(),
        pinned
    );
    assert_reused(admin.set_pin(set_pin("9999")).await);
    assert_eq!(audit_events(&mut admin, "", "set_pin").await.len(), 1);

    let link = |user: &str| pb::CreateEnrollmentLinkRequest {
        realm: "corp".into(),
        user: user.into(),
        created_by: "console-admin".into(),
        request_id: "link-1".into(),
        ..Default::default()
    };
    let first = admin
        .create_enrollment_link(link("bob"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        admin
            .create_enrollment_link(link("bob"))
            .await
            .unwrap()
            .into_inner()
            .url,
        first.url
    );
    // Another user never gets bob's link URL (its secret).
    assert_reused(admin.create_enrollment_link(link("eve")).await);
    let links = admin
        .list_enrollment_links(pb::ListEnrollmentLinksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links.len(), 1, "{links:?}");
    stack.stop().await;
}

/// Expired records are deleted, not only ignored.
async fn expired_records_are_purged(backend: Backend) {
    use sea_orm::{ConnectionTrait, Statement};
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    for id in ["a", "b", "c"] {
        admin.enroll_token(enroll("bob", id)).await.unwrap();
    }
    let db = enroll_shared::db::connect(&stack.database.config())
        .await
        .unwrap();
    let count = || async {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM idempotency_keys",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    };
    assert_eq!(count().await, 3);
    stack.clock().advance(Duration::from_secs(25 * 3_600));
    admin.enroll_token(enroll("bob", "d")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count().await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired records stay: {}",
            count().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await.ok();
    stack.stop().await;
}

/// A replay hands back a stored secret before anything else is checked, so it is bound to
/// the API key that made the request: another key repeating the request id and the
/// parameters (the id guessed, or seen in a log) gets a request of its own, never the first
/// one's seed; so does a key whose name contains the record key's separator `|`.
async fn replays_are_handed_only_to_the_key_that_made_the_request(backend: Backend) {
    const OTHER_KEY: &str = "second-console-key";
    const PIPE_KEY: &str = "pipe-console-key";
    let admin_key = |name: &str, key: &str| enroll_shared::auth::ApiKeyConfig {
        name: name.to_owned(),
        role: enroll_shared::auth::Role::Admin,
        sha256: enroll_shared::auth::hash_api_key(key),
    };
    let stack = TestStack::builder(backend)
        .device_config(move |config| {
            config
                .auth
                .api_keys
                .push(admin_key("second-console", OTHER_KEY));
            config
                .auth
                .api_keys
                .push(admin_key("test-admin|EnrollToken", PIPE_KEY));
        })
        .start()
        .await;
    let client = |key: &str| {
        pb::device_service_client::DeviceServiceClient::with_interceptor(
            tonic::transport::Endpoint::from_shared(format!("http://{}", stack.device().addr))
                .unwrap()
                .connect_lazy(),
            enroll_e2e::Bearer::new(Some(key)),
        )
    };
    let mut admin = stack.admin();
    let first = admin
        .enroll_token(enroll("bob", "EnrollToken|req-1"))
        .await
        .unwrap()
        .into_inner();
    let mut other = client(OTHER_KEY);
    let theirs = other
        .enroll_token(enroll("bob", "EnrollToken|req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(theirs.secret_base32, first.secret_base32);
    assert_ne!(theirs.token, first.token);
    // `test-admin|EnrollToken` with id `req-1` would have been the record key of
    // `test-admin` with id `EnrollToken|req-1`.
    let mut pipe = client(PIPE_KEY);
    let piped = pipe
        .enroll_token(enroll("bob", "req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(piped.secret_base32, first.secret_base32);
    assert_eq!(tokens_of(&mut admin, "bob").await.len(), 3);
    // The first key's retry still gets its own first response.
    let retried = admin
        .enroll_token(enroll("bob", "EnrollToken|req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first);
}

/// Request ids (and audit events) are kept per key name: two keys sharing a name could
/// replay each other's responses, so a configuration with a duplicate name does not start.
async fn duplicate_api_key_names_are_refused_at_start(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let mut config = device_config(&database, "http://127.0.0.1:1");
    let mut keys = api_keys();
    let mut twin = keys[0].clone();
    twin.sha256 = enroll_shared::auth::hash_api_key("another secret key");
    keys.push(twin.clone());
    config.auth.api_keys = keys.clone();
    let refused = enroll_device::app::Application::build(config)
        .await
        .err()
        .expect("the device service refuses duplicate key names");
    assert!(
        refused.to_string().contains(&format!("`{}`", twin.name)),
        "{refused}"
    );
    let mut policy = enroll_e2e::policy_config(&database);
    policy.auth.api_keys = keys;
    let refused = enroll_policy::app::Application::build(policy)
        .await
        .err()
        .expect("the policy service refuses duplicate key names");
    assert!(
        refused.to_string().contains("configured twice"),
        "{refused}"
    );
}

enroll_e2e::on_both_backends!(
    a_secret_is_replayed_only_to_the_same_request_and_only_for_a_while,
    a_response_without_a_secret_is_kept_for_the_longer_retention,
    pins_and_links_are_bound_to_their_parameters,
    expired_records_are_purged,
    duplicate_api_key_names_are_refused_at_start,
    replays_are_handed_only_to_the_key_that_made_the_request,
);
