//! The policy service decides only on the policy set that is stored: a stored policy it
//! cannot read stops decisions (it used to be skipped, deciding as if it did not exist), and
//! a set the database has not confirmed within `cache.max_staleness_ms` is not served (a
//! replica cut off from its database used to serve its last set forever). CRUD keeps
//! working so an admin can repair or delete the policy.
use std::time::Duration;

use enroll_e2e::{
    Backend, POLICY_SERVICE as POLICY, PolicyClient, RunningServer, TestStack, create, policy,
    policy_config, spawn_policy_with, start_policy,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::policy::v1 as pb;
use enroll_shared::status::reason;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const WITHIN: Duration = Duration::from_secs(10);

fn evaluate_request() -> pb::EvaluateEnrollmentRequest {
    pb::EvaluateEnrollmentRequest {
        realm: "corp".into(),
        user: "alice".into(),
        action: pb::Action::Enroll as i32,
        token_type: "totp".into(),
        ..Default::default()
    }
}

async fn evaluate(client: &mut PolicyClient) -> Result<Option<u32>, tonic::Status> {
    client
        .evaluate_enrollment(evaluate_request())
        .await
        .map(|response| response.into_inner().settings.unwrap().max_token_per_user)
}

/// Decisions and PIN checks are both UNAVAILABLE with `expected_reason`; the message holds
/// every one of `mentions`.
async fn assert_refused(client: &mut PolicyClient, expected_reason: &str, mentions: &[&str]) {
    let refused = evaluate(client).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some(expected_reason));
    for mention in mentions {
        assert!(refused.message().contains(mention), "{}", refused.message());
    }
    let refused = client
        .validate_pin(pb::ValidatePinRequest {
            realm: "corp".into(),
            user: "alice".into(),
            pin: "123456".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some(expected_reason));
}

/// Decisions refused and the service NOT_SERVING, while the process is SERVING.
async fn wait_until_refusing(server: &RunningServer) {
    server
        .wait_for_health(POLICY, ServingStatus::NotServing, WITHIN)
        .await;
    server
        .wait_for_health("", ServingStatus::Serving, Duration::from_secs(1))
        .await;
}

async fn an_unreadable_stored_policy_stops_decisions_until_repaired(backend: Backend) {
    let mut stack = TestStack::builder(backend).policy_only().start().await;
    let (mut admin, mut service) = (stack.policy_admin(), stack.policy_service());
    create(&mut admin, policy("limit", &[("max_token_per_user", "2")]))
        .await
        .unwrap();
    assert_eq!(evaluate(&mut service).await.unwrap(), Some(2));

    // A row written behind the service's back whose realms are not JSON; the version is
    // bumped as every write does, so the instances reload.
    stack
        .database
        .execute(
            "INSERT INTO policies (name, scope, realms, users, clients, actions, priority, \
             active, description, etag, create_time, update_time) \
             SELECT 'garbled', scope, '[\"corp\"', users, clients, \
             '{\"max_token_per_user\":\"0\"}', priority, active, description, etag, \
             create_time, update_time FROM policies WHERE name = 'limit'",
        )
        .await;
    stack
        .database
        .execute("UPDATE policy_set_state SET version = version + 1 WHERE id = 1")
        .await;
    wait_until_refusing(stack.policy()).await;
    assert_refused(&mut service, "POLICY_UNREADABLE", &["`garbled`", "realms"]).await;

    // An instance started now does not serve decisions either.
    let app = enroll_policy::app::Application::build(policy_config(&stack.database))
        .await
        .unwrap();
    let late = start_policy(app);
    late.wait_for_health("", ServingStatus::Serving, WITHIN)
        .await;
    assert_eq!(
        late.health_status(POLICY).await,
        ServingStatus::NotServing as i32
    );
    assert_refused(
        &mut late.policy_as(Role::Service),
        "POLICY_UNREADABLE",
        &["`garbled`"],
    )
    .await;

    // CRUD still answers: the readable policy, the unreadable one (named), the delete.
    let limit = admin
        .get_policy(pb::GetPolicyRequest {
            name: "limit".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let unreadable = admin
        .get_policy(pb::GetPolicyRequest {
            name: "garbled".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unreadable.code(), Code::FailedPrecondition);
    assert_eq!(reason(&unreadable).as_deref(), Some("POLICY_UNREADABLE"));
    assert!(
        unreadable.message().contains("`garbled`"),
        "{}",
        unreadable.message()
    );
    admin
        .delete_policy(pb::DeletePolicyRequest {
            name: "garbled".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The instance that wrote serves at once; the others within a poll.
    assert_eq!(evaluate(&mut service).await.unwrap(), Some(2));
    stack
        .policy()
        .wait_for_health(POLICY, ServingStatus::Serving, WITHIN)
        .await;
    late.wait_for_health(POLICY, ServingStatus::Serving, WITHIN)
        .await;
    assert_eq!(
        evaluate(&mut late.policy_as(Role::Service)).await.unwrap(),
        Some(2)
    );

    // A row that parses but no longer validates: refused too, and repaired by an update.
    stack
        .database
        .execute(
            "UPDATE policies SET actions = '{\"max_token_per_user\":\"lots\"}' \
             WHERE name = 'limit'",
        )
        .await;
    stack
        .database
        .execute("UPDATE policy_set_state SET version = version + 1 WHERE id = 1")
        .await;
    wait_until_refusing(stack.policy()).await;
    assert_refused(
        &mut service,
        "POLICY_UNREADABLE",
        &["`limit`", "max_token_per_user"],
    )
    .await;
    let mut repaired = limit.clone();
    repaired
        .actions
        .insert("max_token_per_user".into(), "3".into());
    admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(repaired),
            etag: limit.etag,
            actor: String::new(),
            validate_only: false,
        })
        .await
        .unwrap();
    assert_eq!(evaluate(&mut service).await.unwrap(), Some(3));
    late.wait_for_health(POLICY, ServingStatus::Serving, WITHIN)
        .await;
    late.stop().await;
    // An instance started after the repair is SERVING (add_policy_replica waits for it).
    stack.add_policy_replica().await;
    stack.stop().await;
}

async fn a_set_the_database_stopped_confirming_is_not_served(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    create(
        &mut stack.policy_admin(),
        policy("limit", &[("max_token_per_user", "2")]),
    )
    .await
    .unwrap();
    let mut config = policy_config(&stack.database);
    config.cache.poll_interval_ms = 50;
    config.cache.max_staleness_ms = 400;
    let server = spawn_policy_with(config).await;
    let mut service = server.policy_as(Role::Service);
    assert_eq!(evaluate(&mut service).await.unwrap(), Some(2));

    // The version can no longer be read: the cached set ages past the maximum.
    stack
        .database
        .execute("ALTER TABLE policy_set_state RENAME TO policy_set_state_away")
        .await;
    wait_until_refusing(&server).await;
    assert_refused(&mut service, "POLICY_SET_STALE", &["cache.max_staleness"]).await;

    stack
        .database
        .execute("ALTER TABLE policy_set_state_away RENAME TO policy_set_state")
        .await;
    server
        .wait_for_health(POLICY, ServingStatus::Serving, WITHIN)
        .await;
    assert_eq!(evaluate(&mut service).await.unwrap(), Some(2));
    server.stop().await;
    stack.stop().await;
}

enroll_e2e::on_both_backends!(
    an_unreadable_stored_policy_stops_decisions_until_repaired,
    a_set_the_database_stopped_confirming_is_not_served,
);
