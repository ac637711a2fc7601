//! Two policy-service instances on one database: a change made through one is seen by the
//! other within a second (LISTEN/NOTIFY on PostgreSQL, the version poll on SQLite).
use std::time::{Duration, Instant};

use enroll_e2e::{Backend, TestStack, create, policy};
use enroll_shared::auth::Role;
use enroll_shared::proto::policy::v1 as pb;

async fn limit_seen_by(client: &mut enroll_e2e::PolicyClient) -> Option<u32> {
    client
        .evaluate_enrollment(pb::EvaluateEnrollmentRequest {
            realm: "corp".into(),
            user: "alice".into(),
            action: pb::Action::Enroll as i32,
            token_type: "totp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap()
        .max_token_per_user
}

/// Polls `replica` until it reports `wanted`; returns how long that took.
async fn time_until(replica: &mut enroll_e2e::PolicyClient, wanted: Option<u32>) -> Duration {
    let started = Instant::now();
    while limit_seen_by(replica).await != wanted {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "replica still stale after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

async fn every_instance_sees_a_change_within_a_second(backend: Backend) {
    let mut stack = TestStack::builder(backend).policy_only().start().await;
    let second = stack.add_policy_replica().await;
    let (mut admin, mut replica) = (
        stack.policy_admin(),
        stack.policy_replicas[second].policy_as(Role::Service),
    );
    assert_eq!(limit_seen_by(&mut replica).await, None);

    let created = create(&mut admin, policy("limit", &[("max_token_per_user", "2")]))
        .await
        .unwrap();
    time_until(&mut replica, Some(2)).await;

    let mut changed = created.clone();
    changed
        .actions
        .insert("max_token_per_user".into(), "7".into());
    let updated = admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(changed),
            etag: created.etag,
            actor: String::new(),
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    time_until(&mut replica, Some(7)).await;

    // Writes through the replica reach the first instance too; the etag is shared.
    let mut replica_admin = stack.policy_replicas[second].policy_as(Role::Admin);
    replica_admin
        .delete_policy(pb::DeletePolicyRequest {
            name: "limit".into(),
            etag: updated.etag,
            actor: String::new(),
        })
        .await
        .unwrap();
    let mut first_reader = stack.policy_service();
    time_until(&mut first_reader, None).await;
    stack.stop().await;
}

enroll_e2e::on_both_backends!(every_instance_sees_a_change_within_a_second);
