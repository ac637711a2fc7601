//! The report: takeovers (from the answers and from the pool itself), what the audit trail
//! says happened to each phase's guesses, and the expected time to one takeover under the
//! budgets, from the formula.
use std::collections::BTreeMap;

use enroll_shared::proto::device::v1 as device;

use crate::attack::Outcome;
use crate::{DeviceClient, Error, Keys, Pool, with_key};

/// The service's settings the formula needs (its defaults unless the stack changed them).
#[derive(clap::Args, Clone)]
pub struct Budgets {
    /// `validation.autoassign_attempts_per_realm`.
    #[arg(long, default_value_t = 300)]
    pub realm_budget: u32,
    /// `validation.autoassign_attempts_per_client`.
    #[arg(long, default_value_t = 30)]
    pub client_budget: u32,
    /// `validation.autoassign_attempts_per_user`.
    #[arg(long, default_value_t = 10)]
    pub user_budget: u32,
    /// `validation.autoassign_window_secs`.
    #[arg(long, default_value_t = 3_600)]
    pub window_secs: u64,
    /// `validation.totp_window_steps`: codes per token in the window are 2w+1.
    #[arg(long, default_value_t = 1)]
    pub totp_window: u64,
}

/// What the audit trail says a guess met: the reason with the variable parts cut off.
fn kind_of(event: &device::AuditEvent) -> String {
    let reason = event.reason.as_str();
    let kind = if reason.contains("Validate budget") {
        "refused: the client's Validate budget"
    } else if reason.contains("client's autoassignment budget") {
        "refused: the client's autoassignment budget"
    } else if reason.contains("realm's autoassignment budget") {
        "refused: the realm's autoassignment budget"
    } else if reason.contains("user's autoassignment budget") {
        "refused: the user's autoassignment budget"
    } else if reason.contains("waiting for the token's next code") {
        "first guess: matched one pool token (real challenge)"
    } else if reason.contains("answer to a decoy challenge") {
        "answer: to a decoy challenge"
    } else if reason.contains("not the token's next code") {
        "answer: to a real challenge, not the token's next code"
    } else if reason.contains("names no open challenge") {
        "answer: no open challenge (expired or spent)"
    } else if reason.contains("the same first code again") {
        "retyped: the same challenge again"
    } else if reason.contains("decoy challenge: no pool token shows this code") {
        "first guess: no pool token shows the code (decoy challenge)"
    } else if reason.contains("decoy challenge: the code matches") {
        "first guess: several pool tokens show the code (decoy challenge)"
    } else if reason.contains("decoy challenge") {
        "first guess: matched, PIN refused or no PIN verdict (decoy challenge)"
    } else if event.result == "ok" {
        "assigned"
    } else {
        reason
    };
    format!("{} {kind}", event.action)
}

async fn audit_trail(
    admin: &mut DeviceClient,
    keys: &Keys,
    realm: &str,
) -> Result<Vec<device::AuditEvent>, Error> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_audit_events(with_key(
                device::ListAuditEventsRequest {
                    realm: realm.to_owned(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &keys.admin,
            ))
            .await?
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return Ok(events);
        }
        page_token = page.next_page_token;
    }
}

async fn assigned_tokens(
    admin: &mut DeviceClient,
    keys: &Keys,
    realm: &str,
) -> Result<Vec<device::Token>, Error> {
    let mut tokens = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_tokens(with_key(
                device::ListTokensRequest {
                    realm: realm.to_owned(),
                    assigned: Some(true),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &keys.admin,
            ))
            .await?
            .into_inner();
        tokens.extend(page.tokens);
        if page.next_page_token.is_empty() {
            return Ok(tokens);
        }
        page_token = page.next_page_token;
    }
}

pub async fn report(
    admin: &mut DeviceClient,
    keys: &Keys,
    pool: &Pool,
    budgets: &Budgets,
    phases: &[(&str, String, Outcome)],
    tag: u64,
) -> Result<(), Error> {
    println!("== report");
    let events = audit_trail(admin, keys, &pool.realm).await?;
    for (name, prefix, outcome) in phases {
        let mut kinds: BTreeMap<String, u32> = BTreeMap::new();
        for event in events.iter().filter(|event| {
            event
                .user
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
        }) {
            *kinds.entry(kind_of(event)).or_default() += 1;
        }
        println!(
            "  {name}: {} guesses, {} distinct answers, {} takeovers by answer",
            outcome.sent,
            outcome.answers.len(),
            outcome.takeovers.len()
        );
        for (kind, count) in kinds {
            println!("    audit {kind}: {count}");
        }
    }
    let assigned = assigned_tokens(admin, keys, &pool.realm).await?;
    let attacker = format!("guess-{tag}-");
    let taken: Vec<_> = assigned
        .iter()
        .filter(|token| token.user.starts_with(&attacker))
        .map(|token| format!("{} -> {}", token.serial, token.user))
        .collect();
    let answered: usize = phases
        .iter()
        .map(|(_, _, outcome)| outcome.takeovers.len())
        .sum();
    println!(
        "  TAKEOVERS: {} by answer, {} pool tokens assigned to attacker names {taken:?}",
        answered,
        taken.len()
    );
    println!(
        "  pool tokens assigned in realm `{}`: {} ({:?})",
        pool.realm,
        assigned.len(),
        assigned
            .iter()
            .map(|token| format!("{} -> {}", token.serial, token.user))
            .collect::<Vec<_>>()
    );
    formula(pool, budgets);
    Ok(())
}

/// The expected cost of one takeover. Every first guess answers a challenge, but only a
/// real one (probability k*N/10^6) can be won, by answering it with that token's next code
/// (10^-6): about k*N/10^12 per guess, whatever names and addresses rotate. The
/// realm budget bounds every guess in the realm; one address alone, or all requests without
/// one, get the client budget.
fn formula(pool: &Pool, budgets: &Budgets) {
    let codes = 2.0 * budgets.totp_window as f64 + 1.0;
    let n = f64::from(pool.pool);
    let first = (codes * n / 1e6).min(1.0);
    let per_guess = first * 1e-6;
    let guesses = 1.0 / per_guess;
    let per_hour = |budget: u32| f64::from(budget) * 3_600.0 / budgets.window_secs.max(1) as f64;
    println!("== formula (k = {codes} codes per token in the window, N = {n}, 6 digits)");
    println!(
        "  before: one code, k*N/10^6 = {:.3} per guess: a takeover every {:.1} guesses",
        first,
        1.0 / first
    );
    println!(
        "  now: two consecutive codes, k*N/10^12 = {per_guess:.2e} per guess: {guesses:.3e} guesses per takeover"
    );
    for (who, budget) in [
        (
            "whole realm, any rotation (realm budget)",
            budgets.realm_budget,
        ),
        (
            "one address, or no address at all (client budget)",
            budgets.client_budget,
        ),
    ] {
        let rate = per_hour(budget);
        let hours = guesses / rate;
        println!(
            "  {who}: {rate:.0} guesses/hour -> expected time to one takeover {hours:.3e} h = {:.1} years",
            hours / (24.0 * 365.0)
        );
    }
    println!(
        "  one user name: {} guesses/hour (user budget)",
        per_hour(budgets.user_budget)
    );
}
