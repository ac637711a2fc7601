//! `list-pages`: the latency of one list RPC with one filter, for its first page and for a
//! deep page (reached by following `next_page_token`), one request at a time, so a figure is
//! what the query costs, not a queue.
use std::time::{Duration, Instant};

use enroll_shared::proto::device::v1 as device;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::Error;
use crate::stats;

/// The list RPCs `list-pages` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListRpc {
    /// DeviceService/ListAuditEvents (filters: realm, user, action, serial, result).
    Audit,
    /// DeviceService/ListDevices (filters: realm, user, type = any|enclave_only,
    /// state = pending_approval|approved|revoked).
    Devices,
    /// DeviceService/ListTokens (filters: realm, user, type = totp|hotp|password,
    /// state = enabled|disabled|locked|lost, assigned = true|false).
    Tokens,
}

impl ListRpc {
    fn name(self) -> &'static str {
        match self {
            ListRpc::Audit => "ListAuditEvents",
            ListRpc::Devices => "ListDevices",
            ListRpc::Tokens => "ListTokens",
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct ListPagesArgs {
    #[arg(long, value_enum)]
    pub rpc: ListRpc,
    /// Filters, comma-separated `key=value` (see --rpc's values for the keys).
    #[arg(long, default_value = "")]
    pub filter: String,
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// The deep page is the one after following this many page tokens from the first (or the
    /// last page, when there are fewer).
    #[arg(long, default_value_t = 100)]
    pub depth: u32,
    /// Timed requests of each page (fewer when --max-seconds runs out first; at least 3).
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Time budget of each page's samples, in seconds.
    #[arg(long, default_value_t = 20)]
    pub max_seconds: u64,
    /// A name for the case in the output.
    #[arg(long, default_value = "")]
    pub label: String,
    /// One JSON object per page instead of a table row.
    #[arg(long)]
    pub json: bool,
}

fn keyed<T>(
    key: &Option<MetadataValue<Ascii>>,
    mut request: tonic::Request<T>,
) -> tonic::Request<T> {
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", key.clone());
    }
    request
}

fn filters(raw: &str) -> Result<Vec<(String, String)>, Error> {
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .ok_or_else(|| format!("filter `{pair}` is not key=value").into())
        })
        .collect()
}

/// One request of `rpc` with `filter`, starting after `page_token`: the number of items
/// and the next page token.
async fn page(
    channel: &Channel,
    key: &Option<MetadataValue<Ascii>>,
    args: &ListPagesArgs,
    filter: &[(String, String)],
    page_token: &str,
) -> Result<(usize, String), Error> {
    let mut client = device::device_service_client::DeviceServiceClient::new(channel.clone());
    let get = |name: &str| {
        filter
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    for (name, _) in filter {
        let known: &[&str] = match args.rpc {
            ListRpc::Audit => &["realm", "user", "action", "serial", "result"],
            ListRpc::Devices => &["realm", "user", "type", "state"],
            ListRpc::Tokens => &["realm", "user", "type", "state", "assigned"],
        };
        if !known.contains(&name.as_str()) {
            return Err(format!("{}: no filter `{name}`", args.rpc.name()).into());
        }
    }
    let unknown = |name: &str, value: &str| -> Error { format!("{name}: `{value}`?").into() };
    Ok(match args.rpc {
        ListRpc::Audit => {
            let response = client
                .list_audit_events(keyed(
                    key,
                    tonic::Request::new(device::ListAuditEventsRequest {
                        realm: get("realm"),
                        user: get("user"),
                        action: get("action"),
                        serial: get("serial"),
                        result: get("result"),
                        page_size: args.page_size,
                        page_token: page_token.to_owned(),
                    }),
                ))
                .await?
                .into_inner();
            (response.events.len(), response.next_page_token)
        }
        ListRpc::Devices => {
            let device_type = match get("type").as_str() {
                "" => device::DeviceType::Unspecified,
                "any" => device::DeviceType::Any,
                "enclave_only" => device::DeviceType::EnclaveOnly,
                other => return Err(unknown("type", other)),
            };
            let state = match get("state").as_str() {
                "" => device::DeviceState::Unspecified,
                "pending_approval" => device::DeviceState::PendingApproval,
                "approved" => device::DeviceState::Approved,
                "revoked" => device::DeviceState::Revoked,
                other => return Err(unknown("state", other)),
            };
            let response = client
                .list_devices(keyed(
                    key,
                    tonic::Request::new(device::ListDevicesRequest {
                        realm: get("realm"),
                        user: get("user"),
                        device_type: device_type as i32,
                        state: state as i32,
                        page_size: args.page_size,
                        page_token: page_token.to_owned(),
                    }),
                ))
                .await?
                .into_inner();
            (response.devices.len(), response.next_page_token)
        }
        ListRpc::Tokens => {
            let token_type = match get("type").as_str() {
                "" => device::TokenType::Unspecified,
                "totp" => device::TokenType::Totp,
                "hotp" => device::TokenType::Hotp,
                "password" => device::TokenType::Password,
                other => return Err(unknown("type", other)),
            };
            let state = match get("state").as_str() {
                "" => device::TokenState::Unspecified,
                "enabled" => device::TokenState::Enabled,
                "disabled" => device::TokenState::Disabled,
                "locked" => device::TokenState::Locked,
                "lost" => device::TokenState::Lost,
                other => return Err(unknown("state", other)),
            };
            let assigned = match get("assigned").as_str() {
                "" => None,
                "true" => Some(true),
                "false" => Some(false),
                other => return Err(unknown("assigned", other)),
            };
            let response = client
                .list_tokens(keyed(
                    key,
                    tonic::Request::new(device::ListTokensRequest {
                        realm: get("realm"),
                        user: get("user"),
                        r#type: token_type as i32,
                        assigned,
                        state: state as i32,
                        page_size: args.page_size,
                        page_token: page_token.to_owned(),
                    }),
                ))
                .await?
                .into_inner();
            (response.tokens.len(), response.next_page_token)
        }
    })
}

/// Requests the page after `page_token` up to `samples` times (within `max_seconds`, at
/// least 3): (items on it, sorted latencies in microseconds).
async fn time_page(
    channel: &Channel,
    key: &Option<MetadataValue<Ascii>>,
    args: &ListPagesArgs,
    filter: &[(String, String)],
    page_token: &str,
) -> Result<(usize, Vec<u32>), Error> {
    let budget = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut latencies = Vec::with_capacity(args.samples);
    let mut items = 0;
    while latencies.len() < args.samples.max(1) && (latencies.len() < 3 || Instant::now() < budget)
    {
        let sent = Instant::now();
        items = page(channel, key, args, filter, page_token).await?.0;
        latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    latencies.sort_unstable();
    Ok((items, latencies))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn row(args: &ListPagesArgs, page_name: &str, items: usize, latencies: &[u32], extra: &str) {
    let (p50, p99, max) = (
        ms(stats::percentile(latencies, 0.5)),
        ms(stats::percentile(latencies, 0.99)),
        ms(stats::percentile(latencies, 1.0)),
    );
    if args.json {
        println!(
            "{{\"label\":\"{}\",\"rpc\":\"{}\",\"filter\":\"{}\",\"page\":\"{page_name}\",\"items\":{items},\"samples\":{},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3}{extra}}}",
            args.label,
            args.rpc.name(),
            args.filter,
            latencies.len()
        );
    } else {
        println!(
            "{:<22} {:<16} {:<40} {:<10} {:>5} {:>7} {:>10.3} {:>10.3} {:>10.3}",
            args.label,
            args.rpc.name(),
            args.filter,
            page_name,
            items,
            latencies.len(),
            p50,
            p99,
            max
        );
    }
}

pub async fn run(
    channel: Channel,
    key: Option<MetadataValue<Ascii>>,
    args: ListPagesArgs,
) -> Result<(), Error> {
    let filter = filters(&args.filter)?;
    if !args.json {
        println!(
            "{:<22} {:<16} {:<40} {:<10} {:>5} {:>7} {:>10} {:>10} {:>10}",
            "case", "rpc", "filter", "page", "items", "samples", "p50 ms", "p99 ms", "max ms"
        );
    }
    let (items, latencies) = time_page(&channel, &key, &args, &filter, "").await?;
    row(&args, "first", items, &latencies, "");
    // Walk to the deep page, timing each step once.
    let mut token = String::new();
    let mut reached = 0;
    let mut walk = Duration::ZERO;
    let mut walk_items = 0;
    // The walk stops early when it takes longer than --max-seconds (a filter that pays by
    // the table): the deep page is then the one it reached.
    let walk_budget = Duration::from_secs(args.max_seconds);
    while reached < args.depth && walk < walk_budget {
        let sent = Instant::now();
        let (count, next) = page(&channel, &key, &args, &filter, &token).await?;
        walk += sent.elapsed();
        walk_items += count;
        if next.is_empty() {
            break;
        }
        token = next;
        reached += 1;
    }
    if reached == 0 {
        return Ok(());
    }
    let (items, latencies) = time_page(&channel, &key, &args, &filter, &token).await?;
    row(
        &args,
        &format!("deep@{reached}"),
        items,
        &latencies,
        &format!(
            ",\"walk_pages\":{reached},\"walk_items\":{walk_items},\"walk_ms\":{:.1}",
            ms(walk)
        ),
    );
    if !args.json {
        println!(
            "{:<22} walked {reached} page(s), {walk_items} item(s), in {:.1} ms",
            "",
            ms(walk)
        );
    }
    Ok(())
}
