//! The last policy set received from the policy service, shared by every replica: the
//! newest version any replica received stands, an older one never replaces it.
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder, QuerySelect, TransactionTrait,
};

use super::entities::policy_set_snapshots;
use super::sql::statement;
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
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let inserted = transaction
            .execute_raw(statement(
                backend,
                "INSERT INTO policy_set_snapshots (version, policies, receive_time) \
                 SELECT $1, $2, $3 WHERE NOT EXISTS \
                 (SELECT 1 FROM policy_set_snapshots WHERE version >= $4)",
                vec![
                    set.version.into(),
                    set.policies_json.clone().into(),
                    set.receive_time.into(),
                    set.version.into(),
                ],
            ))
            .await;
        let inserted = match inserted {
            Ok(result) => result.rows_affected() == 1,
            // Two replicas storing the same version at once: the other one's row stands.
            Err(error)
                if matches!(
                    enroll_shared::db_errors::classify(&error),
                    enroll_shared::db_errors::DbFailure::Duplicate
                ) =>
            {
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        };
        if inserted {
            transaction
                .execute_raw(statement(
                    backend,
                    "DELETE FROM policy_set_snapshots WHERE version < $1",
                    vec![set.version.into()],
                ))
                .await?;
        }
        transaction.commit().await?;
        Ok(inserted)
    }
}
