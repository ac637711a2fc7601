//! `enrollctl otp-link create`, `list` and `revoke`: the URL with its secret once, the
//! states a link goes through (issued, superseded, revoked), refused parameters.
use super::*;

fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in\n{stdout}"))
        .trim()
        .to_owned()
}

/// The links of `user` as `otp-link list -o json` shows them, by id: their states.
async fn states(stack: &TestStack, user: &str) -> Vec<(String, String)> {
    let listed = ctl(stack, &["-o", "json", "otp-link", "list", "--user", user])
        .await
        .ok()
        .json();
    listed["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|link| {
            assert_eq!(link["url"], "", "lists never show the secret: {link}");
            (
                link["id"].as_str().unwrap().to_owned(),
                link["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn state_of(states: &[(String, String)], id: &str) -> String {
    states
        .iter()
        .find(|(link, _)| link == id)
        .map(|(_, state)| state.clone())
        .unwrap_or_else(|| panic!("no link {id} in {states:?}"))
}

/// The secret after `#otp-`: 256 bits, base64url without padding.
#[track_caller]
fn assert_link_url(url: &str) {
    let (_, secret) = url
        .split_once("#otp-")
        .unwrap_or_else(|| panic!("no #otp- fragment in {url}"));
    assert_eq!(secret.len(), 43, "a 256-bit secret: {url}");
    assert!(
        secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "base64url: {url}"
    );
}

async fn otp_links_are_created_listed_superseded_and_revoked(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let created = ctl(
        &stack,
        &[
            "otp-link",
            "create",
            "--realm",
            "corp",
            "--user",
            "alice",
            "--ttl",
            "2h",
            "--description",
            "new phone",
        ],
    )
    .await
    .ok();
    let first = field(&created.stdout, "id:");
    let url = field(&created.stdout, "URL:");
    assert_link_url(&url);
    assert_eq!(field(&created.stdout, "state:"), "issued");
    assert_eq!(field(&created.stdout, "type:"), "totp");
    assert_eq!(field(&created.stdout, "created by:"), "e2e-operator");
    assert!(!field(&created.stdout, "expires:").is_empty());
    assert_eq!(
        created.stdout.matches(&url).count(),
        1,
        "the URL once: {}",
        created.stdout
    );
    assert!(
        created.stderr.contains("shown this once"),
        "{}",
        created.stderr
    );

    let listed = ctl(&stack, &["otp-link", "list", "--realm", "corp"])
        .await
        .ok();
    assert!(listed.stdout.starts_with("ID"), "{}", listed.stdout);
    let row = listed
        .stdout
        .lines()
        .find(|line| line.starts_with(&first))
        .unwrap_or_else(|| panic!("no row for {first} in\n{}", listed.stdout));
    assert!(row.contains("alice") && row.contains("issued"), "{row}");
    assert!(!listed.stdout.contains("#otp-"), "lists never show secrets");
    assert_eq!(
        states(&stack, "alice").await,
        [(first.clone(), "OTP_LINK_STATE_ISSUED".to_owned())]
    );

    // A second TOTP link for alice supersedes the first; a HOTP link does not.
    let second = ctl(
        &stack,
        &[
            "-o",
            "json",
            "otp-link",
            "create",
            "--realm",
            "corp",
            "--user",
            "alice",
            "--digits",
            "8",
            "--algorithm",
            "sha256",
        ],
    )
    .await
    .ok()
    .json();
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_link_url(second["url"].as_str().unwrap());
    assert_eq!(second["state"], "OTP_LINK_STATE_ISSUED");
    assert_eq!(second["digits"], 8);
    assert_eq!(second["algorithm"], "HASH_ALGORITHM_SHA256");
    assert_eq!(second["period"], "30s");
    let hotp = ctl(
        &stack,
        &[
            "-o", "json", "otp-link", "create", "--realm", "corp", "--user", "alice", "--type",
            "hotp",
        ],
    )
    .await
    .ok()
    .json();
    let hotp_id = hotp["id"].as_str().unwrap().to_owned();
    let now = states(&stack, "alice").await;
    assert_eq!(now.len(), 3, "{now:?}");
    assert_eq!(state_of(&now, &first), "OTP_LINK_STATE_SUPERSEDED");
    assert_eq!(state_of(&now, &second_id), "OTP_LINK_STATE_ISSUED");
    assert_eq!(state_of(&now, &hotp_id), "OTP_LINK_STATE_ISSUED");
    let superseded = ctl(
        &stack,
        &["-o", "json", "otp-link", "list", "--state", "superseded"],
    )
    .await
    .ok()
    .json();
    let superseded: Vec<&str> = superseded["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|link| link["id"].as_str().unwrap())
        .collect();
    assert_eq!(superseded, [first.as_str()]);

    // Revoke: the link is REVOKED (in the answer and the list); again, it stays so.
    let revoked = ctl(&stack, &["otp-link", "revoke", &second_id]).await.ok();
    assert_eq!(field(&revoked.stdout, "state:"), "revoked");
    assert!(!revoked.stdout.contains("#otp-"), "{}", revoked.stdout);
    let now = states(&stack, "alice").await;
    assert_eq!(state_of(&now, &second_id), "OTP_LINK_STATE_REVOKED");
    assert_eq!(state_of(&now, &hotp_id), "OTP_LINK_STATE_ISSUED");
    let again = ctl(&stack, &["-o", "json", "otp-link", "revoke", &second_id])
        .await
        .ok()
        .json();
    assert_eq!(again["state"], "OTP_LINK_STATE_REVOKED");
    let listed = ctl(
        &stack,
        &[
            "-o",
            "json",
            "otp-link",
            "list",
            "--state",
            "verify-pending",
            "--limit",
            "5",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(listed["links"].as_array().unwrap().len(), 0);

    let audit = ctl(
        &stack,
        &[
            "-o",
            "json",
            "audit",
            "list",
            "--action",
            "revoke_otp_link",
            "--subject",
            &second_id,
        ],
    )
    .await
    .ok()
    .json();
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "revoked once: {events:?}");
    assert!(
        events[0]["reason"]
            .as_str()
            .unwrap()
            .contains("revoked by e2e-operator"),
        "{events:?}"
    );
}

async fn refused_otp_link_parameters_name_the_field(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let create = ["otp-link", "create", "--realm", "corp", "--user", "carol"];
    let refused = ctl(&stack, &[&create[..], &["--digits", "7"]].concat())
        .await
        .failed_with(7);
    assert!(
        refused.stderr.contains("INVALID_ARGUMENT"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("field: digits"),
        "{}",
        refused.stderr
    );
    let refused = ctl(
        &stack,
        &[&["-o", "json"][..], &create[..], &["--period", "301"]].concat(),
    )
    .await
    .failed_with(7);
    let error: Value = serde_json::from_str(&refused.stderr).unwrap();
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(error["error"]["metadata"]["field"], "period", "{error}");
    let refused = ctl(&stack, &[&create[..], &["--ttl", "30d"]].concat())
        .await
        .failed_with(7);
    assert!(refused.stderr.contains("field: ttl"), "{}", refused.stderr);
    // Flags clap checks itself: usage, exit code 2, the flag named.
    let refused = ctl(&stack, &[&create[..], &["--algorithm", "md5"]].concat())
        .await
        .failed_with(2);
    assert!(refused.stderr.contains("--algorithm"), "{}", refused.stderr);
    let refused = ctl(&stack, &["otp-link", "list", "--state", "active"])
        .await
        .failed_with(2);
    assert!(refused.stderr.contains("--state"), "{}", refused.stderr);

    let unknown = ctl(
        &stack,
        &["otp-link", "revoke", "00000000-0000-4000-8000-000000000000"],
    )
    .await
    .failed_with(3);
    assert!(unknown.stderr.contains("NOT_FOUND"), "{}", unknown.stderr);
    assert_eq!(states(&stack, "carol").await, []);
}

on_both_backends!(
    otp_links_are_created_listed_superseded_and_revoked,
    refused_otp_link_parameters_name_the_field
);
