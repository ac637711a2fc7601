//! `enroll-loadgen`: drives the enrollment services over gRPC and reports throughput and
//! latency, scenario after scenario against the same server in one run, so ratios between
//! scenarios (e.g. a decision vs a health check) are measured under the same conditions.
mod lists;
mod scenarios;
mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use enroll_shared::proto::policy::v1 as policy;
use scenarios::{Population, Scenario};
use stats::Summary;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(version, about = "gRPC load generator for the enrollment services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// Server URL; several, comma-separated, spread the connections over replicas (each
    /// gets `--connections` of them).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// API key sent as `authorization: Bearer <key>` (health needs none).
    #[arg(long, env = "LOADGEN_API_KEY", default_value = "")]
    api_key: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios one after another and print one row each.
    Run {
        #[command(flatten)]
        target: Target,
        /// Scenarios, in order; ratios are relative to the first.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "health,evaluate"
        )]
        rpc: Vec<Scenario>,
        /// Requests in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// HTTP/2 connections the requests share.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Measured time per scenario, in seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Unmeasured warm-up per scenario, in seconds.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Realms requests draw from (`realm-0`..).
        #[arg(long, default_value_t = 100)]
        realms: u32,
        /// Users per realm requests draw from (`user-0`..).
        #[arg(long, default_value_t = 50)]
        users_per_realm: u32,
        /// Draw users Zipf-distributed with this exponent (e.g. 1.1: a few users make most
        /// requests, as behind a real proxy) instead of uniformly. The ranks are spread over
        /// the realms by a fixed permutation.
        #[arg(long)]
        zipf: Option<f64>,
        /// Print one JSON object per scenario instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Call CheckEnrollment once for every user of the population on every target (the
    /// replicas' caches start cold), and print how fast that went.
    PrimeCheck {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 100)]
        realms: u32,
        #[arg(long, default_value_t = 100)]
        users_per_realm: u32,
    },
    /// Seed the device service for the token scenarios: pools of 1,000 (`pool-1k`) and
    /// 100,000 (`pool-100k`) imported tokens, and 100 users of `bench-validate` with a TOTP
    /// token and the PIN 1234.
    SeedTokens {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 100_000)]
        large_pool: u32,
    },
    /// Create a realistic, conflict-free set of policies (idempotent).
    SeedPolicies {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long, default_value_t = 100)]
        realms: u32,
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// Time one list RPC with one filter, one request at a time: its first page and a deep
    /// page reached by following page tokens (p50/p99 of each; see scripts/bench-lists.sh).
    ListPages {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        args: lists::ListPagesArgs,
    },
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    match Cli::parse().command {
        Command::Run {
            target,
            rpc,
            concurrency,
            connections,
            duration,
            warmup,
            realms,
            users_per_realm,
            zipf,
            json,
        } => {
            let channels = connect(&target.target, connections.max(1)).await?;
            let key = bearer(&target.api_key)?;
            let population = Population {
                realms,
                users_per_realm,
                zipf: zipf.map(|exponent| scenarios::Zipf::new(realms * users_per_realm, exponent)),
            };
            let mut summaries: Vec<Summary> = Vec::new();
            for scenario in rpc {
                let load = Load {
                    scenario,
                    channels: channels.clone(),
                    key: key.clone(),
                    population: population.clone(),
                    concurrency: concurrency.max(1),
                };
                load.drive(Duration::from_secs(warmup)).await;
                let summary = load.drive(Duration::from_secs(duration)).await;
                summaries.push(summary);
            }
            print_summaries(&summaries, concurrency, json);
            Ok(())
        }
        Command::PrimeCheck {
            target,
            concurrency,
            realms,
            users_per_realm,
        } => {
            let population = Population {
                realms,
                users_per_realm,
                zipf: None,
            };
            prime_check(&target, concurrency.max(1), population).await
        }
        Command::SeedPolicies {
            target,
            count,
            realms,
            prefix,
        } => seed_policies(&target, count, realms, &prefix).await,
        Command::SeedTokens { target, large_pool } => seed_tokens(&target, large_pool).await,
        Command::ListPages { target, args } => {
            let channel = connect(&target.target, 1).await?.remove(0);
            lists::run(channel, bearer(&target.api_key)?, args).await
        }
    }
}

/// `connections` channels to each of the comma-separated `urls`, interleaved so that tasks
/// taking channels round-robin spread evenly over the targets.
async fn connect(urls: &str, connections: usize) -> Result<Vec<Channel>, Error> {
    let urls = target_urls(urls);
    let mut channels = Vec::with_capacity(connections * urls.len());
    for _ in 0..connections {
        for url in &urls {
            channels.push(
                Endpoint::from_shared((*url).to_owned())?
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            );
        }
    }
    Ok(channels)
}

/// The comma-separated URLs of `--target`.
fn target_urls(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// Every user once on every target, `concurrency` at a time per target.
async fn prime_check(
    target: &Target,
    concurrency: usize,
    population: Population,
) -> Result<(), Error> {
    let key = Arc::new(bearer(&target.api_key)?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let targets = target_urls(&target.target);
    let users = population.realms * population.users_per_realm;
    for url in &targets {
        let channel = connect(url, 1).await?.remove(0);
        for lane in 0..concurrency as u32 {
            let (channel, key) = (channel.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let mut errors = 0u64;
                for index in (lane..users).step_by(concurrency) {
                    let subject = (
                        index / population.users_per_realm,
                        index % population.users_per_realm,
                    );
                    if scenarios::check_once(channel.clone(), &key, subject)
                        .await
                        .is_err()
                    {
                        errors += 1;
                    }
                }
                errors
            }));
        }
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await?;
    }
    let elapsed = started.elapsed();
    let calls = u64::from(users) * targets.len() as u64;
    println!(
        "primed {calls} CheckEnrollment calls ({users} users x {} targets) in {:.2} s: {:.0} req/s cold, {errors} errors",
        targets.len(),
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn bearer(key: &str) -> Result<Option<MetadataValue<Ascii>>, Error> {
    if key.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!("Bearer {key}").parse()?))
}

struct Load {
    scenario: Scenario,
    channels: Vec<Channel>,
    key: Option<MetadataValue<Ascii>>,
    population: Population,
    concurrency: usize,
}

impl Load {
    /// `concurrency` tasks, each sending its next request as soon as the last one answered.
    async fn drive(&self, duration: Duration) -> Summary {
        let started = Instant::now();
        let deadline = started + duration;
        let key = Arc::new(self.key.clone());
        let mut tasks = Vec::with_capacity(self.concurrency);
        for task in 0..self.concurrency {
            let channel = self.channels[task % self.channels.len()].clone();
            let key = key.clone();
            let (scenario, population) = (self.scenario, self.population.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut errors = 0u64;
                let mut samples: Vec<String> = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let result =
                        scenarios::send(scenario, channel.clone(), &key, population.clone()).await;
                    latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if let Err(status) = result {
                        errors += 1;
                        let sample = format!("{:?}: {}", status.code(), status.message());
                        if samples.len() < 3 && !samples.contains(&sample) {
                            samples.push(sample);
                        }
                    }
                }
                (latencies, errors, samples)
            }));
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        let mut samples: Vec<String> = Vec::new();
        for task in tasks {
            if let Ok((task_latencies, task_errors, task_samples)) = task.await {
                latencies.extend(task_latencies);
                errors += task_errors;
                for sample in task_samples {
                    if samples.len() < 3 && !samples.contains(&sample) {
                        samples.push(sample);
                    }
                }
            }
        }
        stats::summarize(
            self.scenario.name(),
            latencies,
            errors,
            samples,
            started.elapsed(),
        )
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Scenarios that ran more than once (interleaved, to even out drift in the machine's
/// speed), merged: requests and time added up, the worst p99 kept.
fn merge_repeats(summaries: &[Summary]) -> Vec<Summary> {
    let mut merged: Vec<Summary> = Vec::new();
    for summary in summaries {
        match merged.iter_mut().find(|m| m.name == summary.name) {
            Some(total) => {
                total.requests += summary.requests;
                total.errors += summary.errors;
                total.elapsed += summary.elapsed;
                total.p50 = total.p50.max(summary.p50);
                total.p90 = total.p90.max(summary.p90);
                total.p99 = total.p99.max(summary.p99);
                total.max = total.max.max(summary.max);
            }
            None => merged.push(summary.clone()),
        }
    }
    merged
}

fn print_summaries(summaries: &[Summary], concurrency: usize, json: bool) {
    let merged = merge_repeats(summaries);
    if merged.len() < summaries.len() {
        print_rows(summaries, concurrency, json);
        if !json {
            println!("-- all rounds together (worst percentiles of the rounds):");
        }
        print_rows(&merged, concurrency, json);
    } else {
        print_rows(summaries, concurrency, json);
    }
}

fn print_rows(summaries: &[Summary], concurrency: usize, json: bool) {
    let baseline = summaries.first().map(Summary::throughput).unwrap_or(0.0);
    let ratio = |summary: &Summary| {
        if baseline > 0.0 {
            summary.throughput() / baseline
        } else {
            0.0
        }
    };
    if json {
        for summary in summaries {
            println!(
                "{{\"scenario\":\"{}\",\"concurrency\":{},\"requests\":{},\"errors\":{},\"rps\":{:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"ratio\":{:.3}}}",
                summary.name,
                concurrency,
                summary.requests,
                summary.errors,
                summary.throughput(),
                millis(summary.p50),
                millis(summary.p90),
                millis(summary.p99),
                millis(summary.max),
                ratio(summary),
            );
        }
        return;
    }
    println!(
        "{:<18} {:>6} {:>10} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "scenario",
        "conc",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "ratio"
    );
    for summary in summaries {
        println!(
            "{:<18} {:>6} {:>10} {:>8} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7.2}",
            summary.name,
            concurrency,
            summary.requests,
            summary.errors,
            summary.throughput(),
            millis(summary.p50),
            millis(summary.p90),
            millis(summary.p99),
            millis(summary.max),
            ratio(summary),
        );
        for sample in &summary.error_samples {
            println!("    error: {sample}");
        }
    }
}

/// Policy `i` targets `realm-{i % realms}` with a priority unique within its realm, so the
/// set never conflicts; users, clients and actions vary like a real deployment's.
fn seed_policy(i: u32, realms: u32, prefix: &str) -> policy::Policy {
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
    let mut actions = std::collections::HashMap::from([
        ("max_token_per_user".to_owned(), (i % 5 + 1).to_string()),
        ("tokenlabel".to_owned(), "<u>@<r>".to_owned()),
    ]);
    if i.is_multiple_of(2) {
        actions.insert("otp_pin_minlength".to_owned(), "4".to_owned());
        actions.insert("autoassignment".to_owned(), "true".to_owned());
    }
    policy::Policy {
        name: format!("{prefix}-{i:05}"),
        scope: "enrollment".to_owned(),
        realms: vec![format!("realm-{}", i % realms.max(1))],
        users,
        clients,
        actions,
        priority: 10 + i / realms.max(1),
        active: true,
        description: "load-generator seed".to_owned(),
        ..Default::default()
    }
}

async fn seed_policies(
    target: &Target,
    count: u32,
    realms: u32,
    prefix: &str,
) -> Result<(), Error> {
    use futures::StreamExt;
    let channel = connect(&target.target, 1).await?.remove(0);
    let key = bearer(&target.api_key)?;
    let started = Instant::now();
    let results: Vec<Result<bool, tonic::Status>> = futures::stream::iter(0..count)
        .map(|i| {
            let mut client =
                policy::policy_service_client::PolicyServiceClient::new(channel.clone());
            let mut request = tonic::Request::new(policy::CreatePolicyRequest {
                policy: Some(seed_policy(i, realms, prefix)),
                actor: "loadgen".to_owned(),
                validate_only: false,
            });
            if let Some(key) = &key {
                request.metadata_mut().insert("authorization", key.clone());
            }
            async move {
                match client.create_policy(request).await {
                    Ok(_) => Ok(true),
                    Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(false),
                    Err(status) => Err(status),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let created = results.iter().filter(|r| matches!(r, Ok(true))).count();
    let skipped = results.iter().filter(|r| matches!(r, Ok(false))).count();
    if let Some(Err(status)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("seeding failed: {:?}: {}", status.code(), status.message()).into());
    }
    println!(
        "created {created}, already present {skipped}, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Imports `count` random-seed TOTP/HOTP tokens into `realm`'s pool, 10,000 rows per call.
async fn import_pool(
    client: &mut enroll_shared::proto::device::v1::device_service_client::DeviceServiceClient<
        Channel,
    >,
    key: &Option<MetadataValue<Ascii>>,
    realm: &str,
    count: u32,
) -> Result<(), Error> {
    use enroll_shared::proto::device::v1 as device;
    use rand::RngCore;
    let mut rng = rand::rng();
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(10_000);
        let mut csv = String::with_capacity(batch as usize * 64);
        for i in done..done + batch {
            let mut seed = [0u8; 20];
            rng.fill_bytes(&mut seed);
            let kind = if i % 2 == 0 { "totp,6,30" } else { "hotp,6,0" };
            let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            csv.push_str(&format!("{realm}-{i:07},{seed},{kind}\n"));
        }
        let mut request = tonic::Request::new(device::ImportTokensRequest {
            realm: realm.into(),
            csv,
            request_id: String::new(),
        });
        if let Some(key) = key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        let response = client.import_tokens(request).await?.into_inner();
        if !response.errors.is_empty() && response.imported == 0 {
            println!(
                "{realm}: already seeded ({} rows present)",
                response.errors.len()
            );
        }
        done += batch;
    }
    Ok(())
}

async fn seed_tokens(target: &Target, large_pool: u32) -> Result<(), Error> {
    use enroll_shared::proto::device::v1 as device;
    let channel = connect(&target.target, 1).await?.remove(0);
    let key = bearer(&target.api_key)?;
    let mut client = device::device_service_client::DeviceServiceClient::new(channel);
    let started = Instant::now();
    import_pool(&mut client, &key, "pool-1k", 1_000).await?;
    import_pool(&mut client, &key, "pool-100k", large_pool).await?;
    for user in 0..100 {
        let with_key = |message| {
            let mut request = tonic::Request::new(message);
            if let Some(key) = &key {
                request.metadata_mut().insert("authorization", key.clone());
            }
            request
        };
        let enrolled = client
            .enroll_token(with_key(device::EnrollTokenRequest {
                realm: "bench-validate".into(),
                user: format!("vuser-{user}"),
                r#type: device::TokenType::Totp as i32,
                ..Default::default()
            }))
            .await?
            .into_inner();
        let serial = enrolled.token.map(|token| token.serial).unwrap_or_default();
        let mut request = tonic::Request::new(device::SetPinRequest {
            serial,
            pin: "1234".into(),
            ..Default::default()
        });
        if let Some(key) = &key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        client.set_pin(request).await?;
    }
    println!(
        "seeded pools of 1000 and {large_pool} tokens and 100 users with PINs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
