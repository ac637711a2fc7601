//! `enrollctl device ...`
use enroll_shared::proto::device::v1 as pb;
use serde_json::json;

use super::{optional, write_json_out, write_out};
use crate::Ctx;
use crate::cli::{DeviceCommand, DeviceStateFilter};
use crate::commands::link::{device_type, device_type_label};
use crate::connect::Service;
use crate::error::CliError;
use crate::json::{list_json, to_json};
use crate::output::{Table, enum_label, key_values, time, yes_no};

fn device_state(raw: i32) -> String {
    let name = pb::DeviceState::try_from(raw).ok().map(|s| s.as_str_name());
    enum_label(name, "DEVICE_STATE_", raw)
}

pub async fn run(ctx: &mut Ctx<'_>, command: DeviceCommand) -> Result<(), CliError> {
    let mut client = ctx.conn.device();
    let device = match command {
        DeviceCommand::List {
            realm,
            user,
            device_type: kind,
            state,
            list,
        } => {
            let mut devices = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_devices(pb::ListDevicesRequest {
                        realm: realm.clone().unwrap_or_default(),
                        user: user.clone().unwrap_or_default(),
                        device_type: device_type(kind) as i32,
                        state: match state {
                            None => pb::DeviceState::Unspecified,
                            Some(DeviceStateFilter::Pending) => pb::DeviceState::PendingApproval,
                            Some(DeviceStateFilter::Approved) => pb::DeviceState::Approved,
                            Some(DeviceStateFilter::Revoked) => pb::DeviceState::Revoked,
                        } as i32,
                        page_size: super::page_size(list.limit, devices.len()),
                        page_token,
                    })
                    .await
                    .map_err(ctx.conn.error(Service::Device))?
                    .into_inner();
                devices.extend(page.devices);
                page_token = page.next_page_token;
                if page_token.is_empty() || (list.limit > 0 && devices.len() >= list.limit) {
                    break;
                }
            }
            if list.limit > 0 {
                devices.truncate(list.limit);
            }
            if ctx.json() {
                return write_json_out(ctx, &json!({ "devices": list_json(&devices)? }));
            }
            let mut table = Table::new(&[
                "ID",
                "REALM",
                "USER",
                "TYPE",
                "STATE",
                "SYNCED",
                "CREATED",
                "LAST USED",
            ]);
            for device in &devices {
                table.row(vec![
                    device.id.clone(),
                    device.realm.clone(),
                    device.user.clone(),
                    device_type_label(device.device_type),
                    device_state(device.state),
                    yes_no(device.backup_eligible),
                    time(device.create_time.as_ref()),
                    time(device.last_used_time.as_ref()),
                ]);
            }
            return write_out(ctx, &table.render());
        }
        DeviceCommand::Get { id } => client.get_device(pb::GetDeviceRequest { id }).await,
        DeviceCommand::Approve { id } => {
            client
                .approve_device(pb::ApproveDeviceRequest {
                    id,
                    approved_by: ctx.actor.clone(),
                })
                .await
        }
        DeviceCommand::Revoke { id, reason } => {
            client
                .revoke_device(pb::RevokeDeviceRequest {
                    id,
                    revoked_by: ctx.actor.clone(),
                    reason: optional(reason),
                })
                .await
        }
    }
    .map_err(ctx.conn.error(Service::Device))?
    .into_inner();
    if ctx.json() {
        return write_json_out(ctx, &to_json(&device)?);
    }
    write_out(
        ctx,
        &key_values(&[
            ("id", device.id.clone()),
            ("realm", device.realm.clone()),
            ("user", device.user.clone()),
            ("type", device_type_label(device.device_type)),
            ("state", device_state(device.state)),
            ("credential id", device.credential_id.clone()),
            ("authenticator", device.aaguid.clone()),
            ("synced (backup eligible)", yes_no(device.backup_eligible)),
            ("user agent", device.user_agent.clone()),
            ("enrollment link", device.enrollment_link_id.clone()),
            ("approved by", device.approved_by.clone()),
            ("created", time(device.create_time.as_ref())),
            ("last used", time(device.last_used_time.as_ref())),
        ]),
    )
}
