//! The `healthcheck` subcommand of both binaries: asks the server's own gRPC port for
//! `grpc.health.v1.Health/Check`, so container health checks and orchestrators need no
//! extra tool in the image. Exit 0 when SERVING, 1 otherwise, with one line saying why.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::config::ServerConfig;
use crate::tls::error_chain;

/// `healthcheck` options; the server's address and TLS come from the same config as
/// `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// HOST:PORT to ask; default: the port of `server.listen` on 127.0.0.1 (or on the
    /// listen address itself when it names one).
    #[arg(long)]
    pub addr: Option<String>,
    /// Health service name to ask for; "" (the default) is the server overall.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this long (connect and answer), ms.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// With TLS: the CA file the server's certificate chains to. Default: the certificates
    /// in `server.tls.cert` and `server.tls.client_ca`.
    #[arg(long, env = "ENROLL_HEALTHCHECK_CA")]
    pub ca: Option<PathBuf>,
    /// With mutual TLS: the client certificate to present. Default: `server.tls.cert`
    /// (usable when it allows client authentication).
    #[arg(long, env = "ENROLL_HEALTHCHECK_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of `--cert`.
    #[arg(long, env = "ENROLL_HEALTHCHECK_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// With TLS: the name checked against the server's certificate. Default: the address's
    /// IP when the certificate lists it, else `localhost` when listed, else its first DNS
    /// name.
    #[arg(long)]
    pub server_name: Option<String>,
}

impl Default for HealthcheckArgs {
    fn default() -> Self {
        Self {
            addr: None,
            service: String::new(),
            timeout_ms: 3000,
            ca: None,
            cert: None,
            key: None,
            server_name: None,
        }
    }
}

/// The answer: SERVING or not, and the line printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub serving: bool,
    pub line: String,
}

impl Verdict {
    fn not_serving(line: String) -> Self {
        Self {
            serving: false,
            line,
        }
    }
}

/// Asks the server `server` configures (or `args.addr`) for the health of `args.service`.
pub async fn check(server: &ServerConfig, args: &HealthcheckArgs) -> Verdict {
    let addr = match target(server, args) {
        Ok(addr) => addr,
        Err(line) => return Verdict::not_serving(line),
    };
    let name = if args.service.is_empty() {
        "the server"
    } else {
        args.service.as_str()
    };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let endpoint = match endpoint(server, args, &addr, timeout) {
        Ok(endpoint) => endpoint,
        Err(line) => return Verdict::not_serving(line),
    };
    let ask = async {
        let channel = endpoint.connect().await.map_err(|error| {
            let chain = error_chain(&error);
            let hint = tls_hint(server, &chain);
            format!("UNREACHABLE: {addr}: {chain}{hint}")
        })?;
        ask(channel, &args.service).await.map_err(|status| {
            if status.code() == tonic::Code::NotFound {
                format!("UNKNOWN: {addr} reports no health for `{}`", args.service)
            } else {
                // A refused client certificate surfaces here, after the handshake (TLS 1.3).
                let mut chain = status.message().to_owned();
                if let Some(source) = std::error::Error::source(&status) {
                    chain = format!("{chain}: {}", error_chain(source));
                }
                let hint = tls_hint(server, &chain);
                format!("ERROR: {addr}: {}: {chain}{hint}", status.code())
            }
        })
    };
    match tokio::time::timeout(timeout, ask).await {
        Err(_) => Verdict::not_serving(format!(
            "TIMEOUT: {addr} did not answer within {} ms",
            timeout.as_millis()
        )),
        Ok(Err(line)) => Verdict::not_serving(line),
        Ok(Ok(status)) => {
            let serving = status == ServingStatus::Serving;
            Verdict {
                serving,
                line: format!("{}: {name} at {addr}", status.as_str_name()),
            }
        }
    }
}

async fn ask(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

/// `--addr`, or the listen address with an unspecified IP replaced by loopback.
fn target(server: &ServerConfig, args: &HealthcheckArgs) -> Result<String, String> {
    if let Some(addr) = &args.addr {
        return Ok(addr.clone());
    }
    let listen = server.listen;
    if listen.port() == 0 {
        return Err("ERROR: server.listen has port 0 (picked at start); pass --addr".to_owned());
    }
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, listen.port()).to_string())
}

fn endpoint(
    server: &ServerConfig,
    args: &HealthcheckArgs,
    addr: &str,
    timeout: Duration,
) -> Result<Endpoint, String> {
    let scheme = if server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|error| format!("ERROR: --addr {addr} is not HOST:PORT: {error}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    match client_tls(server, args, addr)? {
        Some(tls) => endpoint
            .tls_config(tls)
            .map_err(|error| format!("ERROR: TLS: {}", error_chain(&error))),
        None => Ok(endpoint),
    }
}

/// The client side of the server's `[server.tls]`: trusts its CA (or its own chain), sends
/// the expected server name and, for mutual TLS, a client certificate.
fn client_tls(
    server: &ServerConfig,
    args: &HealthcheckArgs,
    addr: &str,
) -> Result<Option<ClientTlsConfig>, String> {
    let Some(tls) = &server.tls else {
        return Ok(None);
    };
    let roots = match &args.ca {
        Some(ca) => vec![read("--ca", ca)?],
        None => {
            let mut roots = vec![read("server.tls.cert", &tls.cert)?];
            if let Some(client_ca) = &tls.client_ca {
                roots.push(read("server.tls.client_ca", client_ca)?);
            }
            roots
        }
    };
    let mut config =
        ClientTlsConfig::new().ca_certificates(roots.into_iter().map(Certificate::from_pem));
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some((read("--cert", cert)?, read("--key", key)?)),
        _ if tls.client_ca.is_some() => Some((
            read("server.tls.cert", &tls.cert)?,
            read("server.tls.key", &tls.key)?,
        )),
        _ => None,
    };
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = match &args.server_name {
        Some(name) => Some(name.clone()),
        None => default_server_name(&std::fs::read(&tls.cert).unwrap_or_default(), host),
    };
    if let Some(name) = server_name {
        config = config.domain_name(name);
    }
    Ok(Some(config))
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("ERROR: {setting}: {}: {error}", path.display()))
}

/// The name to check the server's certificate against: none (the address itself) when the
/// certificate lists the address's IP, else `localhost` when listed, else its first DNS
/// name.
fn default_server_name(cert_pem: &[u8], host: &str) -> Option<String> {
    let host_ip: Option<IpAddr> = host.parse().ok();
    let pem = x509_parser::pem::Pem::iter_from_buffer(cert_pem)
        .next()?
        .ok()?;
    let cert = pem.parse_x509().ok()?;
    let names = cert.subject_alternative_name().ok()??;
    let mut dns = Vec::new();
    for name in &names.value.general_names {
        match name {
            x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => None,
                };
                if ip.is_some() && ip == host_ip {
                    return None;
                }
            }
            x509_parser::extensions::GeneralName::DNSName(name) => dns.push(*name),
            _ => {}
        }
    }
    if dns.iter().any(|name| name.eq_ignore_ascii_case(host)) {
        return None;
    }
    dns.iter()
        .find(|name| name.eq_ignore_ascii_case("localhost"))
        .or(dns.first())
        .map(|name| (*name).to_owned())
}

/// What to pass when TLS may be the reason: anything but a refused connection or a
/// timeout (a refused client certificate shows only as a closed connection).
fn tls_hint(server: &ServerConfig, error: &str) -> &'static str {
    let error = error.to_ascii_lowercase();
    if error.contains("refused") || error.contains("timed out") {
        return "";
    }
    match &server.tls {
        Some(tls) if tls.client_ca.is_some() => {
            " (mutual TLS: pass --cert/--key of a client certificate server.tls.client_ca \
             issued, and --ca / --server-name if the server's certificate is not trusted)"
        }
        Some(_) => {
            " (TLS: pass --ca with the CA of server.tls.cert, or --server-name with a name it lists)"
        }
        None => "",
    }
}
