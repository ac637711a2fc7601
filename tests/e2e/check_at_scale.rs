//! CheckEnrollment's cache misses at scale: decided in process from the policy set the
//! policy service streamed, when that set is the very version it decides with now, so a
//! million distinct users cost no policy call each. Proven two ways on a real stack: a
//! replica deciding in process answers exactly as a replica that asks the policy service
//! every time (caches off), over realms with different rules (denied types, limits,
//! approval, user patterns); and once warm, checks of fresh users make no EvaluateEnrollment
//! call. A tiny cache (evicting all the time) answers the same.
use std::time::{Duration, Instant};

use enroll_e2e::{Backend, DeviceClient, TestStack, metric_value, policy, realm_policy};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;

const REALMS: [&str; 3] = ["corp", "locked", "lab"];

fn policies() -> Vec<enroll_shared::proto::policy::v1::Policy> {
    vec![
        realm_policy("corp", "corp", &[("max_token_per_user", "2")]),
        realm_policy("locked", "locked", &[("token_types", "totp")]),
        realm_policy(
            "lab",
            "lab",
            &[
                ("require_device_approval", "true"),
                ("webauthn_device_type", "enclave_only"),
            ],
        ),
        enroll_shared::proto::policy::v1::Policy {
            users: vec!["admin*".into()],
            priority: 5,
            ..policy("admins", &[("max_token_per_user", "1")])
        },
    ]
}

async fn answer(client: &mut DeviceClient, realm: &str, user: &str) -> pb::CheckEnrollmentResponse {
    client
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: realm.into(),
            user: user.into(),
            required_device_type: pb::DeviceType::Any as i32,
            client_ip: "192.0.2.10".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn evaluations(stack: &TestStack) -> f64 {
    metric_value(
        stack.policy_metrics_addr(),
        "rpc_server_requests_total",
        Some("rpc_method=\"EvaluateEnrollment\""),
    )
    .await
    .unwrap_or(0.0)
}

async fn misses_are_decided_here_exactly_as_the_policy_service_decides(backend: Backend) {
    let mut stack = TestStack::builder(backend)
        .device_config(|config| config.check_cache.max_entries = 8)
        .start()
        .await;
    for policy in policies() {
        stack.create_policy(policy).await;
    }
    let remote = stack
        .add_device(|config| config.check_cache.enabled = false)
        .await;
    let mut local = stack.device_on(0, Role::Proxy);
    let mut reference = stack.device_on(remote, Role::Proxy);
    // The caching replica has the set once the stream delivered it: wait until a check of
    // a fresh user makes no policy call.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut warm = 0;
    loop {
        let before = evaluations(&stack).await;
        answer(&mut local, "corp", &format!("warmup{warm}")).await;
        if evaluations(&stack).await == before {
            break;
        }
        assert!(Instant::now() < deadline, "the set never arrived");
        warm += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Fresh users of every realm (more than the 8 entries: the cache evicts all along):
    // the same answer as a replica that asks the policy service, and no policy call.
    let before = evaluations(&stack).await;
    let mut answers = Vec::new();
    for n in 0..40 {
        for realm in REALMS {
            let user = if n % 5 == 0 {
                format!("admin{n}")
            } else {
                format!("user{n}")
            };
            answers.push((realm, user.clone(), answer(&mut local, realm, &user).await));
        }
    }
    assert_eq!(
        evaluations(&stack).await,
        before,
        "fresh users' checks were decided without the policy service"
    );
    for (realm, user, decided_here) in answers {
        let asked = answer(&mut reference, realm, &user).await;
        assert_eq!(decided_here, asked, "{realm}/{user}");
    }
    // The rules made a difference (the comparison is not between identical answers).
    let locked = answer(&mut local, "locked", "user1").await;
    let corp = answer(&mut local, "corp", "user1").await;
    assert_ne!(locked.reasons, corp.reasons, "{locked:?} {corp:?}");

    // A policy change: the replica decides with the new set (in process again) as soon as
    // the stream brings it, and still answers as the policy service does.
    stack
        .create_policy(realm_policy(
            "corp-locked",
            "corp",
            &[("token_types", "hotp")],
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let decided_here = answer(&mut local, "corp", "user3").await;
        let asked = answer(&mut reference, "corp", "user3").await;
        if decided_here == asked && decided_here.reasons != corp.reasons {
            break;
        }
        assert!(Instant::now() < deadline, "{decided_here:?} vs {asked:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

enroll_e2e::on_both_backends!(misses_are_decided_here_exactly_as_the_policy_service_decides,);
