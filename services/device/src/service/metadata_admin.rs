//! The operator's view of the FIDO metadata (status) and the one decision only an operator
//! takes: accepting a BLOB number that jumps further than `webauthn.metadata.max_no_jump`.
use enroll_shared::time::SharedClock;

use super::metadata::{FidoMetadata, MetadataStatus};
use crate::domain::actor::Actor;
use crate::domain::audit::{AuditRecord, OK};
use crate::error::DeviceError;
use crate::store::metadata::MetadataStore;

/// The audit action of an accepted jump.
pub const ACCEPT_METADATA_JUMP: &str = "accept_metadata_jump";

/// Status and acceptance; without `[webauthn.metadata]` a status says "not enabled" and
/// accepting fails.
#[derive(Clone)]
pub struct MetadataAdmin {
    enabled: Option<(FidoMetadata, MetadataStore)>,
    max_no_jump: u64,
    clock: SharedClock,
}

/// The status with what the configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataView {
    pub enabled: bool,
    pub status: MetadataStatus,
    pub max_no_jump: u64,
}

impl MetadataAdmin {
    /// No FIDO metadata configured.
    pub fn disabled(clock: SharedClock) -> Self {
        Self {
            enabled: None,
            max_no_jump: 0,
            clock,
        }
    }

    pub fn new(
        metadata: FidoMetadata,
        store: MetadataStore,
        max_no_jump: u64,
        clock: SharedClock,
    ) -> Self {
        Self {
            enabled: Some((metadata, store)),
            max_no_jump,
            clock,
        }
    }

    pub fn status(&self) -> MetadataView {
        MetadataView {
            enabled: self.enabled.is_some(),
            status: self
                .enabled
                .as_ref()
                .map(|(metadata, _)| metadata.status(self.clock.now().date_naive()))
                .unwrap_or_default(),
            max_no_jump: self.max_no_jump,
        }
    }

    /// Records that `accepted_by` (through `actor`'s key) accepts BLOB `no`, audited, and
    /// has this replica fetch at once; the others adopt it at their next fetch or from the
    /// database.
    pub async fn accept_jump(
        &self,
        actor: &Actor,
        no: u64,
        accepted_by: &str,
        reason: &str,
    ) -> Result<MetadataView, DeviceError> {
        let Some((metadata, store)) = &self.enabled else {
            return Err(DeviceError::FailedPrecondition(
                "no FIDO metadata configured (webauthn.metadata.source)".to_owned(),
            ));
        };
        if no == 0 {
            return Err(DeviceError::invalid("no", "required"));
        }
        let today = self.clock.now().date_naive();
        if let Some(current) = metadata.status(today).no
            && no <= current
        {
            return Err(DeviceError::FailedPrecondition(format!(
                "FIDO metadata BLOB {no} is not above the one in use ({current}): nothing to accept"
            )));
        }
        let why = if reason.is_empty() {
            format!("accepted by {accepted_by}")
        } else {
            format!("accepted by {accepted_by}: {reason}")
        };
        let record = AuditRecord {
            actor: actor.name.clone(),
            action: ACCEPT_METADATA_JUMP,
            realm: String::new(),
            user: String::new(),
            subject: format!("fido-metadata no {no}"),
            result: OK,
            reason: why,
            trace_id: enroll_shared::telemetry::current_trace_id(),
            time: self.clock.now(),
            event: None,
        };
        store.accept_jump(no, record).await?;
        tracing::warn!(no, accepted_by, "FIDO metadata BLOB number jump accepted");
        metadata.refresh_now();
        Ok(self.status())
    }
}
