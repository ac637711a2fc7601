//! No lockout by outsiders (issue 18), over real gRPC on both backends and the test clock:
//! failures slow the (user, client) pair that made them; a client the user passed from
//! (by address or by device token) is never held back by other clients' failures; unknown
//! clients spend a per-user and a realm-wide failure budget.
use std::time::Duration;

use enroll_e2e::{
    Backend, DeviceClient, RFC4226_SEED, RFC4226_SEED_HEX, TestStack, assert_invalid_field,
    audit_events, hotp_code, validate_from,
};
use enroll_shared::proto::device::v1 as pb;

/// The user's own address, from which they pass first.
pub(crate) const HOME: &str = "198.51.100.7";

/// HOTP tokens with the RFC 4226 seed (codes known to the test), imported into realm corp
/// and assigned: `serials[i]` to `users[i]`.
pub(crate) async fn rfc_tokens(admin: &mut DeviceClient, pairs: &[(&str, &str)]) {
    let csv: String = pairs
        .iter()
        .map(|(serial, _)| format!("{serial},{RFC4226_SEED_HEX},hotp,6,0\n"))
        .collect();
    admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "corp".into(),
            csv,
            ..Default::default()
        })
        .await
        .unwrap();
    for (serial, user) in pairs {
        admin
            .assign_token(pb::AssignTokenRequest {
                serial: (*serial).into(),
                realm: "corp".into(),
                user: (*user).into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

/// Validate `pass` for `user` from `ip` with `device_token` (empty: none).
pub(crate) async fn validate(
    proxy: &mut DeviceClient,
    user: &str,
    pass: &str,
    ip: &str,
    device_token: &str,
) -> pb::ValidateResponse {
    proxy
        .validate(validate_from("corp", user, pass, ip, device_token))
        .await
        .unwrap()
        .into_inner()
}

/// The right code `counter` from `ip` passes; returns the device token it got.
pub(crate) async fn passes(
    proxy: &mut DeviceClient,
    user: &str,
    counter: u64,
    ip: &str,
    device_token: &str,
) -> String {
    let answer = validate(
        proxy,
        user,
        &hotp_code(RFC4226_SEED, counter),
        ip,
        device_token,
    )
    .await;
    assert!(answer.ok, "{user} code {counter} from {ip}: {answer:?}");
    assert!(
        !answer.device_token.is_empty(),
        "a success issues a device token"
    );
    answer.device_token
}

/// A refusal answers exactly like a wrong pass.
#[track_caller]
pub(crate) fn assert_refused(answer: &pb::ValidateResponse) {
    assert_eq!(
        answer,
        &pb::ValidateResponse {
            ok: false,
            message: "wrong pass".into(),
            ..Default::default()
        }
    );
}

/// An outsider address, different for each `i`.
pub(crate) fn outsider(i: u32) -> String {
    format!("10.{}.{}.{}", i / 62_500 % 250, i / 250 % 250, i % 250 + 1)
}

/// The finding: six wrong passes from six addresses, then the user's right code from their
/// own address answered `wrong pass`. Now the user's known clients (their address, or any
/// address with their device token) pass; unknown clients are refused once outsiders spent
/// the user's failure budget, until its window ends.
async fn outsiders_never_lock_the_user_out(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    rfc_tokens(&mut admin, &[("HOTPLO1", "dora")]).await;
    let token = passes(&mut proxy, "dora", 0, HOME, "").await;

    for i in 0..6 {
        assert_refused(&validate(&mut proxy, "dora", "999999", &outsider(i), "").await);
    }
    passes(&mut proxy, "dora", 1, HOME, "").await;
    // The per-user budget of unknown clients (10 an hour) is spent by more outsiders...
    for i in 6..12 {
        assert_refused(&validate(&mut proxy, "dora", "999999", &outsider(i), "").await);
    }
    // ...so the right code from an unknown address is refused, the reason audited only,
    let fresh = "203.0.113.50";
    let code = hotp_code(RFC4226_SEED, 2);
    assert_refused(&validate(&mut proxy, "dora", &code, fresh, "").await);
    let events = audit_events(&mut admin, "", "validate").await;
    assert!(
        events[0]
            .reason
            .contains("failure budget for unknown clients"),
        "{}",
        events[0].reason
    );
    // ...while the same code with the device token from that address passes, and the
    // user's own address too.
    let token = passes(&mut proxy, "dora", 2, fresh, &token).await;
    passes(&mut proxy, "dora", 3, HOME, "").await;
    let events = audit_events(&mut admin, "", "validate").await;
    assert_eq!(events[1].result, "ok", "{events:?}");
    // A success from a fresh address with the token makes that address known too.
    passes(&mut proxy, "dora", 4, fresh, "").await;
    // The window ends: unknown clients may try again.
    stack.clock().advance(Duration::from_secs(3_601));
    passes(&mut proxy, "dora", 5, "203.0.113.51", "").await;
    passes(&mut proxy, "dora", 6, "203.0.113.52", &token).await;
    let token_row = admin
        .get_token(pb::GetTokenRequest {
            serial: "HOTPLO1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(token_row.state, pb::TokenState::Enabled as i32);
}

/// A client's own failures slow its own pair (known or not), never the user's other
/// clients: the known address backs off after its free failures while the device token's
/// client and a fresh address still pass.
async fn failures_slow_only_the_pair_that_made_them(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    rfc_tokens(&mut admin, &[("HOTPLO2", "erin")]).await;
    let token = passes(&mut proxy, "erin", 0, HOME, "").await;
    // Three free failures, the fourth backs the pair off for 1 s.
    for _ in 0..4 {
        assert_refused(&validate(&mut proxy, "erin", "999999", HOME, "").await);
    }
    let code = hotp_code(RFC4226_SEED, 1);
    assert_refused(&validate(&mut proxy, "erin", &code, HOME, "").await);
    let events = audit_events(&mut admin, "", "validate").await;
    assert!(
        events[0].reason.contains("backing off until"),
        "{}",
        events[0].reason
    );
    passes(&mut proxy, "erin", 1, "203.0.113.9", "").await;
    passes(&mut proxy, "erin", 2, "203.0.113.10", &token).await;
    stack.clock().advance(Duration::from_secs(2));
    passes(&mut proxy, "erin", 3, HOME, "").await;
}

/// A request without `client_ip` is INVALID_ARGUMENT naming it, unless
/// `validation.allow_missing_client_ip` is set: then such calls are one client per API key,
/// never known by address, and a device token still makes them known.
async fn a_missing_client_ip_is_refused_unless_allowed(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    rfc_tokens(&mut admin, &[("HOTPLO3", "finn")]).await;
    let code = hotp_code(RFC4226_SEED, 0);
    assert_invalid_field(
        proxy
            .validate(validate_from("corp", "finn", &code, "", ""))
            .await,
        "client_ip",
    );
    drop(stack);

    let stack = TestStack::builder(backend)
        .device_config(|config| config.validation.allow_missing_client_ip = true)
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    rfc_tokens(&mut admin, &[("HOTPLO4", "finn")]).await;
    let token = passes(&mut proxy, "finn", 0, "", "").await;
    // The API key's pair is never known: outsiders without an address spend the user's
    // budget for it, but the device token still passes.
    for i in 0..10 {
        assert_refused(&validate(&mut proxy, "finn", "999999", &outsider(i), "").await);
    }
    let code = hotp_code(RFC4226_SEED, 1);
    assert_refused(&validate(&mut proxy, "finn", &code, "", "").await);
    passes(&mut proxy, "finn", 1, "", &token).await;
    let events = audit_events(&mut admin, "", "validate").await;
    assert!(
        events[1].reason.contains("client key/"),
        "{}",
        events[1].reason
    );
}

/// Forged, altered, other users', expired and too often failing device tokens are not
/// trusted: with the user's budget for unknown clients spent, their right code is refused.
async fn untrusted_device_tokens_do_not_make_a_client_known(backend: Backend) {
    let stack = TestStack::builder(backend)
        // No pair back-off in the way of counting a device token's own failures.
        .device_config(|config| config.validation.backoff_free_failures = 100)
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    rfc_tokens(&mut admin, &[("HOTPLO5", "gus"), ("HOTPLO6", "hal")]).await;
    let gus = passes(&mut proxy, "gus", 0, HOME, "").await;
    let hal = passes(&mut proxy, "hal", 0, "198.51.100.8", "").await;
    for i in 0..10 {
        assert_refused(&validate(&mut proxy, "gus", "999999", &outsider(i), "").await);
    }
    let mut altered = gus.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let code = hotp_code(RFC4226_SEED, 1);
    let fresh = "203.0.113.20";
    for (name, token) in [
        ("forged", "dt1.1700000000.AAAAAAAAAAAAAAAAAAAAAA.AAAA"),
        ("altered", altered.as_str()),
        ("another user's", hal.as_str()),
    ] {
        assert_refused(&validate(&mut proxy, "gus", &code, fresh, token).await);
        let reason = audit_events(&mut admin, "", "validate").await[0]
            .reason
            .clone();
        assert!(
            reason.contains("device token") && reason.contains("unknown"),
            "{name}: {reason}"
        );
    }
    // A token that fails ten times of its own is no longer trusted.
    for _ in 0..10 {
        assert_refused(&validate(&mut proxy, "gus", "999999", fresh, &gus).await);
    }
    assert_refused(&validate(&mut proxy, "gus", &code, fresh, &gus).await);
    let reason = audit_events(&mut admin, "", "validate").await[0]
        .reason
        .clone();
    assert!(reason.contains("distrusted after 10 failures"), "{reason}");
    // The user passes from home and gets a new token; it expires after 30 days.
    let renewed = passes(&mut proxy, "gus", 1, HOME, "").await;
    stack
        .clock()
        .advance(Duration::from_secs(30 * 24 * 3_600 + 1));
    for i in 10..20 {
        assert_refused(&validate(&mut proxy, "gus", "999999", &outsider(i), "").await);
    }
    let code = hotp_code(RFC4226_SEED, 2);
    assert_refused(&validate(&mut proxy, "gus", &code, fresh, &renewed).await);
    let reason = audit_events(&mut admin, "", "validate").await[0]
        .reason
        .clone();
    assert!(reason.contains("device token expired"), "{reason}");
}

/// Outsiders spending the realm's failure budget: unknown clients of every user are
/// refused until the window ends, the known clients of every user still pass.
async fn the_realm_budget_never_holds_back_known_clients(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| {
            config.validation.realm_failures_per_window = 20;
            config.validation.realm_failure_window_secs = 600;
        })
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let users = ["ann", "ben", "cid", "deb", "eve"];
    let serials: Vec<String> = (0..users.len()).map(|i| format!("HOTPRB{i}")).collect();
    let pairs: Vec<(&str, &str)> = serials
        .iter()
        .map(String::as_str)
        .zip(users.iter().copied())
        .collect();
    rfc_tokens(&mut admin, &pairs).await;
    let home = |i: usize| format!("198.51.100.{}", 10 + i);
    let mut tokens = Vec::new();
    for (i, user) in users.iter().enumerate() {
        tokens.push(passes(&mut proxy, user, 0, &home(i), "").await);
    }
    // Four failures per user from unknown addresses: the realm's 20 are spent.
    for i in 0..20u32 {
        let user = users[i as usize % users.len()];
        assert_refused(&validate(&mut proxy, user, "999999", &outsider(i), "").await);
    }
    for (i, user) in users.iter().enumerate() {
        // Unknown: refused, the reason audited.
        let code = hotp_code(RFC4226_SEED, 1);
        assert_refused(&validate(&mut proxy, user, &code, "203.0.113.77", "").await);
        let reason = audit_events(&mut admin, "", "validate").await[0]
            .reason
            .clone();
        assert!(reason.contains("the realm's failure budget"), "{reason}");
        // Known by address, and by device token from anywhere: pass.
        passes(&mut proxy, user, 1, &home(i), "").await;
        passes(&mut proxy, user, 2, "203.0.113.78", &tokens[i]).await;
    }
    stack.clock().advance(Duration::from_secs(601));
    passes(&mut proxy, "ann", 3, "203.0.113.79", "").await;
}

enroll_e2e::on_both_backends!(
    outsiders_never_lock_the_user_out,
    failures_slow_only_the_pair_that_made_them,
    a_missing_client_ip_is_refused_unless_allowed,
    untrusted_device_tokens_do_not_make_a_client_known,
    the_realm_budget_never_holds_back_known_clients,
);
