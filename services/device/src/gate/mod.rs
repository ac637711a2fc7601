//! Device trust at the door: the check a proxy runs before every request (HTTP forward
//! auth for nginx, Caddy and Traefik; Envoy's ext_authz over gRPC), and the page a person
//! signs in with an enrolled device on.
//!
//! A check needs two things: who the user is (from the proxy in front, [`identity`]) and a
//! device session (the gate's cookie, [`session`]). With both, the session's credential is
//! put to CheckEnrollment (its coherent caches: one read when warm), so revoking or
//! un-approving the device, flagging its model or a policy change refuses the next request.
//! Protocol adapters (`web::gate` for HTTP, `grpc::ext_authz` for Envoy) turn a [`Verdict`]
//! into their answer; nothing here knows HTTP servers or gRPC.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use enroll_shared::time::SharedClock;
use http::HeaderMap;

use crate::config::GateConfig;
use crate::domain::actor::Actor;
use crate::domain::devices::{DeviceKind, EnrollmentStatus};
use crate::error::DeviceError;
use crate::forwarding::TrustedProxies;
use crate::service::devices::{Devices, EnrollmentQuery};

pub mod decisions;
pub mod hosts;
pub mod identity;
pub mod session;

use decisions::{Decided, GATE_ACTOR, GateDecisions};
use hosts::{HostAllowList, OriginalUrl};
use identity::{Identity, IdentitySource};
use session::{GateSession, SessionRefusal, SessionSeal};

/// Headers the gate sets on an allowed request for the app (the shipped proxy
/// configurations strip client-sent copies).
pub const USER_HEADER: &str = "x-enroll-user";
pub const REALM_HEADER: &str = "x-enroll-realm";
pub const DEVICE_ID_HEADER: &str = "x-enroll-device-id";
pub const DEVICE_TYPE_HEADER: &str = "x-enroll-device-type";

/// The check's question, as a protocol adapter read it from the proxy.
#[derive(Debug)]
pub struct ProtectedRequest<'a> {
    /// The TCP peer of the check call: the proxy.
    pub peer: IpAddr,
    /// The end user's address (the proxy's `X-Forwarded-For` or Envoy's source address).
    pub client_ip: Option<IpAddr>,
    /// The original request's headers, as the proxy forwarded them.
    pub headers: &'a HeaderMap,
    /// The original request's URL, when the proxy said it.
    pub url: Option<OriginalUrl>,
    /// The device type the route requires, as the proxy's configuration says.
    pub device_type: Option<&'a str>,
}

/// What the proxy should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the request on with these identity headers (and the cookie to store, when a
    /// session was refreshed).
    Allow(Allowed),
    /// No identity from the proxy in front: 401 and nothing more.
    Unauthenticated,
    /// The user is known but has no valid device session for this route: send a browser to
    /// the sign-in page, tell anything else where it is.
    SignIn(SignIn),
    /// Refused, with a reason (a route without a valid device type, a host not protected).
    Forbidden { code: &'static str, reason: String },
    /// The gate cannot decide now (its database is down): closed, never open.
    Unavailable { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub realm: String,
    pub user: String,
    pub device_id: String,
    pub device_type: &'static str,
    pub set_cookie: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    pub code: &'static str,
    pub reason: String,
    /// The page's URL on the protected host (an absolute path), with the return URL and
    /// the required device type.
    pub location: String,
    /// A cookie that is no session (garbage, expired, another user's, a revoked device's)
    /// is deleted.
    pub clear_cookie: Option<String>,
}

/// What every protocol tells a client the proxy refuses: nothing more than this.
pub const NOT_SIGNED_IN: &str = "not signed in at the identity provider";

/// A refusal as an HTTP answer, whichever protocol carries it (forward auth, ext_authz).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalAnswer {
    pub status: u16,
    /// `{"error": CODE, "reason": "...", "signin": "/.enroll-gate/?..."}`.
    pub body: String,
}

impl Verdict {
    /// The JSON answer of a refusal (`None` when allowed). A sign-in is 401 with where to
    /// sign in: redirecting a browser instead is the protocol edge's choice.
    pub fn refusal(&self) -> Option<RefusalAnswer> {
        let (status, reason, signin) = match self {
            Verdict::Allow(_) => return None,
            Verdict::Unauthenticated => (401, NOT_SIGNED_IN, None),
            Verdict::SignIn(sign_in) => (401, sign_in.reason.as_str(), Some(&sign_in.location)),
            Verdict::Forbidden { reason, .. } => (403, reason.as_str(), None),
            Verdict::Unavailable { reason } => (503, reason.as_str(), None),
        };
        let mut body = serde_json::json!({"error": self.code(), "reason": reason});
        if let Some(signin) = signin {
            body["signin"] = serde_json::json!(signin);
        }
        Some(RefusalAnswer {
            status,
            body: body.to_string(),
        })
    }

    /// The code of a refusal (for logs, metrics and machine-readable answers).
    pub fn code(&self) -> &'static str {
        match self {
            Verdict::Allow(_) => "ALLOWED",
            Verdict::Unauthenticated => "UNAUTHENTICATED",
            Verdict::SignIn(sign_in) => sign_in.code,
            Verdict::Forbidden { code, .. } => code,
            Verdict::Unavailable { .. } => "GATE_UNAVAILABLE",
        }
    }
}

/// The gate: configuration, identity, sessions, and the device use cases it asks.
pub struct Gate {
    devices: Arc<Devices>,
    identity: IdentitySource,
    sessions: SessionSeal,
    hosts: HostAllowList,
    proxies: TrustedProxies,
    path_prefix: String,
    default_device_type: Option<DeviceKind>,
    device_type_header: http::HeaderName,
    decisions: Arc<GateDecisions>,
    clock: SharedClock,
    allowed_audit_interval: Duration,
}

impl Gate {
    pub fn new(
        config: &GateConfig,
        devices: Arc<Devices>,
        decisions: Arc<GateDecisions>,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let proxies = TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|error| error.replace("web.trusted_proxies", "gate.trusted_proxies"))?;
        let prefix = config.path_prefix.trim().trim_end_matches('/');
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.contains(['?', '#', ' ']) {
            return Err(format!(
                "gate.path_prefix `{}` must be an absolute path like /.enroll-gate",
                config.path_prefix
            ));
        }
        let default_device_type = match config.default_device_type.trim() {
            "" => None,
            name => Some(parse_device_type(name).ok_or_else(|| {
                format!("gate.default_device_type `{name}` is not any or enclave_only")
            })?),
        };
        let hosts = HostAllowList::parse(&config.hosts)?;
        Ok(Self {
            devices,
            identity: IdentitySource::from_config(&config.identity, proxies.clone())?,
            sessions: SessionSeal::from_config(&config.session)?,
            hosts,
            proxies,
            path_prefix: prefix.to_owned(),
            default_device_type,
            device_type_header: http::HeaderName::try_from(config.device_type_header.trim())
                .map_err(|_| {
                    format!(
                        "gate.device_type_header `{}` is not a header name",
                        config.device_type_header
                    )
                })?,
            decisions,
            clock,
            allowed_audit_interval: Duration::from_secs(config.allowed_audit_interval_secs.max(1)),
        })
    }

    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    pub fn sessions(&self) -> &SessionSeal {
        &self.sessions
    }

    pub fn proxies(&self) -> &TrustedProxies {
        &self.proxies
    }

    pub fn hosts(&self) -> &HostAllowList {
        &self.hosts
    }

    pub fn device_type_header(&self) -> &http::HeaderName {
        &self.device_type_header
    }

    pub fn decisions(&self) -> Arc<GateDecisions> {
        self.decisions.clone()
    }

    pub fn allowed_audit_interval(&self) -> Duration {
        self.allowed_audit_interval
    }

    pub async fn prefetch_keys(&self) {
        self.identity.prefetch().await;
    }

    fn actor(client_ip: Option<IpAddr>) -> Actor {
        Actor {
            name: GATE_ACTOR.to_owned(),
            client_ip,
        }
    }

    /// The required device type of a route: the proxy's, else the configured default; a
    /// missing or unknown one is refused, never widened.
    pub fn required_type(&self, sent: Option<&str>) -> Result<DeviceKind, Verdict> {
        match sent.map(str::trim).filter(|text| !text.is_empty()) {
            Some(text) => parse_device_type(text).ok_or_else(|| Verdict::Forbidden {
                code: "DEVICE_TYPE_INVALID",
                reason: format!(
                    "the route's required device type `{}` is not any or enclave_only",
                    text.chars().take(40).collect::<String>()
                ),
            }),
            None => self.default_device_type.ok_or_else(|| Verdict::Forbidden {
                code: "DEVICE_TYPE_MISSING",
                reason: "the proxy sent no required device type for this route and \
                         gate.default_device_type is not set"
                    .to_owned(),
            }),
        }
    }

    /// The user the proxy in front vouches for.
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Identity, identity::IdentityRefused> {
        self.identity.identify(headers, peer).await
    }

    /// The whole check: identity, device session, CheckEnrollment with its credential.
    #[tracing::instrument(skip_all, fields(outcome))]
    pub async fn check(&self, request: &ProtectedRequest<'_>) -> Verdict {
        let (verdict, realm, user) = self.decide(request).await;
        tracing::Span::current().record("outcome", verdict.code());
        let (subject, detail) = match &verdict {
            Verdict::Allow(allowed) => (
                allowed.device_id.as_str(),
                request
                    .url
                    .as_ref()
                    .map(|url| url.host.clone())
                    .unwrap_or_default(),
            ),
            Verdict::SignIn(sign_in) => ("", sign_in.reason.clone()),
            Verdict::Forbidden { reason, .. } | Verdict::Unavailable { reason } => {
                ("", reason.clone())
            }
            Verdict::Unauthenticated => ("", String::new()),
        };
        self.decisions.record(Decided {
            action: "gate_check",
            allowed: matches!(verdict, Verdict::Allow(_)),
            code: verdict.code(),
            realm: &realm,
            user: &user,
            subject,
            detail: &detail,
        });
        verdict
    }

    async fn decide(&self, request: &ProtectedRequest<'_>) -> (Verdict, String, String) {
        let required = match self.required_type(request.device_type) {
            Ok(required) => required,
            Err(verdict) => return (verdict, String::new(), String::new()),
        };
        let identity = match self.identify(request.headers, request.peer).await {
            Ok(identity) => identity,
            Err(refused) => {
                // Audited with its kind; the caller learns nothing more than 401.
                self.decisions.record(Decided {
                    action: "gate_identity",
                    allowed: false,
                    code: refused.code(),
                    realm: "",
                    user: "",
                    subject: "",
                    detail: "the proxy's identity was not accepted",
                });
                return (Verdict::Unauthenticated, String::new(), String::new());
            }
        };
        let realm = identity.realm.to_string();
        let user = identity.user.to_string();
        if let Some(url) = &request.url
            && !self.hosts.allows(&url.host)
        {
            let verdict = Verdict::Forbidden {
                code: "HOST_NOT_PROTECTED",
                reason: format!("`{}` is not one of gate.hosts", url.host),
            };
            return (verdict, realm, user);
        }
        let verdict = self.check_session(request, &identity, required).await;
        (verdict, realm, user)
    }

    async fn check_session(
        &self,
        request: &ProtectedRequest<'_>,
        identity: &Identity,
        required: DeviceKind,
    ) -> Verdict {
        let now = self.clock.now();
        let sign_in = |code: &'static str, reason: String, clear: bool| {
            Verdict::SignIn(SignIn {
                code,
                reason,
                location: self.sign_in_location(request.url.as_ref(), required),
                clear_cookie: clear.then(|| self.sessions.clear_cookie()),
            })
        };
        let cookies = request
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok());
        let Some(cookie) = self.sessions.find(cookies) else {
            return sign_in(
                "DEVICE_SESSION_REQUIRED",
                format!("sign in with an enrolled {} device", required.as_str()),
                false,
            );
        };
        let session = match self.sessions.open(cookie, now) {
            Ok(session) => session,
            Err(SessionRefusal::Expired) => {
                return sign_in(
                    "DEVICE_SESSION_EXPIRED",
                    "the device session has ended; sign in again".to_owned(),
                    true,
                );
            }
            Err(SessionRefusal::Invalid) => {
                return sign_in(
                    "DEVICE_SESSION_INVALID",
                    "the device session cookie is not valid".to_owned(),
                    true,
                );
            }
        };
        if session.realm != identity.realm || session.user != identity.user {
            return sign_in(
                "DEVICE_SESSION_OTHER_USER",
                "the device session belongs to another user".to_owned(),
                true,
            );
        }
        if !session.device_type.satisfies(required) {
            return sign_in(
                "DEVICE_TYPE_REQUIRED",
                format!(
                    "this route requires an {} device; the session's device was accepted as {}",
                    required.as_str(),
                    session.device_type.as_str()
                ),
                false,
            );
        }
        let query = EnrollmentQuery {
            realm: identity.realm.clone(),
            user: identity.user.clone(),
            credential_id: Some(session.credential_id.clone()),
            required,
        };
        let check = match self
            .devices
            .check_device(&Self::actor(request.client_ip), &query)
            .await
        {
            Ok(check) => check,
            Err(error) => {
                tracing::warn!(%error, "gate: CheckEnrollment failed");
                return Verdict::Unavailable {
                    reason: "the gate cannot check the device now".to_owned(),
                };
            }
        };
        let reason = check.reasons.first().cloned().unwrap_or_default();
        let device = match (check.status, check.device) {
            (EnrollmentStatus::Enrolled, Some(device)) => device,
            (status, _) => {
                let code = match status {
                    EnrollmentStatus::Revoked => "DEVICE_REVOKED",
                    EnrollmentStatus::PendingApproval => "DEVICE_PENDING_APPROVAL",
                    EnrollmentStatus::TypeMismatch => "DEVICE_NOT_ACCEPTED",
                    EnrollmentStatus::NotEnrolled | EnrollmentStatus::Enrolled => {
                        "DEVICE_NOT_ENROLLED"
                    }
                };
                return sign_in(code, reason, true);
            }
        };
        let set_cookie = self.sessions.due_for_refresh(&session, now).then(|| {
            let mut refreshed = session.clone();
            refreshed.refreshed_at = now;
            self.sessions.set_cookie(&refreshed)
        });
        Verdict::Allow(Allowed {
            realm: identity.realm.to_string(),
            user: identity.user.to_string(),
            device_id: device.id,
            device_type: device.kind.as_str(),
            set_cookie,
        })
    }

    /// The sign-in page on the protected host, with where to return and for which type.
    fn sign_in_location(&self, url: Option<&OriginalUrl>, required: DeviceKind) -> String {
        let mut location = format!("{}/?type={}", self.path_prefix, required.as_str());
        if let Some(url) = url {
            location.push_str("&rd=");
            location.push_str(
                &url::form_urlencoded::byte_serialize(url.full().as_bytes()).collect::<String>(),
            );
        }
        location
    }

    /// A new session for a device the person just authenticated with.
    pub fn start_session(
        &self,
        identity: &Identity,
        credential_id: String,
        device_type: DeviceKind,
    ) -> String {
        let now = self.clock.now();
        self.sessions.set_cookie(&GateSession {
            realm: identity.realm.clone(),
            user: identity.user.clone(),
            credential_id,
            device_type,
            issued_at: now,
            refreshed_at: now,
        })
    }

    pub(crate) fn devices(&self) -> &Devices {
        &self.devices
    }

    pub(crate) fn page_actor(client_ip: Option<IpAddr>) -> Actor {
        Self::actor(client_ip)
    }

    /// Records a page step (sign-in, registration, sign-out) as a decision.
    pub(crate) fn record_page(
        &self,
        action: &'static str,
        identity: &Identity,
        result: &Result<String, DeviceError>,
    ) {
        let (allowed, code, detail) = match result {
            Ok(detail) => (true, "ALLOWED", detail.clone()),
            Err(DeviceError::Refused { reason, message }) => (false, *reason, message.clone()),
            Err(error) => (false, "REFUSED", error.audit_reason()),
        };
        self.decisions.record(Decided {
            action,
            allowed,
            code,
            realm: identity.realm.as_str(),
            user: identity.user.as_str(),
            subject: "",
            detail: &detail,
        });
    }
}

/// `any` or `enclave_only` (also `ENCLAVE_ONLY`, `DEVICE_TYPE_ANY` as the protos spell
/// them); nothing else, and never empty.
pub fn parse_device_type(text: &str) -> Option<DeviceKind> {
    let text = text.trim().to_ascii_lowercase();
    let text = text.strip_prefix("device_type_").unwrap_or(&text);
    match text {
        "any" => Some(DeviceKind::Any),
        "enclave_only" => Some(DeviceKind::EnclaveOnly),
        _ => None,
    }
}
