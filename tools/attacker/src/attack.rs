//! The guessing: `PIN + six random digits` for fresh user names, spread over the replicas,
//! with a new client address per name or none at all. The attacker follows the challenges
//! as a proxy would: every first guess of a name answers a challenge (real or decoy, alike),
//! the next guess answers it with its transaction id from the same address, and the guess
//! after a refused answer is a first guess again. Each name gets `guesses_per_user`
//! guesses before the next name.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use enroll_shared::proto::device::v1 as device;
use rand::Rng;

use crate::{DeviceClient, Keys, Pool, with_key};

#[derive(clap::Args, Clone)]
pub struct Settings {
    /// Guesses per attack phase.
    #[arg(long, default_value_t = 10_000)]
    pub guesses: u32,
    /// Guesses in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Guesses per user name before the next name.
    #[arg(long, default_value_t = 2)]
    pub guesses_per_user: u32,
}

/// What one phase got back.
#[derive(Default)]
pub struct Outcome {
    pub sent: u32,
    /// Users the service answered ok to: takeovers.
    pub takeovers: Vec<String>,
    /// Each distinct answer and how often it came.
    pub answers: BTreeMap<String, u32>,
    pub errors: u32,
    pub error_samples: Vec<String>,
    pub elapsed: Duration,
    /// Challenges the service answered (each is answered by the next guess of the name).
    pub challenges: u32,
}

impl Outcome {
    pub fn print(&self) {
        let rate = f64::from(self.sent) / self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "  {} guesses in {:.1} s ({rate:.0}/s): {} takeovers, {} errors",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.takeovers.len(),
            self.errors
        );
        println!(
            "    challenges received (answered with the next guess): {}",
            self.challenges
        );
        for (answer, count) in &self.answers {
            println!("    answer {answer}: {count}");
        }
        for sample in &self.error_samples {
            println!("    error: {sample}");
        }
    }
}

/// An answer without what differs on every call (the transaction id, the expiry).
fn describe(answer: &device::ValidateResponse) -> String {
    format!(
        "ok={} autoassigned={} serial={:?} message={:?} challenge={}",
        answer.ok,
        answer.autoassigned,
        answer.serial,
        answer.message,
        answer
            .challenge
            .as_ref()
            .map_or("none".to_owned(), |challenge| format!(
                "{{message={:?}, transaction_id of {} chars}}",
                challenge.message,
                challenge.transaction_id.len()
            ))
    )
}

/// A client address in 10.0.0.0/8, new for every guess.
fn random_address() -> String {
    let mut rng = rand::rng();
    format!(
        "10.{}.{}.{}",
        rng.random_range(0..=255u8),
        rng.random_range(0..=255u8),
        rng.random_range(1..=254u8)
    )
}

/// One phase of `settings.guesses` guesses under user names `{prefix}-{n}`.
pub async fn guess(
    pool: &Pool,
    settings: &Settings,
    replicas: &[DeviceClient],
    keys: &Keys,
    prefix: &str,
    with_client: bool,
) -> Outcome {
    let started = Instant::now();
    let next = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..settings.concurrency.max(1) {
        let (next, replicas) = (next.clone(), replicas.to_vec());
        let (key, realm, prefix) = (keys.proxy.clone(), pool.realm.clone(), prefix.to_owned());
        let (total, per_user) = (settings.guesses, settings.guesses_per_user.max(1));
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            // One name at a time, its guesses in order: a guess can only confirm a first
            // code the service has already seen.
            loop {
                let name = next.fetch_add(1, Ordering::Relaxed);
                let user = format!("{prefix}-{name}");
                // One address per name: a challenge is answered only from the address that
                // opened it.
                let client_ip = if with_client {
                    random_address()
                } else {
                    String::new()
                };
                let mut transaction_id = String::new();
                for n in 0..per_user {
                    let i = name.saturating_mul(per_user).saturating_add(n);
                    if i >= total {
                        return outcome;
                    }
                    let request = device::ValidateRequest {
                        realm: realm.clone(),
                        user: user.clone(),
                        pass: format!("1234{:06}", rand::rng().random_range(0..1_000_000u32)),
                        client_ip: client_ip.clone(),
                        transaction_id: std::mem::take(&mut transaction_id),
                        ..Default::default()
                    };
                    let mut client = replicas[i as usize % replicas.len()].clone();
                    outcome.sent += 1;
                    match client.validate(with_key(request, &key)).await {
                        Ok(answer) => {
                            let answer = answer.into_inner();
                            if answer.ok {
                                outcome.takeovers.push(user.clone());
                            }
                            if let Some(challenge) = &answer.challenge {
                                outcome.challenges += 1;
                                transaction_id = challenge.transaction_id.clone();
                            }
                            *outcome.answers.entry(describe(&answer)).or_default() += 1;
                        }
                        Err(status) => {
                            outcome.errors += 1;
                            let sample = format!("{:?}: {}", status.code(), status.message());
                            if outcome.error_samples.len() < 3
                                && !outcome.error_samples.contains(&sample)
                            {
                                outcome.error_samples.push(sample);
                            }
                        }
                    }
                }
            }
        }));
    }
    let mut total = Outcome::default();
    for task in tasks {
        let Ok(outcome) = task.await else { continue };
        total.sent += outcome.sent;
        total.takeovers.extend(outcome.takeovers);
        for (answer, count) in outcome.answers {
            *total.answers.entry(answer).or_default() += count;
        }
        total.errors += outcome.errors;
        total.challenges += outcome.challenges;
        for sample in outcome.error_samples {
            if total.error_samples.len() < 3 && !total.error_samples.contains(&sample) {
                total.error_samples.push(sample);
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}
