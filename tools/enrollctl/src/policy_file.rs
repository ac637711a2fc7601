//! Policy files (YAML or TOML, several policies per file) and the differences between two
//! versions of a policy.
use std::collections::BTreeMap;

use enroll_shared::proto::policy::v1 as pb;
use serde::Deserialize;

use crate::cli::PolicyFileFormat;

/// One policy as written in a file. Action values may be strings, numbers, booleans or
/// lists (joined with commas, e.g. `token_types: [totp, hotp]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    realms: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    clients: Vec<String>,
    #[serde(default)]
    actions: BTreeMap<String, ActionValue>,
    #[serde(default)]
    priority: u32,
    /// A policy in a file is meant to apply: active unless it says otherwise.
    #[serde(default = "active_by_default")]
    active: bool,
    #[serde(default)]
    description: String,
}

fn active_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ActionValue {
    Bool(bool),
    Integer(i64),
    Text(String),
    List(Vec<ActionValue>),
}

impl ActionValue {
    fn into_text(self) -> String {
        match self {
            ActionValue::Bool(value) => value.to_string(),
            ActionValue::Integer(value) => value.to_string(),
            ActionValue::Text(value) => value,
            ActionValue::List(values) => values
                .into_iter()
                .map(ActionValue::into_text)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl From<PolicyDocument> for pb::Policy {
    fn from(document: PolicyDocument) -> Self {
        pb::Policy {
            name: document.name,
            scope: document.scope,
            realms: document.realms,
            users: document.users,
            clients: document.clients,
            actions: document
                .actions
                .into_iter()
                .map(|(name, value)| (name, value.into_text()))
                .collect(),
            priority: document.priority,
            active: document.active,
            description: document.description,
            ..Default::default()
        }
    }
}

/// The ways a file may hold policies.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Document {
    Wrapped { policies: Vec<PolicyDocument> },
    List(Vec<PolicyDocument>),
    One(Box<PolicyDocument>),
}

impl Document {
    fn into_policies(self) -> Vec<PolicyDocument> {
        match self {
            Document::Wrapped { policies } | Document::List(policies) => policies,
            Document::One(policy) => vec![*policy],
        }
    }
}

/// The format of `path`: by extension, YAML when it says nothing.
pub fn format_of(path: &std::path::Path) -> PolicyFileFormat {
    match path.extension().and_then(|ext| ext.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("toml") => PolicyFileFormat::Toml,
        _ => PolicyFileFormat::Yaml,
    }
}

/// The policies of a file, in file order; names must be unique.
pub fn parse(text: &str, format: PolicyFileFormat) -> Result<Vec<pb::Policy>, String> {
    let documents = match format {
        PolicyFileFormat::Toml => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct TomlFile {
                policies: Vec<PolicyDocument>,
            }
            toml::from_str::<TomlFile>(text)
                .map_err(|error| error.to_string())?
                .policies
        }
        PolicyFileFormat::Yaml => {
            let mut documents = Vec::new();
            for document in serde_norway::Deserializer::from_str(text) {
                // An empty document (a trailing `---`) holds nothing.
                let value = serde_norway::Value::deserialize(document)
                    .map_err(|error| error.to_string())?;
                if value.is_null() {
                    continue;
                }
                let parsed: Document = serde_norway::from_value(value).map_err(|error| {
                    format!(
                        "document {}: {error} (expected a policy, a list of policies or \
                         `policies:` with a list; a policy needs `name`, and takes scope, \
                         realms, users, clients, actions, priority, active, description)",
                        documents.len() + 1
                    )
                })?;
                documents.push(parsed);
            }
            documents
                .into_iter()
                .flat_map(Document::into_policies)
                .collect()
        }
    };
    if documents.is_empty() {
        return Err("the file holds no policy".to_owned());
    }
    let policies: Vec<pb::Policy> = documents.into_iter().map(pb::Policy::from).collect();
    for (index, policy) in policies.iter().enumerate() {
        if policies[..index].iter().any(|p| p.name == policy.name) {
            return Err(format!("policy `{}` appears twice", policy.name));
        }
    }
    Ok(policies)
}

/// One changed field of a policy: `before` empty on an added value, `after` empty on a
/// removed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl std::fmt::Display for FieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.before, &self.after) {
            (None, Some(after)) => write!(f, "+ {}: {after}", self.field),
            (Some(before), None) => write!(f, "- {}: {before}", self.field),
            (Some(before), Some(after)) => write!(f, "~ {}: {before} -> {after}", self.field),
            (None, None) => write!(f, "  {}", self.field),
        }
    }
}

fn list(values: &[String]) -> String {
    format!("[{}]", values.join(", "))
}

/// What changes from `before` (none: a new policy) to `after`, field by field, in the
/// proto's field order; output-only fields are ignored.
pub fn diff(before: Option<&pb::Policy>, after: &pb::Policy) -> Vec<FieldChange> {
    let empty = pb::Policy::default();
    let old = before.unwrap_or(&empty);
    let is_new = before.is_none();
    let mut changes = Vec::new();
    let mut field = |name: &str, old_text: String, new_text: String| {
        if old_text != new_text || (is_new && !matches!(new_text.as_str(), "" | "[]" | "\"\"")) {
            changes.push(FieldChange {
                field: name.to_owned(),
                before: (!is_new).then_some(old_text),
                after: Some(new_text),
            });
        }
    };
    field("scope", old.scope.clone(), after.scope.clone());
    field("realms", list(&old.realms), list(&after.realms));
    field("users", list(&old.users), list(&after.users));
    field("clients", list(&old.clients), list(&after.clients));
    field(
        "priority",
        old.priority.to_string(),
        after.priority.to_string(),
    );
    field("active", old.active.to_string(), after.active.to_string());
    field(
        "description",
        format!("{:?}", old.description),
        format!("{:?}", after.description),
    );
    let names: std::collections::BTreeSet<&String> =
        old.actions.keys().chain(after.actions.keys()).collect();
    for name in names {
        let before_value = old.actions.get(name);
        let after_value = after.actions.get(name);
        if before_value != after_value {
            changes.push(FieldChange {
                field: format!("actions.{name}"),
                before: before_value.map(|value| format!("{value:?}")),
                after: after_value.map(|value| format!("{value:?}")),
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_lists_wrapped_lists_and_documents_all_parse() {
        let list = "- name: a\n  realms: [corp]\n  actions:\n    max_token_per_user: 3\n    \
                    autoassignment: true\n    token_types: [totp, hotp]\n- name: b\n  active: false\n";
        let policies = parse(list, PolicyFileFormat::Yaml).unwrap();
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[0].actions["max_token_per_user"], "3");
        assert_eq!(policies[0].actions["autoassignment"], "true");
        assert_eq!(policies[0].actions["token_types"], "totp,hotp");
        assert!(policies[0].active, "active unless the file says otherwise");
        assert!(!policies[1].active);
        let wrapped = "policies:\n  - name: a\n";
        assert_eq!(parse(wrapped, PolicyFileFormat::Yaml).unwrap().len(), 1);
        let documents = "name: a\n---\nname: b\npriority: 5\n---\n";
        let policies = parse(documents, PolicyFileFormat::Yaml).unwrap();
        assert_eq!(policies[1].priority, 5);
    }

    #[test]
    fn toml_files_use_policies_tables() {
        let text = "[[policies]]\nname = \"a\"\nusers = [\"!root\"]\n[policies.actions]\n\
                    tokenlabel = \"<u>@<r>\"\nlostTokenValid = 5\n";
        let policies = parse(text, PolicyFileFormat::Toml).unwrap();
        assert_eq!(policies[0].users, ["!root"]);
        assert_eq!(policies[0].actions["lostTokenValid"], "5");
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            parse("- name: a\n- name: a\n", PolicyFileFormat::Yaml)
                .unwrap_err()
                .contains("`a` appears twice")
        );
        assert!(
            parse("", PolicyFileFormat::Yaml)
                .unwrap_err()
                .contains("no policy")
        );
        assert!(parse("- nme: a\n", PolicyFileFormat::Yaml).is_err());
        assert!(
            parse(
                "[[policies]]\nname = \"a\"\nrealm = []\n",
                PolicyFileFormat::Toml
            )
            .is_err()
        );
    }

    #[test]
    fn diffs_list_changed_added_and_removed_fields() {
        let mut before = pb::Policy {
            name: "a".into(),
            realms: vec!["corp".into()],
            actions: [
                ("max_token_per_user".to_owned(), "3".to_owned()),
                ("tokenlabel".to_owned(), "<s>".to_owned()),
            ]
            .into(),
            priority: 1,
            active: true,
            ..Default::default()
        };
        let mut after = before.clone();
        after
            .actions
            .insert("max_token_per_user".into(), "5".into());
        after.actions.remove("tokenlabel");
        after.actions.insert("autoassignment".into(), "true".into());
        after.realms.push("lab".into());
        let lines: Vec<String> = diff(Some(&before), &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "~ realms: [corp] -> [corp, lab]",
                "+ actions.autoassignment: \"true\"",
                "~ actions.max_token_per_user: \"3\" -> \"5\"",
                "- actions.tokenlabel: \"<s>\"",
            ]
        );
        before.etag = "7".into();
        assert!(diff(Some(&before), &before.clone()).is_empty());
        let created: Vec<String> = diff(None, &after).iter().map(ToString::to_string).collect();
        assert!(created.contains(&"+ realms: [corp, lab]".to_owned()));
        assert!(created.contains(&"+ active: true".to_owned()));
        assert!(!created.iter().any(|line| line.contains("users")));
    }
}
