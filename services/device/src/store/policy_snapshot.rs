//! The last policy set received from the policy service, shared by every replica: the
//! newest version any replica received stands, an older one never replaces it.
use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder, QuerySelect};

use super::entities::policy_set_snapshots;
use super::sql::keep_if_newest;
use crate::error::DeviceError;

/// A stored policy set: its version and its policies as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicySet {
    pub version: i64,
    pub policies_json: String,
    pub receive_time: DateTime<Utc>,
}

#[derive(Clone)]
pub struct PolicySnapshotStore {
    db: DatabaseConnection,
}

impl PolicySnapshotStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The newest stored set.
    pub async fn latest(&self) -> Result<Option<StoredPolicySet>, DeviceError> {
        let row = policy_set_snapshots::Entity::find()
            .order_by_desc(policy_set_snapshots::Column::Version)
            .limit(1)
            .one(&self.db)
            .await?;
        Ok(row.map(|row| StoredPolicySet {
            version: row.version,
            policies_json: row.policies,
            receive_time: row.receive_time,
        }))
    }

    /// Keeps `set` when its version is above every stored one and drops the older ones;
    /// false when one as new or newer is already stored (another replica got there).
    pub async fn save_if_newer(&self, set: &StoredPolicySet) -> Result<bool, DeviceError> {
        keep_if_newest(
            &self.db,
            "policy_set_snapshots",
            &["version", "policies", "receive_time"],
            vec![
                set.version.into(),
                set.policies_json.clone().into(),
                set.receive_time.into(),
            ],
            set.version,
        )
        .await
    }
}
