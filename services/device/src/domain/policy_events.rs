//! Policy changes as enrollment events (`policy.created`, `policy.updated`,
//! `policy.deleted`): what the events say about a change the policy service recorded in its
//! history. A SIEM wants who changed which policy and what it now applies to, not every
//! field: the name, realms, users, actions, priority and active flag (policies hold no
//! secrets; client networks, scope and description stay in the policy service's history).
use std::collections::BTreeMap;

/// One policy as a policy event shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicySummary {
    pub name: String,
    pub realms: Vec<String>,
    pub users: Vec<String>,
    pub actions: BTreeMap<String, String>,
    pub priority: u32,
    pub active: bool,
}

/// The change a policy event is about. The actor and the change time are the event's own
/// `actor` and `time`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyChangeFacts {
    /// The policy's name (also the event's subject).
    pub name: String,
    /// `create`, `update` or `delete`, as the policy service records it.
    pub change: String,
    /// The id of the change in the policy service's history (ListPolicyHistory).
    pub history_id: i64,
    /// The policy before the change (None on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<PolicySummary>,
    /// The policy after the change (None on delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<PolicySummary>,
}

/// One change read from the policy service's history, to relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyHistoryEntry {
    /// The change's stable event id (the policy service derives it from `facts.history_id`).
    pub event_id: String,
    pub actor: String,
    pub change_time: chrono::DateTime<chrono::Utc>,
    pub facts: PolicyChangeFacts,
}
