//! The wire form of policies and decisions (`enroll.policy.v1`), one conversion for both
//! services: the policy service answers with it, the device service turns a decision it made
//! from its local copy of the policy set into the same answer.
use enroll_shared::proto::policy::v1 as pb;

use enroll_shared::names::{NameError, normalize_name};

use crate::actions::TokenType;
use crate::authenticators::{AllowList, CertificationLevel, ModelList};
use crate::engine::{Action, Decision, EvaluationRequest, Subject};
use crate::patterns::parse_client_ip;
use crate::policy::{InvalidField, PolicySpec};

/// A decision as EvaluateEnrollment answers it.
pub fn decision_to_proto(decision: Decision) -> pb::EvaluateEnrollmentResponse {
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
            otp_verify_window_minutes: s.otp_verify_window_minutes,
            otp_verify_attempts: s.otp_verify_attempts,
            require_identity: s.require_identity,
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

/// A policy as the wire carries it, before validation.
pub fn spec_from_proto(policy: pb::Policy) -> PolicySpec {
    PolicySpec {
        name: policy.name,
        scope: policy.scope,
        realms: policy.realms,
        users: policy.users,
        clients: policy.clients,
        actions: policy.actions.into_iter().collect(),
        priority: policy.priority,
        active: policy.active,
        description: policy.description,
    }
}

/// A policy's content on the wire (etag, times and conflicts left to the caller).
pub fn spec_to_proto(spec: PolicySpec) -> pb::Policy {
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

/// A realm or user name, checked with the rule both services share
/// (`enroll_shared::names`). It is kept as written, trimmed, because templates render it;
/// matching folds it with the same rule.
fn name(field: &str, value: &str) -> Result<String, InvalidField> {
    normalize_name(value).map_err(|error| match error {
        NameError::Empty => InvalidField::new(field, "required"),
        other => InvalidField::new(field, other.to_string()),
    })?;
    Ok(value.trim().to_owned())
}

/// The subject of a decision or a PIN check, as the wire carries it.
pub fn subject(
    realm: &str,
    user: &str,
    client_ip: &str,
    no_client: bool,
    user_required: bool,
) -> Result<Subject, InvalidField> {
    let realm = name("realm", realm)?;
    let user = if user_required || !user.trim().is_empty() {
        name("user", user)?
    } else {
        String::new()
    };
    let client = match client_ip.trim() {
        "" => None,
        raw => Some(parse_client_ip(raw).ok_or_else(|| {
            InvalidField::new(
                "client_ip",
                format!("`{raw}` is not an IPv4 or IPv6 address"),
            )
        })?),
    };
    Ok(Subject {
        realm,
        user,
        client,
        no_client,
    })
}

fn action(value: i32) -> Result<Action, InvalidField> {
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
            return Err(InvalidField::new(
                "action",
                "required: one of ACTION_ENROLL, ACTION_ASSIGN, ACTION_AUTOASSIGN, ACTION_SET_PIN, ACTION_LOST_TOKEN, ACTION_CREATE_LINK, ACTION_REGISTER_DEVICE, ACTION_MANAGE",
            ));
        }
    })
}

/// An EvaluateEnrollment request, validated (a bad field names itself).
pub fn evaluation_request(
    request: pb::EvaluateEnrollmentRequest,
) -> Result<EvaluationRequest, InvalidField> {
    {
        let action = action(request.action)?;
        // Pool enrollment and admin actions on pool tokens have no user.
        let user_required = !matches!(action, Action::Enroll | Action::Assign | Action::Manage);
        let subject = subject(
            &request.realm,
            &request.user,
            &request.client_ip,
            request.no_client,
            user_required,
        )?;
        let token_type = match request.token_type.trim() {
            "" if matches!(action, Action::Enroll | Action::Assign | Action::Autoassign) => {
                return Err(InvalidField::new(
                    "token_type",
                    "required for this action: totp, hotp, webauthn or password",
                ));
            }
            "" => None,
            raw => Some(TokenType::parse(raw).ok_or_else(|| {
                InvalidField::new(
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
