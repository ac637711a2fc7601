//! EvaluateEnrollment and ValidatePin over gRPC.
use enroll_e2e::{Backend, PolicyClient, TestStack, create, policy};
use enroll_shared::proto::policy::v1 as pb;
use enroll_shared::status::reason;
use tonic::Code;

fn request(
    realm: &str,
    user: &str,
    client_ip: &str,
    action: pb::Action,
    token_type: &str,
) -> pb::EvaluateEnrollmentRequest {
    pb::EvaluateEnrollmentRequest {
        realm: realm.into(),
        user: user.into(),
        client_ip: client_ip.into(),
        action: action as i32,
        token_type: token_type.into(),
        serial: String::new(),
        no_client: false,
    }
}

async fn evaluate(
    client: &mut PolicyClient,
    request: pb::EvaluateEnrollmentRequest,
) -> Result<pb::EvaluateEnrollmentResponse, tonic::Status> {
    client
        .evaluate_enrollment(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn decisions_follow_matching_and_priority(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();

    let mut base = policy(
        "corp-base",
        &[
            ("max_token_per_user", "3"),
            ("tokenlabel", "<u>@<r>"),
            ("autoassignment", "true"),
        ],
    );
    base.realms = vec!["corp".into()];
    base.users = vec!["*".into(), "!bob".into()];
    base.priority = 10;
    create(&mut admin, base).await.unwrap();

    let mut vpn = policy(
        "vpn-strict",
        &[
            ("max_token_per_user", "1"),
            ("token_types", "totp,webauthn"),
        ],
    );
    vpn.realms = vec!["corp".into()];
    vpn.clients = vec!["10.8.0.0/16".into(), "2001:db8:8::/48".into()];
    vpn.priority = 5;
    create(&mut admin, vpn).await.unwrap();

    let mut inactive = policy("inactive", &[("max_token_per_user", "0")]);
    inactive.active = false;
    create(&mut admin, inactive).await.unwrap();

    let mut service = stack.policy_service();

    // Office client: corp-base decides.
    let office = evaluate(
        &mut service,
        request("CORP", "Alice", "192.0.2.10", pb::Action::Enroll, "hotp"),
    )
    .await
    .unwrap();
    assert!(office.allowed);
    let settings = office.settings.as_ref().unwrap();
    assert_eq!(settings.max_token_per_user, Some(3));
    assert_eq!(settings.token_label, "Alice@CORP");
    assert!(settings.autoassignment);
    assert_eq!(office.decided_by["max_token_per_user"], "corp-base");
    assert_eq!(office.decided_by["token_label"], "corp-base");
    assert!(
        !office.decided_by.contains_key("lost_token_pw_len"),
        "defaults are not attributed"
    );
    assert_eq!(settings.lost_token_pw_len, 10);

    // VPN client (v4 and v6): the lower priority number wins, and hotp is not allowed there.
    for client_ip in ["10.8.3.4", "2001:db8:8::1"] {
        let vpn = evaluate(
            &mut service,
            request("corp", "alice", client_ip, pb::Action::Enroll, "hotp"),
        )
        .await
        .unwrap();
        assert!(!vpn.allowed, "{client_ip}");
        assert_eq!(vpn.settings.as_ref().unwrap().max_token_per_user, Some(1));
        assert_eq!(vpn.decided_by["max_token_per_user"], "vpn-strict");
        assert_eq!(vpn.denials.len(), 1);
        assert_eq!(vpn.denials[0].code, "TOKEN_TYPE_NOT_ALLOWED");
        assert_eq!(vpn.denials[0].policy, "vpn-strict");
    }

    // Without an address a decision about corp's users is refused while vpn-strict matches
    // on client networks (it would silently not apply)...
    let refused = evaluate(
        &mut service,
        request("corp", "bob", "", pb::Action::Enroll, "totp"),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        enroll_shared::status::field(&refused).as_deref(),
        Some("client_ip")
    );
    assert!(refused.message().contains("vpn-strict"), "{refused:?}");
    // ...unless the request has no end user's address by nature (an admin's own action).
    let mut console = request("corp", "bob", "", pb::Action::Enroll, "totp");
    console.no_client = true;
    // bob is excluded from corp-base; another realm matches nothing; inactive is ignored.
    let bob = evaluate(&mut service, console).await.unwrap();
    assert_eq!(bob.settings.as_ref().unwrap().max_token_per_user, None);
    assert_eq!(bob.settings.as_ref().unwrap().token_label, "<s>");
    let lab = evaluate(
        &mut service,
        request("lab", "alice", "", pb::Action::Enroll, "totp"),
    )
    .await
    .unwrap();
    assert!(lab.allowed && lab.decided_by.is_empty());

    // The serial renders <s>; autoassignment denial where it is off.
    let mut with_serial = request("lab", "carol", "", pb::Action::Enroll, "totp");
    with_serial.serial = "TOTP00C0FFEE".into();
    let rendered = evaluate(&mut service, with_serial).await.unwrap();
    assert_eq!(rendered.settings.unwrap().token_label, "TOTP00C0FFEE");
    let auto = evaluate(
        &mut service,
        request("lab", "carol", "", pb::Action::Autoassign, "totp"),
    )
    .await
    .unwrap();
    assert!(!auto.allowed);
    assert_eq!(auto.denials[0].code, "AUTOASSIGNMENT_DISABLED");
    assert!(office.policy_set_version >= 3);
}

async fn equal_priority_conflicts_are_reported_and_fail_decisions(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();
    let first = create(
        &mut admin,
        policy(
            "label-user",
            &[("tokenlabel", "<u>"), ("max_token_per_user", "4")],
        ),
    )
    .await
    .unwrap();
    assert!(first.conflicts.is_empty());
    let second = create(
        &mut admin,
        policy(
            "label-serial",
            &[("tokenlabel", "<s>"), ("max_token_per_user", "2")],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        second.conflicts.len(),
        1,
        "limits combine, the label conflicts"
    );
    assert_eq!(second.conflicts[0].action, "tokenlabel");
    assert_eq!(second.conflicts[0].other_policy, "label-user");
    let fetched = admin
        .get_policy(pb::GetPolicyRequest {
            name: "label-user".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.conflicts[0].other_policy, "label-serial");

    let status = evaluate(
        &mut admin,
        request("corp", "alice", "", pb::Action::Enroll, "totp"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("POLICY_CONFLICT"));
    assert!(
        status.message().contains("label-user") && status.message().contains("label-serial"),
        "{}",
        status.message()
    );

    // Resolving it by priority makes decisions work again.
    let mut fixed = second.clone();
    fixed.priority = 2;
    admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(fixed),
            etag: second.etag,
            actor: String::new(),
            validate_only: false,
        })
        .await
        .unwrap();
    let decision = evaluate(
        &mut admin,
        request("corp", "alice", "", pb::Action::Enroll, "totp"),
    )
    .await
    .unwrap();
    assert_eq!(decision.settings.as_ref().unwrap().token_label, "alice");
    assert_eq!(decision.settings.unwrap().max_token_per_user, Some(4));
}

async fn invalid_evaluation_requests_name_the_field(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut service = stack.policy_service();
    let cases = [
        (
            request("", "alice", "", pb::Action::Enroll, "totp"),
            "realm",
        ),
        (request("corp", "", "", pb::Action::SetPin, ""), "user"),
        (
            request("corp", "alice", "10.0.0.300", pb::Action::Enroll, "totp"),
            "client_ip",
        ),
        (
            request("corp", "alice", "", pb::Action::Unspecified, "totp"),
            "action",
        ),
        (
            request("corp", "alice", "", pb::Action::Enroll, ""),
            "token_type",
        ),
        (
            request("corp", "alice", "", pb::Action::Enroll, "sms"),
            "token_type",
        ),
    ];
    for (input, field) in cases {
        let status = evaluate(&mut service, input).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(field),
            "{} should name {field}",
            status.message()
        );
    }
    // Pool enrollment needs no user.
    evaluate(
        &mut service,
        request("corp", "", "", pb::Action::Enroll, "totp"),
    )
    .await
    .unwrap();
}

async fn validate_pin_lists_every_violation(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();
    let mut pins = policy(
        "pin-rules",
        &[
            ("otp_pin_minlength", "6"),
            ("otp_pin_maxlength", "8"),
            ("otp_pin_contents", "cns"),
        ],
    );
    pins.realms = vec!["corp".into()];
    create(&mut admin, pins).await.unwrap();
    let mut service = stack.policy_service();
    let check = |pin: &str, realm: &str| pb::ValidatePinRequest {
        realm: realm.into(),
        user: "alice".into(),
        client_ip: String::new(),
        pin: pin.into(),
        no_client: false,
    };
    let weak = service
        .validate_pin(check("AB1", "corp"))
        .await
        .unwrap()
        .into_inner();
    assert!(!weak.valid);
    assert_eq!(weak.violations.len(), 3, "{:?}", weak.violations);
    assert!(
        weak.violations
            .iter()
            .any(|v| v.contains("otp_pin_minlength 6 (policy pin-rules)"))
    );
    assert!(
        weak.violations.iter().all(|v| !v.contains("AB1")),
        "the PIN is never echoed"
    );
    let long = service
        .validate_pin(check("abc123!xyz", "corp"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(long.violations.len(), 1);
    assert!(long.violations[0].contains("otp_pin_maxlength 8"));
    assert!(
        service
            .validate_pin(check("ab12!cd", "corp"))
            .await
            .unwrap()
            .into_inner()
            .valid
    );
    assert!(
        service
            .validate_pin(check("1", "elsewhere"))
            .await
            .unwrap()
            .into_inner()
            .valid
    );
}

enroll_e2e::on_both_backends!(
    decisions_follow_matching_and_priority,
    equal_priority_conflicts_are_reported_and_fail_decisions,
    invalid_evaluation_requests_name_the_field,
    validate_pin_lists_every_violation,
);
