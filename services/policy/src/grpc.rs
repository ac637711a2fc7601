//! The gRPC edge: decode and validate requests into domain types, call one use case, map
//! errors through `From<PolicyError> for Status`.
use enroll_shared::auth::caller;
use enroll_shared::names::{NameError, normalize_name};
use enroll_shared::paging::{PageKey, PageRequest};
use enroll_shared::proto::policy::v1 as pb;
use enroll_shared::time::to_timestamp;
use pb::policy_service_server::PolicyService;
use tonic::{Request, Response, Status};

use crate::domain::actions::TokenType;
use crate::domain::authenticators::{AllowList, CertificationLevel, ModelList};
use crate::domain::engine::{Action, Decision, EvaluationRequest, Subject};
use crate::domain::patterns::parse_client_ip;
use crate::domain::policy::PolicySpec;
use crate::error::PolicyError;
use crate::service::{Policies, PolicyView};
use crate::store::{PolicyChange, PolicyStore};

pub struct PolicyGrpc<S> {
    policies: Policies<S>,
}

impl<S> PolicyGrpc<S> {
    pub fn new(policies: Policies<S>) -> Self {
        Self { policies }
    }
}

/// A realm or user name, checked with the rule both services share
/// (`enroll_shared::names`). It is kept as written, trimmed, because templates render it;
/// matching folds it with the same rule.
fn name(field: &str, value: &str) -> Result<String, PolicyError> {
    normalize_name(value).map_err(|error| match error {
        NameError::Empty => PolicyError::invalid(field, "required"),
        other => PolicyError::invalid(field, other.to_string()),
    })?;
    Ok(value.trim().to_owned())
}

fn subject(
    realm: &str,
    user: &str,
    client_ip: &str,
    user_required: bool,
) -> Result<Subject, PolicyError> {
    let realm = name("realm", realm)?;
    let user = if user_required || !user.trim().is_empty() {
        name("user", user)?
    } else {
        String::new()
    };
    let client = match client_ip.trim() {
        "" => None,
        raw => Some(parse_client_ip(raw).ok_or_else(|| {
            PolicyError::invalid(
                "client_ip",
                format!("`{raw}` is not an IPv4 or IPv6 address"),
            )
        })?),
    };
    Ok(Subject {
        realm,
        user,
        client,
    })
}

fn action(value: i32) -> Result<Action, PolicyError> {
    Ok(match pb::Action::try_from(value) {
        Ok(pb::Action::Enroll) => Action::Enroll,
        Ok(pb::Action::Assign) => Action::Assign,
        Ok(pb::Action::Autoassign) => Action::Autoassign,
        Ok(pb::Action::SetPin) => Action::SetPin,
        Ok(pb::Action::LostToken) => Action::LostToken,
        Ok(pb::Action::CreateLink) => Action::CreateLink,
        Ok(pb::Action::RegisterDevice) => Action::RegisterDevice,
        Ok(pb::Action::Manage) => Action::Manage,
        Ok(pb::Action::Unspecified) | Err(_) => {
            return Err(PolicyError::invalid(
                "action",
                "required: one of ACTION_ENROLL, ACTION_ASSIGN, ACTION_AUTOASSIGN, ACTION_SET_PIN, ACTION_LOST_TOKEN, ACTION_CREATE_LINK, ACTION_REGISTER_DEVICE, ACTION_MANAGE",
            ));
        }
    })
}

impl TryFrom<pb::EvaluateEnrollmentRequest> for EvaluationRequest {
    type Error = PolicyError;

    fn try_from(request: pb::EvaluateEnrollmentRequest) -> Result<Self, Self::Error> {
        let action = action(request.action)?;
        // Pool enrollment and admin actions on pool tokens have no user.
        let user_required = !matches!(action, Action::Enroll | Action::Assign | Action::Manage);
        let subject = subject(
            &request.realm,
            &request.user,
            &request.client_ip,
            user_required,
        )?;
        let token_type = match request.token_type.trim() {
            "" if matches!(action, Action::Enroll | Action::Assign | Action::Autoassign) => {
                return Err(PolicyError::invalid(
                    "token_type",
                    "required for this action: totp, hotp, webauthn or password",
                ));
            }
            "" => None,
            raw => Some(TokenType::parse(raw).ok_or_else(|| {
                PolicyError::invalid(
                    "token_type",
                    format!("`{raw}` is not one of totp, hotp, webauthn, password"),
                )
            })?),
        };
        let serial = Some(request.serial.trim().to_owned()).filter(|serial| !serial.is_empty());
        Ok(EvaluationRequest {
            subject,
            action,
            token_type,
            serial,
        })
    }
}

fn decision_to_proto(decision: Decision) -> pb::EvaluateEnrollmentResponse {
    let allowed = decision.allowed();
    let s = decision.settings;
    pb::EvaluateEnrollmentResponse {
        allowed,
        denials: decision
            .denials
            .into_iter()
            .map(|denial| pb::Denial {
                code: denial.code.to_owned(),
                message: denial.message,
                policy: denial.policy.unwrap_or_default(),
            })
            .collect(),
        settings: Some(pb::EnrollmentSettings {
            max_token_per_user: s.max_token_per_user,
            max_token_per_realm: s.max_token_per_realm,
            max_active_token_per_user: s.max_active_token_per_user,
            token_label: s.token_label,
            token_issuer: s.token_issuer,
            autoassignment: s.autoassignment,
            otp_pin_random: s.otp_pin_random,
            otp_pin_random_content: s.otp_pin_random_content.to_string(),
            otp_pin_encrypt: s.otp_pin_encrypt,
            otp_pin_minlength: s.otp_pin_minlength,
            otp_pin_maxlength: s.otp_pin_maxlength,
            otp_pin_contents: s.otp_pin_contents.to_string(),
            lost_token_pw_len: s.lost_token_pw_len,
            lost_token_pw_contents: s.lost_token_pw_contents.to_string(),
            lost_token_valid_days: s.lost_token_valid_days,
            webauthn_device_type: s.webauthn_device_type.as_str().to_owned(),
            require_device_approval: s.require_device_approval,
            enrollment_link_ttl_hours: s.enrollment_link_ttl_hours,
            token_types: s
                .token_types
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            webauthn_aaguid_allow_restricted: s.webauthn_aaguid_allow != AllowList::Unrestricted,
            webauthn_aaguid_allow: match &s.webauthn_aaguid_allow {
                AllowList::Unrestricted => Vec::new(),
                AllowList::Only(list) => model_strings(list),
            },
            webauthn_aaguid_deny: model_strings(&s.webauthn_aaguid_deny),
            webauthn_min_certification: certification_to_proto(s.webauthn_min_certification) as i32,
        }),
        decided_by: decision
            .decided_by
            .into_iter()
            .map(|(field, policy)| (field.to_owned(), policy))
            .collect(),
        policy_set_version: decision.policy_set_version,
    }
}

fn model_strings(list: &ModelList) -> Vec<String> {
    list.entries().iter().map(ToString::to_string).collect()
}

fn certification_to_proto(level: CertificationLevel) -> pb::CertificationLevel {
    match level {
        CertificationLevel::NotFidoCertified => pb::CertificationLevel::NotFidoCertified,
        CertificationLevel::FidoCertified => pb::CertificationLevel::FidoCertified,
        CertificationLevel::FidoCertifiedL1 => pb::CertificationLevel::FidoCertifiedL1,
        CertificationLevel::FidoCertifiedL1Plus => pb::CertificationLevel::FidoCertifiedL1Plus,
        CertificationLevel::FidoCertifiedL2 => pb::CertificationLevel::FidoCertifiedL2,
        CertificationLevel::FidoCertifiedL2Plus => pb::CertificationLevel::FidoCertifiedL2Plus,
        CertificationLevel::FidoCertifiedL3 => pb::CertificationLevel::FidoCertifiedL3,
        CertificationLevel::FidoCertifiedL3Plus => pb::CertificationLevel::FidoCertifiedL3Plus,
    }
}

fn spec_from_proto(policy: Option<pb::Policy>) -> Result<PolicySpec, PolicyError> {
    let policy = policy.ok_or_else(|| PolicyError::invalid("policy", "required"))?;
    Ok(PolicySpec {
        name: policy.name,
        scope: policy.scope,
        realms: policy.realms,
        users: policy.users,
        clients: policy.clients,
        actions: policy.actions.into_iter().collect(),
        priority: policy.priority,
        active: policy.active,
        description: policy.description,
    })
}

fn spec_to_proto(spec: PolicySpec) -> pb::Policy {
    pb::Policy {
        name: spec.name,
        scope: spec.scope,
        realms: spec.realms,
        users: spec.users,
        clients: spec.clients,
        actions: spec.actions.into_iter().collect(),
        priority: spec.priority,
        active: spec.active,
        description: spec.description,
        ..Default::default()
    }
}

fn view_to_proto(view: PolicyView) -> pb::Policy {
    let stored = view.policy;
    pb::Policy {
        etag: stored.etag,
        create_time: Some(to_timestamp(stored.create_time)),
        update_time: Some(to_timestamp(stored.update_time)),
        conflicts: view
            .conflicts
            .into_iter()
            .map(|conflict| pb::PolicyConflict {
                action: conflict.action.to_string(),
                message: conflict.to_string(),
                other_policy: conflict.second,
            })
            .collect(),
        ..spec_to_proto(stored.spec)
    }
}

fn change_to_proto(change: PolicyChange) -> pb::PolicyChange {
    pb::PolicyChange {
        id: change.id,
        policy_name: change.policy_name,
        change: change.change.as_str().to_owned(),
        actor: change.actor,
        change_time: Some(to_timestamp(change.change_time)),
        before: change.before.map(spec_to_proto),
        after: change.after.map(spec_to_proto),
    }
}

/// A free-text field, trimmed: INVALID_ARGUMENT naming it when it holds a NUL character
/// (PostgreSQL cannot store one) or more than `max` characters.
fn text(field: &str, raw: &str, max: usize) -> Result<String, PolicyError> {
    let value = raw.trim();
    enroll_shared::text::check_storable(value, max)
        .map_err(|message| PolicyError::invalid(field, message))?;
    Ok(value.to_owned())
}

/// A policy name to look up: a NUL is refused (it would reach the database), anything
/// else that is no policy's name is simply not found.
fn lookup_name(raw: &str) -> Result<String, PolicyError> {
    text("name", raw, 1024)
}

/// The actor of a change (recorded in the history): the explicit one, else the API key's
/// name.
fn actor<T>(request: &Request<T>, explicit: &str) -> Result<String, Status> {
    let explicit = text("actor", explicit, 128)?;
    if !explicit.is_empty() {
        return Ok(explicit);
    }
    Ok(caller(request)?.name.clone())
}

fn page<K: PageKey>(page_size: u32, page_token: &str) -> Result<PageRequest<K>, PolicyError> {
    PageRequest::parse(page_size, page_token)
        .map_err(|error| PolicyError::invalid(error.field, error.message))
}

/// How often WatchPolicySet repeats the state unchanged, so a watcher can tell a quiet
/// stream from a dead one.
const WATCH_HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(250);

type PolicySetStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PolicySetState, Status>> + Send>>;

/// The published state now, then on every change and every heartbeat, until shutdown.
fn policy_set_stream(
    published: tokio::sync::watch::Receiver<crate::cache::PublishedSet>,
) -> PolicySetStream {
    let mut heartbeat = tokio::time::interval(WATCH_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The interval's first tick is immediate: the current state goes out at once.
    let stream = futures::stream::unfold(
        (published, heartbeat),
        |(mut published, mut heartbeat)| async move {
            tokio::select! {
                changed = published.changed() => changed.ok()?,
                _ = heartbeat.tick() => {}
            }
            let state = *published.borrow_and_update();
            if state.closing {
                return None;
            }
            let message = pb::PolicySetState {
                version: state.version,
                serving: state.serving,
                client_ip_used: state.client_ip_used,
            };
            Some((Ok(message), (published, heartbeat)))
        },
    );
    Box::pin(stream)
}

#[tonic::async_trait]
impl<S: PolicyStore> PolicyService for PolicyGrpc<S> {
    type WatchPolicySetStream = PolicySetStream;

    #[tracing::instrument(skip_all)]
    async fn watch_policy_set(
        &self,
        _request: Request<pb::WatchPolicySetRequest>,
    ) -> Result<Response<Self::WatchPolicySetStream>, Status> {
        Ok(Response::new(policy_set_stream(self.policies.watch_set())))
    }

    #[tracing::instrument(skip_all, fields(realm = %request.get_ref().realm, action = request.get_ref().action))]
    async fn evaluate_enrollment(
        &self,
        request: Request<pb::EvaluateEnrollmentRequest>,
    ) -> Result<Response<pb::EvaluateEnrollmentResponse>, Status> {
        let request = EvaluationRequest::try_from(request.into_inner())?;
        let decision = self.policies.evaluate(&request)?;
        Ok(Response::new(decision_to_proto(decision)))
    }

    #[tracing::instrument(skip_all, fields(realm = %request.get_ref().realm))]
    async fn validate_pin(
        &self,
        request: Request<pb::ValidatePinRequest>,
    ) -> Result<Response<pb::ValidatePinResponse>, Status> {
        let request = request.into_inner();
        let subject = subject(&request.realm, &request.user, &request.client_ip, true)?;
        let violations = self.policies.validate_pin(&subject, &request.pin)?;
        Ok(Response::new(pb::ValidatePinResponse {
            valid: violations.is_empty(),
            violations,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_policy(
        &self,
        request: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let actor = actor(&request, &request.get_ref().actor)?;
        let request = request.into_inner();
        let spec = spec_from_proto(request.policy)?;
        let view = if request.validate_only {
            self.policies.validate_create(spec).await?
        } else {
            self.policies.create(spec, actor).await?
        };
        Ok(Response::new(view_to_proto(view)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_policy(
        &self,
        request: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let actor = actor(&request, &request.get_ref().actor)?;
        let request = request.into_inner();
        let spec = spec_from_proto(request.policy)?;
        let etag = text("etag", &request.etag, 128)?;
        let view = if request.validate_only {
            self.policies.validate_update(spec, &etag).await?
        } else {
            self.policies.update(spec, &etag, actor).await?
        };
        Ok(Response::new(view_to_proto(view)))
    }

    #[tracing::instrument(skip_all, fields(policy = %request.get_ref().name))]
    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let actor = actor(&request, &request.get_ref().actor)?;
        let request = request.into_inner();
        let etag = text("etag", &request.etag, 128)?;
        let etag = Some(etag.as_str()).filter(|etag| !etag.is_empty());
        self.policies
            .delete(&lookup_name(&request.name)?, etag, actor)
            .await?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    #[tracing::instrument(skip_all, fields(policy = %request.get_ref().name))]
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let view = self
            .policies
            .get(&lookup_name(&request.get_ref().name)?)
            .await?;
        Ok(Response::new(view_to_proto(view)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .policies
            .list(&page(request.page_size, &request.page_token)?)
            .await?;
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: page.items.into_iter().map(view_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_policy_history(
        &self,
        request: Request<pb::ListPolicyHistoryRequest>,
    ) -> Result<Response<pb::ListPolicyHistoryResponse>, Status> {
        let request = request.into_inner();
        let name = lookup_name(&request.name)?;
        let name = Some(name.as_str()).filter(|name| !name.is_empty());
        let page = self
            .policies
            .history(name, &page(request.page_size, &request.page_token)?)
            .await?;
        Ok(Response::new(pb::ListPolicyHistoryResponse {
            changes: page.items.into_iter().map(change_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
