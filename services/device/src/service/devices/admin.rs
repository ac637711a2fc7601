//! Reading, approving and revoking registered devices.
use enroll_shared::paging::{Page, PageRequest};

use super::*;
use crate::domain::devices::DeviceFilter;

impl Devices {
    pub async fn device(&self, id: &str) -> Result<Device, DeviceError> {
        self.store
            .device(id)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("device `{id}`")))
    }

    /// A page of devices ordered by id.
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        page: &PageRequest<String>,
    ) -> Result<Page<Device>, DeviceError> {
        let rows = self
            .store
            .list_devices(filter, page.after.as_deref(), page.fetch())
            .await?;
        Ok(Page::cut(rows, page.size, |device| device.id.clone()))
    }

    /// Approves a pending device (approving an approved one changes nothing).
    pub async fn approve(
        &self,
        actor: &Actor,
        id: &str,
        approved_by: &str,
    ) -> Result<Device, DeviceError> {
        let change = StateChange {
            removes_access: false,
            action: "approve_device",
            from: &[DeviceState::PendingApproval],
            to: DeviceState::Approved,
            approved_by: Some(approved_by),
            reason: format!("approved by {approved_by}"),
        };
        self.change_state(actor, id, change).await
    }

    /// Revokes a device: it never authenticates again and stops counting.
    pub async fn revoke(
        &self,
        actor: &Actor,
        id: &str,
        revoked_by: &str,
        reason: &str,
    ) -> Result<Device, DeviceError> {
        let change = StateChange {
            removes_access: true,
            action: "revoke_device",
            from: &[DeviceState::PendingApproval, DeviceState::Approved],
            to: DeviceState::Revoked,
            approved_by: None,
            reason: format!("revoked by {revoked_by}: {reason}"),
        };
        self.change_state(actor, id, change).await
    }

    async fn change_state(
        &self,
        actor: &Actor,
        id: &str,
        change: StateChange<'_>,
    ) -> Result<Device, DeviceError> {
        let current = self.device(id).await?;
        let (realm, user) = (&current.realm, &current.user);
        let question =
            PolicyQuestion::webauthn(PolicyAction::Manage, change.action, realm, user, id);
        let mut reason = change.reason;
        if change.removes_access {
            if let Some(note) = self.gate.decide_removal(actor, &question).await? {
                reason = format!("{reason}; {note}");
            }
        } else {
            self.gate.decide(actor, &question).await?;
        }
        let record = self
            .gate
            .record(actor, change.action, realm, Some(user), id)
            .with_reason(reason);
        self.store
            .set_device_state(id, change.from, change.to, change.approved_by, record)
            .await
    }
}

/// One move of a device's state.
struct StateChange<'a> {
    /// Revocation: never blocked by the policy service (see `PolicyGate::decide_removal`).
    removes_access: bool,
    action: &'static str,
    from: &'static [DeviceState],
    to: DeviceState,
    approved_by: Option<&'a str>,
    reason: String,
}
