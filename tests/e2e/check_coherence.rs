//! CheckEnrollment's caches stay coherent across replicas: after a device change on one
//! device server, or a policy change, the other device server answers the new status
//! within 1 s. Alternates device changes (self-registration, approval, revocation on
//! replica A) with policy changes (flipping `require_device_approval`), polls replica B
//! after each one until it answers the new state, and asserts every delay is under 1 s.
//! `ENROLL_COHERENCE_CHANGES` sets the number of changes (default 100).
use std::time::{Duration, Instant};

use enroll_e2e::{Backend, DeviceClient, TestStack, realm_policy};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const ORIGIN: &str = "http://localhost:8080";
const BOUND: Duration = Duration::from_secs(1);
/// Past this the test fails instead of waiting for ever.
const GIVE_UP: Duration = Duration::from_secs(10);
const APPROVAL_REASON: &str = "stays pending until an admin approves it";

fn change_count() -> usize {
    std::env::var("ENROLL_COHERENCE_CHANGES")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(100)
}

/// What replica B must answer for the current user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    status: pb::EnrollmentStatus,
    approval_reason: bool,
}

async fn observed(proxy: &mut DeviceClient, user: &str) -> Expected {
    let response = proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "acme".into(),
            user: user.into(),
            required_device_type: pb::DeviceType::Any as i32,
            require_approved: true,
            ..Default::default()
        })
        .await
        .expect("CheckEnrollment")
        .into_inner();
    Expected {
        status: pb::EnrollmentStatus::try_from(response.status).expect("known status"),
        approval_reason: response
            .reasons
            .iter()
            .any(|reason| reason.contains(APPROVAL_REASON)),
    }
}

/// Polls `proxy` until it answers `expected`; the delay since `changed_at`.
async fn delay_until(
    proxy: &mut DeviceClient,
    user: &str,
    expected: Expected,
    changed_at: Instant,
    what: &str,
) -> Duration {
    loop {
        let seen = observed(proxy, user).await;
        let delay = changed_at.elapsed();
        if seen == expected {
            return delay;
        }
        assert!(
            delay < GIVE_UP,
            "{what}: replica B still answers {seen:?}, expected {expected:?}, after {delay:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Self-registers a soft passkey for `user` on `proxy`; the device.
async fn self_register(proxy: &mut DeviceClient, user: &str) -> pb::Device {
    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            realm: "acme".into(),
            user: user.into(),
            ..Default::default()
        })
        .await
        .expect("begin registration")
        .into_inner();
    let options = serde_json::from_str(&begun.creation_options_json).expect("options");
    let credential = SoftPasskey::new(true)
        .do_registration(Url::parse(ORIGIN).expect("origin"), options)
        .expect("soft passkey registers");
    proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&credential).expect("credential JSON"),
            user_agent: "soft-authenticator".into(),
            client_ip: "192.0.2.7".into(),
        })
        .await
        .expect("finish registration")
        .into_inner()
        .device
        .expect("registered device")
}

/// Where the current user's device is.
enum DeviceStep {
    None,
    Pending(String),
    Approved(String),
}

async fn changes_reach_every_replica_within_one_second(backend: Backend) {
    let approval = realm_policy("approval", "acme", &[("require_device_approval", "true")]);
    let stack = TestStack::builder(backend)
        .with_policy(approval)
        .device_replicas(2)
        .start()
        .await;
    let (mut admin_a, mut proxy_a) = (
        stack.device_on(0, Role::Admin),
        stack.device_on(0, Role::Proxy),
    );
    let mut proxy_b = stack.device_on(1, Role::Proxy);
    let mut policy_admin = stack.policy_admin();
    let mut stored = policy_admin
        .get_policy(policy_pb::GetPolicyRequest {
            name: "approval".into(),
        })
        .await
        .expect("GetPolicy")
        .into_inner();

    let mut approval_required = true;
    let mut user_index = 0;
    let mut step = DeviceStep::None;
    let user = |index: usize| format!("coherence-{index}");
    // Warm replica B's caches for the first user.
    observed(&mut proxy_b, &user(user_index)).await;

    let count = change_count();
    let mut delays = Vec::with_capacity(count);
    for change in 0..count {
        let (what, changed_at, expected_status) = if change % 2 == 0 {
            let name = user(user_index);
            match std::mem::replace(&mut step, DeviceStep::None) {
                DeviceStep::None => {
                    let device = self_register(&mut proxy_a, &name).await;
                    let changed_at = Instant::now();
                    let status = if device.state == pb::DeviceState::PendingApproval as i32 {
                        step = DeviceStep::Pending(device.id);
                        pb::EnrollmentStatus::PendingApproval
                    } else {
                        step = DeviceStep::Approved(device.id);
                        pb::EnrollmentStatus::Enrolled
                    };
                    ("registration", changed_at, status)
                }
                DeviceStep::Pending(id) => {
                    admin_a
                        .approve_device(pb::ApproveDeviceRequest {
                            id: id.clone(),
                            approved_by: "secops".into(),
                        })
                        .await
                        .expect("ApproveDevice");
                    step = DeviceStep::Approved(id);
                    ("approval", Instant::now(), pb::EnrollmentStatus::Enrolled)
                }
                DeviceStep::Approved(id) => {
                    admin_a
                        .revoke_device(pb::RevokeDeviceRequest {
                            id,
                            revoked_by: "secops".into(),
                            reason: "coherence test".into(),
                        })
                        .await
                        .expect("RevokeDevice");
                    (
                        "revocation",
                        Instant::now(),
                        pb::EnrollmentStatus::NotEnrolled,
                    )
                }
            }
        } else {
            approval_required = !approval_required;
            let mut changed = stored.clone();
            changed.actions.insert(
                "require_device_approval".into(),
                approval_required.to_string(),
            );
            let etag = std::mem::take(&mut stored.etag);
            stored = policy_admin
                .update_policy(policy_pb::UpdatePolicyRequest {
                    policy: Some(changed),
                    etag,
                    actor: String::new(),
                    validate_only: false,
                })
                .await
                .expect("UpdatePolicy")
                .into_inner();
            let status = match step {
                DeviceStep::None => pb::EnrollmentStatus::NotEnrolled,
                DeviceStep::Pending(_) => pb::EnrollmentStatus::PendingApproval,
                DeviceStep::Approved(_) => pb::EnrollmentStatus::Enrolled,
            };
            ("policy change", Instant::now(), status)
        };
        let expected = Expected {
            status: expected_status,
            approval_reason: approval_required,
        };
        let name = user(user_index);
        let delay = delay_until(&mut proxy_b, &name, expected, changed_at, what).await;
        assert!(
            delay < BOUND,
            "change {change} ({what}) took {delay:?} to reach replica B"
        );
        delays.push(delay);
        if expected_status == pb::EnrollmentStatus::NotEnrolled && what == "revocation" {
            // The next user starts with no device; warm replica B's caches for them.
            user_index += 1;
            observed(&mut proxy_b, &user(user_index)).await;
        }
    }
    delays.sort();
    let worst = delays.last().copied().unwrap_or_default();
    let p99 = delays[(delays.len() * 99 / 100).min(delays.len() - 1)];
    println!(
        "check coherence ({backend:?}): {} changes, worst {worst:?}, p99 {p99:?}, median {:?}",
        delays.len(),
        delays[delays.len() / 2]
    );
}

/// Revokes `device_id` straight in the database, behind the service's back (no counter bump).
async fn revoke_behind_the_back(db: &sea_orm::DatabaseConnection, device_id: &str) {
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(&format!(
        "UPDATE devices SET state = 'revoked' WHERE id = '{device_id}'"
    ))
    .await
    .expect("revoke behind the service's back");
}

/// Registers a device for `user` and makes replica B cache the user's rows.
async fn cached_on_b(stack: &TestStack, proxy_b: &mut DeviceClient, user: &str) -> String {
    let device = enroll_e2e::register_passkey(stack, "acme", user).await;
    let enrolled = Expected {
        status: pb::EnrollmentStatus::Enrolled,
        // No policy: self-registered devices wait for approval by default.
        approval_reason: true,
    };
    delay_until(proxy_b, user, enrolled, Instant::now(), "registration").await;
    // Past the registration's own invalidation on B (notification or poll), then read and
    // cached afresh.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(observed(proxy_b, user).await, enrolled);
    device.id
}

/// The rows cache is really used, and the change counter is what invalidates it: a device
/// revoked behind the service's back (no counter bump) is still ENROLLED on replica B right
/// after; bumping the counter for the user makes B answer NOT_ENROLLED within the bound.
async fn cached_rows_follow_the_change_counter(backend: Backend) {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let stack = TestStack::builder(backend).device_replicas(2).start().await;
    let mut proxy_b = stack.device_on(1, Role::Proxy);
    let db = Database::connect(&stack.database.url)
        .await
        .expect("connect");
    // No policy: self-registered devices wait for approval by default.
    let enrolled = Expected {
        status: pb::EnrollmentStatus::Enrolled,
        approval_reason: true,
    };
    let not_enrolled = Expected {
        status: pb::EnrollmentStatus::NotEnrolled,
        approval_reason: true,
    };

    let device = cached_on_b(&stack, &mut proxy_b, "cached").await;
    revoke_behind_the_back(&db, &device).await;
    assert_eq!(
        observed(&mut proxy_b, "cached").await,
        enrolled,
        "served from the cache"
    );
    // As the service does it: the counter and the user's change in one transaction (a
    // poll between two separate statements would see the counter move without the user).
    let transaction = db.begin().await.expect("begin");
    transaction
        .execute_unprepared("UPDATE device_changes SET version = version + 1 WHERE id = 1")
        .await
        .expect("bump the counter");
    transaction
        .execute_unprepared(&format!(
            "INSERT INTO device_user_changes (user_id, version) \
             SELECT user_id, (SELECT version FROM device_changes WHERE id = 1) FROM devices \
             WHERE id = '{device}' \
             ON CONFLICT (user_id) DO UPDATE SET version = excluded.version"
        ))
        .await
        .expect("record the user's change");
    transaction.commit().await.expect("commit");
    let changed_at = Instant::now();
    let delay = delay_until(&mut proxy_b, "cached", not_enrolled, changed_at, "counter").await;
    assert!(
        delay < BOUND,
        "the counter took {delay:?} to reach replica B"
    );
}

enroll_e2e::on_both_backends!(
    changes_reach_every_replica_within_one_second,
    cached_rows_follow_the_change_counter,
);
