//! ListAuditEvents: decode the filter, call the audit trail, encode.
use enroll_shared::proto::device::v1 as pb;
use tonic::{Request, Response, Status};

use super::decode::{optional_realm, optional_user, page, text, timestamp};
use crate::domain::audit::{AuditEvent, AuditFilter};
use crate::service::audit::AuditTrail;

fn event_to_proto(event: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: event.id,
        time: timestamp(event.time),
        actor: event.actor,
        action: event.action,
        realm: event.realm,
        user: event.user,
        subject: event.subject,
        result: event.result,
        reason: event.reason,
        trace_id: event.trace_id,
    }
}

pub async fn list_audit_events(
    audit: &AuditTrail,
    request: Request<pb::ListAuditEventsRequest>,
) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
    let request = request.into_inner();
    let filter_text = |field: &str, value: &str| {
        text(field, value, 128).map(|value| Some(value).filter(|value| !value.is_empty()))
    };
    let filter = AuditFilter {
        // Names are folded exactly as stored (one normalisation for both services).
        realm: optional_realm("realm", &request.realm)?.map(String::from),
        user: optional_user("user", &request.user)?.map(String::from),
        action: filter_text("action", &request.action)?,
        subject: filter_text("serial", &request.serial)?,
        result: filter_text("result", &request.result)?,
    };
    let page = audit
        .list(&filter, &page(request.page_size, &request.page_token)?)
        .await?;
    Ok(Response::new(pb::ListAuditEventsResponse {
        events: page.items.into_iter().map(event_to_proto).collect(),
        next_page_token: page.next_page_token,
    }))
}
