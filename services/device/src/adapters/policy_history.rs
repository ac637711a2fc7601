//! The policy service's change history for the policy-event relay
//! (`service::policy_events`): ListPolicyHistory with `after_id`, oldest first, turned
//! into the domain's entries. Any failure is UNAVAILABLE to the relay: it retries later.
use async_trait::async_trait;
use enroll_shared::proto::policy::v1 as pb;

use super::policy_client::PolicyClient;
use crate::domain::policy_events::{PolicyChangeFacts, PolicyHistoryEntry, PolicySummary};
use crate::error::DeviceError;
use crate::service::policy_events::PolicyHistory;

#[async_trait]
impl PolicyHistory for PolicyClient {
    async fn newest_change(&self) -> Result<i64, DeviceError> {
        // Without `after_id` the history is newest first.
        let page = self
            .list_policy_history(pb::ListPolicyHistoryRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(page.changes.first().map_or(0, |change| change.id))
    }

    async fn changes_after(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<PolicyHistoryEntry>, DeviceError> {
        let page = self
            .list_policy_history(pb::ListPolicyHistoryRequest {
                page_size: limit,
                after_id: Some(after_id),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        page.changes.into_iter().map(entry).collect()
    }
}

fn unavailable(status: tonic::Status) -> DeviceError {
    DeviceError::Unavailable(format!(
        "policy service history: {:?} {}",
        status.code(),
        status.message()
    ))
}

/// One change as the relay writes it; a change without a usable event id or time is
/// refused (the relay stops there and retries, rather than skip it).
fn entry(change: pb::PolicyChange) -> Result<PolicyHistoryEntry, DeviceError> {
    let corrupt = |problem: &str| {
        DeviceError::Unavailable(format!("policy history change {}: {problem}", change.id))
    };
    let event_id = uuid::Uuid::parse_str(&change.event_id)
        .map_err(|_| corrupt("no event_id (a policy service older than the relay?)"))?
        .to_string();
    let change_time = change
        .change_time
        .and_then(|time| {
            chrono::DateTime::from_timestamp(time.seconds, u32::try_from(time.nanos).ok()?)
        })
        .ok_or_else(|| corrupt("no change_time"))?;
    Ok(PolicyHistoryEntry {
        event_id,
        actor: change.actor,
        change_time,
        facts: PolicyChangeFacts {
            name: change.policy_name,
            change: change.change,
            history_id: change.id,
            before: change.before.map(summary),
            after: change.after.map(summary),
        },
    })
}

fn summary(policy: pb::Policy) -> PolicySummary {
    PolicySummary {
        name: policy.name,
        realms: policy.realms,
        users: policy.users,
        actions: policy.actions.into_iter().collect(),
        priority: policy.priority,
        active: policy.active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_becomes_an_entry_and_one_without_an_event_id_is_refused() {
        let change = pb::PolicyChange {
            id: 7,
            policy_name: "p".into(),
            change: "update".into(),
            actor: "admin-key".into(),
            change_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            before: Some(pb::Policy {
                name: "p".into(),
                realms: vec!["corp".into()],
                description: "left out".into(),
                ..Default::default()
            }),
            after: None,
            event_id: "0b5c6f2e-0000-8000-8000-000000000007".into(),
        };
        let entry = entry(change.clone()).unwrap();
        assert_eq!(entry.facts.history_id, 7);
        assert_eq!(entry.facts.before.unwrap().realms, vec!["corp".to_owned()]);
        assert_eq!(entry.change_time.timestamp(), 1_700_000_000);
        let without = pb::PolicyChange {
            event_id: String::new(),
            ..change
        };
        assert!(super::entry(without).is_err());
    }
}
