//! `enrollctl events watch`
use enroll_shared::proto::device::v1 as pb;

use super::note;
use crate::Ctx;
use crate::cli::{EventsCommand, WatchArgs};
use crate::connect::Service;
use crate::error::CliError;
use crate::json::to_json;
use crate::output::{printable, time, write_json_line};

pub async fn run(ctx: &mut Ctx<'_>, command: EventsCommand) -> Result<(), CliError> {
    match command {
        EventsCommand::Watch(args) => watch(ctx, args).await,
    }
}

pub fn watch_request(args: &WatchArgs) -> Result<pb::WatchEnrollmentEventsRequest, CliError> {
    if args.after.is_some_and(|seq| seq < 0) {
        return Err(CliError::usage("--after must be a seq of 0 or more"));
    }
    Ok(pb::WatchEnrollmentEventsRequest {
        after_seq: args.after.unwrap_or(0),
        from_now: args.from_now,
        types: args.filter.types.clone(),
        realms: args.filter.realms.clone(),
    })
}

/// Prints events as they arrive until Ctrl-C, `--limit`, or the service ends the stream.
async fn watch(ctx: &mut Ctx<'_>, args: WatchArgs) -> Result<(), CliError> {
    let request = watch_request(&args)?;
    if args.limit == Some(0) {
        return Ok(());
    }
    let mut stream = ctx
        .conn
        .device()
        .watch_enrollment_events(request)
        .await
        .map_err(ctx.conn.error(Service::Device))?
        .into_inner();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut printed = 0usize;
    let mut last_seq: Option<i64> = None;
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            next = stream.message() => next,
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(status) => {
                // OUT_OF_RANGE: retention deleted what follows; its message names where to
                // resume instead.
                if status.code() != tonic::Code::OutOfRange
                    && let Some(seq) = last_seq
                {
                    note(
                        ctx,
                        &format!(
                            "The stream ended after seq {seq}: resume with \
                             `enrollctl events watch --after {seq}`.\n"
                        ),
                    );
                }
                return Err(ctx.conn.error(Service::Device)(status));
            }
        };
        if ctx.json() {
            write_json_line(ctx.out, &to_json(&event)?)?;
        } else {
            writeln!(ctx.out, "{}", event_line(&event))?;
            ctx.out.flush()?;
        }
        last_seq = Some(event.seq);
        printed += 1;
        if args.limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
    }
}

/// One event as one line: seq, time, type, realm/user, subject, credential type; an empty
/// column is `-` so the columns stay positional.
pub fn event_line(event: &pb::EnrollmentEvent) -> String {
    let owner = if event.user.is_empty() {
        event.realm.clone()
    } else {
        format!("{}/{}", event.realm, event.user)
    };
    let credential = event
        .credential
        .as_ref()
        .map(|credential| credential.credential_type.clone())
        .unwrap_or_default();
    [
        event.seq.to_string(),
        time(event.time.as_ref()),
        event.r#type.clone(),
        owner,
        event.subject.clone(),
        credential,
    ]
    .into_iter()
    .map(|cell| {
        if cell.is_empty() {
            "-".to_owned()
        } else {
            printable(&cell)
        }
    })
    .collect::<Vec<_>>()
    .join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::EventFilterArgs;

    #[test]
    fn an_event_is_one_positional_line() {
        let event = pb::EnrollmentEvent {
            seq: 7,
            r#type: "token.enrolled".into(),
            realm: "corp".into(),
            user: "alice".into(),
            subject: "TOTP0001".into(),
            time: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            credential: Some(pb::EventCredential {
                credential_type: "app".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            event_line(&event),
            "7  2027-01-15 08:00:00Z  token.enrolled  corp/alice  TOTP0001  app"
        );
        let pool = pb::EnrollmentEvent {
            seq: 8,
            r#type: "link.created".into(),
            realm: "corp".into(),
            subject: "l\u{1b}[2J".into(),
            ..Default::default()
        };
        assert_eq!(
            event_line(&pool),
            "8  -  link.created  corp  l\\u{1b}[2J  -"
        );
    }

    #[test]
    fn watch_requests_carry_the_cursor_and_filters() {
        let args = WatchArgs {
            after: Some(41),
            from_now: false,
            filter: EventFilterArgs {
                types: vec!["token.lost".into()],
                realms: vec!["corp".into()],
            },
            limit: None,
        };
        let request = watch_request(&args).unwrap();
        assert_eq!(request.after_seq, 41);
        assert!(!request.from_now);
        assert_eq!(request.types, ["token.lost"]);
        assert_eq!(request.realms, ["corp"]);
        let negative = WatchArgs {
            after: Some(-1),
            ..args
        };
        assert!(watch_request(&negative).is_err());
    }
}
