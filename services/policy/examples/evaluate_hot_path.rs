//! Times `PolicySet::evaluate` alone (no gRPC) against the load generator's 1,000-policy
//! seed: `cargo run --release -p enroll-policy --example evaluate_hot_path`.
use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use enroll_policy::domain::actions::TokenType;
use enroll_policy::domain::engine::{Action, EvaluationRequest, PolicySet, Subject};
use enroll_policy::domain::policy::{PolicySpec, StoredPolicy};

/// The same mix as `enroll-loadgen seed-policies`.
fn seed(count: u32, realms: u32) -> Vec<StoredPolicy> {
    (0..count)
        .map(|i| {
            let users = match i % 3 {
                0 => vec!["*".to_owned(), "!user-0".to_owned()],
                1 => vec![format!("user-{}", i % 50)],
                _ => vec![],
            };
            let clients = match i % 4 {
                0 => vec!["10.0.0.0/8".to_owned(), "!10.66.0.0/16".to_owned()],
                1 => vec!["2001:db8::/32".to_owned()],
                _ => vec![],
            };
            let mut actions = BTreeMap::from([
                ("max_token_per_user".to_owned(), (i % 5 + 1).to_string()),
                ("tokenlabel".to_owned(), "<u>@<r>".to_owned()),
            ]);
            if i.is_multiple_of(2) {
                actions.insert("otp_pin_minlength".to_owned(), "4".to_owned());
                actions.insert("autoassignment".to_owned(), "true".to_owned());
            }
            StoredPolicy {
                spec: PolicySpec {
                    name: format!("bench-{i:05}"),
                    scope: "enrollment".to_owned(),
                    realms: vec![format!("realm-{}", i % realms)],
                    users,
                    clients,
                    actions,
                    priority: 10 + i / realms,
                    active: true,
                    description: String::new(),
                },
                etag: "1".to_owned(),
                create_time: Utc::now(),
                update_time: Utc::now(),
            }
        })
        .collect()
}

fn main() {
    let (set, skipped) = PolicySet::compile(1, &seed(1000, 100));
    assert!(skipped.is_empty());
    let requests: Vec<EvaluationRequest> = (0..10_000u32)
        .map(|i| EvaluationRequest {
            subject: Subject {
                realm: format!("realm-{}", i % 100),
                user: format!("user-{}", i % 50),
                client: format!("10.1.2.{}", i % 250).parse().ok(),
                no_client: false,
            },
            action: Action::Enroll,
            token_type: Some(TokenType::Totp),
            serial: None,
        })
        .collect();
    let rounds = 20;
    let started = Instant::now();
    let mut allowed = 0usize;
    for _ in 0..rounds {
        for request in &requests {
            allowed += usize::from(
                set.evaluate(request)
                    .is_ok_and(|decision| decision.allowed()),
            );
        }
    }
    let per_call = started.elapsed().as_secs_f64() * 1e6 / (rounds * requests.len()) as f64;
    println!(
        "PolicySet::evaluate, 1000 policies: {per_call:.2} us per decision ({allowed} allowed)"
    );
}
