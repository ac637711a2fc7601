//! ListAuditEvents: the audit trail, newest first.
use enroll_shared::paging::{Page, PageRequest};

use crate::domain::audit::{AuditEvent, AuditFilter};
use crate::error::DeviceError;
use crate::store::audit::AuditStore;

#[derive(Clone)]
pub struct AuditTrail {
    store: AuditStore,
}

impl AuditTrail {
    pub fn new(store: AuditStore) -> Self {
        Self { store }
    }

    /// A page of events newest first; the page token names the last event shown.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<i64>,
    ) -> Result<Page<AuditEvent>, DeviceError> {
        let events = self.store.list(filter, page.after, page.fetch()).await?;
        Ok(Page::cut(events, page.size, |event| event.id))
    }
}
