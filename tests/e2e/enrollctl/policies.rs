//! `enrollctl policy ...` against a running policy service, and the `validate_only` dry
//! runs `policy apply` is built on.
use enroll_e2e::{Backend, TestStack, on_both_backends};
use enroll_shared::proto::policy::v1 as pb;

use super::{ctl, write};

async fn stored_policies(stack: &TestStack) -> Vec<pb::Policy> {
    stack
        .policy_admin()
        .list_policies(pb::ListPoliciesRequest::default())
        .await
        .expect("list policies")
        .into_inner()
        .policies
}

async fn history_len(stack: &TestStack) -> usize {
    stack
        .policy_admin()
        .list_policy_history(pb::ListPolicyHistoryRequest::default())
        .await
        .expect("history")
        .into_inner()
        .changes
        .len()
}

const POLICIES_V1: &str = "\
- name: corp-limits
  realms: [corp]
  actions:
    max_token_per_user: 3
    tokenlabel: '<u>@<r>'
- name: lab
  realms: [lab]
  actions:
    autoassignment: true
";

async fn policy_apply_dry_run_update_conflicts_and_explain(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "policies.yaml", POLICIES_V1);

    // A dry run shows the plan and stores nothing, not even history.
    let dry = ctl(&stack, &["policy", "apply", "-f", &file, "--dry-run"])
        .await
        .ok();
    assert!(
        dry.stdout.contains("+ create policy corp-limits\n"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("    + actions.max_token_per_user: \"3\"\n")
    );
    assert!(
        dry.stdout
            .contains("plan: 2 to create, 0 to update, 0 unchanged, 0 conflict(s)\n")
    );
    assert!(dry.stdout.contains("dry run: nothing applied\n"));
    assert!(stored_policies(&stack).await.is_empty());
    assert_eq!(history_len(&stack).await, 0);

    let applied = ctl(&stack, &["policy", "apply", "-f", &file]).await.ok();
    assert!(
        applied.stdout.contains("created policy corp-limits"),
        "{}",
        applied.stdout
    );
    assert!(applied.stdout.contains("created policy lab"));
    assert_eq!(stored_policies(&stack).await.len(), 2);

    // An update: the diff names the changed action, the other policy is unchanged.
    let file = write(
        dir.path(),
        "policies.yaml",
        &POLICIES_V1.replace("max_token_per_user: 3", "max_token_per_user: 5"),
    );
    let dry = ctl(&stack, &["policy", "apply", "-f", &file, "--dry-run"])
        .await
        .ok();
    assert!(
        dry.stdout.contains("~ update policy corp-limits\n"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("    ~ actions.max_token_per_user: \"3\" -> \"5\"\n")
    );
    assert!(dry.stdout.contains("= unchanged policy lab\n"));
    let stored = stored_policies(&stack).await;
    assert_eq!(
        stored[0].actions["max_token_per_user"], "3",
        "dry run stored nothing"
    );
    let applied = ctl(&stack, &["-o", "json", "policy", "apply", "-f", &file])
        .await
        .ok();
    let plan = applied.json();
    assert_eq!(plan["applied"], serde_json::json!(["corp-limits"]));
    assert_eq!(plan["policies"][0]["change"], "update");
    assert_eq!(
        plan["policies"][0]["changes"][0]["field"],
        "actions.max_token_per_user"
    );
    assert_eq!(plan["policies"][1]["change"], "unchanged");
    assert_eq!(
        stored_policies(&stack).await[0].actions["max_token_per_user"],
        "5"
    );

    // explain: setting -> value -> deciding policy.
    let explained = ctl(
        &stack,
        &[
            "policy",
            "explain",
            "--realm",
            "corp",
            "--user",
            "alice",
            "--action",
            "enroll",
            "--token-type",
            "totp",
        ],
    )
    .await
    .ok();
    let line = |setting: &str| -> Vec<String> {
        explained
            .stdout
            .lines()
            .find(|line| line.starts_with(&format!("{setting} ")))
            .unwrap_or_else(|| panic!("{setting} in\n{}", explained.stdout))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        line("max_token_per_user"),
        ["max_token_per_user", "5", "corp-limits"]
    );
    assert_eq!(
        line("token_label"),
        ["token_label", "alice@corp", "corp-limits"]
    );
    assert_eq!(
        line("autoassignment"),
        ["autoassignment", "false", "(default)"]
    );
    assert!(explained.stdout.starts_with("allowed:"));
    let decision = ctl(
        &stack,
        &[
            "-o",
            "json",
            "policy",
            "explain",
            "--realm",
            "lab",
            "--user",
            "bob",
            "--action",
            "autoassign",
            "--token-type",
            "totp",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["settings"]["autoassignment"], true);
    assert_eq!(decision["decided_by"]["autoassignment"], "lab");

    // A change that would conflict is shown and refused (exit 6) and stores nothing.
    let conflicting = write(
        dir.path(),
        "conflict.toml",
        "[[policies]]\nname = \"corp-labels\"\nrealms = [\"corp\"]\n\
         [policies.actions]\ntokenlabel = \"<s>\"\n",
    );
    let before = history_len(&stack).await;
    for extra in [&["--dry-run"][..], &[][..]] {
        let mut args = vec!["policy", "apply", "-f", conflicting.as_str()];
        args.extend_from_slice(extra);
        let refused = ctl(&stack, &args).await.failed_with(6);
        assert!(refused.stdout.contains("+ create policy corp-labels\n"));
        assert!(
            refused.stdout.contains("    ! conflict: "),
            "{}",
            refused.stdout
        );
        assert!(
            refused.stderr.contains("--allow-conflicts"),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(
        history_len(&stack).await,
        before,
        "a refused apply stores nothing"
    );
    ctl(&stack, &["policy", "get", "corp-labels"])
        .await
        .failed_with(3);
    let forced = ctl(
        &stack,
        &["policy", "apply", "-f", &conflicting, "--allow-conflicts"],
    )
    .await
    .ok();
    assert!(forced.stdout.contains("created policy corp-labels"));
    assert!(forced.stdout.contains("conflict: "), "{}", forced.stdout);

    // list / get / history / delete, in JSON and as tables.
    let listed = ctl(&stack, &["-o", "json", "policy", "list"])
        .await
        .ok()
        .json();
    let names: Vec<&str> = listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|policy| policy["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["corp-labels", "corp-limits", "lab"]);
    let got = ctl(&stack, &["policy", "get", "corp-limits"]).await.ok();
    assert!(got.stdout.contains("conflict: "), "{}", got.stdout);
    let history = ctl(&stack, &["policy", "history", "corp-limits"])
        .await
        .ok();
    assert!(
        // The API key's name, with enrollctl's actor beside it.
        history
            .stdout
            .contains("update  test-admin (for e2e-operator)"),
        "{}",
        history.stdout
    );
    assert!(
        history
            .stdout
            .contains("~ actions.max_token_per_user: \"3\" -> \"5\"")
    );
    ctl(&stack, &["policy", "delete", "corp-labels"]).await.ok();
    let missing = ctl(&stack, &["policy", "get", "corp-labels"])
        .await
        .failed_with(3);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("reason: POLICY_NOT_FOUND (domain enroll)")
    );
}

/// `validate_only` on the wire: the would-be policy with its conflicts, nothing stored.
async fn validate_only_stores_nothing(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();
    let mut existing = enroll_e2e::realm_policy("labels", "corp", &[("tokenlabel", "<u>")]);
    existing.active = true;
    let existing = stack.create_policy(existing).await;
    let before = history_len(&stack).await;
    let candidate = enroll_e2e::realm_policy("other-labels", "corp", &[("TOKENLABEL", "<s>")]);
    let would_be = admin
        .create_policy(pb::CreatePolicyRequest {
            policy: Some(candidate),
            actor: String::new(),
            validate_only: true,
        })
        .await
        .expect("validate create")
        .into_inner();
    assert_eq!(would_be.etag, "", "nothing stored, no etag");
    assert_eq!(
        would_be.actions["tokenlabel"], "<s>",
        "normalized as a write would"
    );
    assert_eq!(would_be.conflicts.len(), 1, "{:?}", would_be.conflicts);
    assert_eq!(would_be.conflicts[0].other_policy, "labels");
    let mut changed = existing.clone();
    changed.actions.insert("tokenlabel".into(), "<r>".into());
    let updated = admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(changed.clone()),
            etag: existing.etag.clone(),
            actor: String::new(),
            validate_only: true,
        })
        .await
        .expect("validate update")
        .into_inner();
    assert_eq!(updated.etag, existing.etag);
    assert_eq!(updated.actions["tokenlabel"], "<r>");
    let stale = admin
        .update_policy(pb::UpdatePolicyRequest {
            policy: Some(changed),
            etag: "stale".into(),
            actor: String::new(),
            validate_only: true,
        })
        .await
        .expect_err("a stale etag is refused as a write would be");
    assert_eq!(stale.code(), tonic::Code::Aborted);
    let duplicate = admin
        .create_policy(pb::CreatePolicyRequest {
            policy: Some(existing.clone()),
            actor: String::new(),
            validate_only: true,
        })
        .await
        .expect_err("an existing name is refused as a write would be");
    assert_eq!(duplicate.code(), tonic::Code::AlreadyExists);
    assert_eq!(history_len(&stack).await, before);
    let stored = stored_policies(&stack).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0], existing);
}

on_both_backends!(
    policy_apply_dry_run_update_conflicts_and_explain,
    validate_only_stores_nothing,
);
