use chrono::Utc;

use super::*;
use crate::actions::DeviceType;
use crate::patterns::parse_client_ip;
use crate::policy::tests::spec;

fn stored(spec: PolicySpec) -> StoredPolicy {
    StoredPolicy {
        spec,
        etag: "1".into(),
        create_time: Utc::now(),
        update_time: Utc::now(),
    }
}

fn with(spec: PolicySpec, realms: &[&str], users: &[&str], clients: &[&str]) -> PolicySpec {
    PolicySpec {
        realms: realms.iter().map(|s| s.to_string()).collect(),
        users: users.iter().map(|s| s.to_string()).collect(),
        clients: clients.iter().map(|s| s.to_string()).collect(),
        ..spec
    }
}

fn set(specs: Vec<PolicySpec>) -> PolicySet {
    let stored: Vec<StoredPolicy> = specs.into_iter().map(stored).collect();
    let (set, skipped) = PolicySet::compile(7, &stored);
    assert!(skipped.is_empty(), "{skipped:?}");
    set
}

fn subject(realm: &str, user: &str, client: Option<&str>) -> Subject {
    Subject {
        realm: realm.into(),
        user: user.into(),
        client: client.map(|c| parse_client_ip(c).unwrap()),
        no_client: false,
    }
}

fn request(subject: Subject, action: Action, token_type: Option<TokenType>) -> EvaluationRequest {
    EvaluationRequest {
        subject,
        action,
        token_type,
        serial: None,
    }
}

#[test]
fn defaults_when_nothing_matches() {
    let set = set(vec![with(
        spec("other", 1, &[("max_token_per_user", "1")]),
        &["elsewhere"],
        &[],
        &[],
    )]);
    let decision = set
        .evaluate(&request(
            subject("corp", "alice", None),
            Action::Enroll,
            Some(TokenType::Totp),
        ))
        .unwrap();
    assert!(decision.allowed());
    assert!(decision.decided_by.is_empty());
    let s = &decision.settings;
    assert_eq!(s.max_token_per_user, None);
    assert_eq!(s.max_token_per_realm, None);
    assert_eq!(s.token_label, "<s>");
    assert!(!s.autoassignment && !s.otp_pin_encrypt);
    // Approval by default: a device registered without an admin's link waits for one.
    assert!(s.require_device_approval);
    assert_eq!((s.lost_token_pw_len, s.lost_token_valid_days), (10, 10));
    assert_eq!(s.lost_token_pw_contents.to_string(), "cCn");
    assert_eq!(s.webauthn_device_type, DeviceType::Any);
    assert_eq!(s.enrollment_link_ttl_hours, 24);
    assert_eq!(decision.policy_set_version, 7);
}

#[test]
fn the_client_address_is_required_where_a_policy_of_the_subject_matches_on_networks() {
    let mut office = spec("office", 1, &[("webauthn_device_type", "enclave_only")]);
    office.realms = vec!["corp".to_owned()];
    office.users = vec!["*".to_owned(), "!kiosk".to_owned()];
    office.clients = vec!["10.0.0.0/8".to_owned()];
    let set = set(vec![
        office,
        spec("other", 2, &[("autoassignment", "true")]),
    ]);
    let missing = set
        .require_client(&subject("corp", "alice", None))
        .unwrap_err();
    assert_eq!(missing.field, "client_ip");
    assert!(missing.message.contains("office"), "{missing:?}");
    let given = subject("corp", "alice", Some("192.0.2.1"));
    assert!(set.require_client(&given).is_ok());
    // No policy of another realm or user asks for it.
    assert!(set.require_client(&subject("lab", "alice", None)).is_ok());
    assert!(set.require_client(&subject("corp", "kiosk", None)).is_ok());
    let console = Subject {
        no_client: true,
        ..subject("corp", "alice", None)
    };
    assert!(
        set.require_client(&console).is_ok(),
        "an admin's own action"
    );
}

#[test]
fn the_streamed_contents_compile_to_the_same_decisions() {
    let mut office = spec("office", 1, &[("max_token_per_user", "2")]);
    office.clients = vec!["10.0.0.0/8".to_owned()];
    let mut inactive = spec("inactive", 1, &[("max_token_per_user", "1")]);
    inactive.active = false;
    let set = set(vec![
        office,
        spec("all", 2, &[("max_token_per_user", "5")]),
        inactive,
    ]);
    assert_eq!(
        set.specs()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["office", "all"],
        "active policies only, in (priority, name) order"
    );
    let (copy, unreadable) = PolicySet::from_specs(set.version(), set.specs());
    assert!(unreadable.is_empty());
    for client in [None, Some("10.1.1.1"), Some("192.0.2.1")] {
        let request = EvaluationRequest {
            subject: subject("corp", "alice", client),
            action: Action::Enroll,
            token_type: Some(TokenType::Totp),
            serial: None,
        };
        let (a, b) = (
            set.evaluate(&request).unwrap(),
            copy.evaluate(&request).unwrap(),
        );
        assert_eq!(a.settings.max_token_per_user, b.settings.max_token_per_user);
        assert_eq!(a.decided_by, b.decided_by);
        assert_eq!(a.policy_set_version, b.policy_set_version);
    }
}

/// (policies, realm, user, client, expected max_token_per_user, expected deciding policy)
#[test]
fn matching_and_resolution_table() {
    let limit = |name: &str, priority: u32, value: &str| {
        spec(name, priority, &[("max_token_per_user", value)])
    };
    type Case = (
        Vec<PolicySpec>,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<u32>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        // exact realm, case-insensitive
        (
            vec![with(limit("p", 1, "2"), &["Corp"], &[], &[])],
            "CORP",
            "alice",
            None,
            Some(2),
            Some("p"),
        ),
        // realm wildcard and exclusion
        (
            vec![with(limit("p", 1, "2"), &["*", "!lab"], &[], &[])],
            "lab",
            "alice",
            None,
            None,
            None,
        ),
        (
            vec![with(limit("p", 1, "2"), &["*", "!lab"], &[], &[])],
            "corp",
            "alice",
            None,
            Some(2),
            Some("p"),
        ),
        // user exclusion
        (
            vec![with(limit("p", 1, "2"), &[], &["*", "!bob"], &[])],
            "corp",
            "Bob",
            None,
            None,
            None,
        ),
        (
            vec![with(limit("p", 1, "2"), &[], &["*", "!bob"], &[])],
            "corp",
            "carol",
            None,
            Some(2),
            Some("p"),
        ),
        // user glob
        (
            vec![with(limit("p", 1, "2"), &[], &["svc-*"], &[])],
            "corp",
            "svc-backup",
            None,
            Some(2),
            Some("p"),
        ),
        // clients v4 CIDR with exclusion
        (
            vec![with(
                limit("p", 1, "2"),
                &[],
                &[],
                &["10.0.0.0/8", "!10.66.0.0/16"],
            )],
            "corp",
            "a",
            Some("10.1.1.1"),
            Some(2),
            Some("p"),
        ),
        (
            vec![with(
                limit("p", 1, "2"),
                &[],
                &[],
                &["10.0.0.0/8", "!10.66.0.0/16"],
            )],
            "corp",
            "a",
            Some("10.66.1.1"),
            None,
            None,
        ),
        (
            vec![with(limit("p", 1, "2"), &[], &[], &["10.0.0.0/8"])],
            "corp",
            "a",
            None,
            None,
            None,
        ),
        // clients v6
        (
            vec![with(limit("p", 1, "2"), &[], &[], &["2001:db8::/32"])],
            "corp",
            "a",
            Some("2001:db8::5"),
            Some(2),
            Some("p"),
        ),
        (
            vec![with(limit("p", 1, "2"), &[], &[], &["2001:db8::/32"])],
            "corp",
            "a",
            Some("2001:db9::5"),
            None,
            None,
        ),
        // lower priority number wins, whatever the value
        (
            vec![limit("strict", 2, "1"), limit("loose", 1, "5")],
            "corp",
            "a",
            None,
            Some(5),
            Some("loose"),
        ),
        // equal priority: the most restrictive limit
        (
            vec![limit("a", 3, "4"), limit("b", 3, "2")],
            "corp",
            "a",
            None,
            Some(2),
            Some("b"),
        ),
        // inactive policies are ignored
        (
            vec![
                PolicySpec {
                    active: false,
                    ..limit("off", 1, "1")
                },
                limit("on", 2, "3"),
            ],
            "corp",
            "a",
            None,
            Some(3),
            Some("on"),
        ),
        // a realm-indexed and a wildcard policy interleave by priority
        (
            vec![
                with(limit("realm", 2, "2"), &["corp"], &[], &[]),
                with(limit("all", 1, "9"), &["*"], &[], &[]),
            ],
            "corp",
            "a",
            None,
            Some(9),
            Some("all"),
        ),
    ];
    for (index, (specs, realm, user, client, expected, decided)) in cases.into_iter().enumerate() {
        let set = set(specs);
        let (settings, decided_by) = set.resolve(&subject(realm, user, client)).unwrap();
        assert_eq!(settings.max_token_per_user, expected, "case {index}");
        assert_eq!(
            decided_by.get("max_token_per_user").map(String::as_str),
            decided,
            "case {index}"
        );
    }
}

#[test]
fn equal_priority_disagreement_is_a_conflict_naming_both() {
    let set = set(vec![
        spec("label-a", 1, &[("tokenlabel", "<u>")]),
        spec("label-b", 1, &[("tokenlabel", "<s>")]),
    ]);
    let conflict = set.resolve(&subject("corp", "alice", None)).unwrap_err();
    assert_eq!(conflict.action, ActionName::TokenLabel);
    assert_eq!(
        (conflict.first.as_str(), conflict.second.as_str()),
        ("label-a", "label-b")
    );
    assert!(conflict.to_string().contains("label-a") && conflict.to_string().contains("label-b"));
}

#[test]
fn equal_values_and_bounds_do_not_conflict() {
    let set = set(vec![
        spec(
            "a",
            1,
            &[
                ("tokenlabel", "<u>"),
                ("otp_pin_minlength", "4"),
                ("otp_pin_maxlength", "12"),
                ("enrollment_link_ttl_hours", "48"),
            ],
        ),
        spec(
            "b",
            1,
            &[
                ("tokenlabel", "<u>"),
                ("otp_pin_minlength", "6"),
                ("otp_pin_maxlength", "10"),
                ("enrollment_link_ttl_hours", "12"),
            ],
        ),
    ]);
    let (settings, decided_by) = set.resolve(&subject("corp", "alice", None)).unwrap();
    assert_eq!(settings.otp_pin_minlength, 6);
    assert_eq!(settings.otp_pin_maxlength, 10);
    assert_eq!(settings.enrollment_link_ttl_hours, 12);
    assert_eq!(decided_by["otp_pin_minlength"], "b");
    assert_eq!(decided_by["token_label"], "a");
}

#[test]
fn templates_render_user_realm_and_serial() {
    let set = set(vec![spec(
        "labels",
        1,
        &[("tokenlabel", "<u>@<r>/<s>"), ("tokenissuer", "ACME <r>")],
    )]);
    let mut req = request(
        subject("Corp", "Alice", None),
        Action::Enroll,
        Some(TokenType::Totp),
    );
    let decision = set.evaluate(&req).unwrap();
    assert_eq!(decision.settings.token_label, "Alice@Corp/<s>");
    assert_eq!(decision.settings.token_issuer, "ACME Corp");
    req.serial = Some("TOTP0001".into());
    assert_eq!(
        set.evaluate(&req).unwrap().settings.token_label,
        "Alice@Corp/TOTP0001"
    );
}

#[test]
fn denials_carry_code_and_policy() {
    let set = set(vec![spec("types", 1, &[("token_types", "totp")])]);
    let decision = set
        .evaluate(&request(
            subject("corp", "a", None),
            Action::Enroll,
            Some(TokenType::Hotp),
        ))
        .unwrap();
    assert!(!decision.allowed());
    assert_eq!(decision.denials[0].code, "TOKEN_TYPE_NOT_ALLOWED");
    assert_eq!(decision.denials[0].policy.as_deref(), Some("types"));
    let link = set
        .evaluate(&request(
            subject("corp", "a", None),
            Action::CreateLink,
            None,
        ))
        .unwrap();
    assert_eq!(link.denials[0].code, "TOKEN_TYPE_NOT_ALLOWED");
    let auto = set
        .evaluate(&request(
            subject("corp", "a", None),
            Action::Autoassign,
            Some(TokenType::Totp),
        ))
        .unwrap();
    assert_eq!(auto.denials.len(), 1);
    assert_eq!(auto.denials[0].code, "AUTOASSIGNMENT_DISABLED");
    assert_eq!(auto.denials[0].policy, None);
}

#[test]
fn write_time_conflicts_consider_priority_and_overlap() {
    let set = set(vec![
        with(
            spec("corp-label", 1, &[("tokenlabel", "<u>")]),
            &["corp"],
            &[],
            &[],
        ),
        with(
            spec("lab-label", 1, &[("tokenlabel", "<s>")]),
            &["lab"],
            &[],
            &[],
        ),
        spec("low", 5, &[("tokenlabel", "<r>")]),
    ]);
    let candidate = |spec: PolicySpec| spec.validate().unwrap().1;
    let conflicts = set.conflicts_with(&candidate(spec("everyone", 1, &[("tokenlabel", "x")])));
    let names: Vec<&str> = conflicts.iter().map(|c| c.second.as_str()).collect();
    assert_eq!(names, ["corp-label", "lab-label"]);
    assert!(
        set.conflicts_with(&candidate(with(
            spec("n", 1, &[("tokenlabel", "x")]),
            &["other"],
            &[],
            &[]
        )))
        .is_empty()
    );
    assert!(
        set.conflicts_with(&candidate(spec(
            "limits",
            1,
            &[("max_token_per_user", "1")]
        )))
        .is_empty()
    );
    assert!(
        set.conflicts_with(&candidate(PolicySpec {
            active: false,
            ..spec("off", 1, &[("tokenlabel", "x")])
        }))
        .is_empty()
    );
}

mod authenticator_models {
    use super::*;
    use crate::authenticators::{AllowList, CertificationLevel, ModelList};

    const YUBIKEY_5: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
    const WINDOWS_HELLO: &str = "08987058-cadc-4b81-b6e1-30de50dcbe96";
    const TITAN: &str = "42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3";

    fn decide(specs: Vec<PolicySpec>) -> Decision {
        set(specs)
            .evaluate(&request(
                subject("corp", "alice", None),
                Action::RegisterDevice,
                None,
            ))
            .unwrap()
    }

    fn allow(value: &str) -> AllowList {
        AllowList::parse(value).unwrap()
    }

    #[test]
    fn defaults_restrict_nothing() {
        let decision = decide(vec![]);
        let s = &decision.settings;
        assert_eq!(s.webauthn_aaguid_allow, AllowList::Unrestricted);
        assert!(s.webauthn_aaguid_deny.is_empty());
        assert_eq!(
            s.webauthn_min_certification,
            CertificationLevel::NotFidoCertified
        );
        assert!(decision.allowed());
    }

    #[test]
    fn the_lowest_priority_number_decides() {
        let decision = decide(vec![
            spec(
                "broad",
                5,
                &[
                    ("webauthn_aaguid_allow", YUBIKEY_5),
                    ("webauthn_aaguid_deny", TITAN),
                    ("webauthn_min_certification", "FIDO_CERTIFIED_L2"),
                ],
            ),
            spec(
                "narrow",
                1,
                &[
                    ("webauthn_aaguid_allow", ""),
                    ("webauthn_min_certification", "fido_certified_l1"),
                ],
            ),
        ]);
        let s = &decision.settings;
        // An explicit empty allow list at a lower number lifts the restriction.
        assert_eq!(s.webauthn_aaguid_allow, AllowList::Unrestricted);
        assert_eq!(s.webauthn_aaguid_deny.to_string(), TITAN);
        assert_eq!(
            s.webauthn_min_certification,
            CertificationLevel::FidoCertifiedL1
        );
        assert_eq!(decision.decided_by["webauthn_aaguid_allow"], "narrow");
        assert_eq!(decision.decided_by["webauthn_aaguid_deny"], "broad");
        assert_eq!(decision.decided_by["webauthn_min_certification"], "narrow");
    }

    #[test]
    fn equal_priority_combines_to_the_most_restrictive() {
        let decision = decide(vec![
            spec(
                "a",
                1,
                &[
                    (
                        "webauthn_aaguid_allow",
                        &format!("{YUBIKEY_5},{WINDOWS_HELLO},YubiKey 5 Series"),
                    ),
                    ("webauthn_aaguid_deny", TITAN),
                    ("webauthn_min_certification", "FIDO_CERTIFIED_L1"),
                ],
            ),
            spec(
                "b",
                1,
                &[
                    (
                        "webauthn_aaguid_allow",
                        &format!("yubikey 5 series,{YUBIKEY_5}"),
                    ),
                    ("webauthn_aaguid_deny", "Feitian ePass FIDO"),
                    ("webauthn_min_certification", "FIDO_CERTIFIED_L2plus"),
                ],
            ),
            spec("c", 1, &[("webauthn_aaguid_allow", "")]),
            spec("later", 2, &[("webauthn_aaguid_allow", TITAN)]),
        ]);
        let s = &decision.settings;
        assert_eq!(
            s.webauthn_aaguid_allow,
            allow(&format!("{YUBIKEY_5},YubiKey 5 Series"))
        );
        assert_eq!(
            s.webauthn_aaguid_deny,
            ModelList::parse(&format!("{TITAN},Feitian ePass FIDO")).unwrap()
        );
        assert_eq!(
            s.webauthn_min_certification,
            CertificationLevel::FidoCertifiedL2Plus
        );
        // Every policy that took part in a combined list, in name order; the winner of a
        // bound.
        assert_eq!(decision.decided_by["webauthn_aaguid_allow"], "a,b,c");
        assert_eq!(decision.decided_by["webauthn_aaguid_deny"], "a,b");
        assert_eq!(decision.decided_by["webauthn_min_certification"], "b");
    }

    #[test]
    fn disjoint_allow_lists_at_equal_priority_allow_nothing() {
        let decision = decide(vec![
            spec("a", 1, &[("webauthn_aaguid_allow", YUBIKEY_5)]),
            spec("b", 1, &[("webauthn_aaguid_allow", WINDOWS_HELLO)]),
        ]);
        assert_eq!(
            decision.settings.webauthn_aaguid_allow,
            AllowList::Only(ModelList::default())
        );
        assert_eq!(decision.decided_by["webauthn_aaguid_allow"], "a,b");
    }

    #[test]
    fn combined_lists_never_count_as_conflicts() {
        let set = set(vec![
            spec("a", 1, &[("webauthn_aaguid_allow", YUBIKEY_5)]),
            spec("b", 1, &[("webauthn_min_certification", "FIDO_CERTIFIED")]),
        ]);
        let candidate = PolicySet::compile_one(&spec(
            "c",
            1,
            &[
                ("webauthn_aaguid_allow", WINDOWS_HELLO),
                ("webauthn_aaguid_deny", TITAN),
                ("webauthn_min_certification", "FIDO_CERTIFIED_L3"),
            ],
        ))
        .unwrap();
        assert!(set.conflicts_with(&candidate).is_empty());
    }
}
