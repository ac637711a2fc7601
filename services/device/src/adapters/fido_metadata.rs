//! The FIDO Metadata Service BLOB: fetched from a file or an https URL, its JWT verified
//! against the configured FIDO root with the injected clock, its signer's name checked
//! against the pinned one (the root is a public TLS root: anyone can hold a certificate
//! under it), its payload parsed.
//!
//! Verified here rather than with the `fido-mds` crate: that crate pins the production
//! GlobalSign roots and the system clock inside `FromStr` (no configured root, no injected
//! time), refuses a whole BLOB when the FIDO Alliance adds a field (`deny_unknown_fields`),
//! and its JWS layer (compact_jwt) expects DER ECDSA signatures where RFC 7515 has raw
//! `r||s`. The checks below use crypto-glue (already in the tree through webauthn-rs): its
//! `X509Store` for the chain, p256 and rsa for the signature.
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use crypto_glue::ecdsa_p256::{EcdsaP256PublicKey, EcdsaP256Signature, EcdsaP256VerifyingKey};
use crypto_glue::rsa::{RS256PublicKey, RS256Signature, RS256VerifyingKey};
use crypto_glue::traits::{DecodeDer, DecodePem, OwnedToRef, Verifier};
use crypto_glue::x509::{Certificate, GeneralName, SubjectAltName, X509Store};
use serde::Deserialize;

use crate::domain::metadata_trust::{
    KeyPinCheck, Unverified, VerifiedBlob, parse_key_pin, signer_name_matches,
};
use crate::service::ports::MetadataBlobs;

/// How long one download may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The configured BLOB source, FIDO root, signer name and key pins.
pub struct FidoBlobs {
    source: BlobSource,
    roots: Vec<Certificate>,
    signer_name: String,
    key_pins: Vec<String>,
}

impl FidoBlobs {
    /// From `[webauthn.metadata]`; `None` when no source is configured.
    pub fn from_config(config: &crate::config::MetadataConfig) -> Result<Option<Self>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let source = BlobSource::parse(&config.source)?;
        let root = config.root_ca.as_ref().ok_or_else(|| {
            "webauthn.metadata.root_ca is required with webauthn.metadata.source: the PEM of the FIDO root the BLOB is signed under".to_owned()
        })?;
        if config.signer_name.trim().is_empty() {
            return Err("webauthn.metadata.signer_name must name the BLOB signer's certificate (mds.fidoalliance.org for the FIDO Alliance's BLOB)".to_owned());
        }
        let key_pins = config
            .signer_key_pins
            .iter()
            .map(|pin| {
                parse_key_pin(pin)
                    .map_err(|error| format!("webauthn.metadata.signer_key_pins: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let BlobSource::File(path) = &source {
            // Allowed for air-gapped sites; nothing renews the file but the operator.
            tracing::warn!(path = %path.display(), "FIDO metadata read from a file: keep it current yourself (webauthn.metadata.source)");
        }
        Ok(Some(Self {
            source,
            roots: load_roots(root)?,
            signer_name: config.signer_name.trim().to_owned(),
            key_pins,
        }))
    }
}

#[async_trait::async_trait]
impl MetadataBlobs for FidoBlobs {
    fn source(&self) -> String {
        self.source.to_string()
    }

    async fn fetch(&self) -> Result<String, String> {
        self.source
            .fetch(FETCH_TIMEOUT)
            .await
            .map_err(|error| error.to_string())
    }

    fn verify(&self, jwt: &str, now: SystemTime) -> Result<VerifiedBlob, Unverified> {
        let verified =
            verify_blob(jwt, &self.roots, &self.signer_name, now).map_err(|error| Unverified {
                reason: error.reason(),
                message: error.to_string(),
            })?;
        Ok(VerifiedBlob {
            payload: verified.payload,
            key_pin: KeyPinCheck::of(&self.key_pins, &verified.chain_keys),
            chain_keys: verified.chain_keys,
        })
    }
}

/// The largest BLOB accepted (the production BLOB is a few MiB).
pub const MAX_BLOB_BYTES: usize = 64 * 1024 * 1024;

/// Why a BLOB was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("cannot fetch the metadata BLOB from {origin}: {message}")]
    Fetch { origin: String, message: String },
    #[error("the metadata BLOB is not a JWT: {0}")]
    Malformed(String),
    #[error(
        "the metadata BLOB's signature algorithm `{0}` is not one MDS3 allows (ES256, RS256, PS256)"
    )]
    Algorithm(String),
    #[error("the metadata BLOB's certificate chain does not lead to the configured FIDO root: {0}")]
    Chain(String),
    #[error("the metadata BLOB's signature does not verify: {0}")]
    Signature(String),
    #[error(
        "the metadata BLOB is signed by a certificate for {found}, not the pinned signer {expected} (webauthn.metadata.signer_name)"
    )]
    SignerName { expected: String, found: String },
}

impl BlobError {
    /// A closed name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Fetch { .. } => "fetch",
            Self::Malformed(_) => "malformed",
            Self::Algorithm(_) => "algorithm",
            Self::Chain(_) => "chain",
            Self::Signature(_) => "signature",
            Self::SignerName { .. } => "signer_name",
        }
    }
}

/// A verified BLOB's payload and the SHA-256 digests (base64) of its chain's public keys,
/// the signer's first.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub payload: Vec<u8>,
    pub chain_keys: Vec<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    x5c: Vec<String>,
}

/// The FIDO root(s) a BLOB's `x5c` chain must lead to, from a PEM file (several
/// certificates may follow each other, for a root rollover).
pub fn load_roots(path: &std::path::Path) -> Result<Vec<Certificate>, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|error| format!("webauthn.metadata.root_ca {}: {error}", path.display()))?;
    let mut roots = Vec::new();
    let mut rest = pem.as_str();
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + end + END.len()];
        roots.push(Certificate::from_pem(block).map_err(|error| {
            format!(
                "webauthn.metadata.root_ca {}: not a PEM certificate ({error})",
                path.display()
            )
        })?);
        rest = &rest[start + end + END.len()..];
    }
    if roots.is_empty() {
        return Err(format!(
            "webauthn.metadata.root_ca {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(roots)
}

/// Verifies the BLOB's JWT (`alg` ES256, RS256 or PS256; the `x5c` chain to one of
/// `roots`, certificates valid at `now`, the signing certificate named `signer_name`) and
/// returns its payload.
pub fn verify_blob(
    jwt: &str,
    roots: &[Certificate],
    signer_name: &str,
    now: SystemTime,
) -> Result<Verified, BlobError> {
    let jwt = jwt.trim();
    let mut parts = jwt.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BlobError::Malformed(
            "expected three dot-separated parts".to_owned(),
        ));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|error| BlobError::Malformed(format!("{what} is not base64url: {error}")))
    };
    let header: Header = serde_json::from_slice(&decode(header_b64, "the header")?)
        .map_err(|error| BlobError::Malformed(format!("the header is not JSON: {error}")))?;
    if !matches!(header.alg.as_str(), "ES256" | "RS256" | "PS256") {
        return Err(BlobError::Algorithm(header.alg));
    }
    let mut chain = header
        .x5c
        .iter()
        .map(|encoded| {
            let der = STANDARD
                .decode(encoded.trim())
                .map_err(|error| BlobError::Malformed(format!("x5c is not base64: {error}")))?;
            Certificate::from_der(&der).map_err(|error| {
                BlobError::Malformed(format!("x5c holds a non-certificate: {error}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(BlobError::Chain(
            "the header has no x5c certificates".to_owned(),
        ));
    }
    // A chain that ends with the root itself: the root is ours, not the BLOB's to give.
    if chain.len() > 1 && chain.last().is_some_and(|last| roots.contains(last)) {
        chain.pop();
    }
    let leaf = chain.remove(0);
    let mut store = X509Store::new(roots);
    // RFC 5280: a certificate without basicConstraints is not a CA; the signer may omit it.
    store.leaf_basic_constraints_required(false);
    store
        .verify(&leaf, &chain, now)
        .map_err(|error| BlobError::Chain(format!("{error:?}")))?;
    // After the chain: a name is only worth checking on a certificate the root vouches for.
    let names = certificate_names(&leaf);
    if !signer_name_matches(signer_name, &names) {
        return Err(BlobError::SignerName {
            expected: signer_name.to_owned(),
            found: if names.is_empty() {
                "no name".to_owned()
            } else {
                names.join(", ")
            },
        });
    }
    let signature = decode(signature_b64, "the signature")?;
    let signed = format!("{header_b64}.{payload_b64}");
    verify_signature(&header.alg, &leaf, signed.as_bytes(), &signature)?;
    let chain_keys = std::iter::once(&leaf)
        .chain(chain.iter())
        .map(key_digest)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Verified {
        payload: decode(payload_b64, "the payload")?,
        chain_keys,
    })
}

/// The subject CN and DNS subject alternative names of `certificate`.
fn certificate_names(certificate: &Certificate) -> Vec<String> {
    let tbs = certificate.tbs_certificate();
    let mut names = Vec::new();
    if let Ok(Some(common_name)) = tbs.subject().common_name() {
        names.push(common_name.value().into_owned());
    }
    if let Ok(Some((_, alt_names))) = tbs.get_extension::<SubjectAltName>() {
        for name in alt_names.0 {
            if let GeneralName::DnsName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    names
}

/// The base64 SHA-256 of a certificate's DER subject public key info (as HPKP and
/// `curl --pinnedpubkey` spell key pins).
fn key_digest(certificate: &Certificate) -> Result<String, BlobError> {
    use crypto_glue::traits::{Digest, EncodeDer};
    let der = certificate
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|error| BlobError::Malformed(format!("a certificate's key: {error}")))?;
    Ok(STANDARD.encode(crypto_glue::s256::Sha256::digest(&der)))
}

fn verify_signature(
    alg: &str,
    leaf: &Certificate,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), BlobError> {
    let spki = leaf
        .tbs_certificate()
        .subject_public_key_info()
        .owned_to_ref();
    let wrong_key =
        || BlobError::Signature(format!("the signing certificate's key does not fit {alg}"));
    let failed = |_| BlobError::Signature("the signature does not match the BLOB".to_owned());
    match alg {
        "ES256" => {
            let key = EcdsaP256PublicKey::try_from(spki).map_err(|_| wrong_key())?;
            // JWS carries the raw `r||s` (RFC 7515 appendix A.3), not DER.
            let signature = EcdsaP256Signature::from_slice(signature)
                .map_err(|_| BlobError::Signature("not a 64-byte ES256 signature".to_owned()))?;
            EcdsaP256VerifyingKey::from(key)
                .verify(signed, &signature)
                .map_err(failed)
        }
        "RS256" => {
            let key = RS256PublicKey::try_from(spki).map_err(|_| wrong_key())?;
            let signature = RS256Signature::try_from(signature).map_err(failed)?;
            RS256VerifyingKey::new(key)
                .verify(signed, &signature)
                .map_err(failed)
        }
        "PS256" => {
            let key = RS256PublicKey::try_from(spki).map_err(|_| wrong_key())?;
            let signature = rsa::pss::Signature::try_from(signature).map_err(failed)?;
            rsa::pss::VerifyingKey::<crypto_glue::s256::Sha256>::new(key)
                .verify(signed, &signature)
                .map_err(failed)
        }
        other => Err(BlobError::Algorithm(other.to_owned())),
    }
}

/// Where the BLOB comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    File(PathBuf),
    /// An https URL ([`BlobSource::parse`] refuses plain http: on it anyone on the path
    /// can hold back the BLOB that flags a compromised model).
    Url(url::Url),
}

impl BlobSource {
    /// `file:///path`, a bare path, or an `https://` URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let bad = |message: String| format!("webauthn.metadata.source `{raw}`: {message}");
        if raw.starts_with('/') {
            return Ok(Self::File(PathBuf::from(raw)));
        }
        let url = url::Url::parse(raw).map_err(|error| bad(error.to_string()))?;
        match url.scheme() {
            "file" => url
                .to_file_path()
                .map(Self::File)
                .map_err(|_| bad("not a local file path".to_owned())),
            "https" if url.host_str().is_some() => Ok(Self::Url(url)),
            "http" => Err(bad(
                "plain http is refused: use https:// (or file:// for a BLOB you download yourself)"
                    .to_owned(),
            )),
            _ => Err(bad("use https:// or file://".to_owned())),
        }
    }

    /// The BLOB's text, at most [`MAX_BLOB_BYTES`], within `timeout`.
    pub async fn fetch(&self, timeout: Duration) -> Result<String, BlobError> {
        let fetched = match self {
            Self::File(path) => tokio::time::timeout(timeout, tokio::fs::read(path))
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|read| read.map_err(|error| error.to_string())),
            Self::Url(url) => tokio::time::timeout(timeout, http::get(url, MAX_BLOB_BYTES))
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|body| body),
        };
        let bytes = fetched.map_err(|message| self.fetch_error(message))?;
        if bytes.len() > MAX_BLOB_BYTES {
            return Err(self.fetch_error(format!("larger than {MAX_BLOB_BYTES} bytes")));
        }
        String::from_utf8(bytes).map_err(|_| self.fetch_error("not UTF-8 text".to_owned()))
    }

    fn fetch_error(&self, message: String) -> BlobError {
        BlobError::Fetch {
            origin: self.to_string(),
            message,
        }
    }
}

impl std::fmt::Display for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file://{}", path.display()),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

/// A minimal HTTP/1.1 GET over the hyper and rustls already in the tree (webpki roots for
/// https), following up to three redirects.
pub(crate) mod http {
    use std::sync::Arc;

    use http_body_util::{BodyExt, Empty, Limited};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    const MAX_REDIRECTS: usize = 3;

    pub(crate) async fn get(url: &url::Url, max_bytes: usize) -> Result<Vec<u8>, String> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            match get_once(&url, max_bytes).await? {
                Fetched::Body(body) => return Ok(body),
                Fetched::Redirect(location) => {
                    let next = url
                        .join(&location)
                        .map_err(|error| format!("bad redirect `{location}`: {error}"))?;
                    // Never from https down to http.
                    if url.scheme() == "https" && next.scheme() != "https" {
                        return Err(format!("refused a redirect from https to `{next}`"));
                    }
                    url = next;
                }
            }
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    enum Fetched {
        Body(Vec<u8>),
        Redirect(String),
    }

    async fn get_once(url: &url::Url, max_bytes: usize) -> Result<Fetched, String> {
        let host = url.host_str().ok_or("no host")?.to_owned();
        let port = url.port_or_known_default().ok_or("no port")?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|error| format!("connect: {error}"))?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::USER_AGENT, "enroll-device")
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let response = if url.scheme() == "https" {
            let server_name = ServerName::try_from(host.clone())
                .map_err(|error| format!("server name: {error}"))?;
            let tls = connector()?
                .connect(server_name, tcp)
                .await
                .map_err(|error| format!("TLS: {error}"))?;
            send(TokioIo::new(tls), request).await?
        } else {
            send(TokioIo::new(tcp), request).await?
        };
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or("a redirect without a Location")?;
            return Ok(Fetched::Redirect(location.to_owned()));
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|error| format!("body: {error}"))?;
        Ok(Fetched::Body(body.to_bytes().to_vec()))
    }

    async fn send<T>(
        io: TokioIo<T>,
        request: hyper::Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| format!("HTTP: {error}"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metadata download connection closed");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|error| format!("HTTP: {error}"))
    }

    /// rustls with ring (the provider the tree already builds) and the webpki roots.
    fn connector() -> Result<TlsConnector, String> {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS configuration: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

#[cfg(test)]
#[path = "fido_metadata_tests.rs"]
mod tests;
