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
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Evaluate => "evaluate",
            Scenario::CheckEnrollment => "check-enrollment",
        }
    }
}

/// The subject space requests draw from (matches `seed-policies`).
#[derive(Debug, Clone, Copy)]
pub struct Population {
    pub realms: u32,
    pub users_per_realm: u32,
}

fn with_key<T>(message: T, key: &Option<MetadataValue<Ascii>>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", key.clone());
    }
    request
}

/// Sends one request of `scenario` on `channel`.
pub async fn send(
    scenario: Scenario,
    channel: Channel,
    key: &Option<MetadataValue<Ascii>>,
    population: Population,
) -> Result<(), Status> {
    let (realm, user, client_ip) = {
        let mut rng = rand::rng();
        (
            format!("realm-{}", rng.random_range(0..population.realms.max(1))),
            format!(
                "user-{}",
                rng.random_range(0..population.users_per_realm.max(1))
            ),
            format!(
                "10.{}.{}.{}",
                rng.random_range(0..=255u8),
                rng.random_range(0..=255u8),
                rng.random_range(1..=254u8)
            ),
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
    }
    Ok(())
}
