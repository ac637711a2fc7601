//! Autoassignment over gRPC: only hardware tokens imported as such, two consecutive codes
//! of the same token answering a challenge (a single code never assigns), a challenge for
//! every well-formed first attempt and one answer for every other failure, attempt budgets
//! in the database shared by replicas (a missing client address is one client), holdings
//! (devices too) and the decision's limits. The challenge itself: `challenge.rs`.
use std::time::Duration;

use enroll_e2e::{
    Backend, DeviceClient, RFC4226_SEED as KNOWN_SEED, RFC4226_SEED_HEX as KNOWN_HEX, StackBuilder,
    TestStack, audit_events_by_action, hotp_code, now_step, realm_policy, register_passkey,
    seed_of, totp_code,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;

mod budgets;
mod challenge;

const PIN: &str = "5555";
/// A second seed shared by two pool tokens (TWIN1, TWIN2).
const TWIN_HEX: &str = "3031323334353637383930313233343536373839";
const TWIN_SEED: &[u8] = b"01234567890123456789";

fn hotp(counter: u64) -> String {
    hotp_code(KNOWN_SEED, counter)
}

fn pass(code: &str) -> String {
    format!("{PIN}{code}")
}

/// A pool of `size` random HOTP/TOTP tokens plus extra rows.
fn pool_csv(size: usize, extra: &str) -> String {
    let mut csv = String::new();
    for i in 0..size {
        let seed: String = (0..20)
            .map(|b| format!("{:02x}", (i * 31 + b * 7 + 3) % 251))
            .collect();
        let kind = if i % 2 == 0 { "totp,6,30" } else { "hotp,6,0" };
        csv.push_str(&format!("POOL{i:05},{seed},{kind}\n"));
    }
    csv.push_str(extra);
    csv
}

/// Autoassignment with PINs of at least 4 characters in `realm`, plus `more` actions.
fn auto_policy(realm: &str, more: &[(&str, &str)]) -> enroll_shared::proto::policy::v1::Policy {
    let mut actions = vec![("autoassignment", "true"), ("otp_pin_minlength", "4")];
    actions.extend_from_slice(more);
    realm_policy(&format!("{realm}-auto"), realm, &actions)
}

async fn import(admin: &mut DeviceClient, realm: &str, csv: String) {
    let imported = admin
        .import_tokens(pb::ImportTokensRequest {
            realm: realm.into(),
            csv,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(imported.errors.is_empty(), "{:?}", imported.errors);
}

/// `builder` started, with a pool of 40 tokens plus `extra` imported into realm `corp`
/// (small, so a made-up wrong code rarely is some pool token's code).
async fn start_with_pool(builder: StackBuilder, extra: &str) -> TestStack {
    let stack = builder.start().await;
    import(&mut stack.admin(), "corp", pool_csv(40, extra)).await;
    stack
}

/// The stack with autoassignment in realm `corp` and a pool of 40 tokens plus `extra`.
async fn setup(backend: Backend, extra: &str) -> TestStack {
    let builder = TestStack::builder(backend).with_policy(auto_policy("corp", &[]));
    start_with_pool(builder, extra).await
}

async fn validate(
    client: &mut DeviceClient,
    realm: &str,
    user: &str,
    pass: String,
    client_ip: &str,
) -> pb::ValidateResponse {
    client
        .validate(pb::ValidateRequest {
            realm: realm.into(),
            user: user.into(),
            pass,
            client_ip: client_ip.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The answer to a wrong pass, and to every autoassignment that does not assign.
fn refusal() -> pb::ValidateResponse {
    pb::ValidateResponse {
        ok: false,
        message: "wrong pass".into(),
        ..Default::default()
    }
}

/// `pass` for `user` of `realm` from `client_ip`, answering the challenge
/// `transaction_id` ("" for a first attempt).
async fn answer_in(
    client: &mut DeviceClient,
    realm: &str,
    user: &str,
    pass: String,
    client_ip: &str,
    transaction_id: &str,
) -> pb::ValidateResponse {
    client
        .validate(pb::ValidateRequest {
            realm: realm.into(),
            user: user.into(),
            pass,
            client_ip: client_ip.into(),
            transaction_id: transaction_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// A first attempt that must answer a challenge (real or decoy: they look alike); its
/// transaction id.
async fn first(
    stack: &TestStack,
    client: &mut DeviceClient,
    realm: &str,
    user: &str,
    pass: String,
    client_ip: &str,
) -> String {
    let answer = answer_in(client, realm, user, pass, client_ip, "").await;
    challenge_of(stack, &answer, TTL).transaction_id
}

/// The challenge of an answer that must be one, checked for the shape every challenge has:
/// not ok, the message, an opaque id, an expiry `ttl` seconds after the device's clock.
fn challenge_of(
    stack: &TestStack,
    answer: &pb::ValidateResponse,
    ttl: i64,
) -> pb::ValidateChallenge {
    assert!(!answer.ok && !answer.autoassigned, "{answer:?}");
    assert!(
        answer.serial.is_empty() && answer.device_token.is_empty(),
        "{answer:?}"
    );
    let challenge = answer.challenge.clone().expect("a challenge");
    assert_eq!(challenge.message, CHALLENGE_MESSAGE);
    assert_eq!(answer.message, CHALLENGE_MESSAGE);
    assert_eq!(challenge.transaction_id.len(), 43, "{challenge:?}");
    assert!(
        challenge
            .transaction_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'),
        "{challenge:?}"
    );
    let expire = challenge.expire_time.expect("an expiry").seconds;
    let now = enroll_shared::time::Clock::now(stack.clock()).timestamp();
    assert!(
        (now + ttl - 5..=now + ttl).contains(&expire),
        "expires at {expire}, now {now}, ttl {ttl}"
    );
    challenge
}

const CHALLENGE_MESSAGE: &str = "enter the next code your token shows";
/// The default `validation.autoassign_challenge_secs`.
const TTL: i64 = 120;

async fn owner(admin: &mut DeviceClient, serial: &str) -> String {
    admin
        .get_token(pb::GetTokenRequest {
            serial: serial.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
}

/// How many `autoassign` audit events have a reason containing `needle`.
async fn audited(client: &mut DeviceClient, needle: &str) -> usize {
    audit_events_by_action(client, "autoassign")
        .await
        .iter()
        .filter(|event| event.reason.contains(needle))
        .count()
}

async fn two_consecutive_codes_assign_and_one_code_never_does(backend: Backend) {
    let stack = setup(
        backend,
        &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\nTOTP1,{KNOWN_HEX},totp,6,30\n"),
    )
    .await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let ip = "192.0.2.1";

    // The right code alone, even sent again, only opens (and shows again) a challenge.
    let opened = first(&stack, &mut proxy, "corp", "hank", pass(&hotp(0)), ip).await;
    let again = first(&stack, &mut proxy, "corp", "hank", pass(&hotp(0)), ip).await;
    assert_eq!(again, opened);
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    // The token's next code answers it: assigned, with the PIN chosen (user names are
    // folded: Hank is hank).
    let taken = answer_in(&mut proxy, "corp", "Hank", pass(&hotp(1)), ip, &opened).await;
    assert!(taken.ok && taken.autoassigned, "{taken:?}");
    assert_eq!(taken.serial, "KNOWN1");
    let token = admin
        .get_token(pb::GetTokenRequest {
            serial: "KNOWN1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((token.user.as_str(), token.has_pin), ("hank", true));
    // From now on hank validates normally; the confirmed codes are used up.
    assert_eq!(
        validate(&mut proxy, "corp", "hank", pass(&hotp(1)), ip).await,
        refusal()
    );
    let normal = validate(&mut proxy, "corp", "hank", pass(&hotp(2)), ip).await;
    assert!(normal.ok && !normal.autoassigned, "{normal:?}");

    // TOTP: the current step, then the next one.
    let step = now_step();
    let opened = first(
        &stack,
        &mut proxy,
        "corp",
        "ivy",
        pass(&totp_code(KNOWN_SEED, step)),
        ip,
    )
    .await;
    let next = pass(&totp_code(KNOWN_SEED, step + 1));
    let taken = answer_in(&mut proxy, "corp", "ivy", next, ip, &opened).await;
    assert!(
        taken.ok && taken.autoassigned && taken.serial == "TOTP1",
        "{taken:?}"
    );
    assert_eq!(
        audited(&mut admin, "waiting for the token's next code").await,
        2
    );
}

async fn software_tokens_are_never_autoassigned(backend: Backend) {
    let stack = setup(backend, "").await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let hotp_request = |user: &str| pb::EnrollTokenRequest {
        realm: "corp".into(),
        user: user.into(),
        r#type: pb::TokenType::Hotp as i32,
        ..Default::default()
    };
    // A pool token enrolled in software: its seed went to the caller.
    let pooled = admin
        .enroll_token(hotp_request(""))
        .await
        .unwrap()
        .into_inner();
    // A user's software token, unassigned back into the pool with its seed.
    let returned = admin
        .enroll_token(hotp_request("alice"))
        .await
        .unwrap()
        .into_inner();
    let returned_serial = returned.token.clone().unwrap().serial;
    admin
        .unassign_token(pb::UnassignTokenRequest {
            serial: returned_serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(owner(&mut admin, &returned_serial).await, "");
    let ip = "192.0.2.2";
    for (user, enrolled) in [("eve", &pooled), ("mallory", &returned)] {
        let seed = seed_of(enrolled);
        for counter in [0, 2] {
            // The seed's holder gets a challenge like anyone (a decoy), and its answer
            // never assigns.
            let code = pass(&hotp_code(&seed, counter));
            let opened = first(&stack, &mut proxy, "corp", user, code, ip).await;
            let next = pass(&hotp_code(&seed, counter + 1));
            let answer = answer_in(&mut proxy, "corp", user, next, ip, &opened).await;
            assert_eq!(answer, refusal(), "{user}, counter {counter}");
        }
        let serial = enrolled.token.clone().unwrap().serial;
        assert_eq!(owner(&mut admin, &serial).await, "", "{serial}");
    }
    assert_eq!(
        audited(&mut admin, "decoy challenge: no pool token shows this code").await,
        4
    );
}

async fn a_wrong_second_code_burns_the_confirmation(backend: Backend) {
    let stack = setup(backend, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let ip = "192.0.2.3";
    // A wrong answer spends the challenge: the right next code is then refused.
    let opened = first(&stack, &mut proxy, "corp", "hank", pass(&hotp(0)), ip).await;
    let wrong = answer_in(&mut proxy, "corp", "hank", pass("000000"), ip, &opened).await;
    assert_eq!(wrong, refusal());
    let late = answer_in(&mut proxy, "corp", "hank", pass(&hotp(1)), ip, &opened).await;
    assert_eq!(late, refusal());
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    // The same for a wrong PIN with the right next code.
    let opened = first(&stack, &mut proxy, "corp", "hank", pass(&hotp(1)), ip).await;
    let wrong_pin = format!("6666{}", hotp(2));
    let answer = answer_in(&mut proxy, "corp", "hank", wrong_pin, ip, &opened).await;
    assert_eq!(answer, refusal());
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    assert_eq!(audited(&mut admin, "not the token's next code").await, 2);

    // A challenge belongs to its user: ivy cannot answer hank's.
    let opened = first(&stack, &mut proxy, "corp", "hank", pass(&hotp(3)), ip).await;
    let foreign = answer_in(&mut proxy, "corp", "ivy", pass(&hotp(4)), ip, &opened).await;
    assert_eq!(foreign, refusal());
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    let taken = answer_in(&mut proxy, "corp", "hank", pass(&hotp(4)), ip, &opened).await;
    assert!(taken.ok && taken.autoassigned, "{taken:?}");
    // The token left the pool: ivy's codes of it open only a decoy.
    let decoy = first(&stack, &mut proxy, "corp", "ivy", pass(&hotp(5)), ip).await;
    let answer = answer_in(&mut proxy, "corp", "ivy", pass(&hotp(6)), ip, &decoy).await;
    assert_eq!(answer, refusal());
    assert_eq!(owner(&mut admin, "KNOWN1").await, "hank");
}

async fn every_failure_gets_the_same_answer(backend: Backend) {
    let builder = TestStack::builder(backend)
        .with_policy(auto_policy("corp", &[]))
        .device_config(|config| config.validation.autoassign_attempts_per_user = 4);
    let extra = format!(
        "KNOWN1,{KNOWN_HEX},hotp,6,0\nTWIN1,{TWIN_HEX},hotp,6,0\nTWIN2,{TWIN_HEX},hotp,6,0\n"
    );
    let stack = start_with_pool(builder, &extra).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    import(&mut admin, "lab", format!("LAB1,{KNOWN_HEX},hotp,6,0\n")).await;
    // The reference: a user who holds a token sends a wrong pass.
    admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "holder".into(),
            r#type: pb::TokenType::Hotp as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let ip = "192.0.2.5";
    let reference = validate(&mut proxy, "corp", "holder", pass("000000"), ip).await;
    assert_eq!(reference, refusal());

    // Every well-formed first attempt answers a challenge of one shape, whether its code
    // matched one pool token or not.
    let mut opened = Vec::new();
    for (user, first_pass) in [
        // No pool token shows the code.
        ("u1", pass("000000")),
        // Two pool tokens show it.
        ("u2", pass(&hotp_code(TWIN_SEED, 0))),
        // The new PIN breaks the PIN rules.
        ("u4", format!("55{}", hotp(0))),
        // The first code matched: a real challenge.
        ("u5", pass(&hotp(0))),
    ] {
        opened.push(first(&stack, &mut proxy, "corp", user, first_pass, ip).await);
    }
    // What does not depend on the pool answers like a wrong pass, without a challenge.
    let mut answers = vec![
        // The realm's policy does not enable autoassignment.
        validate(&mut proxy, "lab", "u3", pass(&hotp(0)), ip).await,
        // Not a PIN followed by a code.
        validate(&mut proxy, "corp", "u7", "5555abcdef".into(), ip).await,
        // A transaction id that names no challenge of this user.
        answer_in(&mut proxy, "corp", "u8", pass(&hotp(1)), ip, &opened[3]).await,
        // A wrong answer to the real challenge, and an answer to a decoy.
        answer_in(&mut proxy, "corp", "u5", pass("999999"), ip, &opened[3]).await,
        answer_in(&mut proxy, "corp", "u1", pass(&hotp(1)), ip, &opened[0]).await,
    ];
    // The user's budget (4) is spent: the right answer is refused.
    for wrong in ["000001", "000002", "000003"] {
        first(&stack, &mut proxy, "corp", "u6", pass(wrong), ip).await;
    }
    let last = first(&stack, &mut proxy, "corp", "u6", pass(&hotp(0)), ip).await;
    answers.push(answer_in(&mut proxy, "corp", "u6", pass(&hotp(1)), ip, &last).await);
    answers.push(validate(&mut proxy, "corp", "u6", pass(&hotp(2)), ip).await);
    for (case, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &reference, "case {case}");
    }
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    assert_eq!(owner(&mut admin, "LAB1").await, "");
    // The real reasons are in the audit trail.
    for reason in [
        "decoy challenge: no pool token shows this code",
        "decoy challenge: the code matches 2 pool tokens",
        "AUTOASSIGNMENT_DISABLED",
        "decoy challenge: new PIN refused",
        "waiting for the token's next code",
        "does not end with a six- or eight-digit code",
        "names no open challenge of this user",
        "not the token's next code",
        "answer to a decoy challenge",
        "the user's autoassignment budget (corp u6) is exhausted",
    ] {
        assert!(audited(&mut admin, reason).await >= 1, "{reason}");
    }
}

async fn a_passkey_only_user_is_not_autoassigned(backend: Backend) {
    let stack = setup(backend, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let device = register_passkey(&stack, "corp", "paula").await;
    let ip = "192.0.2.6";
    // She holds a device: her passes are checked like anyone's, no challenge.
    for counter in 0..2 {
        let answer = validate(&mut proxy, "corp", "paula", pass(&hotp(counter)), ip).await;
        assert_eq!(answer, refusal());
    }
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    // Once the passkey is revoked she holds nothing and may take a pool token.
    admin
        .revoke_device(pb::RevokeDeviceRequest {
            id: device.id,
            revoked_by: "console-admin".into(),
            reason: "lost".into(),
        })
        .await
        .unwrap();
    let opened = first(&stack, &mut proxy, "corp", "paula", pass(&hotp(2)), ip).await;
    let taken = answer_in(&mut proxy, "corp", "paula", pass(&hotp(3)), ip, &opened).await;
    assert!(taken.ok && taken.autoassigned, "{taken:?}");
}

async fn autoassignment_respects_the_limits(backend: Backend) {
    let stack = TestStack::builder(backend)
        .with_policy(auto_policy("corp", &[("max_token_per_user", "0")]))
        .with_policy(auto_policy("lab", &[("max_active_token_per_user", "0")]))
        .with_policy(auto_policy("big", &[]))
        .start()
        .await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    for (realm, serial) in [("corp", "KNOWN1"), ("lab", "KNOWN2"), ("big", "KNOWN3")] {
        import(
            &mut admin,
            realm,
            format!("{serial},{KNOWN_HEX},hotp,6,0\n"),
        )
        .await;
    }
    import(&mut admin, "big", pool_csv(2, "")).await;
    // The realm already holds 3 tokens when its limit becomes 2.
    stack
        .create_policy(realm_policy(
            "big-limit",
            "big",
            &[("max_token_per_realm", "2")],
        ))
        .await;
    let ip = "192.0.2.8";
    for (realm, serial) in [("corp", "KNOWN1"), ("lab", "KNOWN2"), ("big", "KNOWN3")] {
        let opened = first(&stack, &mut proxy, realm, "hank", pass(&hotp(0)), ip).await;
        let answer = answer_in(&mut proxy, realm, "hank", pass(&hotp(1)), ip, &opened).await;
        assert_eq!(answer, refusal(), "{realm}");
        assert_eq!(owner(&mut admin, serial).await, "", "{realm}");
    }
    for limit in [
        "max_token_per_user 0 reached",
        "max_active_token_per_user 0 reached",
        "max_token_per_realm 2 exceeded",
    ] {
        assert_eq!(audited(&mut admin, limit).await, 1, "{limit}");
    }
}

/// Users racing for one pool token, each with its two codes, through two device instances
/// on one database: one owner, and the codes are consumed once.
async fn racing_users_on_two_instances_get_one_token(backend: Backend) {
    let mut stack = setup(backend, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let second = stack.add_device(|_| {}).await;
    let proxies = [
        stack.device_on(0, Role::Proxy),
        stack.device_on(second, Role::Proxy),
    ];
    let racer = |i: usize, counter: u64, transaction_id: String| {
        let mut proxy = proxies[i % 2].clone();
        tokio::spawn(async move {
            let ip = format!("198.51.100.{i}");
            let user = format!("racer{i}");
            let code = pass(&hotp(counter));
            answer_in(&mut proxy, "corp", &user, code, &ip, &transaction_id).await
        })
    };
    let firsts: Vec<_> = (0..20).map(|i| racer(i, 0, String::new())).collect();
    let mut opened = Vec::new();
    for first in firsts {
        opened.push(challenge_of(&stack, &first.await.unwrap(), TTL).transaction_id);
    }
    let seconds: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, transaction_id)| racer(i, 1, transaction_id))
        .collect();
    let mut winners = Vec::new();
    for (i, second) in seconds.into_iter().enumerate() {
        let outcome = second.await.unwrap();
        if outcome.ok {
            assert!(outcome.autoassigned && outcome.serial == "KNOWN1");
            winners.push(format!("racer{i}"));
        }
    }
    assert_eq!(winners.len(), 1, "one pool token, one owner: {winners:?}");
    let mut admin = stack.device_on(second, Role::Admin);
    assert_eq!(owner(&mut admin, "KNOWN1").await, winners[0]);
    let assigned = admin
        .list_tokens(pb::ListTokensRequest {
            realm: "corp".into(),
            assigned: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(assigned.len(), 1, "{assigned:?}");
}

enroll_e2e::on_both_backends!(
    two_consecutive_codes_assign_and_one_code_never_does,
    software_tokens_are_never_autoassigned,
    a_wrong_second_code_burns_the_confirmation,
    every_failure_gets_the_same_answer,
    a_passkey_only_user_is_not_autoassigned,
    autoassignment_respects_the_limits,
    racing_users_on_two_instances_get_one_token,
);
