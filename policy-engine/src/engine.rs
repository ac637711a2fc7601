//! The compiled policy set and enrollment decisions.
//!
//! Resolution: among the active policies that match the subject, the lowest priority number
//! that sets an action decides it. At equal priority, bounds combine to the most restrictive
//! value (see [`Merge`]): bounds to the tighter one, allow lists to their intersection,
//! deny lists to their union (`decided_by` then names every policy that took part, joined
//! by `,`); any other disagreement is a conflict that fails the decision.
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use enroll_shared::names::fold_case;

use super::actions::{ActionName, ActionValue, Merge, TokenType};
use super::policy::{CompiledPolicy, InvalidField, PolicySpec, StoredPolicy, UnreadablePolicy};
use super::settings::Settings;

/// What the subject wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enroll,
    Assign,
    Autoassign,
    SetPin,
    LostToken,
    CreateLink,
    RegisterDevice,
    Manage,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Enroll => "enroll",
            Action::Assign => "assign",
            Action::Autoassign => "autoassign",
            Action::SetPin => "set_pin",
            Action::LostToken => "lost_token",
            Action::CreateLink => "create_link",
            Action::RegisterDevice => "register_device",
            Action::Manage => "manage",
        }
    }
}

/// The subject and action of a decision. `realm` and `user` are names that
/// `enroll_shared::names::normalize_name` accepted, as the caller wrote them (templates
/// render them so); matching folds them with the same rule.
#[derive(Debug, Clone)]
pub struct Subject {
    pub realm: String,
    pub user: String,
    pub client: Option<IpAddr>,
    /// No end user's address exists for this request (an admin's own action): without
    /// `client`, network-restricted policies do not match instead of being required.
    pub no_client: bool,
}

#[derive(Debug, Clone)]
pub struct EvaluationRequest {
    pub subject: Subject,
    pub action: Action,
    pub token_type: Option<TokenType>,
    pub serial: Option<String>,
}

/// Why an action is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: &'static str,
    pub message: String,
    pub policy: Option<String>,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone)]
pub struct Decision {
    pub denials: Vec<Denial>,
    pub settings: Settings,
    /// Settings field -> deciding policy.
    pub decided_by: BTreeMap<&'static str, String>,
    pub policy_set_version: i64,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }
}

/// Two policies of equal priority disagree on an action for this subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub action: ActionName,
    pub first: String,
    pub second: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "policies `{}` and `{}` have the same priority and disagree on `{}`",
            self.first, self.second, self.action
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Resolved<'a> {
    priority: u32,
    value: &'a ActionValue,
    policy: usize,
}

/// The combined value of a list action set by several policies of the deciding priority.
#[derive(Debug)]
struct Combined {
    action: ActionName,
    value: ActionValue,
    /// Every policy that took part, in (priority, name) order.
    policies: Vec<usize>,
}

/// Folds `value` (of policy `index`) into the equal-priority combination of `action`.
fn combine(
    combined: &mut Vec<Combined>,
    action: ActionName,
    first: &Resolved<'_>,
    value: &ActionValue,
    index: usize,
) {
    match combined.iter_mut().find(|c| c.action == action) {
        Some(combination) => {
            if let Some(next) = combination.value.combine(value) {
                combination.value = next;
                combination.policies.push(index);
            }
        }
        None => {
            if let Some(value) = first.value.combine(value) {
                combined.push(Combined {
                    action,
                    value,
                    policies: vec![first.policy, index],
                });
            }
        }
    }
}

/// All policies, compiled, with a realm index so a decision looks only at the policies that
/// can match the subject's realm.
#[derive(Debug, Default)]
pub struct PolicySet {
    version: i64,
    /// Active policies sorted by (priority, name).
    policies: Vec<CompiledPolicy>,
    /// Their contents, normalized, in the same order: what WatchPolicySet streams so that
    /// a device service can compile the same set.
    specs: Vec<PolicySpec>,
    /// Normalised exact realm -> indexes into `policies`, ascending.
    by_realm: HashMap<String, Vec<usize>>,
    /// Policies whose realms use wildcards or exclusions (or are empty), ascending.
    any_realm: Vec<usize>,
}

impl PolicySet {
    /// Compiles stored policies. A policy that no longer validates (edited outside the
    /// service, or written under an older, looser rule) is not compiled but returned, so
    /// the caller can refuse decisions instead of deciding as if it did not exist.
    pub fn compile(version: i64, stored: &[StoredPolicy]) -> (PolicySet, Vec<UnreadablePolicy>) {
        Self::from_specs(version, stored.iter().map(|policy| &policy.spec))
    }

    /// Compiles policy contents (what WatchPolicySet streams), as [`PolicySet::compile`].
    pub fn from_specs<'a>(
        version: i64,
        specs: impl IntoIterator<Item = &'a PolicySpec>,
    ) -> (PolicySet, Vec<UnreadablePolicy>) {
        let mut unreadable = Vec::new();
        let mut policies: Vec<CompiledPolicy> = Vec::new();
        let mut active_specs: Vec<PolicySpec> = Vec::new();
        for spec in specs {
            match spec.clone().validate() {
                Ok((normalized, compiled)) if compiled.active => {
                    policies.push(compiled);
                    active_specs.push(normalized);
                }
                Ok(_) => {}
                Err(invalid) => unreadable.push(UnreadablePolicy {
                    name: spec.name.clone(),
                    active: spec.active,
                    reason: format!("{}: {}", invalid.field, invalid.message),
                }),
            }
        }
        active_specs.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        policies.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        let mut by_realm: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_realm = Vec::new();
        for (index, policy) in policies.iter().enumerate() {
            match policy.realms.exact_names() {
                Some(realms) => {
                    for realm in realms {
                        let entry = by_realm.entry(realm.to_owned()).or_default();
                        if entry.last() != Some(&index) {
                            entry.push(index);
                        }
                    }
                }
                None => any_realm.push(index),
            }
        }
        let set = PolicySet {
            version,
            policies,
            specs: active_specs,
            by_realm,
            any_realm,
        };
        (set, unreadable)
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// The active policies' contents (normalized), in (priority, name) order.
    pub fn specs(&self) -> &[PolicySpec] {
        &self.specs
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether some policy restricts clients (else no decision depends on the client IP:
    /// it is used only to match policies).
    pub fn uses_client_ip(&self) -> bool {
        self.policies
            .iter()
            .any(|policy| !policy.clients.is_unrestricted())
    }

    /// A decision about `subject` needs its client address while a policy that matches its
    /// realm and user matches on client networks: without one, such a policy would silently
    /// not apply (a restriction skipped by leaving the address out).
    pub fn require_client(&self, subject: &Subject) -> Result<(), InvalidField> {
        if subject.client.is_some() || subject.no_client {
            return Ok(());
        }
        let (realm, user) = (fold_case(&subject.realm), fold_case(&subject.user));
        let restricting = self.candidates(&realm).find(|&index| {
            let policy = &self.policies[index];
            !policy.clients.is_unrestricted()
                && policy.realms.matches(&realm)
                && policy.users.matches(&user)
        });
        match restricting {
            None => Ok(()),
            Some(index) => Err(InvalidField::new(
                "client_ip",
                format!(
                    "required: policy `{}` matches on client networks",
                    self.policies[index].name
                ),
            )),
        }
    }

    /// Indexes of the policies that may match `realm` (folded), in no particular order.
    fn candidates<'a>(&'a self, realm: &str) -> impl Iterator<Item = usize> + 'a {
        let exact = self.by_realm.get(realm).map(Vec::as_slice).unwrap_or(&[]);
        exact.iter().chain(self.any_realm.iter()).copied()
    }

    /// Indexes of the policies matching the subject, in (priority, name) order.
    fn matching(&self, realm: &str, user: &str, client: Option<IpAddr>) -> Vec<usize> {
        let exact = self.by_realm.get(realm).map(Vec::as_slice).unwrap_or(&[]);
        let mut merged = Vec::with_capacity(exact.len() + self.any_realm.len());
        let (mut i, mut j) = (0, 0);
        while i < exact.len() || j < self.any_realm.len() {
            let next = match (exact.get(i), self.any_realm.get(j)) {
                (Some(a), Some(b)) if a <= b => {
                    i += 1;
                    *a
                }
                (Some(_), Some(b)) | (None, Some(b)) => {
                    j += 1;
                    *b
                }
                (Some(a), None) => {
                    i += 1;
                    *a
                }
                (None, None) => break,
            };
            let policy = &self.policies[next];
            if policy.realms.matches(realm)
                && policy.users.matches(user)
                && policy.clients.matches(client)
            {
                merged.push(next);
            }
        }
        merged
    }

    /// Resolves every setting for the subject.
    pub fn resolve(
        &self,
        subject: &Subject,
    ) -> Result<(Settings, BTreeMap<&'static str, String>), Conflict> {
        let realm = fold_case(&subject.realm);
        let user = fold_case(&subject.user);
        let mut resolved: [Option<Resolved<'_>>; ActionName::ALL.len()] =
            [None; ActionName::ALL.len()];
        // Equal-priority combinations of list actions; rare, so empty (no allocation) on the
        // usual path.
        let mut combined: Vec<Combined> = Vec::new();
        for index in self.matching(&realm, &user, subject.client) {
            let policy = &self.policies[index];
            for (action, value) in &policy.actions {
                let slot = &mut resolved[*action as usize];
                match slot {
                    None => {
                        *slot = Some(Resolved {
                            priority: policy.priority,
                            value,
                            policy: index,
                        })
                    }
                    Some(current) if current.priority < policy.priority => {}
                    Some(current) => {
                        let replace = match action.merge() {
                            Merge::Smallest => value.rank() < current.value.rank(),
                            Merge::Largest => value.rank() > current.value.rank(),
                            Merge::Intersect | Merge::Union => {
                                combine(&mut combined, *action, current, value, index);
                                false
                            }
                            Merge::MustAgree if value == current.value => false,
                            Merge::MustAgree => {
                                return Err(Conflict {
                                    action: *action,
                                    first: self.policies[current.policy].name.clone(),
                                    second: policy.name.clone(),
                                });
                            }
                        };
                        if replace {
                            current.value = value;
                            current.policy = index;
                        }
                    }
                }
            }
        }
        let mut settings = Settings::default();
        let mut decided_by = BTreeMap::new();
        for action in ActionName::ALL {
            if let Some(combination) = combined.iter().find(|c| c.action == action) {
                settings.apply(action, &combination.value);
                let names: Vec<&str> = combination
                    .policies
                    .iter()
                    .map(|index| self.policies[*index].name.as_str())
                    .collect();
                decided_by.insert(action.settings_field(), names.join(","));
            } else if let Some(decided) = resolved[action as usize] {
                settings.apply(action, decided.value);
                decided_by.insert(
                    action.settings_field(),
                    self.policies[decided.policy].name.clone(),
                );
            }
        }
        Ok((settings, decided_by))
    }

    /// Decides `request`: the settings, rendered templates, and the denials that apply.
    pub fn evaluate(&self, request: &EvaluationRequest) -> Result<Decision, Conflict> {
        let subject = &request.subject;
        let (mut settings, decided_by) = self.resolve(subject)?;
        settings.render_templates(&subject.user, &subject.realm, request.serial.as_deref());
        let decider = |action: ActionName| decided_by.get(action.settings_field()).cloned();
        let mut denials = Vec::new();
        let token_type = request.token_type.or(match request.action {
            Action::CreateLink | Action::RegisterDevice => Some(TokenType::Webauthn),
            Action::LostToken => Some(TokenType::Password),
            _ => None,
        });
        if let Some(token_type) = token_type
            && !settings.token_types.contains(token_type)
        {
            denials.push(Denial {
                code: "TOKEN_TYPE_NOT_ALLOWED",
                message: format!(
                    "token type `{}` is not in token_types `{}`",
                    token_type.as_str(),
                    settings.token_types
                ),
                policy: decider(ActionName::TokenTypes),
            });
        }
        if request.action == Action::Autoassign && !settings.autoassignment {
            denials.push(Denial {
                code: "AUTOASSIGNMENT_DISABLED",
                message: "autoassignment is not enabled for this user".to_owned(),
                policy: decider(ActionName::Autoassignment),
            });
        }
        Ok(Decision {
            denials,
            settings,
            decided_by,
            policy_set_version: self.version,
        })
    }

    /// The conflicts `candidate` would take part in: active policies of the same priority
    /// whose subjects may overlap and that set an action to a value that must agree but
    /// does not. Empty for an inactive candidate.
    pub fn conflicts_with(&self, candidate: &CompiledPolicy) -> Vec<Conflict> {
        if !candidate.active {
            return Vec::new();
        }
        let mut conflicts = Vec::new();
        for other in &self.policies {
            if other.name == candidate.name
                || other.priority != candidate.priority
                || !candidate.realms.may_overlap(&other.realms)
                || !candidate.users.may_overlap(&other.users)
                || !candidate.clients.may_overlap(&other.clients)
            {
                continue;
            }
            for (action, value) in &candidate.actions {
                if action.merge() != Merge::MustAgree {
                    continue;
                }
                if let Some((_, theirs)) = other.actions.iter().find(|(a, _)| a == action)
                    && theirs != value
                {
                    conflicts.push(Conflict {
                        action: *action,
                        first: candidate.name.clone(),
                        second: other.name.clone(),
                    });
                }
            }
        }
        conflicts
    }

    /// Compiles a spec on its own (for conflict checks of a stored policy).
    pub fn compile_one(spec: &PolicySpec) -> Option<CompiledPolicy> {
        spec.clone().validate().ok().map(|(_, compiled)| compiled)
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
