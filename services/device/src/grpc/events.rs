//! WatchEnrollmentEvents: decode the start and filter, stream the feed's events as protos.
use std::pin::Pin;

use enroll_shared::proto::device::v1 as pb;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::decode::{realm, timestamp};
use crate::domain::events::{EnrollmentEvent, EventKind, PolicySummary};
use crate::error::DeviceError;
use crate::service::events::{EventFeed, EventFilter, WatchStart};

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::EnrollmentEvent, Status>> + Send>>;

/// An event as callers see it.
pub fn event_to_proto(event: EnrollmentEvent) -> pb::EnrollmentEvent {
    let credential = event.credential;
    pb::EnrollmentEvent {
        seq: event.seq,
        id: event.id,
        r#type: event.kind.as_str().to_owned(),
        realm: event.realm,
        user: event.user,
        subject: event.subject,
        time: timestamp(event.time),
        actor: event.actor,
        initiating_entity: event.initiating_entity.caep().to_owned(),
        reason: event.reason,
        credential: Some(pb::EventCredential {
            credential_type: credential
                .kind
                .map(|kind| kind.caep().to_owned())
                .unwrap_or_default(),
            aaguid: credential.aaguid.unwrap_or_default(),
            friendly_name: credential.friendly_name,
            transports: credential.transports,
        }),
        trace_id: event.trace_id,
        policy: event.policy.map(|policy| pb::EventPolicyChange {
            name: policy.name,
            change: policy.change,
            history_id: policy.history_id,
            before: policy.before.map(policy_to_proto),
            after: policy.after.map(policy_to_proto),
        }),
    }
}

fn policy_to_proto(policy: PolicySummary) -> pb::EventPolicy {
    pb::EventPolicy {
        name: policy.name,
        realms: policy.realms,
        users: policy.users,
        actions: policy.actions.into_iter().collect(),
        priority: policy.priority,
        active: policy.active,
    }
}

/// The event types a filter names (`types`), each one known.
pub fn event_kinds(types: &[String]) -> Result<Vec<EventKind>, DeviceError> {
    types
        .iter()
        .map(|name| {
            EventKind::parse(name.trim()).ok_or_else(|| {
                DeviceError::invalid("types", format!("unknown event type `{}`", name.trim()))
            })
        })
        .collect()
}

pub async fn watch_enrollment_events(
    feed: &EventFeed,
    request: Request<pb::WatchEnrollmentEventsRequest>,
) -> Result<Response<EventStream>, Status> {
    let request = request.into_inner();
    if request.after_seq < 0 {
        return Err(DeviceError::invalid("after_seq", "must not be negative").into());
    }
    let filter = EventFilter {
        types: event_kinds(&request.types)?,
        realms: request
            .realms
            .iter()
            .map(|name| realm("realms", name).map(|realm| realm.to_string()))
            .collect::<Result<_, _>>()?,
    };
    let start = if request.from_now {
        WatchStart::Now
    } else {
        WatchStart::After(request.after_seq)
    };
    let events = feed.watch(start, filter).await?;
    let stream = events.map(|event| event.map(event_to_proto).map_err(Status::from));
    Ok(Response::new(Box::pin(stream)))
}
