//! The authenticator model actions (`webauthn_aaguid_allow`, `webauthn_aaguid_deny`,
//! `webauthn_min_certification`): validated on write, combined at equal priority and
//! returned by EvaluateEnrollment with the policies that decided them.
use enroll_e2e::{Backend, TestStack, create, policy};
use enroll_shared::proto::policy::v1 as pb;
use tonic::Code;

const YUBIKEY_5: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
const WINDOWS_HELLO: &str = "08987058-cadc-4b81-b6e1-30de50dcbe96";
const TITAN: &str = "42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3";

fn register(realm: &str) -> pb::EvaluateEnrollmentRequest {
    pb::EvaluateEnrollmentRequest {
        realm: realm.into(),
        user: "alice".into(),
        action: pb::Action::RegisterDevice as i32,
        ..Default::default()
    }
}

fn in_realm(mut policy: pb::Policy, realm: &str, priority: u32) -> pb::Policy {
    policy.realms = vec![realm.into()];
    policy.priority = priority;
    policy
}

async fn bad_values_are_refused_naming_the_field_and_item(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();
    let cases = [
        (
            "webauthn_aaguid_allow",
            "YubiKey 5 Series, CB69481E8FF7403993EC0A2729A154A8".to_owned(),
            "CB69481E8FF7403993EC0A2729A154A8",
        ),
        ("webauthn_aaguid_deny", format!("{{{TITAN}}}"), TITAN),
        (
            "webauthn_aaguid_allow",
            "Key\u{1b}[2J".to_owned(),
            "control character",
        ),
        (
            "webauthn_min_certification",
            "LEVEL_2".to_owned(),
            "LEVEL_2",
        ),
    ];
    for (action, value, named) in cases {
        let status = create(&mut admin, policy("bad", &[(action, &value)]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{action} = {value:?}");
        assert_eq!(
            enroll_shared::status::field(&status).as_deref(),
            Some(format!("policy.actions.{action}").as_str())
        );
        assert!(
            status.message().contains(named),
            "{} should name {named}",
            status.message()
        );
    }
    // Valid values are stored normalised: AAGUIDs lowercase, model names trimmed, the
    // level in its MDS3 spelling.
    let stored = create(
        &mut admin,
        policy(
            "models",
            &[
                (
                    "webauthn_aaguid_allow",
                    &format!(" {} ,  YubiKey 5 Series ", YUBIKEY_5.to_uppercase()),
                ),
                ("webauthn_min_certification", "fido_certified_l1plus"),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        stored.actions["webauthn_aaguid_allow"],
        format!("{YUBIKEY_5},YubiKey 5 Series")
    );
    assert_eq!(
        stored.actions["webauthn_min_certification"],
        "FIDO_CERTIFIED_L1plus"
    );
}

async fn decisions_combine_equal_priorities_to_the_most_restrictive(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();
    for spec in [
        in_realm(
            policy(
                "keys-a",
                &[
                    (
                        "webauthn_aaguid_allow",
                        &format!("{YUBIKEY_5},{WINDOWS_HELLO},YubiKey 5 Series"),
                    ),
                    ("webauthn_aaguid_deny", TITAN),
                    ("webauthn_min_certification", "FIDO_CERTIFIED_L1"),
                ],
            ),
            "corp",
            5,
        ),
        in_realm(
            policy(
                "keys-b",
                &[
                    (
                        "webauthn_aaguid_allow",
                        &format!("{YUBIKEY_5},yubikey 5 series"),
                    ),
                    ("webauthn_aaguid_deny", "Feitian ePass FIDO"),
                    ("webauthn_min_certification", "FIDO_CERTIFIED_L2"),
                ],
            ),
            "corp",
            5,
        ),
        // A larger number never decides what a smaller one set.
        in_realm(
            policy(
                "keys-loose",
                &[
                    ("webauthn_aaguid_allow", ""),
                    ("webauthn_min_certification", "FIDO_CERTIFIED_L3plus"),
                ],
            ),
            "corp",
            9,
        ),
        in_realm(
            policy("only-yubikey", &[("webauthn_aaguid_allow", YUBIKEY_5)]),
            "lab",
            5,
        ),
        in_realm(
            policy("only-hello", &[("webauthn_aaguid_allow", WINDOWS_HELLO)]),
            "lab",
            5,
        ),
    ] {
        create(&mut admin, spec).await.unwrap();
    }
    let mut service = stack.policy_service();

    let corp = service
        .evaluate_enrollment(register("corp"))
        .await
        .unwrap()
        .into_inner();
    assert!(corp.allowed);
    let settings = corp.settings.unwrap();
    assert!(settings.webauthn_aaguid_allow_restricted);
    assert_eq!(
        settings.webauthn_aaguid_allow,
        [YUBIKEY_5, "YubiKey 5 Series"]
    );
    assert_eq!(settings.webauthn_aaguid_deny, [TITAN, "Feitian ePass FIDO"]);
    assert_eq!(
        settings.webauthn_min_certification,
        pb::CertificationLevel::FidoCertifiedL2 as i32
    );
    assert_eq!(corp.decided_by["webauthn_aaguid_allow"], "keys-a,keys-b");
    assert_eq!(corp.decided_by["webauthn_aaguid_deny"], "keys-a,keys-b");
    assert_eq!(corp.decided_by["webauthn_min_certification"], "keys-b");

    // Disjoint allow lists at equal priority let no model register: the list is empty but
    // restricted, never "no restriction".
    let lab = service
        .evaluate_enrollment(register("lab"))
        .await
        .unwrap()
        .into_inner();
    let settings = lab.settings.unwrap();
    assert!(settings.webauthn_aaguid_allow_restricted);
    assert!(settings.webauthn_aaguid_allow.is_empty());
    assert_eq!(
        lab.decided_by["webauthn_aaguid_allow"],
        "only-hello,only-yubikey"
    );

    // No policy: no restriction and no minimum.
    let elsewhere = service
        .evaluate_enrollment(register("elsewhere"))
        .await
        .unwrap()
        .into_inner();
    let settings = elsewhere.settings.unwrap();
    assert!(!settings.webauthn_aaguid_allow_restricted);
    assert!(settings.webauthn_aaguid_allow.is_empty() && settings.webauthn_aaguid_deny.is_empty());
    assert_eq!(
        settings.webauthn_min_certification,
        pb::CertificationLevel::NotFidoCertified as i32
    );
    assert!(!elsewhere.decided_by.contains_key("webauthn_aaguid_allow"));
}

enroll_e2e::on_both_backends!(
    bad_values_are_refused_naming_the_field_and_item,
    decisions_combine_equal_priorities_to_the_most_restrictive,
);
