//! `enrollctl upgrade-report`: who the trust changes of this release would affect, read
//! before upgrading (it works against the release before and this one).
//!
//! - Devices that authenticate today but will be refused: a model flagged compromised, or
//!   one the current model rules refuse (CheckEnrollment already does not count them; from
//!   this release authentication refuses them too).
//! - Users whose devices registered themselves without an admin's link and were approved
//!   at once: with no policy setting `require_device_approval`, such registrations now wait
//!   for an admin.
//! - Policies that match on client networks: callers must send `client_ip` for the users
//!   they match (CheckEnrollment and EvaluateEnrollment refuse a request without one).
//! - Devices whose model is only a claim (`model-claim-only`): their attestation chain was
//!   verified but its certificate does not bind their AAGUID, so model allow-lists and
//!   minimum certification would refuse them were they registered again. Devices keep the
//!   facts recorded at registration, so the upgrade itself changes nothing for them; what
//!   recorded data shows is listed: a device recorded with `aaguid_verified` false, and a
//!   device of format `apple` or `android-key` under a shipped vendor root (their
//!   attestation certificates never carry the FIDO AAGUID extension). Older `tpm` and
//!   `packed` devices under a blanket root cannot be told apart (the certificate is not
//!   stored) and are not listed. Against a release that does not record `aaguid_verified`
//!   (it reads as false) every device with a verified chain and an AAGUID is listed.
//!
//! It only reads (ListDevices, CheckEnrollment, ListPolicies, EvaluateEnrollment): an ops
//! key is enough.
use std::collections::BTreeMap;

use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use serde_json::json;

use super::{note, write_json_out, write_out};
use crate::Ctx;
use crate::connect::Service;
use crate::error::CliError;
use crate::output::Table;

/// One way the upgrade affects someone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    kind: &'static str,
    realm: String,
    user: String,
    /// The device or policy concerned.
    subject: String,
    reason: String,
}

/// A device will stop authenticating.
const REFUSED_AT_AUTHENTICATION: &str = "refused-at-authentication";
/// The user's self-registrations will wait for approval.
const APPROVAL_NOW_REQUIRED: &str = "approval-now-required";
/// Callers must send client_ip for the users a policy matches.
const CLIENT_IP_REQUIRED: &str = "client-ip-required";
/// The device's model is a claim its attestation certificate does not bind.
const MODEL_CLAIM_ONLY: &str = "model-claim-only";
/// Formats whose attestation certificates never carry the FIDO AAGUID extension, under the
/// shipped vendor roots that sign them: the model was always a claim.
const UNBOUND_VENDOR_FORMATS: [(&str, &str); 2] =
    [("apple", "apple"), ("android-key", "google-android")];

pub async fn run(ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let devices = all_devices(ctx).await?;
    note(ctx, &format!("checking {} devices...\n", devices.len()));
    let mut findings = Vec::new();
    let mut approval_decided: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    for device in devices.iter().filter(|device| model_claim_only(device)) {
        findings.push(Finding {
            kind: MODEL_CLAIM_ONLY,
            realm: device.realm.clone(),
            user: device.user.clone(),
            subject: device.id.clone(),
            reason: format!(
                "format {} under {}: its attestation certificate does not bind AAGUID {}, so \
                 webauthn_aaguid_allow and webauthn_min_certification would refuse it if it \
                 registered again (it keeps its recorded facts)",
                device.attestation_format, device.attestation_root, device.aaguid
            ),
        });
    }
    for device in devices
        .iter()
        .filter(|device| device.state == pb::DeviceState::Approved as i32)
    {
        if let Some(reason) = authentication_refusal(ctx, device).await? {
            findings.push(Finding {
                kind: REFUSED_AT_AUTHENTICATION,
                realm: device.realm.clone(),
                user: device.user.clone(),
                subject: device.id.clone(),
                reason,
            });
        }
        let self_approved = device.enrollment_link_id.is_empty() && device.approved_by.is_empty();
        if !self_approved {
            continue;
        }
        let key = (device.realm.clone(), device.user.clone());
        if !approval_decided.contains_key(&key) {
            let decided = approval_policy(ctx, &device.realm, &device.user).await?;
            approval_decided.insert(key.clone(), decided);
        }
        if approval_decided.get(&key).is_some_and(Option::is_none) {
            findings.push(Finding {
                kind: APPROVAL_NOW_REQUIRED,
                realm: device.realm.clone(),
                user: device.user.clone(),
                subject: device.id.clone(),
                reason: "registered without a link and approved at once; with no policy \
                         setting require_device_approval, the next such registration waits \
                         for an admin (add `require_device_approval: false` to keep the old \
                         behaviour)"
                    .to_owned(),
            });
        }
    }
    for policy in network_policies(ctx).await? {
        findings.push(Finding {
            kind: CLIENT_IP_REQUIRED,
            realm: policy.realms.join(","),
            user: policy.users.join(","),
            subject: policy.name.clone(),
            reason: format!(
                "matches on client networks ({}): CheckEnrollment, EvaluateEnrollment and \
                 every mutation for these users need client_ip",
                policy.clients.join(",")
            ),
        });
    }
    render(ctx, &findings, devices.len())
}

/// Whether a device not revoked has a verified chain whose certificate, by what was
/// recorded, does not bind its AAGUID.
fn model_claim_only(device: &pb::Device) -> bool {
    let nil = device.aaguid.is_empty() || device.aaguid.bytes().all(|b| b == b'0' || b == b'-');
    if device.state == pb::DeviceState::Revoked as i32 || device.attestation_root.is_empty() || nil
    {
        return false;
    }
    !device.aaguid_verified
        || UNBOUND_VENDOR_FORMATS.iter().any(|(format, root)| {
            device.attestation_format == *format && device.attestation_root == *root
        })
}

/// Every device, page by page.
async fn all_devices(ctx: &mut Ctx<'_>) -> Result<Vec<pb::Device>, CliError> {
    let mut client = ctx.conn.device();
    let mut devices = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_devices(pb::ListDevicesRequest {
                page_size: super::page_size(0, devices.len()),
                page_token,
                ..Default::default()
            })
            .await
            .map_err(ctx.conn.error(Service::Device))?
            .into_inner();
        devices.extend(page.devices);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            return Ok(devices);
        }
    }
}

/// Why CheckEnrollment does not count this approved device, if it does not: from this
/// release such a device does not authenticate either. A device whose answer depends on
/// the client network is reported under the network policies instead.
async fn authentication_refusal(
    ctx: &mut Ctx<'_>,
    device: &pb::Device,
) -> Result<Option<String>, CliError> {
    // A flag does not depend on any policy or client address.
    if device.model_compromised {
        return Ok(Some(format!(
            "its model is flagged compromised: {}",
            device.model_compromise_reason
        )));
    }
    let answer = ctx
        .conn
        .device()
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: device.realm.clone(),
            user: device.user.clone(),
            credential_id: device.credential_id.clone(),
            required_device_type: pb::DeviceType::Any as i32,
            ..Default::default()
        })
        .await;
    match answer {
        Ok(answer) => {
            let answer = answer.into_inner();
            let refused = answer.status == pb::EnrollmentStatus::TypeMismatch as i32;
            Ok(refused.then(|| answer.reasons.first().cloned().unwrap_or_default()))
        }
        Err(status)
            if status.code() == tonic::Code::InvalidArgument
                && enroll_shared::status::field(&status).as_deref() == Some("client_ip") =>
        {
            Ok(None)
        }
        Err(status) => Err(ctx.conn.error(Service::Device)(status)),
    }
}

/// The policy that decides `require_device_approval` for the user, if one does.
async fn approval_policy(
    ctx: &mut Ctx<'_>,
    realm: &str,
    user: &str,
) -> Result<Option<String>, CliError> {
    let answer = ctx
        .conn
        .policy()
        .evaluate_enrollment(policy_pb::EvaluateEnrollmentRequest {
            realm: realm.to_owned(),
            user: user.to_owned(),
            action: policy_pb::Action::RegisterDevice as i32,
            token_type: "webauthn".to_owned(),
            ..Default::default()
        })
        .await;
    match answer {
        Ok(answer) => Ok(answer
            .into_inner()
            .decided_by
            .get("require_device_approval")
            .cloned()),
        // Decided per client network: reported under the network policies.
        Err(status)
            if status.code() == tonic::Code::InvalidArgument
                && enroll_shared::status::field(&status).as_deref() == Some("client_ip") =>
        {
            Ok(Some(String::new()))
        }
        Err(status) => Err(ctx.conn.error(Service::Policy)(status)),
    }
}

/// The active policies restricted to client networks.
async fn network_policies(ctx: &mut Ctx<'_>) -> Result<Vec<policy_pb::Policy>, CliError> {
    let mut client = ctx.conn.policy();
    let mut policies = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_policies(policy_pb::ListPoliciesRequest {
                page_size: super::page_size(0, policies.len()),
                page_token,
            })
            .await
            .map_err(ctx.conn.error(Service::Policy))?
            .into_inner();
        policies.extend(
            page.policies
                .into_iter()
                .filter(|policy| policy.active && !policy.clients.is_empty()),
        );
        page_token = page.next_page_token;
        if page_token.is_empty() {
            return Ok(policies);
        }
    }
}

fn render(ctx: &mut Ctx<'_>, findings: &[Finding], devices: usize) -> Result<(), CliError> {
    if ctx.json() {
        let findings: Vec<serde_json::Value> = findings
            .iter()
            .map(|finding| {
                json!({
                    "kind": finding.kind,
                    "realm": finding.realm,
                    "user": finding.user,
                    "subject": finding.subject,
                    "reason": finding.reason,
                })
            })
            .collect();
        return write_json_out(
            ctx,
            &json!({ "devices_checked": devices, "findings": findings }),
        );
    }
    if findings.is_empty() {
        return write_out(
            ctx,
            &format!("{devices} devices checked: nobody is affected by the upgrade\n"),
        );
    }
    let mut table = Table::new(&["KIND", "REALM", "USER", "DEVICE OR POLICY", "WHY"]);
    for finding in findings {
        table.row(vec![
            finding.kind.to_owned(),
            finding.realm.clone(),
            finding.user.clone(),
            finding.subject.clone(),
            finding.reason.clone(),
        ]);
    }
    let count = |kind: &str| findings.iter().filter(|f| f.kind == kind).count();
    write_out(
        ctx,
        &format!(
            "{}\n{devices} devices checked: {} will be refused at authentication, {} users' \
             self-registrations will wait for approval, {} policies need client_ip, {} \
             devices' models are only claimed\n",
            table.render(),
            count(REFUSED_AT_AUTHENTICATION),
            count(APPROVAL_NOW_REQUIRED),
            count(CLIENT_IP_REQUIRED),
            count(MODEL_CLAIM_ONLY),
        ),
    )
}
