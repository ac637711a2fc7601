//! `enrollctl otp-link ...`
use enroll_shared::proto::device::v1 as pb;
use serde_json::json;

use super::link::ttl_proto;
use super::token::{algorithm, algorithm_name, otp_type, token_type};
use super::{note, optional, write_json_out, write_out};
use crate::Ctx;
use crate::cli::{OtpLinkCommand, OtpLinkCreateArgs, OtpLinkStateFilter};
use crate::connect::Service;
use crate::error::CliError;
use crate::json::{list_json, to_json};
use crate::output::{Table, duration, enum_label, key_values, time};

fn otp_link_state(raw: i32) -> String {
    let name = pb::OtpLinkState::try_from(raw)
        .ok()
        .map(|s| s.as_str_name());
    enum_label(name, "OTP_LINK_STATE_", raw)
}

fn state_filter(state: Option<OtpLinkStateFilter>) -> pb::OtpLinkState {
    match state {
        None => pb::OtpLinkState::Unspecified,
        Some(OtpLinkStateFilter::Issued) => pb::OtpLinkState::Issued,
        Some(OtpLinkStateFilter::Expired) => pb::OtpLinkState::Expired,
        Some(OtpLinkStateFilter::VerifyPending) => pb::OtpLinkState::VerifyPending,
        Some(OtpLinkStateFilter::Enrolled) => pb::OtpLinkState::Enrolled,
        Some(OtpLinkStateFilter::VerifyFailed) => pb::OtpLinkState::VerifyFailed,
        Some(OtpLinkStateFilter::VerifyExpired) => pb::OtpLinkState::VerifyExpired,
        Some(OtpLinkStateFilter::Revoked) => pb::OtpLinkState::Revoked,
        Some(OtpLinkStateFilter::Superseded) => pb::OtpLinkState::Superseded,
        Some(OtpLinkStateFilter::TokenDeleted) => pb::OtpLinkState::TokenDeleted,
    }
}

pub async fn run(ctx: &mut Ctx<'_>, command: OtpLinkCommand) -> Result<(), CliError> {
    match command {
        OtpLinkCommand::Create(args) => create(ctx, args).await,
        OtpLinkCommand::List {
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
                    .list_otp_enrollment_links(pb::ListOtpEnrollmentLinksRequest {
                        realm: realm.clone().unwrap_or_default(),
                        user: user.clone().unwrap_or_default(),
                        state: state_filter(state) as i32,
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
                "SERIAL",
            ]);
            for link in &links {
                table.row(vec![
                    link.id.clone(),
                    link.realm.clone(),
                    link.user.clone(),
                    token_type(link.r#type),
                    otp_link_state(link.state),
                    link.created_by.clone(),
                    time(link.expire_time.as_ref()),
                    link.serial.clone(),
                ]);
            }
            write_out(ctx, &table.render())
        }
        OtpLinkCommand::Revoke { id, client } => {
            let link = ctx
                .conn
                .device()
                .revoke_otp_enrollment_link(pb::RevokeOtpEnrollmentLinkRequest {
                    id,
                    revoked_by: ctx.actor.clone(),
                    client_ip: optional(client),
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

async fn create(ctx: &mut Ctx<'_>, args: OtpLinkCreateArgs) -> Result<(), CliError> {
    let ttl = ttl_proto(args.ttl)?;
    let link = ctx
        .conn
        .device()
        .create_otp_enrollment_link(pb::CreateOtpEnrollmentLinkRequest {
            realm: args.realm,
            user: args.user,
            r#type: otp_type(args.token_type) as i32,
            digits: args.digits.unwrap_or(0),
            period: args
                .period
                .map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            algorithm: algorithm(args.algorithm) as i32,
            label: optional(args.label),
            description: optional(args.description),
            ttl,
            created_by: ctx.actor.clone(),
            client_ip: optional(args.client),
            request_id: optional(args.request_id),
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

fn link_text(link: &pb::OtpEnrollmentLink) -> String {
    let mut pairs = vec![
        ("id", link.id.clone()),
        ("realm", link.realm.clone()),
        ("user", link.user.clone()),
        ("type", token_type(link.r#type)),
        ("digits", link.digits.to_string()),
        ("period", duration(link.period.as_ref())),
        ("algorithm", algorithm_name(link.algorithm)),
        ("label", link.label.clone()),
        ("description", link.description.clone()),
        ("state", otp_link_state(link.state)),
        ("created by", link.created_by.clone()),
        ("created", time(link.create_time.as_ref())),
        ("expires", time(link.expire_time.as_ref())),
        ("serial", link.serial.clone()),
        ("redeemed", time(link.redeem_time.as_ref())),
        ("verify until", time(link.verify_deadline.as_ref())),
    ];
    if !link.url.is_empty() {
        pairs.push(("URL", link.url.clone()));
    }
    key_values(&pairs)
}
