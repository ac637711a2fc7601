//! Realm and user names follow one rule in both services (`enroll_shared::names`): ASCII
//! case folds, and a character whose case maps to another one is refused. A Kelvin sign
//! (U+212A) used to fold into `k`, so `\u{212A}ate`, a different identity-provider user,
//! saw `kate`'s devices and tokens.
use enroll_e2e::{Backend, TestStack, create, policy, register_device_by_link};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use enroll_shared::status::reason;
use tonic::Code;

const KELVIN_KATE: &str = "\u{212A}ate";

fn check(user: &str) -> pb::CheckEnrollmentRequest {
    pb::CheckEnrollmentRequest {
        realm: "acme".into(),
        user: user.into(),
        ..Default::default()
    }
}

fn list(user: &str) -> pb::ListTokensRequest {
    pb::ListTokensRequest {
        realm: "acme".into(),
        user: user.into(),
        ..Default::default()
    }
}

async fn a_kelvin_sign_name_is_refused_not_folded_into_kate(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let device = register_device_by_link(&mut admin, &mut proxy, "acme", "kate").await;
    let token = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "acme".into(),
            user: "kate".into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();

    // ASCII case still folds: KATE is kate.
    let enrolled = proxy
        .check_enrollment(check("KATE"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enrolled.status, pb::EnrollmentStatus::Enrolled as i32);
    assert_eq!(enrolled.device.unwrap().id, device.id);
    let tokens = admin
        .list_tokens(list("KATE"))
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].serial, token.serial);

    // The Kelvin sign is refused, naming the field, instead of reaching kate's devices.
    let refused = proxy
        .check_enrollment(check(KELVIN_KATE))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("user") && refused.message().contains("U+212A"),
        "{}",
        refused.message()
    );
    let refused = admin.list_tokens(list(KELVIN_KATE)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("U+212A"),
        "{}",
        refused.message()
    );
    // Nor can one be enrolled under it.
    let refused = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "acme".into(),
            user: KELVIN_KATE.into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    stack.stop().await;
}

fn evaluate(user: &str) -> policy_pb::EvaluateEnrollmentRequest {
    policy_pb::EvaluateEnrollmentRequest {
        realm: "acme".into(),
        user: user.into(),
        action: policy_pb::Action::Enroll as i32,
        token_type: "totp".into(),
        ..Default::default()
    }
}

async fn policies_match_and_store_names_by_the_same_rule(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let (mut admin, mut service) = (stack.policy_admin(), stack.policy_service());

    // A pattern with a Kelvin sign is refused, naming the field.
    let mut kelvin = policy("kelvin", &[("max_token_per_user", "1")]);
    kelvin.users = vec!["alice".into(), KELVIN_KATE.into()];
    let refused = create(&mut admin, kelvin).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason(&refused).as_deref(), Some("INVALID_FIELD"));
    assert!(
        refused.message().contains("policy.users[1]") && refused.message().contains("U+212A"),
        "{}",
        refused.message()
    );

    // Patterns are stored normalised; ASCII case folds on both sides.
    let mut limit = policy("kate-limit", &[("max_token_per_user", "1")]);
    limit.realms = vec!["ACME".into()];
    limit.users = vec!["Kate".into()];
    let stored = create(&mut admin, limit).await.unwrap();
    assert_eq!(
        (stored.realms, stored.users),
        (vec!["acme".to_owned()], vec!["kate".to_owned()])
    );
    let decided = service
        .evaluate_enrollment(evaluate("KATE"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decided.settings.unwrap().max_token_per_user, Some(1));

    // A Kelvin-sign subject is refused rather than matched to kate's policy.
    let refused = service
        .evaluate_enrollment(evaluate(KELVIN_KATE))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("user:"),
        "{}",
        refused.message()
    );
    let refused = service
        .validate_pin(policy_pb::ValidatePinRequest {
            realm: "\u{FF21}CME".into(),
            user: "kate".into(),
            pin: "1234".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("realm:"),
        "{}",
        refused.message()
    );
    stack.stop().await;
}

enroll_e2e::on_both_backends!(
    a_kelvin_sign_name_is_refused_not_folded_into_kate,
    policies_match_and_store_names_by_the_same_rule,
);
