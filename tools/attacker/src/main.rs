//! `enroll-attacker`: plays the autoassignment guessing attack against a running stack and
//! reports what it got.
//!
//! `setup` stores a policy enabling autoassignment in one realm and imports a pool of TOTP
//! hardware tokens whose seeds derive from `--seed` (so `run` can play their legitimate
//! holders). `run` then, against every device replica in turn:
//! 1. a new hire holding pool token 0 takes it with two consecutive codes: the first one
//!    answers a challenge, the next one (on another replica, after waiting for the token to
//!    show it) answers the challenge with its transaction id;
//! 2. guesses `PIN + six random digits` for fresh user names from rotating client
//!    addresses, then with no client address at all;
//! 3. a second new hire (pool token 1) tries while the attack has spent the budgets.
//!
//! It then reports takeovers (users the service said ok to, and pool tokens assigned to an
//! attacker's name), the audit trail's reasons per phase, and the expected time to one
//! takeover under the budgets.
//!
//! `lockout` plays the Validate attacks against users who hold tokens (see `lockout.rs`).
mod attack;
mod lockout;
mod report;

use std::time::Duration;

use clap::{Parser, Subcommand};
use enroll_device::domain::otp::code;
use enroll_device::domain::tokens::{HashAlgorithm, OtpParameters, TokenKind};
use enroll_shared::proto::device::v1 as device;
use enroll_shared::proto::policy::v1 as policy;
use rand::{RngCore, SeedableRng};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

type Error = Box<dyn std::error::Error + Send + Sync>;
pub type DeviceClient = device::device_service_client::DeviceServiceClient<Channel>;

#[derive(Parser)]
#[command(
    version,
    about = "Autoassignment guessing attack against a running device service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct Pool {
    /// The realm under attack.
    #[arg(long, default_value = "attack")]
    realm: String,
    /// Pool tokens (TOTP, 6 digits, 30 s).
    #[arg(long, default_value_t = 100_000)]
    pool: u32,
    /// Derives the pool's seeds (token i: seed + i), so `run` knows tokens 0 and 1.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Store the autoassignment policy and import the pool (idempotent).
    Setup {
        #[command(flatten)]
        pool: Pool,
        /// Policy service URL.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        policy: String,
        /// A device service URL.
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        device: String,
        /// Admin API key (both services).
        #[arg(long, env = "ATTACKER_ADMIN_KEY")]
        admin_key: String,
    },
    /// Run the legitimate users and the attack, then report.
    Run {
        #[command(flatten)]
        pool: Pool,
        #[command(flatten)]
        attack: attack::Settings,
        #[command(flatten)]
        budgets: report::Budgets,
        /// Device replica URLs, comma separated; requests alternate between them.
        #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:50052")]
        devices: Vec<String>,
        /// Proxy API key (Validate).
        #[arg(long, env = "ATTACKER_PROXY_KEY")]
        proxy_key: String,
        /// Admin API key (audit trail, token listing).
        #[arg(long, env = "ATTACKER_ADMIN_KEY")]
        admin_key: String,
    },
    /// Validate against users who hold tokens (issue 18): outsiders vs. a known client,
    /// the realm failure budget, guessing across users.
    Lockout {
        #[command(flatten)]
        settings: lockout::Settings,
        /// A device service URL.
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        device: String,
        /// Proxy API key (Validate).
        #[arg(long, env = "ATTACKER_PROXY_KEY")]
        proxy_key: String,
        /// Admin API key (import, assign, audit trail).
        #[arg(long, env = "ATTACKER_ADMIN_KEY")]
        admin_key: String,
    },
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    match Cli::parse().command {
        Command::Setup {
            pool,
            policy,
            device,
            admin_key,
        } => setup(&pool, &policy, &device, &admin_key).await,
        Command::Lockout {
            settings,
            device,
            proxy_key,
            admin_key,
        } => {
            let client = DeviceClient::new(connect(&device).await?);
            let keys = Keys {
                proxy: bearer(&proxy_key)?,
                admin: bearer(&admin_key)?,
            };
            lockout::run(&settings, &client, &keys).await
        }
        Command::Run {
            pool,
            attack,
            budgets,
            devices,
            proxy_key,
            admin_key,
        } => {
            let mut replicas = Vec::new();
            for url in &devices {
                replicas.push(DeviceClient::new(connect(url).await?));
            }
            let keys = Keys {
                proxy: bearer(&proxy_key)?,
                admin: bearer(&admin_key)?,
            };
            run(&pool, &attack, &budgets, &replicas, &keys).await
        }
    }
}

async fn connect(url: &str) -> Result<Channel, Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

fn bearer(key: &str) -> Result<MetadataValue<Ascii>, Error> {
    Ok(format!("Bearer {key}").parse()?)
}

/// The API keys the run uses.
pub struct Keys {
    pub proxy: MetadataValue<Ascii>,
    pub admin: MetadataValue<Ascii>,
}

pub fn with_key<T>(message: T, key: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", key.clone());
    request
}

fn totp() -> OtpParameters {
    OtpParameters {
        kind: TokenKind::Totp,
        digits: 6,
        period: 30,
        algorithm: HashAlgorithm::Sha1,
    }
}

/// Pool token `i`: its serial and seed.
fn pool_token(pool: &Pool, i: u32) -> (String, [u8; 20]) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(pool.seed.wrapping_add(u64::from(i)));
    let mut seed = [0u8; 20];
    rng.fill_bytes(&mut seed);
    (format!("ATK{i:07}"), seed)
}

async fn setup(pool: &Pool, policy_url: &str, device_url: &str, key: &str) -> Result<(), Error> {
    let key = bearer(key)?;
    let mut policies =
        policy::policy_service_client::PolicyServiceClient::new(connect(policy_url).await?);
    let stored = policies
        .create_policy(with_key(
            policy::CreatePolicyRequest {
                policy: Some(policy::Policy {
                    name: format!("{}-autoassignment", pool.realm),
                    scope: "enrollment".to_owned(),
                    realms: vec![pool.realm.clone()],
                    actions: [
                        ("autoassignment".to_owned(), "true".to_owned()),
                        ("otp_pin_minlength".to_owned(), "4".to_owned()),
                    ]
                    .into(),
                    priority: 10,
                    active: true,
                    description: "enroll-attacker: autoassignment under attack".to_owned(),
                    ..Default::default()
                }),
                actor: "enroll-attacker".to_owned(),
                validate_only: false,
            },
            &key,
        ))
        .await;
    match stored {
        Ok(_) => println!("policy stored"),
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            println!("policy already present")
        }
        Err(status) => return Err(status.into()),
    }
    let mut client = DeviceClient::new(connect(device_url).await?);
    let started = std::time::Instant::now();
    let mut imported = 0;
    let mut done = 0;
    while done < pool.pool {
        let batch = (pool.pool - done).min(10_000);
        let mut csv = String::with_capacity(batch as usize * 64);
        for i in done..done + batch {
            let (serial, seed) = pool_token(pool, i);
            let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            csv.push_str(&format!("{serial},{hex},totp,6,30\n"));
        }
        let report = client
            .import_tokens(with_key(
                device::ImportTokensRequest {
                    realm: pool.realm.clone(),
                    csv,
                    request_id: String::new(),
                },
                &key,
            ))
            .await?
            .into_inner();
        imported += report.imported;
        done += batch;
    }
    println!(
        "pool of realm `{}`: {imported} tokens imported ({} already present) in {:.1} s",
        pool.realm,
        pool.pool - imported,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

/// A new hire holding pool token `index` takes it: PIN + the code shown now, then (on the
/// next replica) PIN + the next code once the token shows it. Returns the answers.
async fn new_hire(
    pool: &Pool,
    index: u32,
    user: &str,
    replicas: &[DeviceClient],
    keys: &Keys,
) -> Result<(device::ValidateResponse, device::ValidateResponse), Error> {
    let (serial, seed) = pool_token(pool, index);
    let validate = |replica: usize, step: u64, transaction_id: String| {
        let mut client = replicas[replica % replicas.len()].clone();
        let request = device::ValidateRequest {
            realm: pool.realm.clone(),
            user: user.to_owned(),
            pass: format!("2468{}", code(&totp(), &seed, step)),
            client_ip: "192.0.2.10".to_owned(),
            transaction_id,
            ..Default::default()
        };
        let key = keys.proxy.clone();
        async move { client.validate(with_key(request, &key)).await }
    };
    let step = unix_now() / 30;
    let first = validate(0, step, String::new()).await?.into_inner();
    // The proxy shows the challenge's message and sends the answer with its id.
    let transaction_id = first
        .challenge
        .as_ref()
        .map(|challenge| challenge.transaction_id.clone())
        .unwrap_or_default();
    // The token shows its next code when the next step starts.
    let wait = ((step + 1) * 30).saturating_sub(unix_now());
    println!(
        "  {user} holds {serial}: first code sent, challenge {:?}; waiting {wait} s for the next code",
        first.challenge.as_ref().map(|challenge| &challenge.message)
    );
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;
    let second = validate(1, step + 1, transaction_id).await?.into_inner();
    Ok((first, second))
}

async fn run(
    pool: &Pool,
    settings: &attack::Settings,
    budgets: &report::Budgets,
    replicas: &[DeviceClient],
    keys: &Keys,
) -> Result<(), Error> {
    if replicas.is_empty() {
        return Err("no --devices given".into());
    }
    let tag = unix_now() % 100_000;
    println!("== 1. a new hire takes pool token 0 with two consecutive codes");
    let user = format!("newhire-{tag}-a");
    let (first, second) = new_hire(pool, 0, &user, replicas, keys).await?;
    println!(
        "  first code: ok={} message={:?} challenged={}; next code: ok={} autoassigned={} serial={}",
        first.ok,
        first.message,
        first.challenge.is_some(),
        second.ok,
        second.autoassigned,
        second.serial
    );
    let mut phases = Vec::new();
    for (number, (name, with_client)) in [
        ("rotating names and client addresses", true),
        ("rotating names, no client address", false),
    ]
    .into_iter()
    .enumerate()
    {
        println!("== {}. attack: {name}", number + 2);
        let prefix = format!("guess-{tag}-{number}");
        let outcome = attack::guess(pool, settings, replicas, keys, &prefix, with_client).await;
        outcome.print();
        phases.push((name, prefix, outcome));
    }
    println!("== 4. a second new hire (pool token 1) while the attack has spent the budgets");
    let late = format!("newhire-{tag}-b");
    let (_, late_second) = new_hire(pool, 1, &late, replicas, keys).await?;
    println!(
        "  next code: ok={} autoassigned={} message={:?}",
        late_second.ok, late_second.autoassigned, late_second.message
    );
    let mut admin = replicas[0].clone();
    report::report(&mut admin, keys, pool, budgets, &phases, tag).await
}
