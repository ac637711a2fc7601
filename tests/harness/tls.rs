//! A throw-away PKI for the TLS tests: a CA made in the test, a server certificate for
//! `localhost` / 127.0.0.1 and a client certificate, as PEM files in a temp dir, plus the
//! configurations that use them (the services' `[server.tls]` / `[policy_service.tls]` and
//! the harness's own tonic clients).
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crypto_glue::der::pem::LineEnding;
use crypto_glue::ecdsa_p256::{EcdsaP256DerSignature, EcdsaP256SigningKey};
use crypto_glue::traits::{EncodePem, Generate, Pkcs8EncodePrivateKey};
use crypto_glue::x509::profile::cabf::Root;
use crypto_glue::x509::profile::cabf::tls::{CertificateType, Subscriber};
use crypto_glue::x509::{
    Builder, Certificate, CertificateBuilder, GeneralName, Name, SerialNumber, SubjectAltName,
    SubjectPublicKeyInfoOwned, Validity,
};
use enroll_shared::config::{ClientTls, TlsConfig};
use tonic::transport::{Certificate as TonicCertificate, ClientTlsConfig, Identity};

/// How long the test certificates are valid: a test run, with room.
const VALID_FOR: Duration = Duration::from_secs(24 * 3600);

/// A CA and the certificates it issued, written to a temp dir that lives as long as this.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl TestPki {
    /// A new CA ("CN=<name> test CA") with a server certificate (SAN `localhost`,
    /// 127.0.0.1) and a client certificate, both issued by it.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the test PKI");
        let ca_key = EcdsaP256SigningKey::generate();
        let ca_name =
            Name::from_str(&format!("CN={name} test CA,O=enroll tests,C=AU")).expect("CA name");
        let ca = build(
            Root::new(false, ca_name.clone()).expect("root profile"),
            &ca_key,
            &ca_key,
            None,
        );
        let leaf = |common_name: &str, names: Vec<GeneralName>, client_auth: bool| {
            let key = EcdsaP256SigningKey::generate();
            let subject = Name::from_str(&format!("CN={common_name}")).expect("leaf name");
            let profile = Subscriber {
                certificate_type: CertificateType::domain_validated(subject, names.clone())
                    .expect("leaf profile"),
                issuer: ca_name.clone(),
                client_auth,
                tls12_options: Default::default(),
                enable_data_encipherment: false,
            };
            let cert = build(profile, &key, &ca_key, Some(SubjectAltName(names)));
            (pem(&cert), key_pem(&key))
        };
        let (server_cert, server_key) = leaf(
            "localhost",
            vec![
                GeneralName::DnsName("localhost".to_owned().try_into().expect("DNS name")),
                GeneralName::IpAddress(
                    crypto_glue::x509::OctetString::new([127u8, 0, 0, 1]).expect("IP address"),
                ),
            ],
            false,
        );
        let (client_cert_pem, client_key_pem) = leaf(
            &format!("{name}-client"),
            vec![GeneralName::DnsName(
                format!("{name}-client")
                    .try_into()
                    .expect("client DNS name"),
            )],
            true,
        );
        let ca_pem = pem(&ca);
        for (file, content) in [
            ("ca.pem", ca_pem.as_str()),
            ("server.pem", server_cert.as_str()),
            ("server.key", server_key.as_str()),
            ("client.pem", client_cert_pem.as_str()),
            ("client.key", client_key_pem.as_str()),
        ] {
            std::fs::write(dir.path().join(file), content).expect("write PEM file");
        }
        Self {
            dir,
            ca_pem,
            client_cert_pem,
            client_key_pem,
        }
    }

    /// Path of one of the PEM files (`ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key`).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `[server.tls]` with this PKI's server certificate; mutual TLS (client certificates
    /// of this CA required) when `mutual`.
    pub fn server_tls(&self, mutual: bool) -> TlsConfig {
        TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mutual.then(|| self.path("ca.pem")),
        }
    }

    /// `[policy_service.tls]` trusting this CA, presenting the client certificate when
    /// `with_certificate`.
    pub fn client_tls(&self, with_certificate: bool) -> ClientTls {
        ClientTls {
            ca: self.path("ca.pem"),
            cert: with_certificate.then(|| self.path("client.pem")),
            key: with_certificate.then(|| self.path("client.key")),
            domain_name: None,
        }
    }

    /// A tonic client configuration trusting this CA, presenting the client certificate
    /// when `with_certificate` (for the harness's own clients).
    pub fn tonic_client(&self, with_certificate: bool) -> ClientTlsConfig {
        let config =
            ClientTlsConfig::new().ca_certificate(TonicCertificate::from_pem(&self.ca_pem));
        if with_certificate {
            config.identity(self.identity())
        } else {
            config
        }
    }

    /// The client certificate and key.
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.client_cert_pem, &self.client_key_pem)
    }
}

/// A certificate of `key`'s public key under `profile`, signed by `signer`.
fn build<P: crypto_glue::x509::profile::BuilderProfile>(
    profile: P,
    key: &EcdsaP256SigningKey,
    signer: &EcdsaP256SigningKey,
    alt_names: Option<SubjectAltName>,
) -> Certificate {
    let public_key =
        SubjectPublicKeyInfoOwned::from_key(key.verifying_key()).expect("public key info");
    let mut builder = CertificateBuilder::new(
        profile,
        SerialNumber::generate(&mut crypto_glue::rand::rng()),
        Validity::from_now(VALID_FOR).expect("validity"),
        public_key,
    )
    .expect("certificate builder");
    if let Some(names) = alt_names {
        builder.add_extension(&names).expect("subjectAltName");
    }
    builder
        .build::<EcdsaP256SigningKey, EcdsaP256DerSignature>(signer)
        .expect("sign certificate")
}

fn pem(cert: &Certificate) -> String {
    cert.to_pem(LineEnding::LF).expect("certificate PEM")
}

fn key_pem(key: &EcdsaP256SigningKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF)
        .expect("key PEM")
        .to_string()
}

/// Which servers of a [`crate::TestStack`] serve TLS, with the PKI they use.
#[derive(Default)]
pub(crate) struct Transport {
    pki: Option<TestPki>,
    /// The policy server serves TLS (`Some`), mutual TLS when `Some(true)`.
    policy: Option<bool>,
    /// The device servers serve TLS.
    device: bool,
}

impl Transport {
    fn pki(&mut self) -> &TestPki {
        self.pki.get_or_insert_with(|| TestPki::new("stack"))
    }

    pub(crate) fn set_policy(&mut self, mutual: bool) {
        self.pki();
        self.policy = Some(mutual);
    }

    pub(crate) fn set_device(&mut self) {
        self.pki();
        self.device = true;
    }

    pub(crate) fn test_pki(&self) -> Option<&TestPki> {
        self.pki.as_ref()
    }

    fn with_pki<T>(&self, on: bool, make: impl FnOnce(&TestPki) -> T) -> Option<T> {
        self.pki.as_ref().filter(|_| on).map(make)
    }

    /// The policy server's `[server.tls]`.
    pub(crate) fn policy_server(&self, config: &mut enroll_policy::config::PolicyConfig) {
        if let Some(tls) = self.with_pki(self.policy.is_some(), |pki| {
            pki.server_tls(self.policy == Some(true))
        }) {
            config.server.tls = Some(tls);
        }
    }

    /// How the harness's clients reach the policy server.
    pub(crate) fn policy_client(&self) -> Option<ClientTlsConfig> {
        self.with_pki(self.policy.is_some(), |pki| {
            pki.tonic_client(self.policy == Some(true))
        })
    }

    /// A device server's `[server.tls]` and `[policy_service.tls]`.
    pub(crate) fn device_server(&self, config: &mut enroll_device::config::DeviceConfig) {
        if let Some(tls) = self.with_pki(self.device, |pki| pki.server_tls(false)) {
            config.server.tls = Some(tls);
        }
        if let Some(tls) = self.with_pki(self.policy.is_some(), |pki| {
            pki.client_tls(self.policy == Some(true))
        }) {
            config.policy_service.tls = Some(tls);
        }
    }

    /// How the harness's clients reach the device servers.
    pub(crate) fn device_client(&self) -> Option<ClientTlsConfig> {
        self.with_pki(self.device, |pki| pki.tonic_client(false))
    }
}
