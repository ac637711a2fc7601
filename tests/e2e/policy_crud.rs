//! Policy CRUD: validation on write, optimistic updates, pagination, history.
use enroll_e2e::{Backend, PolicyClient, TestStack, create, policy};
use enroll_shared::proto::policy::v1 as pb;
use enroll_shared::status::reason;
use tonic::Code;

async fn count(client: &mut PolicyClient) -> usize {
    client
        .list_policies(pb::ListPoliciesRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .policies
        .len()
}

async fn create_get_update_delete_with_history(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();

    let mut input = policy(
        "corp-limits",
        &[("max_token_per_user", "3"), ("LOSTTOKENPWLEN", "12")],
    );
    input.realms = vec!["corp".into()];
    input.clients = vec!["10.0.0.0/8".into(), "!10.66.0.0/16".into()];
    input.description = "limits for corp".into();
    let created = create(&mut admin, input).await.unwrap();
    assert_eq!(created.scope, "enrollment");
    assert_eq!(created.priority, 1);
    assert_eq!(
        created.actions["lostTokenPWLen"], "12",
        "action names are normalized"
    );
    assert!(!created.etag.is_empty());
    assert!(created.create_time.is_some());

    let fetched = admin
        .get_policy(pb::GetPolicyRequest {
            name: "corp-limits".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);

    let mut changed = fetched.clone();
    changed
        .actions
        .insert("max_token_per_user".into(), "5".into());
    let updated = admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(changed.clone()),
            etag: fetched.etag.clone(),
            actor: "alice@console".into(),
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.actions["max_token_per_user"], "5");
    assert_ne!(updated.etag, fetched.etag);
    assert_eq!(updated.create_time, created.create_time);

    // A second writer holding the old etag loses.
    let stale = admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(changed),
            etag: fetched.etag.clone(),
            actor: String::new(),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale).as_deref(), Some("ETAG_MISMATCH"));

    let missing_etag = admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(updated.clone()),
            etag: String::new(),
            actor: String::new(),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing_etag.code(), Code::InvalidArgument);
    assert!(missing_etag.message().contains("etag"));

    admin
        .delete_policy(pb::DeletePolicyRequest {
            name: "corp-limits".into(),
            etag: updated.etag.clone(),
            actor: String::new(),
        })
        .await
        .unwrap();
    let gone = admin
        .get_policy(pb::GetPolicyRequest {
            name: "corp-limits".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = admin
        .delete_policy(pb::DeletePolicyRequest {
            name: "corp-limits".into(),
            etag: String::new(),
            actor: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    // History: newest first, with actor and before/after.
    let mut ops = stack.policy_ops();
    let history = ops
        .list_policy_history(pb::ListPolicyHistoryRequest {
            name: "corp-limits".into(),
            page_size: 0,
            page_token: String::new(),
            after_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = history.changes.iter().map(|c| c.change.as_str()).collect();
    assert_eq!(kinds, ["delete", "update", "create"]);
    assert_eq!(
        history.changes[0].actor, "test-admin",
        "defaults to the API key name"
    );
    assert_eq!(
        history.changes[1].actor, "test-admin (for alice@console)",
        "a caller-supplied actor stands beside the key's name, never instead"
    );
    assert_eq!(
        history.changes[1].before.as_ref().unwrap().actions["max_token_per_user"],
        "3"
    );
    assert_eq!(
        history.changes[1].after.as_ref().unwrap().actions["max_token_per_user"],
        "5"
    );
    assert!(history.changes[0].after.is_none() && history.changes[2].before.is_none());
}

async fn invalid_policies_are_refused_and_store_nothing(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();
    create(&mut admin, policy("existing", &[])).await.unwrap();

    let with = |f: fn(&mut pb::Policy)| {
        let mut p = policy("candidate", &[("max_token_per_user", "2")]);
        f(&mut p);
        p
    };
    let cases: Vec<(pb::Policy, Code, &str)> = vec![
        (policy("", &[]), Code::InvalidArgument, "policy.name"),
        (
            policy("has space", &[]),
            Code::InvalidArgument,
            "policy.name",
        ),
        (
            policy("p", &[("max_tokens", "1")]),
            Code::InvalidArgument,
            "policy.actions.max_tokens",
        ),
        (
            policy("p", &[("max_token_per_user", "three")]),
            Code::InvalidArgument,
            "max_token_per_user",
        ),
        (
            policy("p", &[("otp_pin_random", "65")]),
            Code::InvalidArgument,
            "otp_pin_random",
        ),
        (
            policy("p", &[("lostTokenValid", "0")]),
            Code::InvalidArgument,
            "lostTokenValid",
        ),
        (
            policy("p", &[("autoassignment", "maybe")]),
            Code::InvalidArgument,
            "autoassignment",
        ),
        (
            policy("p", &[("tokenlabel", "<x>")]),
            Code::InvalidArgument,
            "tokenlabel",
        ),
        (
            policy("p", &[("webauthn_device_type", "platform")]),
            Code::InvalidArgument,
            "webauthn_device_type",
        ),
        (
            policy("p", &[("token_types", "totp,sms")]),
            Code::InvalidArgument,
            "token_types",
        ),
        (
            with(|p| p.clients = vec!["10.0.0.0/33".into()]),
            Code::InvalidArgument,
            "policy.clients[0]",
        ),
        (
            with(|p| p.clients = vec!["2001:db8::/32".into(), "not-an-ip".into()]),
            Code::InvalidArgument,
            "policy.clients[1]",
        ),
        (
            with(|p| p.realms = vec!["!".into()]),
            Code::InvalidArgument,
            "policy.realms[0]",
        ),
        (
            with(|p| p.users = vec!["a,b".into()]),
            Code::InvalidArgument,
            "policy.users[0]",
        ),
        (
            with(|p| p.scope = "admin".into()),
            Code::InvalidArgument,
            "policy.scope",
        ),
        (policy("existing", &[]), Code::AlreadyExists, "existing"),
    ];
    for (input, code, named) in cases {
        let status = create(&mut admin, input.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{input:?}: {}", status.message());
        assert!(
            status.message().contains(named),
            "`{}` should name `{named}`",
            status.message()
        );
    }
    let missing = admin
        .create_policy(pb::CreatePolicyRequest {
            policy: None,
            actor: String::new(),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(
        count(&mut admin).await,
        1,
        "nothing but the first policy is stored"
    );

    // A bad update leaves the stored policy as it was.
    let existing = admin
        .get_policy(pb::GetPolicyRequest {
            name: "existing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bad = existing.clone();
    bad.actions
        .insert("max_token_per_realm".into(), "-5".into());
    let status = admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(bad),
            etag: existing.etag.clone(),
            actor: String::new(),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let after = admin
        .get_policy(pb::GetPolicyRequest {
            name: "existing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, existing);
}

async fn list_paginates_in_name_order(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();
    for name in ["delta", "alpha", "echo", "charlie", "bravo"] {
        create(&mut admin, policy(name, &[])).await.unwrap();
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_policies(pb::ListPoliciesRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.policies.len() <= 2);
        names.extend(page.policies.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["alpha", "bravo", "charlie", "delta", "echo"]);
    assert_eq!(pages, 3);
    let bad = admin
        .list_policies(pb::ListPoliciesRequest {
            page_size: 5000,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_size"));
    let bad = admin
        .list_policies(pb::ListPoliciesRequest {
            page_size: 1,
            page_token: "zz".into(),
        })
        .await
        .unwrap_err();
    assert!(bad.message().contains("page_token"));
}

enroll_e2e::on_both_backends!(
    create_get_update_delete_with_history,
    invalid_policies_are_refused_and_store_nothing,
    list_paginates_in_name_order,
);
