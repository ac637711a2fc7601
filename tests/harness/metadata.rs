//! A throw-away FIDO Metadata Service: a root made in the test, a BLOB signing certificate
//! under it, and BLOBs (ES256 JWTs as MDS3 publishes them) written to a file the device
//! servers load through `webauthn.metadata.source`.
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use crypto_glue::der::pem::LineEnding;
use crypto_glue::ecdsa_p256::{EcdsaP256DerSignature, EcdsaP256Signature, EcdsaP256SigningKey};
use crypto_glue::traits::{EncodeDer, EncodePem, Generate, Signer};
use crypto_glue::x509::profile::cabf::Root;
use crypto_glue::x509::profile::cabf::tls::{CertificateType, Subscriber};
use crypto_glue::x509::{
    Builder, Certificate, CertificateBuilder, GeneralName, Name, SerialNumber, SubjectAltName,
    SubjectPublicKeyInfoOwned, Validity,
};

/// The name the test BLOB signer's certificate carries (`webauthn.metadata.signer_name`).
pub const TEST_SIGNER_NAME: &str = "mds.example.test";

/// A FIDO root and the BLOB signer it certifies, with a directory for the BLOB and root files.
pub struct TestMetadataService {
    dir: tempfile::TempDir,
    root: Certificate,
    root_key: EcdsaP256SigningKey,
    root_name: Name,
    signer: TestSigner,
}

/// A BLOB signing certificate and its key.
pub struct TestSigner {
    key: EcdsaP256SigningKey,
    cert: Certificate,
}

impl TestSigner {
    /// The base64 SHA-256 of the certificate's public key info (`signer_key_pins`).
    pub fn key_pin(&self) -> String {
        use crypto_glue::traits::Digest;
        let der = self
            .cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .expect("key info DER");
        STANDARD.encode(crypto_glue::s256::Sha256::digest(&der))
    }
}

impl TestMetadataService {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the metadata");
        let root_key = EcdsaP256SigningKey::generate();
        let root_name =
            Name::from_str(&format!("CN={name} FIDO root,O=enroll tests,C=AU")).expect("name");
        let root = issue(
            Root::new(false, root_name.clone()).expect("root profile"),
            &root_key,
            &root_key,
            None,
        );
        let signer = signer_under(&root_key, &root_name, TEST_SIGNER_NAME);
        let service = Self {
            dir,
            root,
            root_key,
            root_name,
            signer,
        };
        let pem = service.root.to_pem(LineEnding::LF).expect("root PEM");
        std::fs::write(service.root_path(), pem).expect("write the FIDO root");
        service
    }

    /// The PEM file of the root (`webauthn.metadata.root_ca`).
    pub fn root_path(&self) -> PathBuf {
        self.dir.path().join("fido-root.pem")
    }

    /// The BLOB file (`webauthn.metadata.source`).
    pub fn blob_path(&self) -> PathBuf {
        self.dir.path().join("blob.jwt")
    }

    /// `[webauthn.metadata]` reading this service's BLOB file every second.
    pub fn config(&self) -> enroll_device::config::MetadataConfig {
        enroll_device::config::MetadataConfig {
            source: format!("file://{}", self.blob_path().display()),
            root_ca: Some(self.root_path()),
            signer_name: TEST_SIGNER_NAME.to_owned(),
            refresh_interval_secs: 1,
            ..Default::default()
        }
    }

    /// The signer BLOBs are signed with by [`TestMetadataService::sign`].
    pub fn signer(&self) -> &TestSigner {
        &self.signer
    }

    /// Another signing certificate for `dns_name` under the same root (anyone holding a
    /// certificate under a public root, or the genuine signer's renewed certificate).
    pub fn issue_signer(&self, dns_name: &str) -> TestSigner {
        signer_under(&self.root_key, &self.root_name, dns_name)
    }

    /// Signs `payload` as a BLOB (ES256, `x5c` = the signer).
    pub fn sign(&self, payload: &serde_json::Value) -> String {
        self.sign_with(&self.signer, payload)
    }

    /// Signs `payload` as a BLOB with `signer`.
    pub fn sign_with(&self, signer: &TestSigner, payload: &serde_json::Value) -> String {
        let x5c = vec![STANDARD.encode(signer.cert.to_der().expect("DER"))];
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": x5c});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature: EcdsaP256Signature = signer.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// Publishes a BLOB: writes it where the device servers read it.
    pub fn publish(&self, blob: &str) {
        let temporary = self.dir.path().join("blob.jwt.tmp");
        std::fs::write(&temporary, blob).expect("write the BLOB");
        // A rename: a reader never sees half a file.
        std::fs::rename(&temporary, self.blob_path()).expect("publish the BLOB");
    }
}

/// A signing certificate for `dns_name` (CN and DNS SAN) issued by the root.
fn signer_under(root_key: &EcdsaP256SigningKey, root_name: &Name, dns_name: &str) -> TestSigner {
    let key = EcdsaP256SigningKey::generate();
    let names = vec![GeneralName::DnsName(
        dns_name.to_owned().try_into().expect("DNS name"),
    )];
    let profile = Subscriber {
        certificate_type: CertificateType::domain_validated(
            Name::from_str(&format!("CN={dns_name}")).expect("name"),
            names.clone(),
        )
        .expect("signer profile"),
        issuer: root_name.clone(),
        client_auth: false,
        tls12_options: Default::default(),
        enable_data_encipherment: false,
    };
    let cert = issue(profile, &key, root_key, Some(SubjectAltName(names)));
    TestSigner { key, cert }
}

/// The value of the unlabelled series `name` on the Prometheus endpoint at `addr`, or the
/// sum of its labelled series matching `label` (`key="value"`); None when absent.
pub async fn metric_value(
    addr: std::net::SocketAddr,
    name: &str,
    label: Option<&str>,
) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("response");
    let text = crate::parse_page_answer(&raw).body;
    let mut found = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let matches = match series.split_once('{') {
            None => series == name && label.is_none(),
            Some((series_name, labels)) => {
                series_name == name && label.is_none_or(|label| labels.contains(label))
            }
        };
        if matches && let Ok(value) = value.parse::<f64>() {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// An MDS3 payload numbered `no` with `entries`.
pub fn metadata_payload(no: u64, entries: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "legalHeader": "test BLOB",
        "no": no,
        "nextUpdate": "2030-01-01",
        "entries": entries,
    })
}

/// A FIDO2 entry: the model `aaguid` described as `description`, with its status reports
/// (`(status, effective date)`) and attestation roots. It describes a platform
/// authenticator (`keyProtection` hardware and secure element, `attachmentHint` internal),
/// so its roots may anchor `enclave_only`; change `metadataStatement` for other kinds.
pub fn metadata_entry(
    aaguid: &str,
    description: &str,
    statuses: &[(&str, &str)],
    roots: &[&Certificate],
) -> serde_json::Value {
    let roots: Vec<String> = roots
        .iter()
        .map(|root| STANDARD.encode(root.to_der().expect("DER")))
        .collect();
    let reports: Vec<serde_json::Value> = statuses
        .iter()
        .map(|(status, date)| serde_json::json!({"status": status, "effectiveDate": date}))
        .collect();
    serde_json::json!({
        "aaguid": aaguid,
        "metadataStatement": {
            "description": description,
            "aaguid": aaguid,
            "attestationRootCertificates": roots,
            "protocolFamily": "fido2",
            "keyProtection": ["hardware", "secure_element"],
            "attachmentHint": ["internal"],
        },
        "statusReports": reports,
        "timeOfLastStatusChange": "2024-01-01",
    })
}

fn issue<P: crypto_glue::x509::profile::BuilderProfile>(
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
        Validity::from_now(Duration::from_secs(24 * 3600)).expect("validity"),
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
