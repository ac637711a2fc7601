//! The HTTP POST of an event to a receiver's URL (Shared Signals push delivery, RFC 8935;
//! Standard Webhooks), safe against server-side request forgery: receiver URLs are
//! configured by API clients, so the service must never be made to reach its own network.
//!
//! - https only (http only to a loopback host, as a development setting);
//! - every address the host name resolves to is vetted ([`vet`]: private, loopback,
//!   link-local, CGNAT, multicast, documentation and cloud metadata addresses refused), and
//!   one refused address refuses the delivery (a name mixing public and private addresses is
//!   a DNS rebinding attempt);
//! - the connection goes to the first vetted address itself, never to a second resolution
//!   of the name; TLS checks the certificate against the host name (SNI) and webpki roots;
//! - redirects are never followed (a 3xx is a status like any other);
//! - one timeout bounds resolution, connection, TLS, request and the response's head and
//!   first bytes; errors name no header value or body (bearer tokens, signatures);
//! - connections are kept alive and reused per vetted address (and TLS host name), so a
//!   stream's deliveries pay no handshake each; the name is still resolved and vetted for
//!   every request, and a new address gets a new connection.
//!
//! Built on the hyper, tokio-rustls (ring) and webpki roots the FIDO metadata download
//! (`adapters::fido_metadata`) already uses: no new crates.
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Headers [`ReceiverClient::post`] sets itself, refused from callers.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
];

/// How much of a response body is kept (for error logs).
pub const SNIPPET_BYTES: usize = 512;

/// A receiver's endpoint, checked: https (or http to a loopback host when allowed), a host,
/// no user name or password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverUrl {
    url: url::Url,
    allow_loopback: bool,
}

impl ReceiverUrl {
    /// `allow_loopback_http` (development only) also admits `http://localhost`,
    /// `http://127.x.y.z` and `http://[::1]`, and lets loopback addresses pass [`vet`].
    pub fn parse(raw: &str, allow_loopback_http: bool) -> Result<Self, String> {
        let url = url::Url::parse(raw.trim()).map_err(|error| format!("not a URL: {error}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a receiver URL carries no user name or password".to_owned());
        }
        let host = url.host().ok_or("a receiver URL needs a host")?;
        match url.scheme() {
            "https" => {}
            "http" if allow_loopback_http && is_loopback_host(&host) => {}
            "http" if allow_loopback_http => {
                return Err("http is allowed only to localhost, 127.0.0.0/8 or [::1]".to_owned());
            }
            _ => return Err("a receiver URL is https".to_owned()),
        }
        Ok(ReceiverUrl {
            url,
            allow_loopback: allow_loopback_http,
        })
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    fn tls(&self) -> bool {
        self.url.scheme() == "https"
    }
}

impl std::fmt::Display for ReceiverUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Why an address may not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {address} refused: {reason}")]
pub struct Refused {
    pub address: IpAddr,
    pub reason: &'static str,
}

/// Whether a receiver may be reached at `address`: refused are cloud metadata addresses,
/// private, loopback (unless `allow_loopback`), link-local, CGNAT, unspecified, "this
/// network", multicast, broadcast, reserved, benchmarking and documentation ranges. An IPv6
/// address embedding an IPv4 one (mapped, NAT64, 6to4) is judged by that IPv4 address.
pub fn vet(address: IpAddr, allow_loopback: bool) -> Result<(), Refused> {
    let reason = match address {
        IpAddr::V4(ip) => refused_v4(ip, allow_loopback),
        IpAddr::V6(ip) => refused_v6(ip, allow_loopback),
    };
    match reason {
        Some(reason) => Err(Refused { address, reason }),
        None => Ok(()),
    }
}

fn refused_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    const METADATA: [Ipv4Addr; 2] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(100, 100, 100, 200),
    ];
    let [a, b, c, _] = ip.octets();
    Some(if METADATA.contains(&ip) {
        "a cloud metadata address"
    } else if ip.is_loopback() {
        if allow_loopback {
            return None;
        }
        "loopback"
    } else if ip.is_unspecified() || a == 0 {
        "\"this network\" (0.0.0.0/8)"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 100 && (b & 0xc0) == 64 {
        "shared address space (CGNAT, 100.64.0.0/10)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if a >= 240 {
        "reserved (240.0.0.0/4)"
    } else if ip.is_documentation() {
        "documentation"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol assignments (192.0.0.0/24)"
    } else if a == 198 && (b & 0xfe) == 18 {
        "benchmarking (198.18.0.0/15)"
    } else {
        return None;
    })
}

fn refused_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    const EC2_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    if let Some(v4) = embedded_v4(ip) {
        return refused_v4(v4, allow_loopback);
    }
    let segments = ip.segments();
    Some(if ip == EC2_METADATA {
        "a cloud metadata address"
    } else if ip.is_loopback() {
        if allow_loopback {
            return None;
        }
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if segments[..6] == [0; 6] {
        "IPv4-compatible (deprecated, ::/96)"
    } else if (segments[0] & 0xfe00) == 0xfc00 {
        "unique local (private, fc00::/7)"
    } else if (segments[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (segments[0] & 0xffc0) == 0xfec0 {
        "site-local (deprecated, fec0::/10)"
    } else if ip.is_multicast() {
        "multicast"
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        "documentation (2001:db8::/32)"
    } else if segments[0] == 0x0100 && segments[1..4] == [0; 3] {
        "discard-only (100::/64)"
    } else if segments[0] == 0x2001 && segments[1] == 0 {
        "Teredo (2001::/32)"
    } else {
        return None;
    })
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::/96`) or
/// 6to4 (`2002::/16`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let v4 = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return Some(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    None
}

/// Resolves a host name to socket addresses.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Opens the TCP connection to a vetted address (a seam: tests observe that refused targets
/// never reach it).
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    async fn connect(&self, address: SocketAddr) -> io::Result<TcpStream>;
}

/// `TcpStream::connect`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

#[async_trait::async_trait]
impl Connector for TcpConnector {
    async fn connect(&self, address: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect(address).await
    }
}

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub status: u16,
    /// `Retry-After` (seconds or an HTTP date), when given.
    pub retry_after: Option<Duration>,
    /// The first bytes of the response body (lossy UTF-8), for error logs.
    pub body_snippet: String,
}

impl Delivered {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a delivery got no answer. The messages name addresses and causes, never a header
/// value or a body.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("resolving {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("connecting to {address}: {message}")]
    Connect {
        address: SocketAddr,
        message: String,
    },
    #[error("TLS with {host}: {message}")]
    Tls { host: String, message: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Posts to receivers: a resolver, a connector and the TLS client configuration.
#[derive(Clone)]
pub struct ReceiverClient {
    resolver: Arc<dyn Resolver>,
    connector: Arc<dyn Connector>,
    tls: TlsConnector,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for ReceiverClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverClient").finish_non_exhaustive()
    }
}

impl ReceiverClient {
    /// The system resolver, plain TCP and rustls (ring) with the webpki roots.
    pub fn new() -> Result<Self, String> {
        Self::with(Arc::new(SystemResolver), Arc::new(TcpConnector))
    }

    /// The given resolver and connector, TLS with the webpki roots.
    pub fn with(
        resolver: Arc<dyn Resolver>,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, String> {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(resolver, connector, roots)
    }

    /// The given resolver and connector, TLS trusting `roots` only (receivers under a
    /// private CA; tests).
    pub fn with_roots(
        resolver: Arc<dyn Resolver>,
        connector: Arc<dyn Connector>,
        roots: RootCertStore,
    ) -> Result<Self, String> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS configuration: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ReceiverClient {
            resolver,
            connector,
            tls: TlsConnector::from(Arc::new(config)),
            pool: Arc::default(),
        })
    }

    /// POSTs `body` with `headers` (plus Host, User-Agent, Content-Type, Content-Length) and
    /// returns the answer, whatever its status; `timeout` bounds the whole exchange.
    pub async fn post(
        &self,
        url: &ReceiverUrl,
        headers: &[(&str, String)],
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Delivered, DeliveryError> {
        tokio::time::timeout(timeout, self.exchange(url, headers, content_type, body))
            .await
            .unwrap_or(Err(DeliveryError::Timeout(timeout)))
    }

    /// The vetted addresses of the URL's host, in resolution order (all of them vetted).
    async fn addresses(&self, url: &ReceiverUrl) -> Result<Vec<SocketAddr>, DeliveryError> {
        let port = url
            .url
            .port_or_known_default()
            .ok_or_else(|| DeliveryError::Http("no port".to_owned()))?;
        let addresses = match url.url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(url::Host::Domain(name)) => {
                self.resolver
                    .resolve(name, port)
                    .await
                    .map_err(|error| DeliveryError::Resolve {
                        host: name.to_owned(),
                        message: error.to_string(),
                    })?
            }
            None => return Err(DeliveryError::Http("no host".to_owned())),
        };
        if addresses.is_empty() {
            return Err(DeliveryError::Resolve {
                host: url.url.host_str().unwrap_or_default().to_owned(),
                message: "no addresses".to_owned(),
            });
        }
        for address in &addresses {
            vet(address.ip(), url.allow_loopback)?;
        }
        Ok(addresses)
    }

    async fn exchange(
        &self,
        url: &ReceiverUrl,
        headers: &[(&str, String)],
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Delivered, DeliveryError> {
        let addresses = self.addresses(url).await?;
        let body = Bytes::from(body);
        // The first vetted address, connected to as it is: never resolved again.
        let key = PoolKey {
            address: addresses[0],
            tls_host: url
                .tls()
                .then(|| url.url.host_str().unwrap_or_default().to_owned()),
        };
        // Built before any connection: a bad header never reaches the network.
        let first = request(url, headers, content_type, body.clone())?;
        let request = match self.pool.checkout(&key) {
            Some(lease) => match self.send_on(lease, &key, first).await {
                Ok(delivered) => return Ok(delivered),
                // The receiver closed the idle connection as it was reused: the request
                // was not answered, so it goes again on a new connection (at least once).
                Err(Reuse::Stale) => request(url, headers, content_type, body)?,
                Err(Reuse::Failed(error)) => return Err(error),
            },
            None => first,
        };
        let lease = self.connect(url, &key).await?;
        match self.send_on(lease, &key, request).await {
            Ok(delivered) => Ok(delivered),
            Err(Reuse::Stale) => Err(DeliveryError::Http(
                "the connection closed before the answer".to_owned(),
            )),
            Err(Reuse::Failed(error)) => Err(error),
        }
    }

    /// A new connection (TCP, then TLS for https) to the key's vetted address, its
    /// connection task spawned.
    async fn connect(&self, url: &ReceiverUrl, key: &PoolKey) -> Result<Lease, DeliveryError> {
        let address = key.address;
        let tcp =
            self.connector
                .connect(address)
                .await
                .map_err(|error| DeliveryError::Connect {
                    address,
                    message: error.to_string(),
                })?;
        // Requests are small and each waits for its answer: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        match &key.tls_host {
            Some(host) => {
                let server_name = match url.url.host() {
                    Some(url::Host::Ipv4(ip)) => ServerName::from(IpAddr::V4(ip)),
                    Some(url::Host::Ipv6(ip)) => ServerName::from(IpAddr::V6(ip)),
                    _ => {
                        ServerName::try_from(host.clone()).map_err(|error| DeliveryError::Tls {
                            host: host.clone(),
                            message: error.to_string(),
                        })?
                    }
                };
                let tls = self.tls.connect(server_name, tcp).await.map_err(|error| {
                    DeliveryError::Tls {
                        host: host.clone(),
                        message: error.to_string(),
                    }
                })?;
                handshake(TokioIo::new(tls)).await
            }
            None => handshake(TokioIo::new(tcp)).await,
        }
    }

    /// One request on a leased connection; the connection goes back to the pool when the
    /// answer was read whole and the receiver keeps it open.
    async fn send_on(
        &self,
        mut lease: Lease,
        key: &PoolKey,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Delivered, Reuse> {
        let reused = lease.reused;
        let sent = async {
            lease.sender.ready().await?;
            lease.sender.send_request(request).await
        };
        let response = match sent.await {
            Ok(response) => response,
            // A reused connection that failed before any answer: nothing was delivered.
            Err(error) if reused => {
                tracing::debug!(%error, "a pooled receiver connection was closed");
                return Err(Reuse::Stale);
            }
            Err(error) => return Err(Reuse::Failed(DeliveryError::Http(error.to_string()))),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let (body_snippet, whole) = snippet(response.into_body()).await;
        if whole {
            self.pool.give_back(key, lease);
        }
        Ok(Delivered {
            status,
            retry_after,
            body_snippet,
        })
    }
}

/// Why a request on a leased connection got no answer.
enum Reuse {
    /// A reused connection was closed by the receiver before the request went out.
    Stale,
    Failed(DeliveryError),
}

/// What a pooled connection is keyed by: the vetted address it was made to and, for https,
/// the host name its certificate was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    address: SocketAddr,
    tls_host: Option<String>,
}

/// A connection in use: its request sender and its task. Dropped without being given back
/// (a timeout, an error, an answer not read whole), it ends the connection.
struct Lease {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    task: tokio::task::AbortHandle,
    reused: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Idle keep-alive connections to receivers, so a stream's deliveries do not each pay a TCP
/// and TLS handshake. Bounded per key and in age; the receiver may close one at any time
/// (a request on it then goes again on a new connection).
#[derive(Default)]
struct Pool {
    idle: std::sync::Mutex<HashMap<PoolKey, Vec<(Instant, Lease)>>>,
}

impl Pool {
    fn checkout(&self, key: &PoolKey) -> Option<Lease> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let connections = idle.get_mut(key)?;
        while let Some((since, mut lease)) = connections.pop() {
            if since.elapsed() < POOL_IDLE && !lease.sender.is_closed() {
                lease.reused = true;
                return Some(lease);
            }
        }
        idle.remove(key);
        None
    }

    fn give_back(&self, key: &PoolKey, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Keys of receivers no longer delivered to go with their last connection.
        idle.retain(|_, connections| {
            connections.retain(|(since, _)| since.elapsed() < POOL_IDLE);
            !connections.is_empty()
        });
        let connections = idle.entry(key.clone()).or_default();
        if connections.len() < POOL_PER_KEY {
            connections.push((Instant::now(), lease));
        }
    }
}

/// How long an idle connection is kept (receivers commonly close theirs after 60 s or more).
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per receiver address at most.
const POOL_PER_KEY: usize = 32;

/// HTTP/1.1 over `io`, the connection driven by a task of its own.
async fn handshake<T>(io: TokioIo<T>) -> Result<Lease, DeliveryError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| DeliveryError::Http(error.to_string()))?;
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "receiver connection ended");
        }
    })
    .abort_handle();
    Ok(Lease {
        sender,
        task,
        reused: false,
    })
}

fn request(
    url: &ReceiverUrl,
    headers: &[(&str, String)],
    content_type: &str,
    body: Bytes,
) -> Result<hyper::Request<Full<Bytes>>, DeliveryError> {
    let host = url.url.host_str().unwrap_or_default();
    let authority = match url.url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let path = match url.url.query() {
        Some(query) => format!("{}?{query}", url.url.path()),
        None => url.url.path().to_owned(),
    };
    let mut builder = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "enroll-device")
        .header(hyper::header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| DeliveryError::Http(format!("invalid header name `{name}`")))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(DeliveryError::Http(format!(
                "header `{name}` is the client's to set"
            )));
        }
        let value = hyper::header::HeaderValue::from_str(value)
            // The value may be a secret: only the name is told.
            .map_err(|_| DeliveryError::Http(format!("invalid value of header `{name}`")))?;
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(body))
        .map_err(|_| DeliveryError::Http("could not build the request".to_owned()))
}

/// The first [`SNIPPET_BYTES`] of a body (for error logs), and whether the body was read to
/// its end (only then may the connection carry another request). A body longer than
/// [`DRAIN_BYTES`] or a read error ends the reading: the status is what matters.
async fn snippet(mut body: hyper::body::Incoming) -> (String, bool) {
    let mut kept = Vec::new();
    let mut read = 0usize;
    let whole = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                    if kept.len() < SNIPPET_BYTES {
                        kept.extend_from_slice(data);
                    }
                }
                if read > DRAIN_BYTES {
                    break false;
                }
            }
            Some(Err(_)) => break false,
            None => break true,
        }
    };
    kept.truncate(SNIPPET_BYTES);
    (String::from_utf8_lossy(&kept).into_owned(), whole)
}

/// How much of an answer's body is read to keep its connection (beyond: closed).
const DRAIN_BYTES: usize = 64 * 1024;

/// `Retry-After`: delay seconds, or an HTTP date (a past date is no delay).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let now = chrono::DateTime::<chrono::Utc>::from(now);
    let delay = date.with_timezone(&chrono::Utc) - now;
    Some(delay.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[path = "receiver_tests.rs"]
mod tests;
