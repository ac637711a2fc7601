//! `enrollctl policy apply`: create-or-update from a file. Every policy is first checked
//! with `validate_only` (the server's own validation, normalization and conflict check,
//! nothing stored), the plan is shown, and only then, unless `--dry-run`, written.
use enroll_shared::proto::policy::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;

use super::{note, write_out};
use crate::Ctx;
use crate::cli::ApplyArgs;
use crate::connect::Service;
use crate::error::{CliError, exit};
use crate::json::{list_json, to_json};
use crate::policy_file::{FieldChange, diff, format_of, parse};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Create,
    Update,
    Unchanged,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Unchanged => "unchanged",
        }
    }
}

/// What applying one policy of the file does.
struct Plan {
    change: Change,
    /// The policy as written in the file.
    desired: pb::Policy,
    /// The stored etag the update is based on.
    etag: String,
    /// The server's would-be policy (normalized, with its conflicts).
    would_be: pb::Policy,
    fields: Vec<FieldChange>,
}

impl Plan {
    fn conflicts(&self) -> &[pb::PolicyConflict] {
        match self.change {
            Change::Unchanged => &[],
            _ => &self.would_be.conflicts,
        }
    }
}

pub async fn run(ctx: &mut Ctx<'_>, args: ApplyArgs) -> Result<(), CliError> {
    let text = super::read_input(ctx, &args.file)?;
    let format = args.format.unwrap_or_else(|| format_of(&args.file));
    let desired = parse(&text, format)
        .map_err(|message| CliError::usage(format!("{}: {message}", args.file.display())))?;
    let plans = plan(ctx, desired).await?;
    let conflict_count: usize = plans.iter().map(|plan| plan.conflicts().len()).sum();
    let refused = conflict_count > 0 && !args.allow_conflicts;
    let apply = !args.dry_run && !refused;
    let mut applied = Vec::new();
    if !ctx.json() {
        write_out(ctx, &plan_text(&plans))?;
    }
    if apply {
        applied = write(ctx, &plans).await?;
    }
    if ctx.json() {
        super::write_json_out(ctx, &plan_json(&plans, &applied, args.dry_run)?)?;
    } else if apply {
        let mut text = String::new();
        for policy in &applied {
            let plan = plans.iter().find(|plan| plan.desired.name == policy.name);
            let verb = match plan.map(|plan| plan.change) {
                Some(Change::Create) => "created",
                _ => "updated",
            };
            text.push_str(&format!(
                "{verb} policy {} (etag {})\n",
                policy.name, policy.etag
            ));
            text.push_str(&conflicts_text(&policy.conflicts));
        }
        if applied.is_empty() {
            text.push_str("nothing to apply\n");
        }
        write_out(ctx, &text)?;
    } else if args.dry_run && !refused {
        write_out(ctx, "dry run: nothing applied\n")?;
    }
    if refused {
        return Err(CliError::Outcome {
            code: exit::CONFLICT,
            message: format!(
                "the change would cause {conflict_count} policy conflict(s) (listed above); \
                 nothing applied: resolve them (priorities, subjects or values) or pass \
                 --allow-conflicts"
            ),
        });
    }
    Ok(())
}

/// Reads each policy's stored version and asks the server to validate the change.
async fn plan(ctx: &mut Ctx<'_>, desired: Vec<pb::Policy>) -> Result<Vec<Plan>, CliError> {
    let mut client = ctx.conn.policy();
    let mut plans = Vec::new();
    for policy in desired {
        let name = policy.name.clone();
        let current = match client
            .get_policy(pb::GetPolicyRequest { name: name.clone() })
            .await
        {
            Ok(response) => Some(response.into_inner()),
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(ctx.conn.error(Service::Policy)(status)),
        };
        let validated = match &current {
            None => {
                client
                    .create_policy(pb::CreatePolicyRequest {
                        policy: Some(policy.clone()),
                        actor: ctx.actor.clone(),
                        validate_only: true,
                    })
                    .await
            }
            Some(current) => {
                client
                    .update_policy(pb::UpdatePolicyRequest {
                        policy: Some(policy.clone()),
                        etag: current.etag.clone(),
                        actor: ctx.actor.clone(),
                        validate_only: true,
                    })
                    .await
            }
        };
        let would_be = match validated {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let error = ctx.conn.error(Service::Policy)(status);
                note(ctx, &format!("policy `{name}` was refused:\n"));
                return Err(error);
            }
        };
        let fields = diff(current.as_ref(), &would_be);
        let change = match (&current, fields.is_empty()) {
            (None, _) => Change::Create,
            (Some(_), true) => Change::Unchanged,
            (Some(_), false) => Change::Update,
        };
        plans.push(Plan {
            change,
            etag: current.map(|current| current.etag).unwrap_or_default(),
            desired: policy,
            would_be,
            fields,
        });
    }
    Ok(plans)
}

/// Writes the planned creates and updates, in file order; stops at the first failure
/// (what was written before it stays written, and is reported).
async fn write(ctx: &mut Ctx<'_>, plans: &[Plan]) -> Result<Vec<pb::Policy>, CliError> {
    let mut client = ctx.conn.policy();
    let mut applied = Vec::new();
    for plan in plans {
        let result = match plan.change {
            Change::Unchanged => continue,
            Change::Create => {
                client
                    .create_policy(pb::CreatePolicyRequest {
                        policy: Some(plan.desired.clone()),
                        actor: ctx.actor.clone(),
                        validate_only: false,
                    })
                    .await
            }
            Change::Update => {
                client
                    .update_policy(pb::UpdatePolicyRequest {
                        policy: Some(plan.desired.clone()),
                        etag: plan.etag.clone(),
                        actor: ctx.actor.clone(),
                        validate_only: false,
                    })
                    .await
            }
        };
        match result {
            Ok(response) => applied.push(response.into_inner()),
            Err(status) => {
                let error = ctx.conn.error(Service::Policy)(status);
                let done: Vec<&str> = applied
                    .iter()
                    .map(|p: &pb::Policy| p.name.as_str())
                    .collect();
                note(
                    ctx,
                    &format!(
                        "writing policy `{}` failed; written before it: {}\n",
                        plan.desired.name,
                        if done.is_empty() {
                            "none".to_owned()
                        } else {
                            done.join(", ")
                        }
                    ),
                );
                return Err(error);
            }
        }
    }
    Ok(applied)
}

fn plan_text(plans: &[Plan]) -> String {
    let mut text = String::new();
    let mut counts = [0usize; 3];
    for plan in plans {
        let (mark, index) = match plan.change {
            Change::Create => ('+', 0),
            Change::Update => ('~', 1),
            Change::Unchanged => ('=', 2),
        };
        counts[index] += 1;
        text.push_str(&format!(
            "{mark} {} policy {}\n",
            plan.change.as_str(),
            plan.desired.name
        ));
        for field in &plan.fields {
            text.push_str(&format!(
                "    {}\n",
                crate::output::printable(&field.to_string())
            ));
        }
        for conflict in plan.conflicts() {
            text.push_str(&format!(
                "    ! conflict: {}\n",
                crate::output::printable(&conflict.message)
            ));
        }
    }
    let conflicts: usize = plans.iter().map(|plan| plan.conflicts().len()).sum();
    text.push_str(&format!(
        "plan: {} to create, {} to update, {} unchanged, {conflicts} conflict(s)\n",
        counts[0], counts[1], counts[2]
    ));
    text
}

fn plan_json(plans: &[Plan], applied: &[pb::Policy], dry_run: bool) -> Result<Value, CliError> {
    let mut policies = Vec::new();
    for plan in plans {
        let result = applied
            .iter()
            .find(|policy| policy.name == plan.desired.name);
        let changes: Vec<Value> = plan
            .fields
            .iter()
            .map(
                |field| json!({"field": field.field, "before": field.before, "after": field.after}),
            )
            .collect();
        policies.push(json!({
            "name": plan.desired.name,
            "change": plan.change.as_str(),
            "changes": changes,
            "conflicts": list_json(plan.conflicts())?,
            "policy": to_json(result.unwrap_or(&plan.would_be))?,
        }));
    }
    Ok(json!({
        "dry_run": dry_run,
        "applied": applied.iter().map(|policy| policy.name.clone()).collect::<Vec<_>>(),
        "policies": policies,
    }))
}

/// One `conflict:` line per conflict.
pub fn conflicts_text(conflicts: &[pb::PolicyConflict]) -> String {
    conflicts
        .iter()
        .map(|conflict| {
            format!(
                "conflict: {} (action {}, with policy {})\n",
                crate::output::printable(&conflict.message),
                conflict.action,
                conflict.other_policy
            )
        })
        .collect()
}
