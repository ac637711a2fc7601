use super::*;

async fn assign_pin_enable_disable_unassign_delete(backend: Backend) {
    let rules = [
        ("max_token_per_user", "1"),
        ("otp_pin_minlength", "4"),
        ("otp_pin_contents", "n"),
    ];
    let stack =
        TestStack::with_policies(backend, [realm_policy("corp-rules", "corp", &rules)]).await;
    let mut admin = stack.admin();

    let pooled = admin
        .enroll_token(totp("corp", ""))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    let second = admin
        .enroll_token(totp("corp", ""))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert_eq!(pooled.user, "");
    let assign = |serial: &str, realm: &str, user: &str| pb::AssignTokenRequest {
        serial: serial.into(),
        realm: realm.into(),
        user: user.into(),
        ..Default::default()
    };

    let wrong_realm = admin
        .assign_token(assign(&pooled.serial, "lab", "alice"))
        .await
        .unwrap_err();
    assert_eq!(wrong_realm.code(), Code::FailedPrecondition);
    assert!(
        wrong_realm.message().contains("realm `corp`"),
        "{}",
        wrong_realm.message()
    );
    let unknown = admin
        .assign_token(assign("TOTPNOPE", "corp", "alice"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let assigned = admin
        .assign_token(assign(&pooled.serial, "corp", "Alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.user, "alice");
    let again = admin
        .assign_token(assign(&pooled.serial, "corp", "bob"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let over = admin
        .assign_token(assign(&second.serial, "corp", "alice"))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    assert!(
        over.message().contains("max_token_per_user 1"),
        "{}",
        over.message()
    );

    let weak = admin
        .set_pin(pb::SetPinRequest {
            serial: pooled.serial.clone(),
            pin: "ab".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(weak.code(), Code::InvalidArgument);
    assert!(
        weak.message().starts_with("pin: ") && weak.message().contains("otp_pin_minlength 4"),
        "{}",
        weak.message()
    );
    assert!(!weak.message().contains("\"ab\""));
    let pool_pin = admin
        .set_pin(pb::SetPinRequest {
            serial: second.serial.clone(),
            pin: "1234".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(pool_pin.code(), Code::FailedPrecondition);
    let with_pin = admin
        .set_pin(pb::SetPinRequest {
            serial: pooled.serial.clone(),
            pin: "9876".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(with_pin.has_pin);

    let disabled = admin
        .disable_token(pb::DisableTokenRequest {
            serial: pooled.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.state, pb::TokenState::Disabled as i32);
    let enabled = admin
        .enable_token(pb::EnableTokenRequest {
            serial: pooled.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enabled.state, pb::TokenState::Enabled as i32);
    let unassigned = admin
        .unassign_token(pb::UnassignTokenRequest {
            serial: pooled.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unassigned.user, "");
    assert!(!unassigned.has_pin, "the PIN goes with the user");

    admin
        .delete_token(pb::DeleteTokenRequest {
            serial: pooled.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let gone = admin
        .get_token(pb::GetTokenRequest {
            serial: pooled.serial.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let gone = admin
        .delete_token(pb::DeleteTokenRequest {
            serial: pooled.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    let actions: Vec<String> = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            serial: pooled.serial.clone(),
            result: "ok".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|event| event.action)
        .collect();
    assert_eq!(
        actions,
        [
            "delete_token",
            "unassign_token",
            "enable_token",
            "disable_token",
            "set_pin",
            "assign_token",
            "enroll_token"
        ]
    );
}

/// Granting access fails closed without the policy service (removing it does not: see
/// `token_safety::removal`).
async fn mutations_fail_closed_without_the_policy_service(backend: Backend) {
    let mut stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let token = admin
        .enroll_token(totp("corp", ""))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    let owned = admin
        .enroll_token(totp("corp", "bob"))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    stack.stop_policy().await;
    let serial = token.serial.clone();
    let status = admin
        .enable_token(pb::EnableTokenRequest {
            serial: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let status = admin
        .assign_token(pb::AssignTokenRequest {
            serial: serial.clone(),
            realm: "corp".into(),
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let status = admin
        .set_pin(pb::SetPinRequest {
            serial: owned.serial.clone(),
            pin: "1234".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let unchanged = admin
        .get_token(pb::GetTokenRequest { serial })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged, token);
    let unchanged = admin
        .get_token(pb::GetTokenRequest {
            serial: owned.serial.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged, owned);
}

enroll_e2e::on_both_backends!(
    assign_pin_enable_disable_unassign_delete,
    mutations_fail_closed_without_the_policy_service,
);
