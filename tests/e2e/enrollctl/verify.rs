//! `enrollctl token enroll --verify`, `token verify` and `token assign --code`.
use enroll_e2e::{RFC4226_SEED, RFC4226_SEED_HEX, hotp_code};

use super::*;

fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in\n{stdout}"))
        .trim()
        .to_owned()
}

async fn enroll_verify_and_assign_with_a_code(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let enrolled = ctl(
        &stack,
        &[
            "token", "enroll", "--realm", "corp", "--user", "alice", "--type", "hotp", "--verify",
            "--no-qr",
        ],
    )
    .await
    .ok();
    assert!(
        enrolled.stderr.contains("verify pending"),
        "{}",
        enrolled.stderr
    );
    let serial = field(&enrolled.stdout, "serial:");
    let secret = field(&enrolled.stdout, "secret (base32):");
    let seed = totp_rs::Secret::try_from_base32(&secret)
        .unwrap()
        .as_ref()
        .to_vec();
    let shown = ctl(&stack, &["token", "get", &serial]).await.ok();
    assert!(
        shown.stdout.contains("enrollment:  verify_pending"),
        "{}",
        shown.stdout
    );

    let wrong = ctl(
        &stack,
        &["token", "verify", &serial, &hotp_code(&seed, 700)],
    )
    .await;
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("4 attempts left"), "{}", wrong.stderr);
    let verified = ctl(&stack, &["token", "verify", &serial, &hotp_code(&seed, 0)])
        .await
        .ok();
    assert!(
        verified.stdout.contains("enrollment:  enrolled"),
        "{}",
        verified.stdout
    );

    let csv = write_csv(&format!("HW-CTL,{RFC4226_SEED_HEX},hotp,6,0\n"));
    ctl(&stack, &["token", "import", &csv.1, "--realm", "corp"])
        .await
        .ok();
    let assign = [
        "token", "assign", "HW-CTL", "--realm", "corp", "--user", "bob", "--code",
    ];
    let wrong = hotp_code(RFC4226_SEED, 900);
    let refused = ctl(&stack, &[&assign[..], &[wrong.as_str()]].concat()).await;
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("code"), "{}", refused.stderr);
    let right = hotp_code(RFC4226_SEED, 0);
    let assigned = ctl(&stack, &[&assign[..], &[right.as_str()]].concat())
        .await
        .ok();
    assert!(assigned.stdout.contains("bob"), "{}", assigned.stdout);
}

/// A CSV file in a fresh directory (kept alive by the returned guard).
fn write_csv(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "pool.csv", text);
    (dir, path)
}

on_both_backends!(enroll_verify_and_assign_with_a_code);
