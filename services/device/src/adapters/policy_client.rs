//! The device service's client of the policy service: bearer key, trace-context
//! propagation and a tower timeout, so a slow or absent policy service fails closed. It
//! turns the wire types into the domain's decisions and its failures into `PolicyError`.
use std::time::Duration;

use async_trait::async_trait;

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

use crate::config::PolicyServiceConfig;
use crate::domain::decision::{
    AaguidList, CertificationLevel, Decision, Denial, PinVerdict, PolicyAction, PolicyError,
    PolicyQuestion, Rejection, Settings,
};
use crate::domain::devices::DeviceKind;
use crate::domain::names::{Realm, UserName};
use crate::service::ports::PolicyDecisions;

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
    #[error("policy_service.url is https:// but policy_service.tls (at least `ca`) is not set")]
    HttpsWithoutTls,
    #[error(
        "policy_service.tls is set but policy_service.url `{0}` is not https://: the calls would go in clear"
    )]
    TlsWithoutHttps(String),
    #[error("{0}")]
    Tls(#[from] enroll_shared::tls::TlsError),
}

impl PolicyClient {
    /// A lazily connecting client: the TLS files are read now, nothing else fails until a
    /// call is made.
    pub fn new(config: &PolicyServiceConfig) -> Result<Self, PolicyClientError> {
        let endpoint = Endpoint::from_shared(config.url.clone())
            .map_err(|_| PolicyClientError::Url(config.url.clone()))?
            .connect_timeout(config.timeout())
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        let endpoint = secured(endpoint, config)?;
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

    /// The policy service's WatchPolicySet stream (the version it decides with).
    pub async fn watch_policy_set(&self) -> Result<tonic::Streaming<pb::PolicySetState>, Status> {
        self.policies
            .clone()
            .watch_policy_set(pb::WatchPolicySetRequest {})
            .await
            .map(tonic::Response::into_inner)
    }

    /// A page of the policy service's change history (`adapters::policy_history`).
    pub async fn list_policy_history(
        &self,
        request: pb::ListPolicyHistoryRequest,
    ) -> Result<pb::ListPolicyHistoryResponse, Status> {
        self.policies
            .clone()
            .list_policy_history(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Whether the policy service reports SERVING.
    pub async fn is_serving(&self) -> bool {
        let request = tonic_health::pb::HealthCheckRequest {
            service: pb::policy_service_server::SERVICE_NAME.to_owned(),
        };
        matches!(
            self.health.clone().check(request).await,
            Ok(response) if response.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        )
    }
}

/// `endpoint` with TLS when the URL is https://. The URL and `[policy_service.tls]` must
/// agree: tonic speaks TLS only to https:// URLs, so a TLS section next to an http:// URL
/// would send the service key and every PIN in clear while looking configured.
fn secured(
    endpoint: Endpoint,
    config: &PolicyServiceConfig,
) -> Result<Endpoint, PolicyClientError> {
    let https = endpoint.uri().scheme_str() == Some("https");
    match (&config.tls, https) {
        (Some(tls), true) => {
            let tls = enroll_shared::tls::client_tls(tls, "policy_service.tls")?
                .timeout(config.timeout());
            endpoint.tls_config(tls).map_err(|error| {
                PolicyClientError::Tls(enroll_shared::tls::TlsError::new(
                    "policy_service.tls",
                    format!(
                        "the CA, certificate or key is not usable: {}",
                        enroll_shared::tls::error_chain(&error)
                    ),
                ))
            })
        }
        (Some(_), false) => Err(PolicyClientError::TlsWithoutHttps(
            enroll_shared::config::redact_url(&config.url),
        )),
        (None, true) => Err(PolicyClientError::HttpsWithoutTls),
        (None, false) => {
            let loopback = endpoint.uri().host().is_some_and(|host| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if !loopback {
                tracing::warn!(
                    url = %enroll_shared::config::redact_url(&config.url),
                    "policy service called without TLS: the service key, PINs and decisions cross the network in clear; set policy_service.tls and an https:// URL"
                );
            }
            Ok(endpoint)
        }
    }
}

#[async_trait]
impl PolicyDecisions for PolicyClient {
    async fn evaluate(
        &self,
        question: &PolicyQuestion<'_>,
        client_ip: &str,
    ) -> Result<Decision, PolicyError> {
        let request = evaluation_request(question, client_ip);
        let response = self
            .policies
            .clone()
            .evaluate_enrollment(request)
            .await
            .map_err(policy_error)?
            .into_inner();
        decision(response)
    }

    async fn validate_pin(
        &self,
        realm: &Realm,
        user: &UserName,
        client_ip: &str,
        pin: &str,
    ) -> Result<PinVerdict, PolicyError> {
        let request = pb::ValidatePinRequest {
            realm: realm.to_string(),
            user: user.to_string(),
            client_ip: client_ip.to_owned(),
            pin: pin.to_owned(),
            // PIN rules are asked for an admin's SetPin and EnrollToken, and for
            // autoassignment, whose Validate always carries the user's address.
            no_client: client_ip.is_empty(),
        };
        let response = self
            .policies
            .clone()
            .validate_pin(request)
            .await
            .map_err(policy_error)?
            .into_inner();
        Ok(PinVerdict {
            valid: response.valid,
            violations: response.violations,
        })
    }
}

/// The question as the policy service takes it (the local engine decodes the same request).
pub(crate) fn evaluation_request(
    question: &PolicyQuestion<'_>,
    client_ip: &str,
) -> pb::EvaluateEnrollmentRequest {
    pb::EvaluateEnrollmentRequest {
        realm: question.realm.to_string(),
        user: question.user.map(ToString::to_string).unwrap_or_default(),
        client_ip: client_ip.to_owned(),
        action: action(question.action) as i32,
        token_type: question.token_type.to_owned(),
        serial: question.serial.to_owned(),
        // An admin's action for a user has no end user's address unless the console sends
        // one; the end user's own path (registering a device, autoassignment, the proxy's
        // checks) never skips a network rule for want of one.
        no_client: client_ip.is_empty() && question.action.is_admins(),
    }
}

fn action(action: PolicyAction) -> pb::Action {
    match action {
        PolicyAction::Enroll => pb::Action::Enroll,
        PolicyAction::Assign => pb::Action::Assign,
        PolicyAction::Autoassign => pb::Action::Autoassign,
        PolicyAction::SetPin => pb::Action::SetPin,
        PolicyAction::LostToken => pb::Action::LostToken,
        PolicyAction::CreateLink => pb::Action::CreateLink,
        PolicyAction::RegisterDevice => pb::Action::RegisterDevice,
        PolicyAction::Manage => pb::Action::Manage,
    }
}

/// The domain's decision; a setting this service cannot read fails closed.
pub(crate) fn decision(response: pb::EvaluateEnrollmentResponse) -> Result<Decision, PolicyError> {
    // `allowed` and `denials` must agree: an answer that says "not allowed" without saying
    // why is no decision at all (fail closed), never an allowance.
    if !response.allowed && response.denials.is_empty() {
        return Err(PolicyError::BadAnswer(
            "not allowed, with no denial".to_owned(),
        ));
    }
    if response.allowed && !response.denials.is_empty() {
        return Err(PolicyError::BadAnswer("allowed, with denials".to_owned()));
    }
    let settings = response.settings.unwrap_or_default();
    // Numbers the device service computes with are held to the ranges the policy service
    // validates on write: a length that exhausts memory or a validity that overflows a
    // date is refused as an unusable answer, not used.
    in_range("otp_pin_random", settings.otp_pin_random, 1..=64)?;
    in_range(
        "lost_token_pw_len",
        Some(settings.lost_token_pw_len),
        0..=64,
    )?;
    in_range(
        "lost_token_valid_days",
        Some(settings.lost_token_valid_days),
        0..=365,
    )?;
    in_range(
        "enrollment_link_ttl_hours",
        Some(settings.enrollment_link_ttl_hours),
        0..=720,
    )?;
    in_range(
        "otp_verify_window_minutes",
        Some(settings.otp_verify_window_minutes),
        0..=1440,
    )?;
    in_range(
        "otp_verify_attempts",
        Some(settings.otp_verify_attempts),
        0..=20,
    )?;
    let webauthn_device_type =
        DeviceKind::parse(&settings.webauthn_device_type).ok_or_else(|| {
            PolicyError::BadAnswer(format!(
                "unknown webauthn_device_type `{}`",
                settings.webauthn_device_type
            ))
        })?;
    let webauthn_aaguid_deny = AaguidList::from_entries(settings.webauthn_aaguid_deny)
        .map_err(|bad| PolicyError::BadAnswer(format!("webauthn_aaguid_deny: bad {bad}")))?;
    let allow = AaguidList::from_entries(settings.webauthn_aaguid_allow)
        .map_err(|bad| PolicyError::BadAnswer(format!("webauthn_aaguid_allow: bad {bad}")))?;
    // A non-empty list restricts even without the flag: the stricter reading.
    let webauthn_aaguid_allow =
        (settings.webauthn_aaguid_allow_restricted || !allow.is_empty()).then_some(allow);
    let webauthn_min_certification = certification(settings.webauthn_min_certification)?;
    let defaults = Settings::default();
    Ok(Decision {
        denials: response
            .denials
            .into_iter()
            .map(|denial| Denial {
                code: denial.code,
                message: denial.message,
                policy: denial.policy,
            })
            .collect(),
        settings: Settings {
            max_token_per_user: settings.max_token_per_user,
            max_token_per_realm: settings.max_token_per_realm,
            max_active_token_per_user: settings.max_active_token_per_user,
            token_label: settings.token_label,
            token_issuer: settings.token_issuer,
            autoassignment: settings.autoassignment,
            otp_pin_random: settings.otp_pin_random,
            otp_pin_random_content: settings.otp_pin_random_content,
            otp_pin_encrypt: settings.otp_pin_encrypt,
            // 0 is "unset": the documented default, never a one-character password.
            lost_token_pw_len: or_default(settings.lost_token_pw_len, defaults.lost_token_pw_len),
            lost_token_pw_contents: settings.lost_token_pw_contents,
            lost_token_valid_days: or_default(
                settings.lost_token_valid_days,
                defaults.lost_token_valid_days,
            ),
            webauthn_device_type,
            require_device_approval: settings.require_device_approval,
            enrollment_link_ttl_hours: settings.enrollment_link_ttl_hours,
            webauthn_aaguid_allow,
            webauthn_aaguid_deny,
            webauthn_min_certification,
            // 0 is "unset" (a policy service older than these actions): the defaults.
            otp_verify_window_minutes: or_default(
                settings.otp_verify_window_minutes,
                defaults.otp_verify_window_minutes,
            ),
            otp_verify_attempts: or_default(
                settings.otp_verify_attempts,
                defaults.otp_verify_attempts,
            ),
            otp_pin_minlength: settings.otp_pin_minlength,
            require_identity: settings.require_identity,
        },
        decided_by: response.decided_by,
        policy_set_version: response.policy_set_version,
    })
}

/// The minimum certification; a level this service does not know fails closed (it cannot
/// tell whether a model meets it).
fn certification(raw: i32) -> Result<CertificationLevel, PolicyError> {
    use pb::CertificationLevel as Wire;
    Ok(match Wire::try_from(raw) {
        // Unspecified: an answer without the field, from a policy service without the action.
        Ok(Wire::Unspecified | Wire::NotFidoCertified) => CertificationLevel::NotFidoCertified,
        Ok(Wire::FidoCertified) => CertificationLevel::FidoCertified,
        Ok(Wire::FidoCertifiedL1) => CertificationLevel::FidoCertifiedL1,
        Ok(Wire::FidoCertifiedL1Plus) => CertificationLevel::FidoCertifiedL1Plus,
        Ok(Wire::FidoCertifiedL2) => CertificationLevel::FidoCertifiedL2,
        Ok(Wire::FidoCertifiedL2Plus) => CertificationLevel::FidoCertifiedL2Plus,
        Ok(Wire::FidoCertifiedL3) => CertificationLevel::FidoCertifiedL3,
        Ok(Wire::FidoCertifiedL3Plus) => CertificationLevel::FidoCertifiedL3Plus,
        Err(_) => {
            return Err(PolicyError::BadAnswer(format!(
                "unknown webauthn_min_certification {raw}"
            )));
        }
    })
}

/// An unset (0) number as the default of "no matching policy".
fn or_default(value: u32, default: u32) -> u32 {
    if value == 0 { default } else { value }
}

/// Refuses a setting outside `range` (0 means "the default" where the range allows it).
fn in_range(
    setting: &str,
    value: Option<u32>,
    range: std::ops::RangeInclusive<u32>,
) -> Result<(), PolicyError> {
    match value {
        Some(value) if !range.contains(&value) => Err(PolicyError::BadAnswer(format!(
            "{setting} {value} is outside {}..={}",
            range.start(),
            range.end()
        ))),
        _ => Ok(()),
    }
}

/// Errors that mean "no decision could be had" fail closed; the policy service's own
/// answers (INVALID_ARGUMENT, FAILED_PRECONDITION for a conflict, ...) pass through.
fn policy_error(status: Status) -> PolicyError {
    let rejected = |rejection| PolicyError::Rejected {
        rejection,
        message: status.message().to_owned(),
        reason: enroll_shared::status::reason(&status),
        field: enroll_shared::status::field(&status),
    };
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => rejected(Rejection::InvalidArgument),
        Code::FailedPrecondition => rejected(Rejection::FailedPrecondition),
        Code::NotFound => rejected(Rejection::NotFound),
        Code::ResourceExhausted => rejected(Rejection::ResourceExhausted),
        Code::Unauthenticated | Code::PermissionDenied => PolicyError::KeyRefused,
        code => PolicyError::Unreachable(code.description().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_fail_closed_and_refusals_pass_through() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Unknown,
        ] {
            assert!(matches!(
                policy_error(Status::new(code, "x")),
                PolicyError::Unreachable(_)
            ));
        }
        assert_eq!(
            policy_error(Status::unauthenticated("bad key")),
            PolicyError::KeyRefused
        );
        let conflict = enroll_shared::status::with_reason(
            Code::FailedPrecondition,
            "conflict",
            "POLICY_CONFLICT",
            [],
        );
        assert_eq!(
            policy_error(conflict),
            PolicyError::Rejected {
                rejection: Rejection::FailedPrecondition,
                message: "conflict".to_owned(),
                reason: Some("POLICY_CONFLICT".to_owned()),
                field: None,
            }
        );
    }

    fn config(url: &str, tls: Option<enroll_shared::config::ClientTls>) -> PolicyServiceConfig {
        PolicyServiceConfig {
            url: url.to_owned(),
            api_key: "k".to_owned(),
            tls,
            ..Default::default()
        }
    }

    fn tls_with_ca(ca: &str) -> enroll_shared::config::ClientTls {
        enroll_shared::config::ClientTls {
            ca: ca.into(),
            cert: None,
            key: None,
            domain_name: None,
        }
    }

    // A runtime: a valid configuration builds a lazily connecting channel.
    #[tokio::test]
    async fn the_url_and_the_tls_section_must_agree() {
        let refused = PolicyClient::new(&config("https://policy:50051", None)).err();
        assert!(
            matches!(refused, Some(PolicyClientError::HttpsWithoutTls)),
            "{refused:?}"
        );
        let refused = PolicyClient::new(&config(
            "http://policy:50051",
            Some(tls_with_ca("/nonexistent/ca.pem")),
        ))
        .err();
        assert!(
            matches!(refused, Some(PolicyClientError::TlsWithoutHttps(_))),
            "{refused:?}"
        );
        assert!(PolicyClient::new(&config("http://127.0.0.1:50051", None)).is_ok());
    }

    #[test]
    fn a_missing_ca_file_stops_start_up_naming_the_setting() {
        let refused = PolicyClient::new(&config(
            "https://policy:50051",
            Some(tls_with_ca("/nonexistent/ca.pem")),
        ))
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
        assert!(
            refused.starts_with("policy_service.tls.ca: cannot read /nonexistent/ca.pem"),
            "{refused}"
        );
    }

    #[test]
    fn decision_numbers_and_allowed_are_checked() {
        let allowed = |settings: pb::EnrollmentSettings| pb::EvaluateEnrollmentResponse {
            allowed: true,
            settings: Some(settings),
            ..Default::default()
        };
        let fine = pb::EnrollmentSettings {
            lost_token_pw_len: 12,
            lost_token_valid_days: 10,
            enrollment_link_ttl_hours: 24,
            otp_pin_random: Some(6),
            ..Default::default()
        };
        assert!(decision(allowed(fine.clone())).is_ok());
        let unset = decision(allowed(pb::EnrollmentSettings {
            lost_token_pw_len: 0,
            lost_token_valid_days: 0,
            ..fine.clone()
        }))
        .unwrap();
        assert_eq!(unset.settings.lost_token_pw_len, 10);
        assert_eq!(unset.settings.lost_token_valid_days, 10);
        assert_eq!(unset.settings.otp_verify_window_minutes, 10);
        assert_eq!(unset.settings.otp_verify_attempts, 5);
        for bad in [
            pb::EnrollmentSettings {
                lost_token_pw_len: u32::MAX,
                ..fine.clone()
            },
            pb::EnrollmentSettings {
                lost_token_valid_days: u32::MAX,
                ..fine.clone()
            },
            pb::EnrollmentSettings {
                enrollment_link_ttl_hours: 100_000,
                ..fine.clone()
            },
            pb::EnrollmentSettings {
                otp_pin_random: Some(1_000_000),
                ..fine.clone()
            },
            pb::EnrollmentSettings {
                otp_verify_window_minutes: 1441,
                ..fine.clone()
            },
            pb::EnrollmentSettings {
                otp_verify_attempts: 21,
                ..fine.clone()
            },
        ] {
            assert!(matches!(
                decision(allowed(bad)),
                Err(PolicyError::BadAnswer(_))
            ));
        }
        // "Not allowed" with no denial is no decision; never an allowance.
        let silent_refusal = pb::EvaluateEnrollmentResponse {
            allowed: false,
            settings: Some(fine),
            ..Default::default()
        };
        assert!(matches!(
            decision(silent_refusal),
            Err(PolicyError::BadAnswer(_))
        ));
    }

    #[test]
    fn an_unknown_device_type_fails_closed() {
        let response = pb::EvaluateEnrollmentResponse {
            settings: Some(pb::EnrollmentSettings {
                webauthn_device_type: "quantum".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(decision(response), Err(PolicyError::BadAnswer(_))));
    }

    #[test]
    fn authenticator_model_settings_are_decoded() {
        let answer = |settings: pb::EnrollmentSettings| {
            decision(pb::EvaluateEnrollmentResponse {
                allowed: true,
                settings: Some(settings),
                ..Default::default()
            })
        };
        let yubikey = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
        let decoded = answer(pb::EnrollmentSettings {
            webauthn_aaguid_allow: vec![yubikey.into(), "YubiKey 5 Series".into()],
            webauthn_aaguid_allow_restricted: true,
            webauthn_aaguid_deny: vec!["Titan Security Key".into()],
            webauthn_min_certification: pb::CertificationLevel::FidoCertifiedL1Plus as i32,
            ..Default::default()
        })
        .unwrap()
        .settings;
        let allow = decoded.webauthn_aaguid_allow.unwrap();
        assert_eq!(allow.aaguids, [yubikey.parse::<uuid::Uuid>().unwrap()]);
        assert_eq!(allow.model_names, ["YubiKey 5 Series"]);
        assert_eq!(
            decoded.webauthn_aaguid_deny.model_names,
            ["Titan Security Key"]
        );
        assert_eq!(
            decoded.webauthn_min_certification,
            CertificationLevel::FidoCertifiedL1Plus
        );
        // No restriction, nothing allowed, and a list without the flag (restricts).
        let unrestricted = answer(pb::EnrollmentSettings::default()).unwrap().settings;
        assert_eq!(unrestricted.webauthn_aaguid_allow, None);
        assert_eq!(
            unrestricted.webauthn_min_certification,
            CertificationLevel::NotFidoCertified
        );
        let nothing = answer(pb::EnrollmentSettings {
            webauthn_aaguid_allow_restricted: true,
            ..Default::default()
        })
        .unwrap()
        .settings;
        assert_eq!(nothing.webauthn_aaguid_allow, Some(AaguidList::default()));
        let unflagged = answer(pb::EnrollmentSettings {
            webauthn_aaguid_allow: vec![yubikey.into()],
            ..Default::default()
        })
        .unwrap()
        .settings;
        assert!(unflagged.webauthn_aaguid_allow.is_some());
        // A level this service does not know, or a blank entry, fails closed.
        for bad in [
            pb::EnrollmentSettings {
                webauthn_min_certification: 99,
                ..Default::default()
            },
            pb::EnrollmentSettings {
                webauthn_aaguid_deny: vec![" ".into()],
                ..Default::default()
            },
        ] {
            assert!(matches!(answer(bad), Err(PolicyError::BadAnswer(_))));
        }
    }
}
