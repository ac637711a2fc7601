//! `enrollctl stream ...` and `enrollctl signing-key rotate`
use std::path::Path;

use base64::Engine as _;
use enroll_shared::proto::device::v1 as pb;
use serde_json::{Value, json};

use super::{note, write_json_out, write_out};
use crate::Ctx;
use crate::cli::{
    EventFilterArgs, SigningAlgorithm, SigningKeyCommand, SigningKeyRotateArgs, StreamCommand,
    StreamCreateArgs, StreamEncoding, StreamSubjectFormat,
};
use crate::connect::Service;
use crate::error::CliError;
use crate::json::{list_json, to_json};
use crate::output::{Table, enum_label, key_values, time, yes_no};

pub fn encoding(arg: StreamEncoding) -> pb::EventEncoding {
    match arg {
        StreamEncoding::Caep => pb::EventEncoding::CaepPush,
        StreamEncoding::Webhook => pb::EventEncoding::Webhook,
        StreamEncoding::CaepPoll => pb::EventEncoding::CaepPoll,
    }
}

/// The encoding as `--encoding` names it (`caep`, `caep-poll`, `webhook`).
fn encoding_label(raw: i32) -> String {
    match pb::EventEncoding::try_from(raw) {
        Ok(pb::EventEncoding::CaepPush) => "caep".to_owned(),
        Ok(pb::EventEncoding::CaepPoll) => "caep-poll".to_owned(),
        other => enum_label(other.ok().map(|e| e.as_str_name()), "EVENT_ENCODING_", raw),
    }
}

fn status_label(raw: i32) -> String {
    let name = pb::EventStreamStatus::try_from(raw)
        .ok()
        .map(|s| s.as_str_name());
    enum_label(name, "EVENT_STREAM_STATUS_", raw)
}

/// A filter list for humans: `all` when empty.
fn filter_label(values: &[String]) -> String {
    if values.is_empty() {
        "all".to_owned()
    } else {
        values.join(", ")
    }
}

pub async fn run(ctx: &mut Ctx<'_>, command: StreamCommand) -> Result<(), CliError> {
    match command {
        StreamCommand::Create(args) => create(ctx, args).await,
        StreamCommand::List => {
            let streams = ctx
                .conn
                .device()
                .list_event_streams(pb::ListEventStreamsRequest {})
                .await
                .map_err(ctx.conn.error(Service::Device))?
                .into_inner()
                .streams;
            if ctx.json() {
                return write_json_out(ctx, &json!({ "streams": list_json(&streams)? }));
            }
            let mut table = Table::new(&[
                "ID",
                "NAME",
                "ENCODING",
                "STATUS",
                "ENDPOINT",
                "CURSOR",
                "BACKLOG",
                "DEAD LETTERS",
                "LAST ERROR",
            ]);
            for stream in &streams {
                table.row(vec![
                    stream.id.clone(),
                    stream.name.clone(),
                    encoding_label(stream.encoding),
                    status_label(stream.status),
                    stream.endpoint.clone(),
                    stream.cursor.to_string(),
                    stream.backlog.to_string(),
                    stream.dead_letters.to_string(),
                    stream.last_error.clone(),
                ]);
            }
            write_out(ctx, &table.render())
        }
        StreamCommand::Pause { id } => {
            update(ctx, update_request(id, pb::EventStreamStatus::Paused, None)).await
        }
        StreamCommand::Resume { id } => {
            update(
                ctx,
                update_request(id, pb::EventStreamStatus::Enabled, None),
            )
            .await
        }
        StreamCommand::Disable { id } => {
            update(
                ctx,
                update_request(id, pb::EventStreamStatus::Disabled, None),
            )
            .await
        }
        StreamCommand::Filter { id, filter } => {
            update(
                ctx,
                update_request(id, pb::EventStreamStatus::Unspecified, Some(filter)),
            )
            .await
        }
        StreamCommand::Delete { id } => {
            ctx.conn
                .device()
                .delete_event_stream(pb::DeleteEventStreamRequest {
                    id: id.clone(),
                    deleted_by: ctx.actor.clone(),
                })
                .await
                .map_err(ctx.conn.error(Service::Device))?;
            if ctx.json() {
                return write_json_out(ctx, &json!({ "deleted": id }));
            }
            write_out(ctx, &format!("deleted stream {id}\n"))
        }
        StreamCommand::RotateSecret { id } => {
            let response = ctx
                .conn
                .device()
                .rotate_event_stream_secret(pb::RotateEventStreamSecretRequest {
                    id,
                    rotated_by: ctx.actor.clone(),
                })
                .await
                .map_err(ctx.conn.error(Service::Device))?
                .into_inner();
            if ctx.json() {
                return write_json_out(ctx, &to_json(&response)?);
            }
            write_out(ctx, &key_values(&[("secret", response.secret)]))?;
            note(
                ctx,
                "Give the secret to the receiver only: it is shown this once. Deliveries are \
                 signed with it and the previous secret (a poll stream accepts both tokens) \
                 until the next rotation.\n",
            );
            Ok(())
        }
        StreamCommand::Verify { id, state } => {
            let response = ctx
                .conn
                .device()
                .verify_event_stream(pb::VerifyEventStreamRequest {
                    id: id.clone(),
                    state: state.unwrap_or_default(),
                    requested_by: ctx.actor.clone(),
                })
                .await
                .map_err(ctx.conn.error(Service::Device))?
                .into_inner();
            if ctx.json() {
                return write_json_out(ctx, &to_json(&response)?);
            }
            write_out(
                ctx,
                &format!(
                    "queued the verification event {} for stream {id}\n",
                    response.event_id
                ),
            )
        }
        StreamCommand::DeadLetters { id, list } => {
            let mut client = ctx.conn.device();
            let mut letters = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_dead_letters(pb::ListDeadLettersRequest {
                        stream_id: id.clone(),
                        page_size: super::page_size(list.limit, letters.len()),
                        page_token,
                    })
                    .await
                    .map_err(ctx.conn.error(Service::Device))?
                    .into_inner();
                letters.extend(page.dead_letters);
                page_token = page.next_page_token;
                if page_token.is_empty() || (list.limit > 0 && letters.len() >= list.limit) {
                    break;
                }
            }
            if list.limit > 0 {
                letters.truncate(list.limit);
            }
            if ctx.json() {
                return write_json_out(ctx, &json!({ "dead_letters": list_json(&letters)? }));
            }
            let mut table = Table::new(&[
                "SEQ",
                "TYPE",
                "REALM",
                "USER",
                "SUBJECT",
                "ATTEMPTS",
                "DEAD SINCE",
                "REDELIVERING",
                "REASON",
            ]);
            for letter in &letters {
                let event = letter.event.clone().unwrap_or_default();
                table.row(vec![
                    event.seq.to_string(),
                    event.r#type,
                    event.realm,
                    event.user,
                    event.subject,
                    letter.attempts.to_string(),
                    time(letter.dead_time.as_ref()),
                    yes_no(letter.redelivering),
                    letter.reason.clone(),
                ]);
            }
            write_out(ctx, &table.render())
        }
        StreamCommand::Redeliver { id } => {
            let response = ctx
                .conn
                .device()
                .redeliver_events(pb::RedeliverEventsRequest {
                    stream_id: id.clone(),
                    requested_by: ctx.actor.clone(),
                })
                .await
                .map_err(ctx.conn.error(Service::Device))?
                .into_inner();
            if ctx.json() {
                return write_json_out(ctx, &to_json(&response)?);
            }
            write_out(
                ctx,
                &format!(
                    "queued {} dead letter(s) of stream {id} for delivery\n",
                    response.queued
                ),
            )
        }
    }
}

pub fn create_request(args: StreamCreateArgs, actor: &str) -> pb::CreateEventStreamRequest {
    pb::CreateEventStreamRequest {
        name: args.name,
        encoding: encoding(args.encoding) as i32,
        endpoint: args.endpoint.unwrap_or_default(),
        audience: args.audience.unwrap_or_default(),
        subject_format: args
            .subject_format
            .map_or(pb::EventSubjectFormat::Unspecified, |format| match format {
                StreamSubjectFormat::IssSub => pb::EventSubjectFormat::IssSub,
                StreamSubjectFormat::Opaque => pb::EventSubjectFormat::Opaque,
                StreamSubjectFormat::Email => pb::EventSubjectFormat::Email,
            }) as i32,
        types: args.filter.types,
        realms: args.filter.realms,
        from_beginning: args.from_beginning,
        created_by: actor.to_owned(),
    }
}

async fn create(ctx: &mut Ctx<'_>, args: StreamCreateArgs) -> Result<(), CliError> {
    let request = create_request(args, &ctx.actor);
    let response = ctx
        .conn
        .device()
        .create_event_stream(request)
        .await
        .map_err(ctx.conn.error(Service::Device))?
        .into_inner();
    if ctx.json() {
        return write_json_out(ctx, &to_json(&response)?);
    }
    let stream = response.stream.unwrap_or_default();
    let mut text = stream_text(&stream);
    if !response.secret.is_empty() {
        text.push_str(&key_values(&[("secret", response.secret.clone())]));
    }
    write_out(ctx, &text)?;
    if !response.secret.is_empty() {
        let hint = if stream.encoding == pb::EventEncoding::CaepPoll as i32 {
            format!(
                "Give the token to the receiver only: it polls POST /events/poll/{} on the \
                 enrollment page's port with `Authorization: Bearer <token>`. It is shown this \
                 once.\n",
                stream.id
            )
        } else {
            "Give the secret to the receiver only (it verifies the webhook-signature header \
             with it): it is shown this once.\n"
                .to_owned()
        };
        note(ctx, &hint);
    }
    Ok(())
}

pub fn update_request(
    id: String,
    status: pb::EventStreamStatus,
    filter: Option<EventFilterArgs>,
) -> pb::UpdateEventStreamRequest {
    let set_filter = filter.is_some();
    let filter = filter.unwrap_or(EventFilterArgs {
        types: Vec::new(),
        realms: Vec::new(),
    });
    pb::UpdateEventStreamRequest {
        id,
        status: status as i32,
        types: filter.types,
        realms: filter.realms,
        set_filter,
        updated_by: String::new(),
    }
}

async fn update(
    ctx: &mut Ctx<'_>,
    mut request: pb::UpdateEventStreamRequest,
) -> Result<(), CliError> {
    request.updated_by = ctx.actor.clone();
    let stream = ctx
        .conn
        .device()
        .update_event_stream(request)
        .await
        .map_err(ctx.conn.error(Service::Device))?
        .into_inner();
    if ctx.json() {
        return write_json_out(ctx, &to_json(&stream)?);
    }
    write_out(ctx, &stream_text(&stream))
}

fn stream_text(stream: &pb::EventStream) -> String {
    let mut pairs = vec![
        ("id", stream.id.clone()),
        ("name", stream.name.clone()),
        ("encoding", encoding_label(stream.encoding)),
        ("endpoint", stream.endpoint.clone()),
    ];
    if !stream.audience.is_empty() {
        pairs.push(("audience", stream.audience.clone()));
        let subject = match pb::EventSubjectFormat::try_from(stream.subject_format) {
            Ok(pb::EventSubjectFormat::Opaque) => "opaque",
            Ok(pb::EventSubjectFormat::Email) => "email",
            _ => "iss-sub",
        };
        pairs.push(("subject_format", subject.to_owned()));
    }
    pairs.extend([
        ("types", filter_label(&stream.types)),
        ("realms", filter_label(&stream.realms)),
        ("status", status_label(stream.status)),
        ("cursor", stream.cursor.to_string()),
        ("backlog", stream.backlog.to_string()),
        ("attempts", stream.attempts.to_string()),
        ("next attempt", time(stream.next_attempt_time.as_ref())),
        ("last error", stream.last_error.clone()),
        ("dead letters", stream.dead_letters.to_string()),
        ("created by", stream.created_by.clone()),
        ("created", time(stream.create_time.as_ref())),
    ]);
    key_values(&pairs)
}

pub async fn signing_key(ctx: &mut Ctx<'_>, command: SigningKeyCommand) -> Result<(), CliError> {
    match command {
        SigningKeyCommand::Rotate(args) => rotate_signing_key(ctx, args).await,
    }
}

async fn rotate_signing_key(ctx: &mut Ctx<'_>, args: SigningKeyRotateArgs) -> Result<(), CliError> {
    let algorithm = match (args.algorithm, &args.rsa_key) {
        (None, None) => SigningAlgorithm::Es256,
        (None, Some(_)) => SigningAlgorithm::Rs256,
        (Some(SigningAlgorithm::Rs256), None) => {
            return Err(CliError::usage(
                "RS256 needs --rsa-key: the service cannot make RSA keys",
            ));
        }
        (Some(SigningAlgorithm::Es256), Some(_)) => {
            return Err(CliError::usage(
                "--rsa-key is for RS256; ES256 keys are made by the service",
            ));
        }
        (Some(algorithm), _) => algorithm,
    };
    let rsa_pkcs8_der = match &args.rsa_key {
        Some(path) => read_pkcs8(path)?,
        None => Vec::new(),
    };
    let overlap = args
        .overlap
        .map(|overlap| {
            i64::try_from(overlap.as_secs())
                .map(|seconds| prost_types::Duration { seconds, nanos: 0 })
                .map_err(|_| CliError::usage("--overlap is too long"))
        })
        .transpose()?;
    let response = ctx
        .conn
        .device()
        .rotate_event_signing_key(pb::RotateEventSigningKeyRequest {
            algorithm: algorithm.as_str().to_owned(),
            rsa_pkcs8_der,
            overlap,
            rotated_by: ctx.actor.clone(),
        })
        .await
        .map_err(ctx.conn.error(Service::Device))?
        .into_inner();
    let jwks: Option<Value> = serde_json::from_str(&response.jwks).ok();
    if ctx.json() {
        // The JWKS as an object (not the proto's string), for `jq .jwks.keys`.
        let mut value = to_json(&response)?;
        if let Some(jwks) = jwks {
            value["jwks"] = jwks;
        }
        return write_json_out(ctx, &value);
    }
    let jwks_text = jwks
        .and_then(|jwks| serde_json::to_string_pretty(&jwks).ok())
        .unwrap_or(response.jwks);
    write_out(
        ctx,
        &format!(
            "{}JWKS (published at /.well-known/enroll-events/jwks.json):\n{jwks_text}\n",
            key_values(&[("kid", response.kid)])
        ),
    )
}

/// A PKCS#8 private key file: DER, or PEM with a `PRIVATE KEY` block.
fn read_pkcs8(path: &Path) -> Result<Vec<u8>, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|error| CliError::usage(format!("{}: {error}", path.display())))?;
    pkcs8_der(&bytes).map_err(|message| CliError::usage(format!("{}: {message}", path.display())))
}

/// The DER of a PKCS#8 key given as DER or PEM.
pub fn pkcs8_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(bytes.to_vec());
    };
    if !text.contains("-----BEGIN") {
        return Ok(bytes.to_vec());
    }
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let Some(start) = text.find(BEGIN) else {
        let hint = if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
            "a PKCS#1 key: convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pem`"
        } else if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            "an encrypted key: decrypt it with `openssl pkcs8 -nocrypt -in KEY -out KEY.pem`"
        } else {
            "no `-----BEGIN PRIVATE KEY-----` block (a PKCS#8 key)"
        };
        return Err(hint.to_owned());
    };
    let body = &text[start + BEGIN.len()..];
    let Some(end) = body.find(END) else {
        return Err("the PEM block has no `-----END PRIVATE KEY-----`".to_owned());
    };
    let base64: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|error| format!("the PEM block is not base64: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_and_der_keys_give_the_der() {
        let der = vec![0x30, 0x82, 0x01, 0x02, 0xff];
        assert_eq!(pkcs8_der(&der).unwrap(), der);
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIBAv8=\n-----END PRIVATE KEY-----\n";
        assert_eq!(pkcs8_der(pem.as_bytes()).unwrap(), der);
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMIIBAv8=\n-----END RSA PRIVATE KEY-----\n";
        assert!(pkcs8_der(pkcs1.as_bytes()).unwrap_err().contains("PKCS#1"));
        let broken = "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n";
        assert!(pkcs8_der(broken.as_bytes()).is_err());
    }

    #[test]
    fn updates_set_the_filter_only_for_stream_filter() {
        let pause = update_request("s".into(), pb::EventStreamStatus::Paused, None);
        assert_eq!(pause.status, pb::EventStreamStatus::Paused as i32);
        assert!(!pause.set_filter);
        let filter = update_request(
            "s".into(),
            pb::EventStreamStatus::Unspecified,
            Some(EventFilterArgs {
                types: vec!["token.lost".into()],
                realms: Vec::new(),
            }),
        );
        assert_eq!(filter.status, pb::EventStreamStatus::Unspecified as i32);
        assert!(filter.set_filter);
        assert_eq!(filter.types, ["token.lost"]);
        assert!(filter.realms.is_empty());
    }

    #[test]
    fn create_requests_carry_encoding_filter_and_actor() {
        let request = create_request(
            StreamCreateArgs {
                name: "idp".into(),
                encoding: StreamEncoding::Caep,
                endpoint: Some("https://idp.example/ssf".into()),
                audience: Some("https://idp.example".into()),
                subject_format: Some(StreamSubjectFormat::Email),
                filter: EventFilterArgs {
                    types: Vec::new(),
                    realms: vec!["corp".into()],
                },
                from_beginning: false,
            },
            "alice",
        );
        assert_eq!(request.encoding, pb::EventEncoding::CaepPush as i32);
        assert_eq!(request.audience, "https://idp.example");
        assert_eq!(request.subject_format, pb::EventSubjectFormat::Email as i32);
        assert_eq!(request.realms, ["corp"]);
        assert_eq!(request.created_by, "alice");
    }
}
