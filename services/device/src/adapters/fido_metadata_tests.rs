//! BLOB verification against a throw-away FIDO root made here.
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use crypto_glue::ecdsa_p256::{EcdsaP256DerSignature, EcdsaP256Signature, EcdsaP256SigningKey};
use crypto_glue::traits::{EncodeDer, EncodePem, Generate, Signer};
use crypto_glue::x509::profile::cabf::Root;
use crypto_glue::x509::profile::cabf::tls::{CertificateType, Subscriber};
use crypto_glue::x509::{
    Builder, Certificate, CertificateBuilder, GeneralName, Name, SerialNumber, SubjectAltName,
    SubjectPublicKeyInfoOwned, Validity,
};

use super::*;

struct TestCa {
    key: EcdsaP256SigningKey,
    cert: Certificate,
    name: Name,
}

fn root(common_name: &str) -> TestCa {
    let key = EcdsaP256SigningKey::generate();
    let name = Name::from_str(&format!("CN={common_name},O=enroll tests,C=AU")).unwrap();
    let profile = Root::new(false, name.clone()).unwrap();
    let cert = issue(profile, &key, &key, None);
    TestCa { key, cert, name }
}

/// A BLOB signing certificate for `mds.example.test` issued by `ca`.
fn signer(ca: &TestCa) -> (EcdsaP256SigningKey, Certificate) {
    named_signer(ca, "mds.example.test")
}

/// A BLOB signing certificate for `dns_name` issued by `ca`.
fn named_signer(ca: &TestCa, dns_name: &str) -> (EcdsaP256SigningKey, Certificate) {
    let key = EcdsaP256SigningKey::generate();
    let names = vec![GeneralName::DnsName(
        dns_name.to_owned().try_into().unwrap(),
    )];
    let profile = Subscriber {
        certificate_type: CertificateType::domain_validated(
            Name::from_str("CN=Metadata BLOB signer").unwrap(),
            names.clone(),
        )
        .unwrap(),
        issuer: ca.name.clone(),
        client_auth: false,
        tls12_options: Default::default(),
        enable_data_encipherment: false,
    };
    let cert = issue(profile, &key, &ca.key, Some(SubjectAltName(names)));
    (key, cert)
}

fn issue<P: crypto_glue::x509::profile::BuilderProfile>(
    profile: P,
    key: &EcdsaP256SigningKey,
    signer: &EcdsaP256SigningKey,
    alt_names: Option<SubjectAltName>,
) -> Certificate {
    let public_key = SubjectPublicKeyInfoOwned::from_key(key.verifying_key()).unwrap();
    let mut builder = CertificateBuilder::new(
        profile,
        SerialNumber::generate(&mut crypto_glue::rand::rng()),
        Validity::from_now(Duration::from_secs(3600)).unwrap(),
        public_key,
    )
    .unwrap();
    if let Some(names) = alt_names {
        builder.add_extension(&names).unwrap();
    }
    builder
        .build::<EcdsaP256SigningKey, EcdsaP256DerSignature>(signer)
        .unwrap()
}

fn jwt(alg: &str, payload: &str, key: &EcdsaP256SigningKey, chain: &[&Certificate]) -> String {
    let x5c: Vec<String> = chain
        .iter()
        .map(|cert| STANDARD.encode(cert.to_der().unwrap()))
        .collect();
    let header = serde_json::json!({"alg": alg, "typ": "JWT", "x5c": x5c});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature: EcdsaP256Signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

const SIGNER: &str = "mds.example.test";

const PAYLOAD: &str = r#"{"no": 3, "nextUpdate": "2026-12-01", "entries": []}"#;

#[test]
fn a_blob_signed_under_the_root_verifies_and_anything_else_is_refused() {
    let fido = root("FIDO test root");
    let (key, leaf) = signer(&fido);
    let now = SystemTime::now();
    let roots = [fido.cert.clone()];
    let good = jwt("ES256", PAYLOAD, &key, &[&leaf]);
    assert_eq!(
        verify_blob(&good, &roots, SIGNER, now).unwrap().payload,
        PAYLOAD.as_bytes()
    );
    // The root itself at the end of x5c is ignored (it is ours, not the BLOB's).
    let with_root = jwt("ES256", PAYLOAD, &key, &[&leaf, &fido.cert]);
    assert!(verify_blob(&with_root, &roots, SIGNER, now).is_ok());

    // Another root of the same name: the chain does not verify.
    let impostor = root("FIDO test root");
    let (impostor_key, impostor_leaf) = signer(&impostor);
    let forged = jwt("ES256", PAYLOAD, &impostor_key, &[&impostor_leaf]);
    assert!(matches!(
        verify_blob(&forged, &roots, SIGNER, now),
        Err(BlobError::Chain(_))
    ));
    // The right chain, the payload changed after signing.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(r#"{"no": 4, "entries": []}"#);
    assert!(matches!(
        verify_blob(&parts.join("."), &roots, SIGNER, now),
        Err(BlobError::Signature(_))
    ));
    // Signed by a key the certificate does not name.
    let (other_key, _) = signer(&fido);
    let wrong_key = jwt("ES256", PAYLOAD, &other_key, &[&leaf]);
    assert!(matches!(
        verify_blob(&wrong_key, &roots, SIGNER, now),
        Err(BlobError::Signature(_))
    ));
    // The certificates' validity follows the injected clock.
    let later = now + Duration::from_secs(2 * 3600);
    assert!(matches!(
        verify_blob(&good, &roots, SIGNER, later),
        Err(BlobError::Chain(message)) if message.contains("NotAfter")
    ));
}

#[test]
fn only_the_pinned_signer_name_signs_under_the_root() {
    let fido = root("FIDO test root");
    let roots = [fido.cert.clone()];
    let now = SystemTime::now();
    // Anyone who bought a certificate under the (public TLS) root: chain fine, name wrong.
    let (other_key, other_leaf) = named_signer(&fido, "shop.example");
    let forged = jwt("ES256", PAYLOAD, &other_key, &[&other_leaf]);
    let refused = verify_blob(&forged, &roots, SIGNER, now).unwrap_err();
    assert!(
        matches!(&refused, BlobError::SignerName { found, .. } if found.contains("shop.example")),
        "{refused:?}"
    );
    assert_eq!(refused.reason(), "signer_name");
    // The same under the pinned name verifies, and reports the chain's key digests.
    let (key, leaf) = signer(&fido);
    let verified =
        verify_blob(&jwt("ES256", PAYLOAD, &key, &[&leaf]), &roots, SIGNER, now).unwrap();
    assert_eq!(verified.chain_keys.len(), 1);
    assert_eq!(verified.chain_keys[0], key_digest(&leaf).unwrap());
    assert_ne!(verified.chain_keys[0], key_digest(&other_leaf).unwrap());
}

#[test]
fn only_the_algorithms_mds3_allows_and_well_formed_tokens_pass() {
    let fido = root("FIDO test root");
    let (key, leaf) = signer(&fido);
    let roots = [fido.cert.clone()];
    let now = SystemTime::now();
    for alg in ["none", "HS256", "ES384"] {
        let token = jwt(alg, PAYLOAD, &key, &[&leaf]);
        assert_eq!(
            verify_blob(&token, &roots, SIGNER, now),
            Err(BlobError::Algorithm(alg.to_owned()))
        );
    }
    // RS256 / PS256 named over an EC key: the key does not fit the algorithm.
    for alg in ["RS256", "PS256"] {
        let token = jwt(alg, PAYLOAD, &key, &[&leaf]);
        assert!(
            matches!(verify_blob(&token, &roots, SIGNER, now), Err(BlobError::Signature(m)) if m.contains(alg)),
            "{alg}"
        );
    }
    let no_chain = jwt("ES256", PAYLOAD, &key, &[]);
    assert!(matches!(
        verify_blob(&no_chain, &roots, SIGNER, now),
        Err(BlobError::Chain(_))
    ));
    for malformed in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
        assert!(
            matches!(
                verify_blob(malformed, &roots, SIGNER, now),
                Err(BlobError::Malformed(_))
            ),
            "{malformed:?}"
        );
    }
}

#[test]
fn roots_load_from_pem_files_and_sources_parse() {
    let dir = tempfile_dir();
    let first = root("one");
    let second = root("two");
    let pem = format!(
        "{}{}",
        first.cert.to_pem(Default::default()).unwrap(),
        second.cert.to_pem(Default::default()).unwrap()
    );
    let path = dir.join("roots.pem");
    std::fs::write(&path, pem).unwrap();
    assert_eq!(load_roots(&path).unwrap(), vec![first.cert, second.cert]);
    std::fs::write(&path, "nothing here").unwrap();
    assert!(load_roots(&path).unwrap_err().contains("root_ca"));
    assert!(load_roots(&dir.join("missing.pem")).is_err());

    assert_eq!(
        BlobSource::parse("file:///var/lib/mds.jwt").unwrap(),
        BlobSource::File("/var/lib/mds.jwt".into())
    );
    assert_eq!(
        BlobSource::parse("/var/lib/mds.jwt").unwrap(),
        BlobSource::File("/var/lib/mds.jwt".into())
    );
    assert!(matches!(
        BlobSource::parse("https://mds3.fidoalliance.org/").unwrap(),
        BlobSource::Url(_)
    ));
    for bad in ["ftp://x/y", "mds.jwt", "https://"] {
        assert!(BlobSource::parse(bad).is_err(), "{bad}");
    }
    // Plain http is a configuration error: anyone on the path could withhold BLOBs.
    let http = BlobSource::parse("http://mds3.fidoalliance.org/").unwrap_err();
    assert!(http.contains("https"), "{http}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn files_and_http_urls_are_fetched_and_failures_name_the_source() {
    let dir = tempfile_dir();
    let path = dir.join("blob.jwt");
    std::fs::write(&path, "a.b.c").unwrap();
    let file = BlobSource::File(path.clone());
    assert_eq!(file.fetch(Duration::from_secs(5)).await.unwrap(), "a.b.c");
    let missing = BlobSource::File(dir.join("missing.jwt"));
    let error = missing.fetch(Duration::from_secs(5)).await.unwrap_err();
    assert!(error.to_string().contains("missing.jwt"), "{error}");

    // A one-shot HTTP server: a redirect, then the BLOB.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for response in [
            "HTTP/1.1 302 Found\r\nLocation: /blob\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nx.y.z".to_owned(),
        ] {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
        }
    });
    // Built directly: parse refuses http, the download code is the same for https.
    let url = BlobSource::Url(url::Url::parse(&format!("http://{addr}/")).unwrap());
    assert_eq!(url.fetch(Duration::from_secs(5)).await.unwrap(), "x.y.z");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("enroll-mds-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
