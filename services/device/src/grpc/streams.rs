//! The event-stream admin RPCs: decode into domain values, call one use case, encode.
use enroll_shared::proto::device::v1 as pb;
use tonic::{Request, Response, Status};

use super::decode::{actor, id, page, realm, required_text, timestamp};
use super::events::{event_kinds, event_to_proto};
use crate::error::DeviceError;
use crate::events::signing::SigningAlgorithm;
use crate::service::events::EventFilter;
use crate::service::streams::{
    DEFAULT_OVERLAP, DeadLetterView, Encoding, EventStreams, NewStream, StreamChange, StreamStatus,
    StreamSubject, StreamView,
};

fn encoding_to_proto(encoding: Encoding) -> pb::EventEncoding {
    match encoding {
        Encoding::CaepPush => pb::EventEncoding::CaepPush,
        Encoding::Webhook => pb::EventEncoding::Webhook,
        Encoding::CaepPoll => pb::EventEncoding::CaepPoll,
    }
}

fn subject_to_proto(subject: StreamSubject) -> pb::EventSubjectFormat {
    match subject {
        StreamSubject::IssSub => pb::EventSubjectFormat::IssSub,
        StreamSubject::Opaque => pb::EventSubjectFormat::Opaque,
        StreamSubject::Email => pb::EventSubjectFormat::Email,
    }
}

fn subject_from_proto(value: i32) -> Result<StreamSubject, DeviceError> {
    match pb::EventSubjectFormat::try_from(value) {
        Ok(pb::EventSubjectFormat::Unspecified | pb::EventSubjectFormat::IssSub) => {
            Ok(StreamSubject::IssSub)
        }
        Ok(pb::EventSubjectFormat::Opaque) => Ok(StreamSubject::Opaque),
        Ok(pb::EventSubjectFormat::Email) => Ok(StreamSubject::Email),
        Err(_) => Err(DeviceError::invalid(
            "subject_format",
            format!("unknown value {value}"),
        )),
    }
}

fn status_to_proto(status: StreamStatus) -> pb::EventStreamStatus {
    match status {
        StreamStatus::Enabled => pb::EventStreamStatus::Enabled,
        StreamStatus::Paused => pb::EventStreamStatus::Paused,
        StreamStatus::Disabled => pb::EventStreamStatus::Disabled,
    }
}

pub fn stream_to_proto(view: StreamView) -> pb::EventStream {
    pb::EventStream {
        id: view.id,
        name: view.name,
        encoding: encoding_to_proto(view.encoding) as i32,
        endpoint: view.endpoint,
        audience: view.audience,
        subject_format: subject_to_proto(view.subject) as i32,
        types: view
            .filter
            .types
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        realms: view.filter.realms,
        status: status_to_proto(view.status) as i32,
        cursor: view.cursor,
        backlog: view.backlog,
        attempts: view.attempts,
        next_attempt_time: view.next_attempt_time.and_then(timestamp),
        last_error: view.last_error,
        dead_letters: view.dead_letters,
        created_by: view.created_by,
        create_time: timestamp(view.create_time),
    }
}

fn dead_letter_to_proto(view: DeadLetterView) -> pb::DeadLetter {
    pb::DeadLetter {
        event: Some(event_to_proto(view.event)),
        reason: view.reason,
        attempts: view.attempts,
        dead_time: timestamp(view.dead_time),
        redelivering: view.redelivering,
    }
}

fn filter(types: &[String], realms: &[String]) -> Result<EventFilter, DeviceError> {
    Ok(EventFilter {
        types: event_kinds(types)?,
        realms: realms
            .iter()
            .map(|name| realm("realms", name).map(|realm| realm.to_string()))
            .collect::<Result<_, _>>()?,
    })
}

pub async fn create_event_stream(
    streams: &EventStreams,
    request: Request<pb::CreateEventStreamRequest>,
) -> Result<Response<pb::CreateEventStreamResponse>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let encoding = match pb::EventEncoding::try_from(request.encoding) {
        Ok(pb::EventEncoding::CaepPush) => Encoding::CaepPush,
        Ok(pb::EventEncoding::Webhook) => Encoding::Webhook,
        Ok(pb::EventEncoding::CaepPoll) => Encoding::CaepPoll,
        _ => {
            return Err(DeviceError::invalid(
                "encoding",
                "required: EVENT_ENCODING_CAEP_PUSH, EVENT_ENCODING_CAEP_POLL or \
                 EVENT_ENCODING_WEBHOOK",
            )
            .into());
        }
    };
    // A poll stream has no endpoint (the service checks that it is empty).
    let endpoint = match encoding {
        Encoding::CaepPoll => super::decode::text("endpoint", &request.endpoint, 2048)?,
        _ => required_text("endpoint", &request.endpoint, 2048)?,
    };
    let new = NewStream {
        name: required_text("name", &request.name, 64)?,
        encoding,
        endpoint,
        audience: super::decode::text("audience", &request.audience, 512)?,
        subject: subject_from_proto(request.subject_format)?,
        filter: filter(&request.types, &request.realms)?,
        from_beginning: request.from_beginning,
        created_by: required_text("created_by", &request.created_by, 128)?,
    };
    let (stream, secret) = streams.create(&actor, new).await?;
    Ok(Response::new(pb::CreateEventStreamResponse {
        stream: Some(stream_to_proto(stream)),
        secret: secret.unwrap_or_default(),
    }))
}

pub async fn list_event_streams(
    streams: &EventStreams,
    _request: Request<pb::ListEventStreamsRequest>,
) -> Result<Response<pb::ListEventStreamsResponse>, Status> {
    Ok(Response::new(pb::ListEventStreamsResponse {
        streams: streams
            .list()
            .await?
            .into_iter()
            .map(stream_to_proto)
            .collect(),
    }))
}

pub async fn update_event_stream(
    streams: &EventStreams,
    request: Request<pb::UpdateEventStreamRequest>,
) -> Result<Response<pb::EventStream>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let status = match pb::EventStreamStatus::try_from(request.status) {
        Ok(pb::EventStreamStatus::Unspecified) => None,
        Ok(pb::EventStreamStatus::Enabled) => Some(StreamStatus::Enabled),
        Ok(pb::EventStreamStatus::Paused) => Some(StreamStatus::Paused),
        Ok(pb::EventStreamStatus::Disabled) => Some(StreamStatus::Disabled),
        Err(_) => {
            return Err(DeviceError::invalid(
                "status",
                format!("unknown value {}", request.status),
            )
            .into());
        }
    };
    let change = StreamChange {
        status,
        filter: request
            .set_filter
            .then(|| filter(&request.types, &request.realms))
            .transpose()?,
        changed_by: required_text("updated_by", &request.updated_by, 128)?,
    };
    Ok(Response::new(stream_to_proto(
        streams.update(&actor, &id, change).await?,
    )))
}

pub async fn delete_event_stream(
    streams: &EventStreams,
    request: Request<pb::DeleteEventStreamRequest>,
) -> Result<Response<pb::DeleteEventStreamResponse>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let by = required_text("deleted_by", &request.deleted_by, 128)?;
    streams.delete(&actor, &id, &by).await?;
    Ok(Response::new(pb::DeleteEventStreamResponse {}))
}

pub async fn rotate_event_stream_secret(
    streams: &EventStreams,
    request: Request<pb::RotateEventStreamSecretRequest>,
) -> Result<Response<pb::RotateEventStreamSecretResponse>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let by = required_text("rotated_by", &request.rotated_by, 128)?;
    Ok(Response::new(pb::RotateEventStreamSecretResponse {
        secret: streams.rotate_secret(&actor, &id, &by).await?,
    }))
}

pub async fn rotate_event_signing_key(
    streams: &EventStreams,
    request: Request<pb::RotateEventSigningKeyRequest>,
) -> Result<Response<pb::RotateEventSigningKeyResponse>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let algorithm = match request.algorithm.trim() {
        "" => SigningAlgorithm::Es256,
        name => SigningAlgorithm::parse(&name.to_ascii_uppercase())
            .ok_or_else(|| DeviceError::invalid("algorithm", "ES256 or RS256"))?,
    };
    let overlap = match request.overlap {
        None => DEFAULT_OVERLAP,
        Some(overlap) if overlap.seconds < 0 || overlap.nanos < 0 => {
            return Err(DeviceError::invalid("overlap", "must not be negative").into());
        }
        Some(overlap) if overlap.seconds > 30 * 86_400 => {
            return Err(DeviceError::invalid("overlap", "at most 30 days").into());
        }
        Some(overlap) => std::time::Duration::new(overlap.seconds as u64, overlap.nanos as u32),
    };
    let by = required_text("rotated_by", &request.rotated_by, 128)?;
    let rsa = (!request.rsa_pkcs8_der.is_empty()).then_some(request.rsa_pkcs8_der.as_slice());
    let (kid, jwks) = streams
        .rotate_signing_key(&actor, algorithm, rsa, overlap, &by)
        .await?;
    Ok(Response::new(pb::RotateEventSigningKeyResponse {
        kid,
        jwks: jwks.to_string(),
    }))
}

pub async fn list_dead_letters(
    streams: &EventStreams,
    request: Request<pb::ListDeadLettersRequest>,
) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
    let request = request.into_inner();
    let id = id("stream_id", &request.stream_id)?;
    let page = page::<i64>(request.page_size, &request.page_token)?;
    let letters = streams
        .dead_letters(&id, page.after.unwrap_or(0), page.fetch())
        .await?;
    let page = enroll_shared::paging::Page::cut(letters, page.size, |letter| letter.event.seq);
    Ok(Response::new(pb::ListDeadLettersResponse {
        dead_letters: page.items.into_iter().map(dead_letter_to_proto).collect(),
        next_page_token: page.next_page_token,
    }))
}

pub async fn redeliver_events(
    streams: &EventStreams,
    request: Request<pb::RedeliverEventsRequest>,
) -> Result<Response<pb::RedeliverEventsResponse>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("stream_id", &request.stream_id)?;
    let by = required_text("requested_by", &request.requested_by, 128)?;
    let queued = streams.redeliver(&actor, &id, &by).await?;
    Ok(Response::new(pb::RedeliverEventsResponse {
        queued: i64::try_from(queued).unwrap_or(i64::MAX),
    }))
}

pub async fn verify_event_stream(
    streams: &EventStreams,
    request: Request<pb::VerifyEventStreamRequest>,
) -> Result<Response<pb::VerifyEventStreamResponse>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let state = super::decode::text("state", &request.state, 256)?;
    let by = required_text("requested_by", &request.requested_by, 128)?;
    let event_id = streams
        .verify(&actor, &id, (!state.is_empty()).then_some(state), &by)
        .await?;
    Ok(Response::new(pb::VerifyEventStreamResponse { event_id }))
}
