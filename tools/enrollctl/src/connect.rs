//! Channels to the two services: TLS (CA, client certificate, server name) and the API key.
use std::time::Duration;

use enroll_shared::proto::device::v1::device_service_client::DeviceServiceClient;
use enroll_shared::proto::policy::v1::policy_service_client::PolicyServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::config::Settings;
use crate::error::CliError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds `authorization: Bearer <key>` to every call (when there is a key).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type PolicyClient = PolicyServiceClient<InterceptedService<Channel, Bearer>>;
pub type DeviceClient = DeviceServiceClient<InterceptedService<Channel, Bearer>>;

/// Which service a call went to, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Policy,
    Device,
}

impl Service {
    pub fn label(self) -> &'static str {
        match self {
            Service::Policy => "policy service",
            Service::Device => "device service",
        }
    }
}

/// Lazily connected channels to both services (a command that only needs one never
/// touches the other).
pub struct Connection {
    pub policy_addr: String,
    pub device_addr: String,
    policy_channel: Channel,
    device_channel: Channel,
    bearer: Bearer,
    /// What the operator should know before anything is sent (shown in table mode).
    pub warnings: Vec<String>,
}

impl Connection {
    pub fn new(settings: &Settings) -> Result<Connection, CliError> {
        let bearer = match &settings.api_key {
            Some(key) => Bearer(Some(format!("Bearer {key}").parse().map_err(|_| {
                // The key itself stays out of the message.
                CliError::usage("the API key holds characters a header cannot carry")
            })?)),
            None => Bearer(None),
        };
        let policy_addr = with_scheme(&settings.policy_addr, settings);
        let device_addr = with_scheme(&settings.device_addr, settings);
        let warnings = if settings.api_key.is_some() {
            [&policy_addr, &device_addr]
                .into_iter()
                .filter_map(|address| plaintext_warning(address))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Connection {
            warnings,
            policy_channel: channel(&policy_addr, settings)?,
            device_channel: channel(&device_addr, settings)?,
            policy_addr,
            device_addr,
            bearer,
        })
    }

    pub fn policy(&self) -> PolicyClient {
        PolicyServiceClient::with_interceptor(self.policy_channel.clone(), self.bearer.clone())
    }

    pub fn device(&self) -> DeviceClient {
        DeviceServiceClient::with_interceptor(self.device_channel.clone(), self.bearer.clone())
    }

    pub fn channel(&self, service: Service) -> Channel {
        match service {
            Service::Policy => self.policy_channel.clone(),
            Service::Device => self.device_channel.clone(),
        }
    }

    pub fn address(&self, service: Service) -> &str {
        match service {
            Service::Policy => &self.policy_addr,
            Service::Device => &self.device_addr,
        }
    }

    /// Turns a failed call's status into the CLI's error, naming the service.
    pub fn error(&self, service: Service) -> impl Fn(Status) -> CliError + '_ {
        move |status| CliError::Grpc {
            service: service.label(),
            address: self.address(service).to_owned(),
            status,
        }
    }
}

/// A warning when the API key would cross the network in clear: an `http://` address whose
/// host is not loopback. Not refused, for meshes that encrypt pod traffic themselves.
fn plaintext_warning(address: &str) -> Option<String> {
    let rest = address.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!(
            "warning: the API key goes to {address} in clear (http://); use https:// with --ca \
             unless the network between here and there is encrypted\n"
        )
    })
}

/// An address without a scheme is https:// when a CA is configured, else http://.
fn with_scheme(address: &str, settings: &Settings) -> String {
    if address.contains("://") {
        address.to_owned()
    } else if settings.ca.is_some() {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|error| CliError::usage(format!("{what} {}: {error}", path.display())))
}

fn channel(address: &str, settings: &Settings) -> Result<Channel, CliError> {
    let mut endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(|error| CliError::usage(format!("address `{address}`: {error}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(settings.timeout);
    if address.starts_with("https://") {
        let Some(ca) = &settings.ca else {
            return Err(CliError::usage(format!(
                "{address} is https: name the CA that signed the service's certificate \
                 (--ca, ENROLLCTL_CA or ca in the config file)"
            )));
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "CA")?));
        if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        if let Some(name) = &settings.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| CliError::usage(format!("TLS for {address}: {error}")))?;
    }
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_sent_in_clear_beyond_this_host_is_warned_about() {
        for quiet in [
            "http://127.0.0.1:50051",
            "http://localhost:50052",
            "http://[::1]:50051",
            "https://enroll.example.com:443",
        ] {
            assert_eq!(plaintext_warning(quiet), None, "{quiet}");
        }
        for warned in [
            "http://enroll.example.com:50051",
            "http://10.0.0.5:50052",
            "http://[2001:db8::1]:50051",
        ] {
            let warning = plaintext_warning(warned).expect(warned);
            assert!(
                warning.contains(warned) && warning.contains("in clear"),
                "{warning}"
            );
        }
    }
}
