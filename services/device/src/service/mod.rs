//! The use cases: domain values in and out (no gRPC types), each mutation asking the policy
//! gate first and writing its change with its audit event in one transaction.
pub mod audit;
pub mod blocking;
pub mod budgets;
pub mod decision_cache;
pub mod delivery;
pub mod devices;
pub mod events;
pub mod gate;
pub mod idempotency;
pub mod metadata;
pub mod metadata_admin;
pub mod metrics;
pub mod policy_events;
pub mod poll;
pub mod pool_index;
pub mod ports;
pub mod retention;
pub mod streams;
pub mod tokens;

use async_trait::async_trait;

use crate::domain::audit::AuditRecord;
use crate::error::DeviceError;
use crate::store::audit::AuditStore;

#[async_trait]
impl ports::AuditLog for AuditStore {
    async fn record(&self, record: AuditRecord) -> Result<(), DeviceError> {
        AuditStore::record(self, record).await
    }
}
