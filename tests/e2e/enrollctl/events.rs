//! `enrollctl events watch`, `stream ...` and `signing-key rotate`: events of a token's
//! changes in order and resumable, a webhook stream's secret shown once and its statuses,
//! a CAEP stream refused without an audience, the JWKS holding both keys after a rotation,
//! a poll stream's token shown once and rotated, and `stream verify` queueing the
//! verification event its receiver then polls.
use std::time::Duration;

use super::*;

fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in\n{stdout}"))
        .trim()
        .to_owned()
}

/// `enrollctl` bounded in time: a watch that waits for events that never come fails the
/// test instead of hanging it.
async fn ctl_within(stack: &TestStack, args: &[&str]) -> Run {
    tokio::time::timeout(Duration::from_secs(30), ctl(stack, args))
        .await
        .unwrap_or_else(|_| panic!("enrollctl {args:?} did not end within 30 s"))
}

/// JSON lines, one event each.
fn events(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"))
        })
        .collect()
}

/// The stream `id` as `stream list -o json` shows it.
async fn listed(stack: &TestStack, id: &str) -> Option<Value> {
    let list = ctl(stack, &["-o", "json", "stream", "list"])
        .await
        .ok()
        .json();
    list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|stream| stream["id"] == id)
        .cloned()
}

async fn status_of(stack: &TestStack, id: &str) -> String {
    listed(stack, id)
        .await
        .unwrap_or_else(|| panic!("stream {id} not listed"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn a_tokens_events_are_watched_in_order_and_resumed(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let enrolled = ctl(
        &stack,
        &[
            "-o", "json", "token", "enroll", "--realm", "corp", "--user", "alice",
        ],
    )
    .await
    .ok()
    .json();
    let serial = enrolled["token"]["serial"].as_str().unwrap().to_owned();
    ctl(&stack, &["token", "disable", &serial]).await.ok();

    let watched = ctl_within(&stack, &["-o", "json", "events", "watch", "--limit", "2"])
        .await
        .ok();
    let watched = events(&watched);
    assert_eq!(watched.len(), 2, "{watched:?}");
    assert_eq!(watched[0]["type"], "token.enrolled", "{watched:?}");
    assert_eq!(watched[1]["type"], "token.disabled", "{watched:?}");
    for event in &watched {
        assert_eq!(event["realm"], "corp");
        assert_eq!(event["user"], "alice");
        assert_eq!(event["subject"], serial.as_str());
        assert_eq!(event["credential"]["credential_type"], "app");
        assert_eq!(event["initiating_entity"], "admin");
    }
    let seq = |event: &Value| -> i64 { event["seq"].as_str().unwrap().parse().unwrap() };
    assert!(seq(&watched[0]) < seq(&watched[1]), "{watched:?}");
    assert_ne!(watched[0]["id"], watched[1]["id"]);

    // Resumed after the first: the second; filtered by type: the same.
    let first = seq(&watched[0]).to_string();
    let resumed = ctl_within(
        &stack,
        &[
            "-o", "json", "events", "watch", "--after", &first, "--limit", "1",
        ],
    )
    .await
    .ok();
    assert_eq!(events(&resumed)[0]["type"], "token.disabled");
    let filtered = ctl_within(
        &stack,
        &[
            "-o",
            "json",
            "events",
            "watch",
            "--type",
            "token.disabled",
            "--realm",
            "corp",
            "--limit",
            "1",
        ],
    )
    .await
    .ok();
    assert_eq!(events(&filtered)[0]["seq"], watched[1]["seq"]);

    // Text: one positional line per event.
    let text = ctl_within(&stack, &["events", "watch", "--limit", "1"])
        .await
        .ok();
    let line = text.stdout.lines().next().unwrap();
    assert!(line.starts_with(&format!("{first}  ")), "{line}");
    assert!(
        line.ends_with(&format!("token.enrolled  corp/alice  {serial}  app")),
        "{line}"
    );

    // An unknown type is the service's INVALID_ARGUMENT.
    ctl(&stack, &["events", "watch", "--type", "token.exploded"])
        .await
        .failed_with(7);
}

async fn webhook_streams_show_their_secret_once_and_change_status(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let created = ctl(
        &stack,
        &[
            "stream",
            "create",
            "--name",
            "siem",
            "--encoding",
            "webhook",
            "--endpoint",
            "http://127.0.0.1:9/hook",
            "--type",
            "token.lost",
        ],
    )
    .await
    .ok();
    let secret = field(&created.stdout, "secret:");
    assert!(secret.starts_with("whsec_"), "{}", created.stdout);
    assert!(
        created.stderr.contains("shown this once"),
        "{}",
        created.stderr
    );
    assert_eq!(field(&created.stdout, "encoding:"), "webhook");
    assert_eq!(field(&created.stdout, "types:"), "token.lost");
    let id = field(&created.stdout, "id:");

    let list = ctl(&stack, &["stream", "list"]).await.ok();
    assert!(list.stdout.contains(&id), "{}", list.stdout);
    assert!(
        !list.stdout.contains(&secret),
        "lists never show the secret"
    );
    let stream = listed(&stack, &id).await.unwrap();
    assert_eq!(stream["status"], "EVENT_STREAM_STATUS_ENABLED");
    assert_eq!(stream["name"], "siem");
    assert_eq!(stream["created_by"], "e2e-operator");
    assert!(!stream.to_string().contains(&secret));

    for (command, status) in [
        ("pause", "EVENT_STREAM_STATUS_PAUSED"),
        ("resume", "EVENT_STREAM_STATUS_ENABLED"),
        ("disable", "EVENT_STREAM_STATUS_DISABLED"),
        ("resume", "EVENT_STREAM_STATUS_ENABLED"),
    ] {
        let changed = ctl(&stack, &["-o", "json", "stream", command, &id])
            .await
            .ok()
            .json();
        assert_eq!(changed["status"], status, "{command}");
        assert_eq!(status_of(&stack, &id).await, status, "{command}");
    }

    let filtered = ctl(
        &stack,
        &[
            "-o",
            "json",
            "stream",
            "filter",
            &id,
            "--type",
            "device.revoked",
            "--realm",
            "corp",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(filtered["types"], serde_json::json!(["device.revoked"]));
    assert_eq!(filtered["realms"], serde_json::json!(["corp"]));

    let rotated = ctl(&stack, &["stream", "rotate-secret", &id]).await.ok();
    let new_secret = field(&rotated.stdout, "secret:");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated.stderr.contains("shown this once"));

    let letters = ctl(&stack, &["-o", "json", "stream", "dead-letters", &id])
        .await
        .ok()
        .json();
    assert_eq!(letters["dead_letters"], serde_json::json!([]));
    let queued = ctl(&stack, &["-o", "json", "stream", "redeliver", &id])
        .await
        .ok()
        .json();
    assert_eq!(queued["queued"], "0");

    // JSON: the secret next to the stream.
    let second = ctl(
        &stack,
        &[
            "-o",
            "json",
            "stream",
            "create",
            "--name",
            "chat",
            "--encoding",
            "webhook",
            "--endpoint",
            "http://127.0.0.1:9/chat",
        ],
    )
    .await
    .ok()
    .json();
    assert!(second["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(second["stream"]["encoding"], "EVENT_ENCODING_WEBHOOK");

    let deleted = ctl(&stack, &["stream", "delete", &id]).await.ok();
    assert_eq!(deleted.stdout, format!("deleted stream {id}\n"));
    assert!(listed(&stack, &id).await.is_none());
    ctl(&stack, &["stream", "pause", &id]).await.failed_with(3);
    ctl(&stack, &["stream", "delete", &id]).await.failed_with(3);

    // A name is unique.
    ctl(
        &stack,
        &[
            "stream",
            "create",
            "--name",
            "chat",
            "--encoding",
            "webhook",
            "--endpoint",
            "http://127.0.0.1:9/again",
        ],
    )
    .await
    .failed_with(6);
}

async fn caep_streams_need_an_audience_and_keys_rotate(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let refused = ctl(
        &stack,
        &[
            "stream",
            "create",
            "--name",
            "idp",
            "--encoding",
            "caep",
            "--endpoint",
            "http://127.0.0.1:9/ssf",
        ],
    )
    .await;
    assert_ne!(refused.code, 0);
    let refused = refused.failed_with(7);
    assert!(refused.stderr.contains("audience"), "{}", refused.stderr);

    let first = ctl(&stack, &["-o", "json", "signing-key", "rotate"])
        .await
        .ok()
        .json();
    let first_kid = first["kid"].as_str().unwrap().to_owned();
    assert!(!first_kid.is_empty());
    let second = ctl(&stack, &["signing-key", "rotate", "--overlap", "1h"])
        .await
        .ok();
    let second_kid = field(&second.stdout, "kid:");
    assert_ne!(first_kid, second_kid);
    let jwks: Value = serde_json::from_str(
        second
            .stdout
            .split_once("):\n")
            .map(|(_, jwks)| jwks)
            .unwrap_or_else(|| panic!("no JWKS in\n{}", second.stdout)),
    )
    .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "both keys during the overlap: {jwks}");
    assert!(kids.contains(&first_kid.as_str()) && kids.contains(&second_kid.as_str()));
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|key| key.get("d").is_none()),
        "public keys only: {jwks}"
    );

    // RS256 needs a key; ES256 takes none (refused before any call).
    ctl(&stack, &["signing-key", "rotate", "--algorithm", "RS256"])
        .await
        .failed_with(2);

    // With an audience the CAEP stream is made, and has no secret.
    let created = ctl(
        &stack,
        &[
            "-o",
            "json",
            "stream",
            "create",
            "--name",
            "idp",
            "--encoding",
            "caep",
            "--endpoint",
            "http://127.0.0.1:9/ssf",
            "--audience",
            "https://idp.example.net",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(created["secret"], "");
    assert_eq!(created["stream"]["encoding"], "EVENT_ENCODING_CAEP_PUSH");
    assert_eq!(created["stream"]["audience"], "https://idp.example.net");
}

async fn poll_streams_show_their_token_once_and_verify_queues_the_event(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let created = ctl(
        &stack,
        &[
            "stream",
            "create",
            "--name",
            "firewalled",
            "--encoding",
            "caep-poll",
            "--audience",
            "https://idp.example.net",
        ],
    )
    .await
    .ok();
    let id = field(&created.stdout, "id:");
    let token = field(&created.stdout, "secret:");
    assert!(token.starts_with("ptk_"), "{}", created.stdout);
    assert_eq!(field(&created.stdout, "encoding:"), "caep-poll");
    assert!(
        created.stderr.contains(&format!("/events/poll/{id}")),
        "{}",
        created.stderr
    );
    let verified = ctl(
        &stack,
        &["-o", "json", "stream", "verify", &id, "--state", "s1"],
    )
    .await
    .ok()
    .json();
    let event_id = verified["eventId"]
        .as_str()
        .or(verified["event_id"].as_str())
        .unwrap_or_else(|| panic!("no event id in {verified}"))
        .to_owned();
    // The receiver's next poll (waiting for the stamp) returns it.
    let answer = stack
        .page_post_from(
            std::net::IpAddr::from([127, 0, 0, 1]),
            &[("Authorization", format!("Bearer {token}").as_str())],
            &format!("{}/{id}", enroll_device::web::POLL_PATH),
            &serde_json::json!({"returnImmediately": false}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let sets = answer.json()["sets"].clone();
    assert!(sets.get(&event_id).is_some(), "{sets}");
    let rotated = ctl(&stack, &["stream", "rotate-secret", &id]).await.ok();
    let fresh = field(&rotated.stdout, "secret:");
    assert!(
        fresh.starts_with("ptk_") && fresh != token,
        "{}",
        rotated.stdout
    );
    let text = ctl(&stack, &["stream", "verify", &id]).await.ok();
    assert!(
        text.stdout.starts_with("queued the verification event "),
        "{}",
        text.stdout
    );
    ctl(&stack, &["stream", "verify", "no-such-stream"])
        .await
        .failed_with(7);
}

on_both_backends!(
    a_tokens_events_are_watched_in_order_and_resumed,
    webhook_streams_show_their_secret_once_and_change_status,
    caep_streams_need_an_audience_and_keys_rotate,
    poll_streams_show_their_token_once_and_verify_queues_the_event
);
