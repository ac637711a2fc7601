//! The PEM files of (mutual) TLS, read once at start-up for the servers and for clients of
//! another service. A missing, unreadable or empty file is an error naming the setting,
//! so a misconfigured service stops at start-up instead of serving or calling in clear.
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ClientTls, TlsConfig};

/// A TLS setting that cannot be used; the message names the setting and the file, never
/// the file's content (a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct TlsError {
    pub setting: String,
    pub message: String,
}

impl TlsError {
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// Reads `path` (the value of `setting`) and checks it holds the PEM block `kind` needs;
/// the TLS library would otherwise take a file without one as an empty list of CAs.
fn read_pem(setting: &str, path: &Path, kind: Pem) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| {
        TlsError::new(setting, format!("cannot read {}: {error}", path.display()))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let (holds, wanted) = match kind {
        Pem::Certificates => (
            text.contains("-----BEGIN CERTIFICATE-----"),
            "a PEM certificate",
        ),
        Pem::PrivateKey => (
            text.contains("-----BEGIN ") && text.contains("PRIVATE KEY-----"),
            "a PEM private key",
        ),
    };
    if !holds {
        return Err(TlsError::new(
            setting,
            format!("{} does not hold {wanted}", path.display()),
        ));
    }
    Ok(bytes)
}

/// The server side of `[<section>]` (e.g. `server.tls`): certificate, key and, for mutual
/// TLS, the CA client certificates must chain to.
pub fn server_tls(tls: &TlsConfig, section: &str) -> Result<ServerTlsConfig, TlsError> {
    let cert = read_pem(&format!("{section}.cert"), &tls.cert, Pem::Certificates)?;
    let key = read_pem(&format!("{section}.key"), &tls.key, Pem::PrivateKey)?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca {
        let ca = read_pem(&format!("{section}.client_ca"), ca, Pem::Certificates)?;
        // Required, not optional: with a client CA set, a client without a certificate
        // must not get in (tonic's default, stated so a refactor cannot lose it).
        config = config
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false);
    }
    Ok(config)
}

/// The client side of `[<section>]` (e.g. `policy_service.tls`): the CA to trust and, for
/// mutual TLS, this client's certificate and key.
pub fn client_tls(tls: &ClientTls, section: &str) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_pem(&format!("{section}.ca"), &tls.ca, Pem::Certificates)?;
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let cert = read_pem(&format!("{section}.cert"), cert, Pem::Certificates)?;
            let key = read_pem(&format!("{section}.key"), key, Pem::PrivateKey)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        (Some(_), None) => {
            return Err(TlsError::new(
                format!("{section}.key"),
                format!("missing: {section}.cert is set, a client certificate needs its key"),
            ));
        }
        (None, Some(_)) => {
            return Err(TlsError::new(
                format!("{section}.cert"),
                format!("missing: {section}.key is set, a client key needs its certificate"),
            ));
        }
        (None, None) => {}
    }
    if let Some(name) = &tls.domain_name {
        let name = name.trim();
        if name.is_empty() {
            return Err(TlsError::new(
                format!("{section}.domain_name"),
                "is empty; leave it out to check the URL's host",
            ));
        }
        config = config.domain_name(name);
    }
    Ok(config)
}

/// The error and its causes on one line: tonic's TLS errors say "transport error" and keep
/// the reason (bad PEM, key not matching) in their source.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("enroll-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_file_names_the_setting() {
        let dir = temp_dir("missing");
        let tls = TlsConfig {
            cert: file(&dir, "cert.pem", CERT),
            key: dir.join("absent.pem"),
            client_ca: None,
        };
        let error = server_tls(&tls, "server.tls").unwrap_err();
        assert_eq!(error.setting, "server.tls.key");
        assert!(error.message.contains("absent.pem"), "{error}");
    }

    #[test]
    fn a_file_without_the_wanted_pem_block_is_refused() {
        let dir = temp_dir("wrong-block");
        let tls = ClientTls {
            // A key where the CA belongs: no certificate in it, nothing would be trusted.
            ca: file(&dir, "ca.pem", KEY),
            cert: None,
            key: None,
            domain_name: None,
        };
        let error = client_tls(&tls, "policy_service.tls").unwrap_err();
        assert_eq!(error.setting, "policy_service.tls.ca");
        assert!(
            !error.message.contains("AAAA"),
            "never the content: {error}"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let dir = temp_dir("half-identity");
        let tls = ClientTls {
            ca: file(&dir, "ca.pem", CERT),
            cert: Some(file(&dir, "client.pem", CERT)),
            key: None,
            domain_name: None,
        };
        let error = client_tls(&tls, "policy_service.tls").unwrap_err();
        assert_eq!(error.setting, "policy_service.tls.key");
        let tls = ClientTls {
            cert: None,
            key: Some(file(&dir, "client.key", KEY)),
            ..tls
        };
        let error = client_tls(&tls, "policy_service.tls").unwrap_err();
        assert_eq!(error.setting, "policy_service.tls.cert");
    }

    #[test]
    fn a_client_ca_is_read_for_mutual_tls() {
        let dir = temp_dir("client-ca");
        let tls = TlsConfig {
            cert: file(&dir, "cert.pem", CERT),
            key: file(&dir, "key.pem", KEY),
            client_ca: Some(dir.join("no-ca.pem")),
        };
        let error = server_tls(&tls, "server.tls").unwrap_err();
        assert_eq!(error.setting, "server.tls.client_ca");
    }
}
