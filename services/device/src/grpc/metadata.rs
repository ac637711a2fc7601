//! GetMetadataStatus and AcceptMetadataJump: the FIDO metadata in use, and an operator's
//! acceptance of a BLOB number beyond the jump bound.
use enroll_shared::proto::device::v1 as pb;
use tonic::{Request, Response, Status};

use super::decode::{actor, required_text, text, timestamp};
use crate::service::metadata_admin::{MetadataAdmin, MetadataView};

pub async fn get_metadata_status(
    admin: &MetadataAdmin,
    _request: Request<pb::GetMetadataStatusRequest>,
) -> Result<Response<pb::MetadataStatus>, Status> {
    Ok(Response::new(status_to_proto(admin.status())))
}

pub async fn accept_metadata_jump(
    admin: &MetadataAdmin,
    request: Request<pb::AcceptMetadataJumpRequest>,
) -> Result<Response<pb::MetadataStatus>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let accepted_by = required_text("accepted_by", &request.accepted_by, 128)?;
    let reason = text("reason", &request.reason, 512)?;
    let view = admin
        .accept_jump(&actor, request.no, &accepted_by, &reason)
        .await?;
    Ok(Response::new(status_to_proto(view)))
}

fn status_to_proto(view: MetadataView) -> pb::MetadataStatus {
    let status = view.status;
    pb::MetadataStatus {
        enabled: view.enabled,
        no: status.no.unwrap_or_default(),
        next_update: status.next_update,
        stale: status.stale,
        source: status.source,
        load_time: status.load_time.and_then(timestamp),
        signer_key_changed: status.signer_key_changed,
        signer_keys: status.signer_keys,
        pending_jump: status.pending_jump.unwrap_or_default(),
        max_no_jump: view.max_no_jump,
    }
}
