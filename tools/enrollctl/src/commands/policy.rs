//! `enrollctl policy ...`
use enroll_shared::proto::policy::v1 as pb;
use prost_reflect::{ReflectMessage, Value as ReflectValue};
use serde_json::json;

use super::{optional, write_out};
use crate::Ctx;
use crate::cli::{ExplainAction, ExplainArgs, PolicyCommand};
use crate::connect::Service;
use crate::error::CliError;
use crate::json::{dynamic, list_json, to_json};
use crate::output::{Table, key_values, time, yes_no};
use crate::policy_file::diff;

pub async fn run(ctx: &mut Ctx<'_>, command: PolicyCommand) -> Result<(), CliError> {
    match command {
        PolicyCommand::List(args) => list(ctx, args.limit).await,
        PolicyCommand::Get { name } => get(ctx, name).await,
        PolicyCommand::Apply(args) => super::apply::run(ctx, args).await,
        PolicyCommand::Delete { name, etag } => delete(ctx, name, etag).await,
        PolicyCommand::History { name, limit } => history(ctx, name, limit).await,
        PolicyCommand::Explain(args) => explain(ctx, args).await,
    }
}

/// `k=v, k=v` of a policy's actions, by name.
pub fn actions_text(policy: &pb::Policy) -> String {
    let mut actions: Vec<_> = policy.actions.iter().collect();
    actions.sort();
    actions
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn list(ctx: &mut Ctx<'_>, limit: usize) -> Result<(), CliError> {
    let mut client = ctx.conn.policy();
    let mut policies = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_policies(pb::ListPoliciesRequest {
                page_size: super::page_size(limit, policies.len()),
                page_token,
            })
            .await
            .map_err(ctx.conn.error(Service::Policy))?
            .into_inner();
        policies.extend(page.policies);
        page_token = page.next_page_token;
        if page_token.is_empty() || (limit > 0 && policies.len() >= limit) {
            break;
        }
    }
    if limit > 0 {
        policies.truncate(limit);
    }
    if ctx.json() {
        return super::write_json_out(ctx, &json!({ "policies": list_json(&policies)? }));
    }
    let mut table = Table::new(&[
        "NAME",
        "PRIORITY",
        "ACTIVE",
        "REALMS",
        "USERS",
        "CLIENTS",
        "CONFLICTS",
        "ACTIONS",
    ]);
    for policy in &policies {
        table.row(vec![
            policy.name.clone(),
            policy.priority.to_string(),
            yes_no(policy.active),
            policy.realms.join(","),
            policy.users.join(","),
            policy.clients.join(","),
            policy.conflicts.len().to_string(),
            actions_text(policy),
        ]);
    }
    write_out(ctx, &table.render())
}

pub fn policy_text(policy: &pb::Policy) -> String {
    let mut text = key_values(&[
        ("name", policy.name.clone()),
        ("scope", policy.scope.clone()),
        ("priority", policy.priority.to_string()),
        ("active", yes_no(policy.active)),
        ("realms", policy.realms.join(", ")),
        ("users", policy.users.join(", ")),
        ("clients", policy.clients.join(", ")),
        ("description", policy.description.clone()),
        ("etag", policy.etag.clone()),
        ("created", time(policy.create_time.as_ref())),
        ("updated", time(policy.update_time.as_ref())),
    ]);
    let mut actions = Table::new(&["ACTION", "VALUE"]);
    let mut sorted: Vec<_> = policy.actions.iter().collect();
    sorted.sort();
    for (name, value) in sorted {
        actions.row(vec![name.clone(), value.clone()]);
    }
    text.push('\n');
    text.push_str(&actions.render());
    if !policy.conflicts.is_empty() {
        text.push('\n');
        text.push_str(&super::apply::conflicts_text(&policy.conflicts));
    }
    text
}

async fn get(ctx: &mut Ctx<'_>, name: String) -> Result<(), CliError> {
    let policy = ctx
        .conn
        .policy()
        .get_policy(pb::GetPolicyRequest { name })
        .await
        .map_err(ctx.conn.error(Service::Policy))?
        .into_inner();
    if ctx.json() {
        return super::write_json_out(ctx, &to_json(&policy)?);
    }
    write_out(ctx, &policy_text(&policy))
}

async fn delete(ctx: &mut Ctx<'_>, name: String, etag: Option<String>) -> Result<(), CliError> {
    ctx.conn
        .policy()
        .delete_policy(pb::DeletePolicyRequest {
            name: name.clone(),
            etag: optional(etag),
            actor: ctx.actor.clone(),
        })
        .await
        .map_err(ctx.conn.error(Service::Policy))?;
    if ctx.json() {
        return super::write_json_out(ctx, &json!({ "deleted": name }));
    }
    write_out(ctx, &format!("deleted policy {name}\n"))
}

async fn history(ctx: &mut Ctx<'_>, name: Option<String>, limit: usize) -> Result<(), CliError> {
    let mut client = ctx.conn.policy();
    let mut changes = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_policy_history(pb::ListPolicyHistoryRequest {
                name: name.clone().unwrap_or_default(),
                page_size: super::page_size(limit, changes.len()),
                page_token,
                // Newest first (`after_id` is the relay's oldest-first read).
                after_id: None,
            })
            .await
            .map_err(ctx.conn.error(Service::Policy))?
            .into_inner();
        changes.extend(page.changes);
        page_token = page.next_page_token;
        if page_token.is_empty() || (limit > 0 && changes.len() >= limit) {
            break;
        }
    }
    if limit > 0 {
        changes.truncate(limit);
    }
    if ctx.json() {
        return super::write_json_out(ctx, &json!({ "changes": list_json(&changes)? }));
    }
    let mut table = Table::new(&["ID", "TIME", "POLICY", "CHANGE", "ACTOR", "DETAILS"]);
    for change in &changes {
        let details = match (&change.before, &change.after) {
            (_, Some(after)) => diff(change.before.as_ref(), after)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            (Some(_), None) => "deleted".to_owned(),
            (None, None) => String::new(),
        };
        table.row(vec![
            change.id.to_string(),
            time(change.change_time.as_ref()),
            change.policy_name.clone(),
            change.change.clone(),
            change.actor.clone(),
            details,
        ]);
    }
    write_out(ctx, &table.render())
}

fn action(action: ExplainAction) -> pb::Action {
    match action {
        ExplainAction::Enroll => pb::Action::Enroll,
        ExplainAction::Assign => pb::Action::Assign,
        ExplainAction::Autoassign => pb::Action::Autoassign,
        ExplainAction::SetPin => pb::Action::SetPin,
        ExplainAction::LostToken => pb::Action::LostToken,
        ExplainAction::CreateLink => pb::Action::CreateLink,
        ExplainAction::RegisterDevice => pb::Action::RegisterDevice,
        ExplainAction::Manage => pb::Action::Manage,
    }
}

async fn explain(ctx: &mut Ctx<'_>, args: ExplainArgs) -> Result<(), CliError> {
    let decision = ctx
        .conn
        .policy()
        .evaluate_enrollment(pb::EvaluateEnrollmentRequest {
            realm: args.realm,
            user: args.user,
            client_ip: optional(args.client),
            action: action(args.action) as i32,
            token_type: optional(args.token_type),
            serial: optional(args.serial),
            no_client: args.no_client,
        })
        .await
        .map_err(ctx.conn.error(Service::Policy))?
        .into_inner();
    if ctx.json() {
        return super::write_json_out(ctx, &to_json(&decision)?);
    }
    write_out(ctx, &explain_text(&decision)?)
}

/// The decision as text: allowed or the denials, then setting -> value -> deciding policy
/// for every setting, in the proto's field order.
pub fn explain_text(decision: &pb::EvaluateEnrollmentResponse) -> Result<String, CliError> {
    let mut text = key_values(&[
        ("allowed", yes_no(decision.allowed)),
        (
            "policy set version",
            decision.policy_set_version.to_string(),
        ),
    ]);
    for denial in &decision.denials {
        let source = if denial.policy.is_empty() {
            "default".to_owned()
        } else {
            format!("policy {}", denial.policy)
        };
        text.push_str(&format!(
            "denied: {}: {} ({source})\n",
            denial.code,
            crate::output::printable(&denial.message)
        ));
    }
    let mut table = Table::new(&["SETTING", "VALUE", "DECIDED BY"]);
    let settings = decision.settings.clone().unwrap_or_default();
    let reflected = dynamic(&settings)?;
    for field in reflected.descriptor().fields() {
        let value = match field.name() {
            // Shown in the allow list's row: "(any)" or "(none allowed)".
            "webauthn_aaguid_allow_restricted" => continue,
            "webauthn_aaguid_allow" if settings.webauthn_aaguid_allow.is_empty() => {
                if settings.webauthn_aaguid_allow_restricted {
                    "(none allowed)".to_owned()
                } else {
                    "(any)".to_owned()
                }
            }
            "webauthn_min_certification" => {
                certification_label(settings.webauthn_min_certification)
            }
            _ if field.supports_presence() && !reflected.has_field(&field) => "(unset)".to_owned(),
            _ => setting_text(&reflected.get_field(&field)),
        };
        let decided_by = decision
            .decided_by
            .get(field.name())
            .cloned()
            .unwrap_or_else(|| "(default)".to_owned());
        table.row(vec![field.name().to_owned(), value, decided_by]);
    }
    text.push('\n');
    text.push_str(&table.render());
    Ok(text)
}

/// A certification level in the FIDO MDS3 spelling policies use (`FIDO_CERTIFIED_L1plus`).
fn certification_label(raw: i32) -> String {
    use pb::CertificationLevel as Level;
    match Level::try_from(raw) {
        Ok(Level::Unspecified | Level::NotFidoCertified) => "NOT_FIDO_CERTIFIED",
        Ok(Level::FidoCertified) => "FIDO_CERTIFIED",
        Ok(Level::FidoCertifiedL1) => "FIDO_CERTIFIED_L1",
        Ok(Level::FidoCertifiedL1Plus) => "FIDO_CERTIFIED_L1plus",
        Ok(Level::FidoCertifiedL2) => "FIDO_CERTIFIED_L2",
        Ok(Level::FidoCertifiedL2Plus) => "FIDO_CERTIFIED_L2plus",
        Ok(Level::FidoCertifiedL3) => "FIDO_CERTIFIED_L3",
        Ok(Level::FidoCertifiedL3Plus) => "FIDO_CERTIFIED_L3plus",
        Err(_) => return raw.to_string(),
    }
    .to_owned()
}

fn setting_text(value: &ReflectValue) -> String {
    match value {
        ReflectValue::Bool(value) => value.to_string(),
        ReflectValue::U32(value) => value.to_string(),
        ReflectValue::I32(value) => value.to_string(),
        ReflectValue::U64(value) => value.to_string(),
        ReflectValue::I64(value) => value.to_string(),
        ReflectValue::String(value) => value.clone(),
        ReflectValue::List(values) => values
            .iter()
            .map(setting_text)
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_shows_every_setting_with_its_source() {
        let decision = pb::EvaluateEnrollmentResponse {
            allowed: false,
            denials: vec![pb::Denial {
                code: "TOKEN_TYPE_NOT_ALLOWED".into(),
                message: "hotp is not allowed".into(),
                policy: "corp".into(),
            }],
            settings: Some(pb::EnrollmentSettings {
                max_token_per_user: Some(3),
                token_label: "<u>@<r>".into(),
                token_types: vec!["totp".into(), "webauthn".into()],
                ..Default::default()
            }),
            decided_by: [
                ("max_token_per_user".to_owned(), "corp".to_owned()),
                ("token_types".to_owned(), "corp".to_owned()),
            ]
            .into(),
            policy_set_version: 7,
        };
        let text = explain_text(&decision).unwrap();
        assert!(text.starts_with("allowed:            no\npolicy set version: 7\n"));
        assert!(
            text.contains("denied: TOKEN_TYPE_NOT_ALLOWED: hotp is not allowed (policy corp)\n")
        );
        let line = |setting: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{setting} ")))
                .unwrap_or_else(|| panic!("{setting} in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            line("max_token_per_user"),
            ["max_token_per_user", "3", "corp"]
        );
        assert_eq!(
            line("max_token_per_realm"),
            ["max_token_per_realm", "(unset)", "(default)"]
        );
        assert_eq!(line("token_label"), ["token_label", "<u>@<r>", "(default)"]);
        assert_eq!(
            line("token_types"),
            ["token_types", "totp,webauthn", "corp"]
        );
        assert_eq!(
            line("autoassignment"),
            ["autoassignment", "false", "(default)"]
        );
        assert_eq!(
            line("webauthn_aaguid_allow"),
            ["webauthn_aaguid_allow", "(any)", "(default)"]
        );
        assert_eq!(
            line("webauthn_min_certification"),
            [
                "webauthn_min_certification",
                "NOT_FIDO_CERTIFIED",
                "(default)"
            ]
        );
        assert!(!text.contains("webauthn_aaguid_allow_restricted"));
    }

    #[test]
    fn explain_shows_authenticator_model_rules() {
        let decision = pb::EvaluateEnrollmentResponse {
            allowed: true,
            settings: Some(pb::EnrollmentSettings {
                webauthn_aaguid_allow: vec![
                    "cb69481e-8ff7-4039-93ec-0a2729a154a8".into(),
                    "YubiKey 5 Series".into(),
                ],
                webauthn_aaguid_allow_restricted: true,
                webauthn_aaguid_deny: vec!["Titan".into()],
                webauthn_min_certification: pb::CertificationLevel::FidoCertifiedL1Plus as i32,
                ..Default::default()
            }),
            decided_by: [
                ("webauthn_aaguid_allow".to_owned(), "a,b".to_owned()),
                ("webauthn_min_certification".to_owned(), "b".to_owned()),
            ]
            .into(),
            policy_set_version: 3,
            ..Default::default()
        };
        let text = explain_text(&decision).unwrap();
        let line = |setting: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{setting} ")))
                .unwrap_or_else(|| panic!("{setting} in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            line("webauthn_aaguid_allow"),
            "webauthn_aaguid_allow cb69481e-8ff7-4039-93ec-0a2729a154a8,YubiKey 5 Series a,b"
        );
        assert_eq!(
            line("webauthn_aaguid_deny"),
            "webauthn_aaguid_deny Titan (default)"
        );
        assert_eq!(
            line("webauthn_min_certification"),
            "webauthn_min_certification FIDO_CERTIFIED_L1plus b"
        );
        let nothing = pb::EvaluateEnrollmentResponse {
            settings: Some(pb::EnrollmentSettings {
                webauthn_aaguid_allow_restricted: true,
                ..Default::default()
            }),
            ..decision
        };
        assert!(explain_text(&nothing).unwrap().contains("(none allowed)"));
    }
}
