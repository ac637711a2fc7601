//! `enrollctl link ...`
use enroll_shared::proto::device::v1 as pb;
use serde_json::json;

use super::{note, optional, write_json_out, write_out};
use crate::Ctx;
use crate::cli::{DeviceTypeArg, LinkCommand, LinkStateFilter};
use crate::connect::Service;
use crate::error::CliError;
use crate::json::{list_json, to_json};
use crate::output::{Table, enum_label, key_values, time};

pub fn device_type(arg: Option<DeviceTypeArg>) -> pb::DeviceType {
    match arg {
        None => pb::DeviceType::Unspecified,
        Some(DeviceTypeArg::Any) => pb::DeviceType::Any,
        Some(DeviceTypeArg::EnclaveOnly) => pb::DeviceType::EnclaveOnly,
    }
}

pub fn device_type_label(raw: i32) -> String {
    let name = pb::DeviceType::try_from(raw).ok().map(|t| t.as_str_name());
    enum_label(name, "DEVICE_TYPE_", raw)
}

/// `--ttl` as the proto's Duration.
pub fn ttl_proto(
    ttl: Option<std::time::Duration>,
) -> Result<Option<prost_types::Duration>, CliError> {
    ttl.map(|ttl| {
        i64::try_from(ttl.as_secs())
            .map(|seconds| prost_types::Duration { seconds, nanos: 0 })
            .map_err(|_| CliError::usage("--ttl is too long"))
    })
    .transpose()
}

fn link_state(raw: i32) -> String {
    let name = pb::LinkState::try_from(raw).ok().map(|s| s.as_str_name());
    enum_label(name, "LINK_STATE_", raw)
}

pub async fn run(ctx: &mut Ctx<'_>, command: LinkCommand) -> Result<(), CliError> {
    match command {
        LinkCommand::Create {
            realm,
            user,
            device_type: kind,
            redirect_url,
            ttl,
            request_id,
        } => {
            let ttl = ttl_proto(ttl)?;
            let link = ctx
                .conn
                .device()
                .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
                    realm,
                    user,
                    device_type: device_type(kind) as i32,
                    redirect_url: optional(redirect_url),
                    ttl,
                    created_by: ctx.actor.clone(),
                    request_id: optional(request_id),
                })
                .await
                .map_err(ctx.conn.error(Service::Device))?
                .into_inner();
            if ctx.json() {
                return write_json_out(ctx, &to_json(&link)?);
            }
            write_out(ctx, &link_text(&link))?;
            note(
                ctx,
                "Hand the URL to the user only: it holds the link's secret and is shown this once.\n",
            );
            Ok(())
        }
        LinkCommand::List {
            realm,
            user,
            state,
            list,
        } => {
            let mut client = ctx.conn.device();
            let mut links = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_enrollment_links(pb::ListEnrollmentLinksRequest {
                        realm: realm.clone().unwrap_or_default(),
                        user: user.clone().unwrap_or_default(),
                        state: match state {
                            None => pb::LinkState::Unspecified,
                            Some(LinkStateFilter::Active) => pb::LinkState::Active,
                            Some(LinkStateFilter::Used) => pb::LinkState::Used,
                            Some(LinkStateFilter::Revoked) => pb::LinkState::Revoked,
                            Some(LinkStateFilter::Expired) => pb::LinkState::Expired,
                        } as i32,
                        page_size: super::page_size(list.limit, links.len()),
                        page_token,
                    })
                    .await
                    .map_err(ctx.conn.error(Service::Device))?
                    .into_inner();
                links.extend(page.links);
                page_token = page.next_page_token;
                if page_token.is_empty() || (list.limit > 0 && links.len() >= list.limit) {
                    break;
                }
            }
            if list.limit > 0 {
                links.truncate(list.limit);
            }
            if ctx.json() {
                return write_json_out(ctx, &json!({ "links": list_json(&links)? }));
            }
            let mut table = Table::new(&[
                "ID",
                "REALM",
                "USER",
                "TYPE",
                "STATE",
                "CREATED BY",
                "EXPIRES",
                "DEVICE",
            ]);
            for link in &links {
                table.row(vec![
                    link.id.clone(),
                    link.realm.clone(),
                    link.user.clone(),
                    device_type_label(link.device_type),
                    link_state(link.state),
                    link.created_by.clone(),
                    time(link.expire_time.as_ref()),
                    link.device_id.clone(),
                ]);
            }
            write_out(ctx, &table.render())
        }
        LinkCommand::Revoke { id } => {
            let link = ctx
                .conn
                .device()
                .revoke_enrollment_link(pb::RevokeEnrollmentLinkRequest {
                    id,
                    revoked_by: ctx.actor.clone(),
                })
                .await
                .map_err(ctx.conn.error(Service::Device))?
                .into_inner();
            if ctx.json() {
                return write_json_out(ctx, &to_json(&link)?);
            }
            write_out(ctx, &link_text(&link))
        }
    }
}

fn link_text(link: &pb::EnrollmentLink) -> String {
    let mut pairs = vec![
        ("id", link.id.clone()),
        ("realm", link.realm.clone()),
        ("user", link.user.clone()),
        ("device type", device_type_label(link.device_type)),
        ("state", link_state(link.state)),
        ("created by", link.created_by.clone()),
        ("created", time(link.create_time.as_ref())),
        ("expires", time(link.expire_time.as_ref())),
        ("redirect URL", link.redirect_url.clone()),
        ("device", link.device_id.clone()),
    ];
    if !link.url.is_empty() {
        pairs.push(("URL", link.url.clone()));
    }
    key_values(&pairs)
}
