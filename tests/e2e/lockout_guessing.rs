//! The bounds of issue 18 measured over a simulated hour (the test clock advances; nothing
//! sleeps): an hour of outsiders against one user, and guessing PIN-less TOTP codes across
//! many users. The counts are small by default; the environment variables below give the
//! big runs recorded in docs/SECURITY.md (`--nocapture` shows the figures).
use std::time::Duration;

use enroll_e2e::{Backend, TestStack};
use enroll_shared::proto::device::v1 as pb;
use futures::StreamExt as _;

use crate::lockout::{HOME, assert_refused, outsider, passes, rfc_tokens, validate};

/// A count from the environment, `default` when unset or not a number.
fn env_count(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|raw| raw.parse().ok())
        .filter(|count| *count > 0)
        .unwrap_or(default)
}

/// Validate audit events of `user` (all users: "") whose reason matches `like`.
async fn audited(stack: &TestStack, user: &str, like: &str) -> i64 {
    let user = if user.is_empty() {
        String::new()
    } else {
        format!(" AND user_name = '{user}'")
    };
    stack
        .database
        .count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'validate' AND result = 'denied' \
             AND reason LIKE '{like}'{user}"
        ))
        .await
}

/// An hour of outsiders (`ENROLL_LOCKOUT_OUTSIDERS` addresses, 100 by default; 1,000 in the
/// big run), each failing once for one user, while the user's right code from their known
/// address passes every time: only the user's failure budget for unknown clients' worth of
/// outsider guesses is ever checked.
async fn an_hour_of_outsiders_never_holds_back_the_user(backend: Backend) {
    let outsiders = env_count("ENROLL_LOCKOUT_OUTSIDERS", 100);
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    rfc_tokens(&mut admin, &[("HOTPHOUR", "ivy")]).await;
    let mut counter = 0;
    passes(&mut proxy, "ivy", counter, HOME, "").await;
    let step = Duration::from_millis(3_600_000 / u64::from(outsiders));
    let every = (outsiders / 20).max(1);
    let mut own_passes = 1;
    for i in 0..outsiders {
        stack.clock().advance(step);
        assert_refused(&validate(&mut proxy, "ivy", "999999", &outsider(i), "").await);
        if i % every == every - 1 {
            counter += 1;
            passes(&mut proxy, "ivy", counter, HOME, "").await;
            own_passes += 1;
        }
    }
    let checked = audited(&stack, "ivy", "wrong pass (%").await;
    let held = audited(&stack, "ivy", "%failure budget for unknown clients%").await;
    println!(
        "[{backend:?}] {outsiders} outsider addresses over an hour against one user: \
         {checked} guesses checked, {held} refused unchecked; the user's known address \
         passed {own_passes} of {own_passes} times"
    );
    // Ten per window; the hour may straddle two windows.
    assert!(checked <= 20, "{checked} outsider guesses checked");
    assert_eq!(checked + held, i64::from(outsiders));
}

/// A pool of PIN-less TOTP tokens for `users` users `g0`..: imported, then assigned (16 at
/// a time).
async fn totp_users(stack: &TestStack, users: u32) {
    let mut admin = stack.admin();
    let csv: String = (0..users)
        .map(|i| format!("GUESS{i:06},{},totp,6,30\n", hex_seed(i)))
        .collect();
    admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "corp".into(),
            csv,
            ..Default::default()
        })
        .await
        .unwrap();
    futures::stream::iter(0..users)
        .map(|i| {
            let mut admin = admin.clone();
            async move {
                admin
                    .assign_token(pb::AssignTokenRequest {
                        serial: format!("GUESS{i:06}"),
                        realm: "corp".into(),
                        user: format!("g{i}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// A seed per user that no guess is derived from.
fn hex_seed(i: u32) -> String {
    (0..20u32)
        .map(|byte| {
            format!(
                "{:02x}",
                (i.wrapping_mul(2_654_435_761) >> (byte % 24)) as u8
            )
        })
        .collect()
}

/// Guessing PIN-less 6-digit TOTP codes (window: one step either side, 3 codes) across
/// `ENROLL_LOCKOUT_USERS` users (20; 10,000 in the big run) from `ENROLL_LOCKOUT_ADDRESSES`
/// addresses (50; 1,000) with `ENROLL_LOCKOUT_GUESSES` guesses (300; 20,000) over a
/// simulated hour, at the default bounds. Prints the refusal rates and the expected
/// takeovers per year: checked guesses per hour x 3/10^6 x 8,766 h.
async fn guessing_across_users_is_bounded_by_the_realm_budget(backend: Backend) {
    let users = env_count("ENROLL_LOCKOUT_USERS", 20);
    let addresses = env_count("ENROLL_LOCKOUT_ADDRESSES", 50);
    let guesses = env_count("ENROLL_LOCKOUT_GUESSES", 300);
    let stack = TestStack::start(backend).await;
    totp_users(&stack, users).await;
    let step = Duration::from_micros(3_600_000_000 / u64::from(guesses));
    let mut proxy = stack.proxy();
    let mut takeovers = 0;
    for g in 0..guesses {
        stack.clock().advance(step);
        let code = format!("{:06}", (u64::from(g) * 7_919 + 104_729) % 1_000_000);
        let user = format!("g{}", g % users);
        let answer = validate(&mut proxy, &user, &code, &outsider(g % addresses), "").await;
        takeovers += u32::from(answer.ok);
    }
    let checked = audited(&stack, "", "wrong pass (%").await;
    let by_pair = audited(&stack, "", "client % backing off until %").await;
    let by_user = audited(&stack, "", "%the user_s failure budget%").await;
    let by_realm = audited(&stack, "", "%the realm_s failure budget%").await;
    let by_client = audited(&stack, "", "%Validate budget%").await;
    let rate = |count: i64| 100.0 * count as f64 / f64::from(guesses);
    let per_year = checked as f64 * 3.0 / 1e6 * 8_766.0;
    println!(
        "[{backend:?}] {guesses} guesses over a simulated hour, {users} users, {addresses} \
         addresses: {checked} checked ({:.1} %), refused unchecked by the pair back-off \
         {by_pair} ({:.1} %), the user budget {by_user} ({:.1} %), the realm budget \
         {by_realm} ({:.1} %), the client's Validate budget {by_client}; {takeovers} \
         takeovers; expected takeovers per year at this rate: {checked} x 3/10^6 x 8766 = \
         {per_year:.2}",
        rate(checked),
        rate(by_pair),
        rate(by_user),
        rate(by_realm)
    );
    // The realm's 100 failures an hour (the hour may straddle two windows).
    assert!(checked <= 200, "{checked} guesses checked");
    assert_eq!(
        checked + by_pair + by_user + by_realm + by_client,
        i64::from(guesses) - i64::from(takeovers)
    );
}

enroll_e2e::on_both_backends!(
    an_hour_of_outsiders_never_holds_back_the_user,
    guessing_across_users_is_bounded_by_the_realm_budget,
);
