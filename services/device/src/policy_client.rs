//! The device service's client of the policy service: bearer key, trace-context
//! propagation and a tower timeout, so a slow or absent policy service fails closed.
use std::time::Duration;

use enroll_shared::proto::policy::v1 as pb;
use enroll_shared::telemetry::PropagateTraceContext;
use pb::policy_service_client::PolicyServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tower::timeout::Timeout;

use crate::app::POLICY_SERVICE_NAME;
use crate::config::PolicyServiceConfig;

/// Adds the API key and the current trace context to every call.
#[derive(Clone)]
pub struct CallerCredentials {
    authorization: MetadataValue<Ascii>,
}

impl Interceptor for CallerCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        PropagateTraceContext.call(request)
    }
}

type PolicyTransport = InterceptedService<Timeout<Channel>, CallerCredentials>;

#[derive(Clone)]
pub struct PolicyClient {
    policies: PolicyServiceClient<PolicyTransport>,
    health: HealthClient<Timeout<Channel>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyClientError {
    #[error("policy_service.url `{0}` is not a valid URL")]
    Url(String),
    #[error("policy_service.api_key is missing or not printable ASCII")]
    ApiKey,
}

impl PolicyClient {
    /// A lazily connecting client: nothing fails until a call is made.
    pub fn new(config: &PolicyServiceConfig) -> Result<Self, PolicyClientError> {
        let endpoint = Endpoint::from_shared(config.url.clone())
            .map_err(|_| PolicyClientError::Url(config.url.clone()))?
            .connect_timeout(config.timeout())
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        let key = config.api_key.trim();
        if key.is_empty() {
            return Err(PolicyClientError::ApiKey);
        }
        let authorization: MetadataValue<Ascii> = format!("Bearer {key}")
            .parse()
            .map_err(|_| PolicyClientError::ApiKey)?;
        let channel = Timeout::new(endpoint.connect_lazy(), config.timeout());
        Ok(Self {
            policies: PolicyServiceClient::with_interceptor(
                channel.clone(),
                CallerCredentials { authorization },
            ),
            health: HealthClient::new(channel),
        })
    }

    /// Asks for a decision. Transport failures and timeouts become UNAVAILABLE.
    pub async fn evaluate(
        &self,
        request: pb::EvaluateEnrollmentRequest,
    ) -> Result<pb::EvaluateEnrollmentResponse, Status> {
        self.policies
            .clone()
            .evaluate_enrollment(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(fail_closed)
    }

    /// Checks a proposed PIN against the subject's PIN rules.
    pub async fn validate_pin(
        &self,
        request: pb::ValidatePinRequest,
    ) -> Result<pb::ValidatePinResponse, Status> {
        self.policies
            .clone()
            .validate_pin(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(fail_closed)
    }

    /// Whether the policy service reports SERVING.
    pub async fn is_serving(&self) -> bool {
        let request = tonic_health::pb::HealthCheckRequest {
            service: POLICY_SERVICE_NAME.to_owned(),
        };
        matches!(
            self.health.clone().check(request).await,
            Ok(response) if response.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        )
    }
}

/// Errors that mean "no decision could be had" become UNAVAILABLE; the policy service's own
/// answers (INVALID_ARGUMENT, FAILED_PRECONDITION for a conflict, ...) pass through.
fn fail_closed(status: Status) -> Status {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Unknown
        | Code::Cancelled
        | Code::Internal => Status::unavailable(format!(
            "policy service unreachable ({}); nothing was changed",
            status.code().description()
        )),
        Code::Unauthenticated | Code::PermissionDenied => Status::unavailable(
            "the device service's policy_service.api_key was refused by the policy service; nothing was changed",
        ),
        _ => status,
    }
}
