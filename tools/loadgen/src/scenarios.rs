//! What each scenario sends.
use enroll_shared::proto::device::v1 as device;
use enroll_shared::proto::policy::v1 as policy;
use rand::Rng;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// The RPCs the generator can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// grpc.health.v1.Health/Check (the baseline: the cheapest call a server answers).
    Health,
    /// PolicyService/EvaluateEnrollment for random realm/user/client.
    Evaluate,
    /// DeviceService/CheckEnrollment for random realm/user.
    CheckEnrollment,
    /// DeviceService/EnrollToken: a TOTP token for a random user of realm `bench`.
    EnrollToken,
    /// DeviceService/ListTokens: the first 50 tokens of realm `bench`.
    ListTokens,
    /// DeviceService/Validate with the right PIN and a wrong code for one of the 100
    /// `seed-tokens` users (bounded by argon2: every attempt checks the PIN).
    ValidateWrong,
    /// DeviceService/Validate by a user without token with a wrong code: an autoassignment
    /// attempt against the 1,000-token pool of realm `pool-1k`.
    #[value(name = "autoassign-wrong-1k")]
    AutoassignWrong1k,
    /// The same against the 100,000-token pool of realm `pool-100k`.
    #[value(name = "autoassign-wrong-100k")]
    AutoassignWrong100k,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Evaluate => "evaluate",
            Scenario::CheckEnrollment => "check-enrollment",
            Scenario::EnrollToken => "enroll-token",
            Scenario::ListTokens => "list-tokens",
            Scenario::ValidateWrong => "validate-wrong",
            Scenario::AutoassignWrong1k => "autoassign-wrong-1k",
            Scenario::AutoassignWrong100k => "autoassign-wrong-100k",
        }
    }
}

/// The subject space requests draw from (matches `seed-policies`).
#[derive(Debug, Clone)]
pub struct Population {
    pub realms: u32,
    pub users_per_realm: u32,
    /// Users drawn by popularity instead of uniformly.
    pub zipf: Option<Zipf>,
}

impl Population {
    /// A (realm, user) pair: uniform, or by Zipf rank.
    fn draw(&self, rng: &mut impl Rng) -> (u32, u32) {
        let per_realm = self.users_per_realm.max(1);
        match &self.zipf {
            None => (
                rng.random_range(0..self.realms.max(1)),
                rng.random_range(0..per_realm),
            ),
            Some(zipf) => {
                let index = zipf.user(rng);
                (index / per_realm, index % per_realm)
            }
        }
    }
}

/// Zipf-distributed ranks over `n` users (P(rank k) proportional to 1/k^s), by inverse
/// transform on a precomputed cumulative table; rank k is user `(k * M) mod n` for a
/// multiplier M coprime with n, so the most popular users are spread over the realms.
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: std::sync::Arc<Vec<f64>>,
}

impl Zipf {
    pub fn new(n: u32, exponent: f64) -> Self {
        let mut cumulative = Vec::with_capacity(n.max(1) as usize);
        let mut total = 0.0;
        for rank in 1..=n.max(1) {
            total += 1.0 / f64::from(rank).powf(exponent);
            cumulative.push(total);
        }
        for value in &mut cumulative {
            *value /= total;
        }
        Self {
            cumulative: std::sync::Arc::new(cumulative),
        }
    }

    fn user(&self, rng: &mut impl Rng) -> u32 {
        let n = self.cumulative.len() as u64;
        let draw: f64 = rng.random_range(0.0..1.0);
        let rank = self.cumulative.partition_point(|value| *value < draw) as u64;
        ((rank.min(n - 1) * spread(n)) % n) as u32
    }
}

/// A multiplier coprime with `n` (so rank -> user is a permutation) that scatters
/// neighbouring ranks (Knuth's multiplicative hash constant, moved to the next coprime).
fn spread(n: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut multiplier = 2_654_435_761 % n.max(1);
    while n > 1 && gcd(multiplier, n) != 1 {
        multiplier = (multiplier + 1) % n;
    }
    multiplier.max(1)
}

fn with_key<T>(message: T, key: &Option<MetadataValue<Ascii>>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", key.clone());
    }
    request
}

/// CheckEnrollment for `realm-{realm}`/`user-{user}`, as the scenario sends it.
pub async fn check_once(
    channel: Channel,
    key: &Option<MetadataValue<Ascii>>,
    (realm, user): (u32, u32),
) -> Result<(), Status> {
    let mut client = device::device_service_client::DeviceServiceClient::new(channel);
    let request = device::CheckEnrollmentRequest {
        realm: format!("realm-{realm}"),
        user: format!("user-{user}"),
        required_device_type: device::DeviceType::Any as i32,
        client_ip: "10.0.0.1".into(),
        ..Default::default()
    };
    client.check_enrollment(with_key(request, key)).await?;
    Ok(())
}

/// Sends one request of `scenario` on `channel`.
pub async fn send(
    scenario: Scenario,
    channel: Channel,
    key: &Option<MetadataValue<Ascii>>,
    population: Population,
) -> Result<(), Status> {
    let (realm, user, client_ip, any) = {
        let mut rng = rand::rng();
        let any: u32 = rng.random_range(0..1_000_000);
        let (realm, user) = population.draw(&mut rng);
        (
            format!("realm-{realm}"),
            format!("user-{user}"),
            format!(
                "10.{}.{}.{}",
                rng.random_range(0..=255u8),
                rng.random_range(0..=255u8),
                rng.random_range(1..=254u8)
            ),
            any,
        )
    };
    match scenario {
        Scenario::Health => {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
        }
        Scenario::Evaluate => {
            let mut client = policy::policy_service_client::PolicyServiceClient::new(channel);
            let request = policy::EvaluateEnrollmentRequest {
                realm,
                user,
                client_ip,
                action: policy::Action::Enroll as i32,
                token_type: "totp".into(),
                serial: String::new(),
                no_client: false,
            };
            client.evaluate_enrollment(with_key(request, key)).await?;
        }
        Scenario::CheckEnrollment => {
            let mut client = device::device_service_client::DeviceServiceClient::new(channel);
            let request = device::CheckEnrollmentRequest {
                realm,
                user,
                required_device_type: device::DeviceType::Any as i32,
                client_ip,
                ..Default::default()
            };
            client.check_enrollment(with_key(request, key)).await?;
        }
        Scenario::EnrollToken => {
            let mut client = device::device_service_client::DeviceServiceClient::new(channel);
            let request = device::EnrollTokenRequest {
                realm: "bench".into(),
                user: format!("user-{any}"),
                r#type: device::TokenType::Totp as i32,
                ..Default::default()
            };
            client.enroll_token(with_key(request, key)).await?;
        }
        Scenario::ListTokens => {
            let mut client = device::device_service_client::DeviceServiceClient::new(channel);
            let request = device::ListTokensRequest {
                realm: "bench".into(),
                page_size: 50,
                ..Default::default()
            };
            client.list_tokens(with_key(request, key)).await?;
        }
        Scenario::ValidateWrong | Scenario::AutoassignWrong1k | Scenario::AutoassignWrong100k => {
            let (realm, user) = match scenario {
                Scenario::ValidateWrong => ("bench-validate", format!("vuser-{}", any % 100)),
                Scenario::AutoassignWrong1k => ("pool-1k", format!("auser-{any}")),
                _ => ("pool-100k", format!("auser-{any}")),
            };
            let mut client = device::device_service_client::DeviceServiceClient::new(channel);
            let request = device::ValidateRequest {
                realm: realm.into(),
                user,
                pass: format!("1234{:06}", any % 1_000_000),
                client_ip,
                ..Default::default()
            };
            // A random code sometimes is the current code of a pool token (34% of draws
            // against 100,000 tokens): the attempt then reaches the policy, which refuses
            // autoassignment in the bench realms. That is a refusal too, not an error.
            let response = match client.validate(with_key(request, key)).await {
                Ok(response) => response.into_inner(),
                Err(status)
                    if status.code() == tonic::Code::PermissionDenied
                        && scenario != Scenario::ValidateWrong =>
                {
                    return Ok(());
                }
                Err(status) => return Err(status),
            };
            if response.ok {
                return Err(Status::internal("a wrong pass was accepted"));
            }
            // Every refusal answers `wrong pass` (a token backing off too), and each costs an
            // argon2 verification: nothing to tell apart here.
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_draws_stay_in_range_and_favour_a_few_users() {
        let population = Population {
            realms: 100,
            users_per_realm: 1_000,
            zipf: Some(Zipf::new(100_000, 1.1)),
        };
        let mut rng = rand::rng();
        let mut counts = std::collections::HashMap::<(u32, u32), u32>::new();
        for _ in 0..100_000 {
            let (realm, user) = population.draw(&mut rng);
            assert!(realm < 100 && user < 1_000);
            *counts.entry((realm, user)).or_default() += 1;
        }
        let mut popular: Vec<u32> = counts.values().copied().collect();
        popular.sort_unstable_by(|a, b| b.cmp(a));
        // With s = 1.1 over 100,000 users, the top 1% make well over half the requests.
        let top: u32 = popular.iter().take(1_000).sum();
        assert!(top > 50_000, "top 1% made {top} of 100,000");
        // The most popular users are spread over realms, not all in realm 0.
        let mut realms: Vec<u32> = counts
            .iter()
            .filter(|(_, count)| **count > 200)
            .map(|((realm, _), _)| *realm)
            .collect();
        realms.sort_unstable();
        realms.dedup();
        assert!(realms.len() > 1, "{realms:?}");
    }
}
