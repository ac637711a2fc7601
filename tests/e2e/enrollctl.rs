//! `enrollctl`, run in-process against running services: every command group, JSON output
//! parsed, the exit codes scripts test, TLS and the config file.
use std::path::Path;

use enroll_e2e::{
    ADMIN_KEY, Backend, OPS_KEY, TestStack, on_both_backends, register_device_by_link,
};
use serde_json::Value;

mod events;
mod otp_links;
mod policies;
mod upgrade;
mod verify;

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
    let key = write(dir.path(), "key", &format!("{ADMIN_KEY}\n"));
    // enrollctl refuses a key file others can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
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
    // The certificate is checked against --server-name instead of the address's host.
    let config_flag = ["enrollctl", "--config", config.as_str()];
    let named = |name: &'static str| {
        let mut args = config_flag.to_vec();
        args.extend(["--server-name", name, "policy", "list"]);
        args
    };
    run_args(&named("localhost"), "").await.ok();
    run_args(&named("elsewhere.example"), "")
        .await
        .failed_with(5);
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
    token_lifecycle,
    import_reports_bad_rows_with_file_lines,
    links_devices_and_audit,
    exit_codes_and_error_messages,
    config_file_profiles_and_mutual_tls,
);
