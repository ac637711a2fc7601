use super::*;

async fn a_lost_token_is_replaced_by_a_temporary_password(backend: Backend) {
    let rules = [
        ("lostTokenPWLen", "12"),
        ("lostTokenPWContents", "Cn"),
        ("lostTokenValid", "3"),
    ];
    let stack =
        TestStack::with_policies(backend, [realm_policy("lost-rules", "corp", &rules)]).await;
    let mut admin = stack.admin();
    let mut proxy = stack.proxy();

    let pooled = admin
        .enroll_token(totp("corp", ""))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    let not_assigned = admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: pooled.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(not_assigned.code(), Code::FailedPrecondition);

    let original = admin
        .enroll_token(totp("corp", "frank"))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    let replaced = admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: original.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.password.len(), 12);
    assert!(
        replaced
            .password
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
        "{}",
        replaced.password
    );
    let replacement = replaced.token.unwrap();
    assert!(replacement.serial.starts_with("PASS"));
    assert_eq!(
        (replacement.user.as_str(), replacement.r#type),
        ("frank", pb::TokenType::Password as i32)
    );
    let valid_for =
        replaced.expire_time.unwrap().seconds - replacement.create_time.unwrap().seconds;
    assert_eq!(valid_for, 3 * 24 * 3600);
    let old = admin
        .get_token(pb::GetTokenRequest {
            serial: original.serial.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.state, pb::TokenState::Lost as i32);
    let twice = admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: original.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);

    let check = |pass: &str| pb::ValidateRequest {
        realm: "corp".into(),
        user: "frank".into(),
        pass: pass.into(),
        client_ip: "192.0.2.1".into(),
        ..Default::default()
    };
    let ok = proxy
        .validate(check(&replaced.password))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.ok && ok.serial == replacement.serial, "{ok:?}");
    assert!(
        !proxy
            .validate(check("WRONGPASSWORD"))
            .await
            .unwrap()
            .into_inner()
            .ok
    );

    // Once expired, the password no longer works.
    stack
        .database
        .execute("UPDATE tokens SET expire_time = create_time WHERE token_type = 'password'")
        .await;
    let expired = proxy
        .validate(check(&replaced.password))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (expired.ok, expired.message.as_str()),
        (false, "wrong pass")
    );
}

enroll_e2e::on_both_backends!(a_lost_token_is_replaced_by_a_temporary_password);
