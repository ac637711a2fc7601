//! Autoassignment over gRPC: only hardware tokens imported as such, two consecutive codes
//! of the same token (a single code never assigns), one answer for every failure, attempt
//! budgets in the database shared by replicas (a missing client address is one client),
//! holdings (devices too) and the decision's limits.
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

    // The right code alone, even sent again, is refused like a wrong pass.
    assert_eq!(
        validate(&mut proxy, "corp", "hank", pass(&hotp(0)), ip).await,
        refusal()
    );
    assert_eq!(
        validate(&mut proxy, "corp", "hank", pass(&hotp(0)), ip).await,
        refusal()
    );
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    // A first code, then the token's next one: assigned, with the PIN chosen.
    assert_eq!(
        validate(&mut proxy, "corp", "Hank", pass(&hotp(1)), ip).await,
        refusal()
    );
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    let taken = validate(&mut proxy, "corp", "hank", pass(&hotp(2)), ip).await;
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
    assert!(
        !validate(&mut proxy, "corp", "hank", pass(&hotp(2)), ip)
            .await
            .ok
    );
    let normal = validate(&mut proxy, "corp", "hank", pass(&hotp(3)), ip).await;
    assert!(normal.ok && !normal.autoassigned, "{normal:?}");

    // TOTP: the current step, then the next one.
    let step = now_step();
    let first = totp_code(KNOWN_SEED, step);
    assert_eq!(
        validate(&mut proxy, "corp", "ivy", pass(&first), ip).await,
        refusal()
    );
    let next = totp_code(KNOWN_SEED, step + 1);
    let taken = validate(&mut proxy, "corp", "ivy", pass(&next), ip).await;
    assert!(
        taken.ok && taken.autoassigned && taken.serial == "TOTP1",
        "{taken:?}"
    );
    assert_eq!(
        audited(&mut admin, "waiting for the token's next code").await,
        3
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
    for (user, enrolled) in [("eve", &pooled), ("mallory", &returned)] {
        let seed = seed_of(enrolled);
        for counter in 0..4 {
            let code = hotp_code(&seed, counter);
            let answer = validate(&mut proxy, "corp", user, pass(&code), "192.0.2.2").await;
            assert_eq!(answer, refusal(), "{user}, counter {counter}");
        }
        let serial = enrolled.token.clone().unwrap().serial;
        assert_eq!(owner(&mut admin, &serial).await, "", "{serial}");
    }
    assert!(audited(&mut admin, "no pool token shows this code").await >= 1);
}

async fn a_wrong_second_code_burns_the_confirmation(backend: Backend) {
    let stack = setup(backend, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let ip = "192.0.2.3";
    // A wrong code after the first one spends the confirmation: the right next code is
    // then only a first code again.
    validate(&mut proxy, "corp", "hank", pass(&hotp(0)), ip).await;
    validate(&mut proxy, "corp", "hank", pass("000000"), ip).await;
    assert_eq!(
        validate(&mut proxy, "corp", "hank", pass(&hotp(1)), ip).await,
        refusal()
    );
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    // The same for a wrong PIN with the right next code.
    let wrong_pin = format!("6666{}", hotp(2));
    assert_eq!(
        validate(&mut proxy, "corp", "hank", wrong_pin, ip).await,
        refusal()
    );
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    assert_eq!(audited(&mut admin, "not the token's next code").await, 2);

    // A confirmation belongs to its user: ivy's next code is her own first code.
    validate(&mut proxy, "corp", "hank", pass(&hotp(3)), ip).await;
    assert_eq!(
        validate(&mut proxy, "corp", "ivy", pass(&hotp(4)), ip).await,
        refusal()
    );
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    let taken = validate(&mut proxy, "corp", "hank", pass(&hotp(4)), ip).await;
    assert!(taken.ok && taken.autoassigned, "{taken:?}");
    assert_eq!(
        validate(&mut proxy, "corp", "ivy", pass(&hotp(5)), ip).await,
        refusal()
    );
    assert_eq!(owner(&mut admin, "KNOWN1").await, "hank");
    assert_eq!(audited(&mut admin, "the token left the pool").await, 1);
}

async fn an_expired_confirmation_does_not_assign(backend: Backend) {
    let builder = TestStack::builder(backend)
        .with_policy(auto_policy("corp", &[]))
        .device_config(|config| config.validation.autoassign_challenge_secs = 1);
    let stack = start_with_pool(builder, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    validate(&mut proxy, "corp", "hank", pass(&hotp(0)), "192.0.2.4").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        validate(&mut proxy, "corp", "hank", pass(&hotp(1)), "192.0.2.4").await,
        refusal()
    );
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
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

    let mut answers = vec![
        // No pool token shows the code.
        validate(&mut proxy, "corp", "u1", pass("000000"), ip).await,
        // Two pool tokens show it.
        validate(&mut proxy, "corp", "u2", pass(&hotp_code(TWIN_SEED, 0)), ip).await,
        // The realm's policy does not enable autoassignment.
        validate(&mut proxy, "lab", "u3", pass(&hotp(0)), ip).await,
        // The new PIN breaks the PIN rules.
        validate(&mut proxy, "corp", "u4", format!("55{}", hotp(0)), ip).await,
        // The first code matched: confirmation pending.
        validate(&mut proxy, "corp", "u5", pass(&hotp(0)), ip).await,
        // A wrong confirming code.
        validate(&mut proxy, "corp", "u5", pass("999999"), ip).await,
    ];
    // The user's budget (4) is spent: the confirming code is refused.
    for wrong in ["000001", "000002", "000003"] {
        answers.push(validate(&mut proxy, "corp", "u6", pass(wrong), ip).await);
    }
    answers.push(validate(&mut proxy, "corp", "u6", pass(&hotp(0)), ip).await);
    answers.push(validate(&mut proxy, "corp", "u6", pass(&hotp(1)), ip).await);
    for (case, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &reference, "case {case}");
    }
    assert_eq!(owner(&mut admin, "KNOWN1").await, "");
    assert_eq!(owner(&mut admin, "LAB1").await, "");
    // The real reasons are in the audit trail.
    for reason in [
        "no pool token shows this code",
        "the code matches 2 pool tokens",
        "AUTOASSIGNMENT_DISABLED",
        "new PIN refused",
        "waiting for the token's next code",
        "not the token's next code",
        "the user's autoassignment budget (corp/u6) is exhausted",
    ] {
        assert!(audited(&mut admin, reason).await >= 1, "{reason}");
    }
}

async fn a_passkey_only_user_is_not_autoassigned(backend: Backend) {
    let stack = setup(backend, &format!("KNOWN1,{KNOWN_HEX},hotp,6,0\n")).await;
    let (mut proxy, mut admin) = (stack.proxy(), stack.admin());
    let device = register_passkey(&stack, "corp", "paula").await;
    for counter in 0..2 {
        let answer = validate(
            &mut proxy,
            "corp",
            "paula",
            pass(&hotp(counter)),
            "192.0.2.6",
        )
        .await;
        assert!(!answer.ok && !answer.autoassigned, "{answer:?}");
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
    validate(&mut proxy, "corp", "paula", pass(&hotp(2)), "192.0.2.6").await;
    let taken = validate(&mut proxy, "corp", "paula", pass(&hotp(3)), "192.0.2.6").await;
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
    for (realm, serial) in [("corp", "KNOWN1"), ("lab", "KNOWN2"), ("big", "KNOWN3")] {
        validate(&mut proxy, realm, "hank", pass(&hotp(0)), "192.0.2.8").await;
        let answer = validate(&mut proxy, realm, "hank", pass(&hotp(1)), "192.0.2.8").await;
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
    let racer = |i: usize, counter: u64| {
        let mut proxy = proxies[i % 2].clone();
        tokio::spawn(async move {
            let ip = format!("198.51.100.{i}");
            validate(
                &mut proxy,
                "corp",
                &format!("racer{i}"),
                pass(&hotp(counter)),
                &ip,
            )
            .await
        })
    };
    let firsts: Vec<_> = (0..20).map(|i| racer(i, 0)).collect();
    for first in firsts {
        assert_eq!(first.await.unwrap(), refusal());
    }
    let seconds: Vec<_> = (0..20).map(|i| racer(i, 1)).collect();
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
    an_expired_confirmation_does_not_assign,
    every_failure_gets_the_same_answer,
    a_passkey_only_user_is_not_autoassigned,
    autoassignment_respects_the_limits,
    racing_users_on_two_instances_get_one_token,
);
