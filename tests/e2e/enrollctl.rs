//! `enrollctl`, run in-process against running services: every command group, JSON output
//! parsed, the exit codes scripts test, TLS and the config file.
use std::path::Path;

use enroll_e2e::{
    ADMIN_KEY, Backend, OPS_KEY, TestStack, on_both_backends, register_device_by_link,
};
use enroll_shared::proto::policy::v1 as pb;
use serde_json::Value;

/// What one run printed and returned.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}):\n{}", self.stdout))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn failed_with(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Where nothing listens.
const CLOSED_PORT: &str = "http://127.0.0.1:1";

/// Runs `enrollctl` with `args` against the stack's services with `key`, no config file.
async fn ctl_as(stack: &TestStack, key: &str, args: &[&str], stdin: &str) -> Run {
    let device = stack
        .devices
        .first()
        .map(|device| device.url())
        .unwrap_or_else(|| CLOSED_PORT.to_owned());
    ctl_reaching(stack, &device, key, args, stdin).await
}

/// [`ctl_as`] with the device service at `device`.
async fn ctl_reaching(
    stack: &TestStack,
    device: &str,
    key: &str,
    args: &[&str],
    stdin: &str,
) -> Run {
    let policy = stack.policy().url();
    let mut all = vec![
        "enrollctl",
        "--config",
        "/dev/null",
        "--policy-addr",
        &policy,
        "--device-addr",
        device,
        "--api-key",
        key,
        "--actor",
        "e2e-operator",
    ];
    all.extend_from_slice(args);
    run_args(&all, stdin).await
}

async fn run_args(args: &[&str], stdin: &str) -> Run {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
    let code =
        enrollctl::run_with_input(args.iter().copied(), &mut input, &mut out, &mut err).await;
    Run {
        code,
        stdout: String::from_utf8(out).expect("UTF-8 stdout"),
        stderr: String::from_utf8(err).expect("UTF-8 stderr"),
    }
}

async fn ctl(stack: &TestStack, args: &[&str]) -> Run {
    ctl_as(stack, ADMIN_KEY, args, "").await
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path.display().to_string()
}

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
        history.stdout.contains("update  e2e-operator"),
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

async fn token_lifecycle(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let enrolled = ctl(
        &stack,
        &["token", "enroll", "--realm", "corp", "--user", "alice"],
    )
    .await
    .ok();
    assert!(
        enrolled.stdout.contains("otpauth URI:"),
        "{}",
        enrolled.stdout
    );
    assert!(enrolled.stdout.contains("otpauth://totp/"));
    assert!(enrolled.stdout.contains("secret (base32):"));
    assert!(
        enrolled.stdout.contains('█') && enrolled.stdout.contains('▀'),
        "a QR code"
    );
    assert!(enrolled.stderr.contains("shown this once"));
    let serial = enrolled
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("serial:"))
        .unwrap()
        .trim()
        .to_owned();

    let second = ctl(
        &stack,
        &[
            "-o", "json", "token", "enroll", "--realm", "corp", "--user", "bob", "--type", "hotp",
        ],
    )
    .await
    .ok()
    .json();
    let bob_serial = second["token"]["serial"].as_str().unwrap().to_owned();
    assert!(
        second["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://hotp/")
    );
    assert!(!second["secret_base32"].as_str().unwrap().is_empty());
    assert_eq!(second["token"]["type"], "TOKEN_TYPE_HOTP");

    let listed = ctl(&stack, &["token", "list", "--realm", "corp"])
        .await
        .ok();
    assert!(listed.stdout.starts_with("SERIAL"));
    assert!(listed.stdout.contains(&serial) && listed.stdout.contains(&bob_serial));
    assert!(
        !listed.stdout.contains("otpauth"),
        "lists never show secrets"
    );
    let listed = ctl(&stack, &["-o", "json", "token", "list", "--user", "alice"])
        .await
        .ok()
        .json();
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1);

    let disabled = ctl(&stack, &["token", "disable", &serial]).await.ok();
    assert!(
        disabled.stdout.contains("state:       disabled"),
        "{}",
        disabled.stdout
    );
    let token = ctl(&stack, &["-o", "json", "token", "get", &serial])
        .await
        .ok()
        .json();
    assert_eq!(token["state"], "TOKEN_STATE_DISABLED");
    ctl(&stack, &["token", "enable", &serial]).await.ok();

    let pinned = ctl_as(
        &stack,
        ADMIN_KEY,
        &["token", "set-pin", &serial, "--pin-stdin"],
        "4711\n",
    )
    .await
    .ok();
    assert!(
        pinned.stdout.contains("pin set:     yes"),
        "{}",
        pinned.stdout
    );
    assert!(!pinned.stdout.contains("4711") && !pinned.stderr.contains("4711"));

    let lost = ctl(&stack, &["token", "lost", &bob_serial]).await.ok();
    assert!(lost.stdout.contains("password:"), "{}", lost.stdout);
    assert!(lost.stdout.contains("temporary token:"));

    ctl(&stack, &["token", "delete", &serial]).await.ok();
    let gone = ctl(&stack, &["token", "get", &serial]).await.failed_with(3);
    assert!(gone.stderr.contains("NOT_FOUND"));
}

async fn import_reports_bad_rows_with_file_lines(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let seed = "3132333435363738393031323334353637383930";
    let csv = format!(
        "# hardware tokens, batch 7\nHW0001,{seed},totp,6,30\nHW0002,{seed},totp,6,30\n\n\
         HW0003,{seed},totp,7,30\nHW0004,{seed},hotp,6,0\n"
    );
    let file = write(dir.path(), "tokens.csv", &csv);
    let imported = ctl(
        &stack,
        &[
            "token",
            "import",
            &file,
            "--realm",
            "pool",
            "--batch-size",
            "2",
        ],
    )
    .await
    .failed_with(8);
    assert!(
        imported.stdout.contains("imported 3 of 4 row(s)"),
        "{}",
        imported.stdout
    );
    let bad_row = imported
        .stdout
        .lines()
        .find(|line| line.contains("HW0003"))
        .unwrap_or_else(|| panic!("the bad row in\n{}", imported.stdout));
    assert!(
        bad_row.starts_with("5 "),
        "the file's line number: {bad_row}"
    );
    assert!(bad_row.contains("INVALID_ARGUMENT"));
    assert!(
        imported.stderr.contains("import: 2/4 rows sent (50%)"),
        "{}",
        imported.stderr
    );
    assert!(
        imported
            .stderr
            .contains("import: 4/4 rows sent (100%), 3 imported, 1 rejected")
    );
    assert!(!imported.stdout.contains(seed) && !imported.stderr.contains(seed));

    let pool = ctl(
        &stack,
        &["-o", "json", "token", "list", "--realm", "pool", "--pool"],
    )
    .await
    .ok()
    .json();
    assert_eq!(pool["tokens"].as_array().unwrap().len(), 3);
    let again = ctl(
        &stack,
        &["-o", "json", "token", "import", &file, "--realm", "pool"],
    )
    .await
    .failed_with(8)
    .json();
    assert_eq!(again["imported"], 0);
    assert_eq!(again["errors"].as_array().unwrap().len(), 4);
    assert_eq!(again["errors"][0]["code"], "ALREADY_EXISTS");
    assert_eq!(again["errors"][0]["line"], 2);
}

async fn links_devices_and_audit(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let created = ctl(
        &stack,
        &[
            "link", "create", "--realm", "corp", "--user", "alice", "--ttl", "2h",
        ],
    )
    .await
    .ok();
    let url = created
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("URL:"))
        .unwrap_or_else(|| panic!("URL in\n{}", created.stdout))
        .trim()
        .to_owned();
    assert!(url.contains('#'), "the secret is in the fragment: {url}");
    let links = ctl(&stack, &["-o", "json", "link", "list", "--realm", "corp"])
        .await
        .ok()
        .json();
    let link = &links["links"][0];
    assert_eq!(link["state"], "LINK_STATE_ACTIVE");
    assert_eq!(link["url"], "", "lists never carry the secret");
    assert_eq!(link["created_by"], "e2e-operator");
    let id = link["id"].as_str().unwrap().to_owned();
    let revoked = ctl(&stack, &["link", "revoke", &id]).await.ok();
    assert!(
        revoked.stdout.contains("state:        revoked"),
        "{}",
        revoked.stdout
    );

    let device =
        register_device_by_link(&mut stack.admin(), &mut stack.proxy(), "corp", "bob").await;
    let listed = ctl(&stack, &["device", "list", "--user", "bob"]).await.ok();
    assert!(listed.stdout.contains(&device.id), "{}", listed.stdout);
    assert!(listed.stdout.contains("approved"));
    let devices = ctl(
        &stack,
        &["-o", "json", "device", "list", "--state", "approved"],
    )
    .await
    .ok()
    .json();
    assert_eq!(devices["devices"][0]["id"], device.id.as_str());
    let revoked = ctl(
        &stack,
        &[
            "-o", "json", "device", "revoke", &device.id, "--reason", "stolen",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(revoked["state"], "DEVICE_STATE_REVOKED");

    let audit = ctl(&stack, &["audit", "list", "--action", "create_link"])
        .await
        .ok();
    assert!(audit.stdout.starts_with("ID "));
    assert!(audit.stdout.contains("create_link"), "{}", audit.stdout);
    let events = ctl(
        &stack,
        &["-o", "json", "audit", "list", "--action", "revoke_device"],
    )
    .await
    .ok()
    .json();
    assert_eq!(events["events"][0]["subject"], device.id.as_str());
    assert_eq!(events["events"][0]["actor"], "test-admin");

    // tail: no backlog, then follows an event made while it runs; --max-events ends it.
    let tail = ctl(
        &stack,
        &[
            "-o",
            "json",
            "audit",
            "tail",
            "--backlog",
            "0",
            "--interval",
            "0.1",
            "--duration",
            "20s",
            "--max-events",
            "1",
            "--realm",
            "tailed",
        ],
    );
    let enroll_meanwhile = async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        ctl(
            &stack,
            &[
                "token", "enroll", "--realm", "tailed", "--user", "carol", "--no-qr",
            ],
        )
        .await
        .ok();
    };
    let (tail, ()) = tokio::join!(tail, enroll_meanwhile);
    let tail = tail.ok();
    let lines: Vec<Value> = tail
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", tail.stdout);
    assert_eq!(lines[0]["action"], "enroll_token");
    assert_eq!(lines[0]["user"], "carol");
    // A bounded tail with a backlog prints the past events and stops on time.
    let bounded = ctl(
        &stack,
        &[
            "audit",
            "tail",
            "--backlog",
            "2",
            "--interval",
            "0.1",
            "--duration",
            "1s",
        ],
    )
    .await
    .ok();
    assert_eq!(bounded.stdout.lines().count(), 2, "{}", bounded.stdout);
}

async fn exit_codes_and_error_messages(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let missing = ctl(&stack, &["token", "get", "TOTP000000000000"])
        .await
        .failed_with(3);
    assert!(
        missing.stderr.starts_with("error: device service (http://"),
        "{}",
        missing.stderr
    );
    let json_error = ctl(&stack, &["-o", "json", "token", "get", "TOTP000000000000"])
        .await
        .failed_with(3);
    let error: Value = serde_json::from_str(json_error.stderr.trim()).expect("a JSON error");
    assert_eq!(error["error"]["code"], "NOT_FOUND");
    assert_eq!(error["exit_code"], 3);

    let denied = ctl_as(
        &stack,
        OPS_KEY,
        &["token", "enroll", "--realm", "corp", "--user", "x"],
        "",
    )
    .await
    .failed_with(4);
    assert!(
        denied.stderr.contains("PERMISSION_DENIED"),
        "{}",
        denied.stderr
    );
    let unknown = ctl_as(&stack, "not-a-key", &["policy", "list"], "")
        .await
        .failed_with(4);
    assert!(unknown.stderr.contains("UNAUTHENTICATED"));
    assert!(unknown.stderr.contains("hint: check the API key"));

    let invalid = ctl(&stack, &["token", "enroll", "--realm", " ", "--user", "x"])
        .await
        .failed_with(7);
    assert!(
        invalid.stderr.contains("INVALID_ARGUMENT"),
        "{}",
        invalid.stderr
    );
    assert!(
        invalid
            .stderr
            .contains("reason: INVALID_FIELD (domain enroll)")
    );
    assert!(
        invalid.stderr.contains("field: realm"),
        "{}",
        invalid.stderr
    );

    let usage = ctl(&stack, &["token", "frobnicate"]).await.failed_with(2);
    assert!(usage.stderr.contains("frobnicate"));
    let help = run_args(&["enrollctl", "--help"], "").await.ok();
    assert!(help.stdout.contains("Exit codes:"), "{}", help.stdout);
    assert!(help.stdout.contains("ENROLLCTL_API_KEY"));

    let healthy = ctl(&stack, &["health"]).await.ok();
    assert_eq!(
        healthy.stdout.matches("SERVING").count(),
        2,
        "{}",
        healthy.stdout
    );
    let closed = ctl_reaching(&stack, CLOSED_PORT, ADMIN_KEY, &["token", "list"], "")
        .await
        .failed_with(5);
    assert!(closed.stderr.contains("UNAVAILABLE"), "{}", closed.stderr);
    assert!(
        closed
            .stderr
            .contains("hint: is the device service running")
    );
    let unhealthy = ctl_reaching(
        &stack,
        CLOSED_PORT,
        ADMIN_KEY,
        &["-o", "json", "health"],
        "",
    )
    .await
    .failed_with(5)
    .json();
    assert_eq!(unhealthy["healthy"], false);
}

/// Addresses, mutual TLS material and the key from a config file profile.
async fn config_file_profiles_and_mutual_tls(backend: Backend) {
    let stack = TestStack::builder(backend)
        .policy_tls(true)
        .policy_only()
        .start()
        .await;
    let pki = stack.pki();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "key", &format!("{ADMIN_KEY}\n"));
    let config = write(
        dir.path(),
        "config.toml",
        &format!(
            "api_key_file = \"key\"\nca = \"{ca}\"\ndefault_profile = \"mtls\"\n\n\
             [profiles.mtls]\npolicy_addr = \"{url}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [profiles.no-client-cert]\npolicy_addr = \"{url}\"\n",
            ca = pki.path("ca.pem").display(),
            url = stack.policy().url(),
            cert = pki.path("client.pem").display(),
            key = pki.path("client.key").display(),
        ),
    );
    let listed = run_args(&["enrollctl", "--config", &config, "policy", "list"], "")
        .await
        .ok();
    assert!(listed.stdout.starts_with("NAME"), "{}", listed.stdout);
    let refused = run_args(
        &[
            "enrollctl",
            "--config",
            &config,
            "--profile",
            "no-client-cert",
            "policy",
            "list",
        ],
        "",
    )
    .await
    .failed_with(5);
    assert!(
        refused.stderr.contains("(--cert, --key)"),
        "{}",
        refused.stderr
    );
    let unknown = run_args(
        &[
            "enrollctl",
            "--config",
            &config,
            "--profile",
            "dev",
            "policy",
            "list",
        ],
        "",
    )
    .await
    .failed_with(2);
    assert!(
        unknown.stderr.contains("no profile `dev`"),
        "{}",
        unknown.stderr
    );
}

on_both_backends!(
    policy_apply_dry_run_update_conflicts_and_explain,
    validate_only_stores_nothing,
    token_lifecycle,
    import_reports_bad_rows_with_file_lines,
    links_devices_and_audit,
    exit_codes_and_error_messages,
    config_file_profiles_and_mutual_tls,
);
