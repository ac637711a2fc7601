//! `enrollctl metadata ...`: the FIDO metadata BLOB the device service uses, and an
//! operator's acceptance of a BLOB number beyond `webauthn.metadata.max_no_jump`.
use enroll_shared::proto::device::v1 as pb;
use serde_json::json;

use super::{optional, write_json_out, write_out};
use crate::Ctx;
use crate::cli::MetadataCommand;
use crate::connect::Service;
use crate::error::CliError;
use crate::output::{key_values, time, yes_no};

pub async fn run(ctx: &mut Ctx<'_>, command: MetadataCommand) -> Result<(), CliError> {
    let mut client = ctx.conn.device();
    let status = match command {
        MetadataCommand::Status => {
            client
                .get_metadata_status(pb::GetMetadataStatusRequest {})
                .await
        }
        MetadataCommand::Accept { no, reason } => {
            client
                .accept_metadata_jump(pb::AcceptMetadataJumpRequest {
                    no,
                    accepted_by: ctx.actor.clone(),
                    reason: optional(reason),
                })
                .await
        }
    }
    .map_err(ctx.conn.error(Service::Device))?
    .into_inner();
    if ctx.json() {
        return write_json_out(
            ctx,
            &json!({
                "enabled": status.enabled,
                "no": status.no,
                "next_update": status.next_update,
                "stale": status.stale,
                "source": status.source,
                "load_time": time(status.load_time.as_ref()),
                "signer_key_changed": status.signer_key_changed,
                "signer_keys": status.signer_keys,
                "pending_jump": status.pending_jump,
                "max_no_jump": status.max_no_jump,
            }),
        );
    }
    if !status.enabled {
        return write_out(
            ctx,
            "FIDO metadata is not configured (webauthn.metadata.source)\n",
        );
    }
    let number = |no: u64| {
        if no == 0 {
            "none".to_owned()
        } else {
            no.to_string()
        }
    };
    write_out(
        ctx,
        &key_values(&[
            ("blob number", number(status.no)),
            ("next update", status.next_update.clone()),
            ("stale", yes_no(status.stale)),
            ("source", status.source.clone()),
            ("loaded", time(status.load_time.as_ref())),
            ("signer key changed", yes_no(status.signer_key_changed)),
            ("signer keys (sha256)", status.signer_keys.join(" ")),
            ("waiting for acceptance", number(status.pending_jump)),
            ("max number jump", status.max_no_jump.to_string()),
        ]),
    )
}
