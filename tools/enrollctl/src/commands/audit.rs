//! `enrollctl audit list | tail`
use std::collections::BTreeSet;
use std::time::Duration;

use enroll_shared::proto::device::v1 as pb;
use serde_json::json;

use super::{write_json_out, write_out};
use crate::Ctx;
use crate::cli::{AuditCommand, AuditFilter, AuditResult};
use crate::connect::{DeviceClient, Service};
use crate::error::CliError;
use crate::json::{list_json, to_json};
use crate::output::{Table, printable, time, write_json_line};

/// How far below the newest event a poll looks again: an event whose transaction commits
/// after a later one's (ids are taken before commit) still shows up once.
const RESCAN_IDS: i64 = 200;

pub async fn run(ctx: &mut Ctx<'_>, command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::List { filter, limit } => {
            let mut client = ctx.conn.device();
            let events = fetch(ctx, &mut client, &filter, limit, None).await?;
            if ctx.json() {
                return write_json_out(ctx, &json!({ "events": list_json(&events)? }));
            }
            let mut table = Table::new(&[
                "ID", "TIME", "ACTOR", "ACTION", "REALM", "USER", "SUBJECT", "RESULT", "REASON",
            ]);
            for event in &events {
                table.row(row(event));
            }
            write_out(ctx, &table.render())
        }
        AuditCommand::Tail {
            filter,
            backlog,
            interval,
            duration,
            max_events,
        } => {
            if !(interval.is_finite() && interval > 0.0) {
                return Err(CliError::usage(
                    "--interval must be a positive number of seconds",
                ));
            }
            tail(
                ctx,
                filter,
                backlog,
                Duration::from_secs_f64(interval),
                duration,
                max_events,
            )
            .await
        }
    }
}

fn row(event: &pb::AuditEvent) -> Vec<String> {
    vec![
        event.id.to_string(),
        time(event.time.as_ref()),
        event.actor.clone(),
        event.action.clone(),
        event.realm.clone(),
        event.user.clone(),
        event.subject.clone(),
        event.result.clone(),
        event.reason.clone(),
    ]
}

fn request(filter: &AuditFilter, page_size: u32, page_token: String) -> pb::ListAuditEventsRequest {
    pb::ListAuditEventsRequest {
        realm: filter.realm.clone().unwrap_or_default(),
        user: filter.user.clone().unwrap_or_default(),
        action: filter.action.clone().unwrap_or_default(),
        serial: filter.subject.clone().unwrap_or_default(),
        result: match filter.result {
            None => String::new(),
            Some(AuditResult::Ok) => "ok".to_owned(),
            Some(AuditResult::Denied) => "denied".to_owned(),
        },
        page_size,
        page_token,
    }
}

/// Up to `limit` events (0: all), newest first; with `down_to`, stops at the first page
/// that reaches an event with an id at or below it.
async fn fetch(
    ctx: &Ctx<'_>,
    client: &mut DeviceClient,
    filter: &AuditFilter,
    limit: usize,
    down_to: Option<i64>,
) -> Result<Vec<pb::AuditEvent>, CliError> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_audit_events(request(
                filter,
                super::page_size(limit, events.len()),
                page_token,
            ))
            .await
            .map_err(ctx.conn.error(Service::Device))?
            .into_inner();
        let reached = down_to.is_some_and(|floor| page.events.iter().any(|e| e.id <= floor));
        events.extend(page.events);
        page_token = page.next_page_token;
        if page_token.is_empty() || reached || (limit > 0 && events.len() >= limit) {
            break;
        }
    }
    if limit > 0 {
        events.truncate(limit);
    }
    Ok(events)
}

/// Prints the last `backlog` events, then polls for new ones (oldest first) until Ctrl-C,
/// `duration` or `max_events`.
async fn tail(
    ctx: &mut Ctx<'_>,
    filter: AuditFilter,
    backlog: usize,
    interval: Duration,
    duration: Option<Duration>,
    max_events: Option<usize>,
) -> Result<(), CliError> {
    let mut client = ctx.conn.device();
    let deadline = duration.map(|duration| tokio::time::Instant::now() + duration);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Ids printed (or passed over with --backlog 0) within the rescan window; events at or
    // below `floor` were either printed or are older than the backlog.
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    let mut floor = i64::MIN;
    let mut printed = 0usize;
    let mut first = true;
    loop {
        let newest_seen = seen.last().copied();
        let mut events = if first {
            // Page size at least 1 so the newest id is known even with --backlog 0.
            fetch(ctx, &mut client, &filter, backlog.max(1), None).await?
        } else {
            let down_to = newest_seen
                .map(|newest| newest.saturating_sub(RESCAN_IDS))
                .unwrap_or(floor);
            fetch(ctx, &mut client, &filter, 0, Some(down_to)).await?
        };
        if first {
            // Whatever is older than the backlog is not followed.
            if let Some(oldest) = events.iter().map(|event| event.id).min() {
                floor = oldest - 1;
            }
            if backlog == 0 {
                seen.extend(events.drain(..).map(|event| event.id));
            }
            first = false;
        }
        events.retain(|event| event.id > floor && !seen.contains(&event.id));
        events.sort_by_key(|event| event.id);
        for event in &events {
            if max_events.is_some_and(|max| printed >= max) {
                break;
            }
            seen.insert(event.id);
            if ctx.json() {
                write_json_line(ctx.out, &to_json(event)?)?;
            } else {
                // Positional columns: an empty cell (a pool token's user) is `-`.
                let line = row(event)
                    .into_iter()
                    .map(|cell| {
                        if cell.is_empty() {
                            "-".to_owned()
                        } else {
                            printable(&cell)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ");
                writeln!(ctx.out, "{line}")?;
                ctx.out.flush()?;
            }
            printed += 1;
        }
        if let Some(newest) = seen.last().copied() {
            floor = floor.max(newest.saturating_sub(RESCAN_IDS));
            seen = seen.split_off(&floor);
        }
        if max_events.is_some_and(|max| printed >= max) {
            return Ok(());
        }
        let sleep = tokio::time::sleep(interval);
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = sleep => {}
            _ = until(deadline) => return Ok(()),
        }
        if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            return Ok(());
        }
    }
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
