//! Autoassignment as a challenge a person can follow: every well-formed first attempt of a
//! tokenless user answers a challenge ("enter the next code your token shows"), real when
//! the code matched one pool token, a decoy otherwise, alike in shape and in the metrics;
//! retyping the first code keeps the challenge without spending budgets; the answer is
//! bound to the transaction id, the client address and the user; a challenge expires.
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// `pass` for `user` from `client_ip`, answering the challenge `transaction_id` ("" for a
/// first attempt).
async fn answer(
    client: &mut DeviceClient,
    user: &str,
    pass: String,
    client_ip: &str,
    transaction_id: &str,
) -> pb::ValidateResponse {
    answer_in(client, "corp", user, pass, client_ip, transaction_id).await
}

async fn a_person_follows_the_challenge(backend: Backend) {
    // Two attempts per user: the first code and its answer. Retyping costs nothing.
    let builder = TestStack::builder(backend)
        .with_policy(auto_policy("corp", &[]))
        .device_config(|config| config.validation.autoassign_attempts_per_user = 2);
    let stack = start_with_pool(builder, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let ip = "192.0.2.20";

    let first = answer(&mut proxy, "hank", pass(&hotp(0)), ip, "").await;
    let challenge = challenge_of(&stack, &first, TTL);
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    // The person types the same code again, as the answer and as a new sign-in: the same
    // challenge, still open, and no budget spent.
    for transaction_id in [
        challenge.transaction_id.as_str(),
        "",
        &challenge.transaction_id,
    ] {
        let again = answer(&mut proxy, "hank", pass(&hotp(0)), ip, transaction_id).await;
        assert_eq!(again.challenge.as_ref(), Some(&challenge), "{again:?}");
    }
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    // The next code answers it: assigned, with the PIN chosen.
    let taken = answer(
        &mut proxy,
        "hank",
        pass(&hotp(1)),
        ip,
        &challenge.transaction_id,
    )
    .await;
    assert!(taken.ok && taken.autoassigned, "{taken:?}");
    assert!(
        !taken.device_token.is_empty(),
        "a device token, as after any success"
    );
    assert_eq!((taken.serial.as_str(), taken.challenge), ("KNOWN1", None));
    assert_eq!(owner(&mut admin, "KNOWN1").await, "hank");
    // The client that completed the autoassignment is the user's: outsiders spending the
    // user's failure bound (10 an hour) never hold it back.
    for outsider in 0..12 {
        let wrong = validate(
            &mut proxy,
            "corp",
            "hank",
            pass("000000"),
            &format!("198.51.100.{outsider}"),
        )
        .await;
        assert!(!wrong.ok);
    }
    let normal = validate(&mut proxy, "corp", "hank", pass(&hotp(2)), ip).await;
    assert!(normal.ok && !normal.autoassigned, "{normal:?}");
    assert_eq!(audited(&mut admin, "the same first code again").await, 3);
}

/// The outcome labels of the autoassignment counter, with their values.
async fn outcomes(addr: SocketAddr) -> Vec<(String, f64)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let mut found: Vec<(String, f64)> = raw
        .lines()
        .filter_map(|line| line.strip_prefix("enroll_device_autoassign_attempts_total{"))
        .map(|rest| {
            let (labels, value) = rest.rsplit_once("} ").unwrap();
            // Only the outcome: other labels (the scope) are the same on every series.
            let outcome = labels
                .split(',')
                .find(|label| label.starts_with("outcome="))
                .unwrap_or_default();
            (outcome.to_owned(), value.parse().unwrap())
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

async fn a_decoy_looks_like_a_real_challenge_and_never_assigns(backend: Backend) {
    let extra = format!(
        "KNOWN1,{KNOWN_HEX},hotp,6,0\nTWIN1,{TWIN_HEX},hotp,6,0\nTWIN2,{TWIN_HEX},hotp,6,0\n"
    );
    let stack = setup(backend, &extra).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let metrics = stack.device_metrics_addr();
    let ip = "192.0.2.21";

    // A real challenge, then decoys: no pool token shows the code, two do, the new PIN
    // breaks the PIN rules. Each moves the same series by the same amount.
    let attempts = [
        ("real", pass(&hotp(0))),
        ("nomatch", pass("000000")),
        ("twins", pass(&hotp_code(TWIN_SEED, 0))),
        ("shortpin", format!("55{}", hotp(0))),
    ];
    let mut challenges = Vec::new();
    let mut previous = outcomes(metrics).await;
    for (user, first) in attempts {
        let opened = answer(&mut proxy, user, first, ip, "").await;
        challenges.push((user, challenge_of(&stack, &opened, TTL)));
        let now = outcomes(metrics).await;
        assert_eq!(
            moved(&previous, &now),
            [("outcome=\"challenged\"".to_owned(), 1.0)],
            "{user}"
        );
        previous = now;
    }
    // Answering a decoy never assigns, even with a pool token's next code; a wrong answer
    // to the real challenge is counted like an answer to a decoy.
    let answers = [
        hotp(1),
        hotp_code(TWIN_SEED, 1),
        hotp(1),
        "999999".to_owned(),
    ];
    for ((user, challenge), code) in challenges.iter().rev().zip(answers) {
        let refused = answer(&mut proxy, user, pass(&code), ip, &challenge.transaction_id).await;
        assert_eq!(refused, refusal(), "{user}");
        let now = outcomes(metrics).await;
        assert_eq!(
            moved(&previous, &now),
            [("outcome=\"confirmation_failed\"".to_owned(), 1.0)],
            "{user}"
        );
        previous = now;
    }
    for serial in ["KNOWN1", "TWIN1", "TWIN2"] {
        assert_eq!(owner(&mut admin, serial).await, "", "{serial}");
    }
    // Only the audit trail tells them apart.
    assert_eq!(audited(&mut admin, "decoy challenge:").await, 3);
    assert_eq!(audited(&mut admin, "answer to a decoy challenge").await, 3);
    assert_eq!(
        audited(&mut admin, "waiting for the token's next code").await,
        1
    );
}

/// The series that moved from one scrape to the next, with how much.
fn moved(from: &[(String, f64)], to: &[(String, f64)]) -> Vec<(String, f64)> {
    to.iter()
        .map(|(labels, value)| {
            let old = from
                .iter()
                .find(|(other, _)| other == labels)
                .map_or(0.0, |(_, value)| *value);
            (labels.clone(), value - old)
        })
        .filter(|(_, delta)| *delta != 0.0)
        .collect()
}

async fn the_answer_is_bound_to_the_client_and_the_transaction(backend: Backend) {
    let stack = setup(backend, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let (home, elsewhere) = ("192.0.2.22", "203.0.113.22");

    // The right next code from another address, even with the transaction id, does not
    // assign; nor does it spend the person's challenge.
    let first = answer(&mut proxy, "hank", pass(&hotp(0)), home, "").await;
    let open = challenge_of(&stack, &first, TTL);
    let foreign = answer(
        &mut proxy,
        "hank",
        pass(&hotp(1)),
        elsewhere,
        &open.transaction_id,
    )
    .await;
    assert_eq!(foreign, refusal());
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");

    // From the right address with another transaction id: no assignment, and the
    // challenge is spent (single use).
    let made_up = "A".repeat(43);
    let wrong_id = answer(&mut proxy, "hank", pass(&hotp(1)), home, &made_up).await;
    assert_eq!(wrong_id, refusal());
    let spent = answer(
        &mut proxy,
        "hank",
        pass(&hotp(1)),
        home,
        &open.transaction_id,
    )
    .await;
    assert_eq!(spent, refusal());
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");

    // Without a transaction id the next code is only a new first code (a new challenge).
    let second = answer(&mut proxy, "hank", pass(&hotp(2)), home, "").await;
    let renewed = challenge_of(&stack, &second, TTL);
    assert_ne!(renewed.transaction_id, open.transaction_id);
    let plain = answer(&mut proxy, "hank", pass(&hotp(3)), home, "").await;
    let newest = challenge_of(&stack, &plain, TTL);
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");

    // Another user cannot answer hank's challenge, even from his address.
    let other = answer(
        &mut proxy,
        "ivy",
        pass(&hotp(4)),
        home,
        &newest.transaction_id,
    )
    .await;
    assert_eq!(other, refusal());
    // hank answers it: assigned.
    let taken = answer(
        &mut proxy,
        "hank",
        pass(&hotp(4)),
        home,
        &newest.transaction_id,
    )
    .await;
    assert!(taken.ok && taken.autoassigned, "{taken:?}");
    assert_eq!(owner(&mut admin, "KNOWN1").await, "hank");
}

async fn a_challenge_expires(backend: Backend) {
    let builder = TestStack::builder(backend)
        .with_policy(auto_policy("corp", &[]))
        .device_config(|config| config.validation.autoassign_challenge_secs = 30);
    let stack = start_with_pool(builder, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let ip = "192.0.2.23";
    let first = answer(&mut proxy, "hank", pass(&hotp(0)), ip, "").await;
    let challenge = challenge_of(&stack, &first, 30);
    stack.clock().advance(Duration::from_secs(31));
    let late = answer(
        &mut proxy,
        "hank",
        pass(&hotp(1)),
        ip,
        &challenge.transaction_id,
    )
    .await;
    assert_eq!(late, refusal());
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    // Retyping the first code after expiry is a new first code: a new challenge.
    let again = answer(&mut proxy, "hank", pass(&hotp(0)), ip, "").await;
    assert_ne!(
        challenge_of(&stack, &again, 30).transaction_id,
        challenge.transaction_id
    );
}

enroll_e2e::on_both_backends!(
    a_person_follows_the_challenge,
    a_decoy_looks_like_a_real_challenge_and_never_assigns,
    the_answer_is_bound_to_the_client_and_the_transaction,
    a_challenge_expires,
);
