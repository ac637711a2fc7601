//! Attempt budgets over gRPC: kept in the database, so two replicas spend from one count;
//! a request without a client address is refused, or (opted in) one client per API key;
//! the realm budget binds rotating names and addresses; Validate's own per-client budget
//! throttles guessing across users.
use super::*;

/// The budgets live in the database: two replicas spend from one count, a request without
/// a client address (opted in) is one client per API key, and the realm's budget binds
/// rotating addresses.
async fn budgets_are_shared_by_replicas_and_a_missing_address_is_one_client(backend: Backend) {
    let builder = TestStack::builder(backend)
        .with_policy(auto_policy("corp", &[]))
        .device_replicas(2)
        .device_config(|config| {
            let validation = &mut config.validation;
            validation.allow_missing_client_ip = true;
            validation.autoassign_attempts_per_client = 6;
            validation.autoassign_attempts_per_user = 100;
            validation.autoassign_attempts_per_realm = 20;
        });
    let stack = start_with_pool(builder, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let mut proxies = [
        stack.device_on(0, Role::Proxy),
        stack.device_on(1, Role::Proxy),
    ];
    let mut admin = stack.admin();
    for i in 0..8 {
        let answer = validate(
            &mut proxies[i % 2],
            "corp",
            &format!("anon{i}"),
            pass("000000"),
            "",
        )
        .await;
        // Six challenges (decoys), then the client's budget is spent: a plain refusal.
        if i < 6 {
            assert!(answer.challenge.is_some(), "{answer:?}");
        } else {
            assert_eq!(answer, refusal());
        }
    }
    let client_spent = "the client's autoassignment budget (key/test-proxy) is exhausted";
    assert_eq!(audited(&mut admin, client_spent).await, 2);
    // Without an address even the right two codes are refused now.
    validate(&mut proxies[0], "corp", "known", pass(&hotp(0)), "").await;
    validate(&mut proxies[1], "corp", "known", pass(&hotp(1)), "").await;
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    assert_eq!(audited(&mut admin, client_spent).await, 4);

    // Rotating addresses and names: the realm's 20 attempts (6 spent) run out after 14.
    for i in 0..16 {
        let ip = format!("198.51.100.{i}");
        validate(
            &mut proxies[i % 2],
            "corp",
            &format!("rot{i}"),
            pass("000000"),
            &ip,
        )
        .await;
    }
    let realm_spent = "the realm's autoassignment budget (corp) is exhausted";
    assert_eq!(audited(&mut admin, realm_spent).await, 2);
    validate(
        &mut proxies[0],
        "corp",
        "late",
        pass(&hotp(0)),
        "203.0.113.1",
    )
    .await;
    validate(
        &mut proxies[1],
        "corp",
        "late",
        pass(&hotp(1)),
        "203.0.113.1",
    )
    .await;
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    assert_eq!(audited(&mut admin, realm_spent).await, 4);
}

/// Validate's own budget per client: guessing across users who hold tokens is throttled
/// on every replica, and the client without an address is one client.
async fn the_validate_budget_is_per_client_across_users_and_replicas(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_replicas(2)
        .device_config(|config| {
            config.validation.validate_attempts_per_client = 5;
            config.validation.allow_missing_client_ip = true;
        })
        .start()
        .await;
    let mut proxies = [
        stack.device_on(0, Role::Proxy),
        stack.device_on(1, Role::Proxy),
    ];
    let mut admin = stack.admin();
    let enrolled = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "alice".into(),
            r#type: pb::TokenType::Hotp as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let right = hotp_code(&seed_of(&enrolled), 0);
    for i in 0..5 {
        validate(
            &mut proxies[i % 2],
            "corp",
            &format!("x{i}"),
            "000000".into(),
            "",
        )
        .await;
    }
    assert_eq!(
        validate(&mut proxies[0], "corp", "alice", right.clone(), "").await,
        refusal()
    );
    let spent = audit_events_by_action(&mut admin, "validate").await;
    assert!(
        spent
            .iter()
            .any(|event| event.reason
                == "the client's Validate budget (key/test-proxy) is exhausted"),
        "{spent:?}"
    );
    let accepted = validate(&mut proxies[1], "corp", "alice", right, "192.0.2.9").await;
    assert!(accepted.ok, "{accepted:?}");
}

/// By default a Validate without a client address is refused, for a tokenless user
/// (autoassignment) as for one who holds tokens: a proxy that forgets it is a bug, not one
/// client that every user would share.
async fn a_missing_address_is_refused_by_default(backend: Backend) {
    let builder = TestStack::builder(backend).with_policy(auto_policy("corp", &[]));
    let stack = start_with_pool(builder, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let mut proxy = stack.proxy();
    for user in ["tokenless", "known"] {
        let refused = proxy
            .validate(pb::ValidateRequest {
                realm: "corp".into(),
                user: user.into(),
                pass: pass(&hotp(0)),
                ..Default::default()
            })
            .await;
        enroll_e2e::assert_invalid_field(refused, "client_ip");
    }
    assert_eq!(owner(&mut stack.admin(), "KNOWN1").await, "");
}

enroll_e2e::on_both_backends!(
    a_missing_address_is_refused_by_default,
    budgets_are_shared_by_replicas_and_a_missing_address_is_one_client,
    the_validate_budget_is_per_client_across_users_and_replicas,
);
