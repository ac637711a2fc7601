//! Tests of `events::receiver`. No test sends traffic anywhere but 127.0.0.1: refused
//! targets go through a stub resolver and a recording connector that never connects.
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

#[test]
fn receiver_urls_are_https_or_loopback_http_when_allowed() {
    assert!(ReceiverUrl::parse("https://receiver.example.net/events", false).is_ok());
    assert!(ReceiverUrl::parse("http://receiver.example.net/events", false).is_err());
    assert!(ReceiverUrl::parse("http://receiver.example.net/events", true).is_err());
    assert!(ReceiverUrl::parse("http://localhost:8080/events", false).is_err());
    for loopback in [
        "http://localhost:8080/events",
        "http://LOCALHOST/",
        "http://127.0.0.1:9/",
        "http://127.8.9.10/",
        "http://[::1]:9/",
    ] {
        assert!(ReceiverUrl::parse(loopback, true).is_ok(), "{loopback}");
    }
    assert!(ReceiverUrl::parse("http://10.0.0.1/", true).is_err());
    assert!(ReceiverUrl::parse("ftp://receiver.example.net/", false).is_err());
    assert!(ReceiverUrl::parse("https://user:pw@receiver.example.net/", false).is_err());
    assert!(ReceiverUrl::parse("https://user@receiver.example.net/", false).is_err());
    assert!(ReceiverUrl::parse("not a url", false).is_err());
    assert!(ReceiverUrl::parse("file:///etc/passwd", true).is_err());
}

#[test]
fn vetting_refuses_internal_addresses_and_admits_public_ones() {
    let refused = [
        "169.254.169.254",
        "100.100.100.200",
        "fd00:ec2::254",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "127.0.0.1",
        "127.255.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "0.1.2.3",
        "100.64.0.1",
        "100.127.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",
        "198.18.0.1",
        "192.0.0.8",
        "::",
        "::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:0a00:0001::1",
        "::10.0.0.1",
        "100::1",
        "2001:0:4136:e378::1",
    ];
    for address in refused {
        let ip: IpAddr = address.parse().unwrap();
        assert!(vet(ip, false).is_err(), "{address} should be refused");
    }
    for metadata in ["169.254.169.254", "100.100.100.200", "fd00:ec2::254"] {
        let refusal = vet(metadata.parse().unwrap(), true).unwrap_err();
        assert_eq!(refusal.reason, "a cloud metadata address");
    }
    let admitted = [
        "93.184.216.34",
        "1.1.1.1",
        "8.8.8.8",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:93.184.216.34",
        "64:ff9b::808:808",
    ];
    for address in admitted {
        let ip: IpAddr = address.parse().unwrap();
        assert!(vet(ip, false).is_ok(), "{address} should be admitted");
    }
    // Loopback only when allowed (a development setting); private stays refused.
    for loopback in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
        assert!(vet(loopback.parse().unwrap(), true).is_ok(), "{loopback}");
    }
    assert!(vet("10.0.0.1".parse().unwrap(), true).is_err());
}

/// A resolver answering from a list, recording the names it was asked.
struct StubResolver {
    answers: Vec<SocketAddr>,
    calls: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Resolver for StubResolver {
    async fn resolve(&self, host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
        self.calls.lock().unwrap().push(host.to_owned());
        Ok(self.answers.clone())
    }
}

/// A connector that records the addresses asked and never connects.
#[derive(Default)]
struct RecordingConnector {
    calls: Mutex<Vec<SocketAddr>>,
}

#[async_trait::async_trait]
impl Connector for RecordingConnector {
    async fn connect(&self, address: SocketAddr) -> io::Result<TcpStream> {
        self.calls.lock().unwrap().push(address);
        Err(io::Error::other("the test connector never connects"))
    }
}

fn stubbed(answers: &[&str]) -> (ReceiverClient, Arc<StubResolver>, Arc<RecordingConnector>) {
    let resolver = Arc::new(StubResolver {
        answers: answers.iter().map(|a| a.parse().unwrap()).collect(),
        calls: Mutex::default(),
    });
    let connector = Arc::new(RecordingConnector::default());
    let client = ReceiverClient::with(resolver.clone(), connector.clone()).unwrap();
    (client, resolver, connector)
}

const SECRET_HEADER: &str = "Bearer top-secret-token";
const SECRET_BODY: &[u8] = b"secret-body-bytes";

async fn post_to(client: &ReceiverClient, url: &str) -> Result<Delivered, DeliveryError> {
    let url = ReceiverUrl::parse(url, false).unwrap();
    client
        .post(
            &url,
            &[("authorization", SECRET_HEADER.to_owned())],
            "application/secevent+jwt",
            SECRET_BODY.to_vec(),
            Duration::from_secs(5),
        )
        .await
}

#[tokio::test]
async fn refused_targets_are_never_connected_to() {
    let cases: [&[&str]; 6] = [
        &["10.0.0.5:443"],
        &["169.254.169.254:443"],
        &["[fd00:ec2::254]:443"],
        &["100.100.100.200:443"],
        // DNS rebinding: one public and one private answer refuse the whole name.
        &["93.184.216.34:443", "192.168.0.10:443"],
        &["[::ffff:127.0.0.1]:443", "93.184.216.34:443"],
    ];
    for answers in cases {
        let (client, resolver, connector) = stubbed(answers);
        let error = post_to(&client, "https://receiver.example.net/events")
            .await
            .unwrap_err();
        assert!(
            matches!(error, DeliveryError::Refused(_)),
            "{answers:?}: {error}"
        );
        let message = error.to_string();
        assert!(!message.contains("top-secret") && !message.contains("secret-body"));
        assert_eq!(*resolver.calls.lock().unwrap(), ["receiver.example.net"]);
        assert!(connector.calls.lock().unwrap().is_empty(), "{answers:?}");
    }

    // Address literals: vetted without a resolution, never connected to.
    for literal in [
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://10.0.0.1:8443/",
        "https://[fe80::1]/",
        "https://127.0.0.1/",
    ] {
        let (client, resolver, connector) = stubbed(&["93.184.216.34:443"]);
        let error = post_to(&client, literal).await.unwrap_err();
        assert!(
            matches!(error, DeliveryError::Refused(_)),
            "{literal}: {error}"
        );
        assert!(resolver.calls.lock().unwrap().is_empty());
        assert!(connector.calls.lock().unwrap().is_empty(), "{literal}");
    }

    // No address at all: refused before connecting.
    let (client, _, connector) = stubbed(&[]);
    let error = post_to(&client, "https://receiver.example.net/")
        .await
        .unwrap_err();
    assert!(matches!(error, DeliveryError::Resolve { .. }), "{error}");
    assert!(connector.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_vetted_name_connects_to_its_first_address_without_resolving_again() {
    let (client, resolver, connector) = stubbed(&["93.184.216.34:443", "93.184.216.35:443"]);
    let error = post_to(&client, "https://receiver.example.net/events")
        .await
        .unwrap_err();
    assert!(matches!(error, DeliveryError::Connect { .. }), "{error}");
    assert_eq!(resolver.calls.lock().unwrap().len(), 1);
    assert_eq!(
        *connector.calls.lock().unwrap(),
        ["93.184.216.34:443".parse::<SocketAddr>().unwrap()]
    );
    let message = error.to_string();
    assert!(!message.contains("top-secret") && !message.contains("secret-body"));
}

/// One request as the test receiver read it.
#[derive(Debug, Default, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// A receiver on 127.0.0.1 answering every connection with `response` (or never, when
/// None), recording requests and counting connections.
struct TestReceiver {
    port: u16,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn test_receiver(response: Option<&'static str>) -> TestReceiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (accepted.clone(), received.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            tokio::spawn(async move {
                let request = read_request(&mut stream).await;
                log.lock().unwrap().push(request);
                match response {
                    Some(response) => {
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    TestReceiver {
        port,
        accepted,
        received,
    }
}

async fn read_request(stream: &mut TcpStream) -> Received {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            let body = buffer[end + 4..].to_vec();
            return Received { head, body };
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Received::default(),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn post_loopback(
    receiver: &TestReceiver,
    timeout: Duration,
) -> Result<Delivered, DeliveryError> {
    let url = ReceiverUrl::parse(
        &format!("http://127.0.0.1:{}/hooks/enroll?x=1", receiver.port),
        true,
    )
    .unwrap();
    ReceiverClient::new()
        .unwrap()
        .post(
            &url,
            &[
                ("webhook-id", "evt-1".to_owned()),
                ("webhook-timestamp", "1700000000".to_owned()),
            ],
            "application/json",
            br#"{"type":"device.registered"}"#.to_vec(),
            timeout,
        )
        .await
}

#[tokio::test]
async fn a_loopback_receiver_gets_the_request_and_its_answer_comes_back() {
    let receiver = test_receiver(Some(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ))
    .await;
    let delivered = post_loopback(&receiver, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        delivered,
        Delivered {
            status: 200,
            retry_after: None,
            body_snippet: "ok".to_owned()
        }
    );
    assert!(delivered.is_success());
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let head = received[0].head.to_ascii_lowercase();
    assert!(
        head.starts_with("post /hooks/enroll?x=1 http/1.1"),
        "{head}"
    );
    assert!(head.contains(&format!("host: 127.0.0.1:{}", receiver.port)));
    assert!(head.contains("content-type: application/json"));
    assert!(head.contains("webhook-id: evt-1"));
    assert!(head.contains("webhook-timestamp: 1700000000"));
    assert_eq!(received[0].body, br#"{"type":"device.registered"}"#);
}

#[tokio::test]
async fn retry_after_seconds_come_back_and_the_snippet_is_bounded() {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 120\r\nconnection: close\r\n\r\n{}{}",
        "x".repeat(SNIPPET_BYTES),
        "y".repeat(3000)
    );
    let receiver = test_receiver(Some(Box::leak(response.into_boxed_str()))).await;
    let delivered = post_loopback(&receiver, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(delivered.status, 503);
    assert!(!delivered.is_success());
    assert_eq!(delivered.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(delivered.body_snippet.len(), SNIPPET_BYTES);
    assert!(delivered.body_snippet.chars().all(|c| c == 'x'));
}

#[tokio::test]
async fn a_redirect_is_a_status_and_is_not_followed() {
    let receiver = test_receiver(Some(
        "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ))
    .await;
    let delivered = post_loopback(&receiver, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(delivered.status, 302);
    // Following it would reach this same receiver again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(receiver.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(receiver.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_or_reserved_headers_are_refused_without_telling_their_values() {
    let receiver = test_receiver(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let url = ReceiverUrl::parse(&format!("http://127.0.0.1:{}/", receiver.port), true).unwrap();
    let client = ReceiverClient::new().unwrap();
    for header in [
        ("authorization", "Bearer top-secret\r\nx: y".to_owned()),
        ("host", "internal.example".to_owned()),
        ("bad name", "v".to_owned()),
    ] {
        let error = client
            .post(
                &url,
                &[header],
                "application/json",
                Vec::new(),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Http(_)), "{error}");
        assert!(!error.to_string().contains("top-secret"));
        assert!(!error.to_string().contains("internal.example"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(receiver.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_silent_receiver_times_out() {
    let receiver = test_receiver(None).await;
    let started = std::time::Instant::now();
    let error = post_loopback(&receiver, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(error, DeliveryError::Timeout(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(receiver.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed() {
    let receiver = test_receiver(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    // https to a loopback literal without the development setting: refused before any
    // connection.
    let url = ReceiverUrl::parse(&format!("https://127.0.0.1:{}/", receiver.port), false).unwrap();
    let error = ReceiverClient::new()
        .unwrap()
        .post(
            &url,
            &[],
            "application/json",
            Vec::new(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, DeliveryError::Refused(_)), "{error}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(receiver.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn retry_after_is_seconds_or_an_http_date() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_400); // 2015-10-21T07:26:40Z
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
        Some(Duration::from_secs(80))
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
        Some(Duration::ZERO),
        "a past date: no delay"
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("-5", now), None);
}

/// A resolver that sends every name to one loopback address (for the TLS tests).
struct LoopbackResolver(SocketAddr);

#[async_trait::async_trait]
impl Resolver for LoopbackResolver {
    async fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![self.0])
    }
}

/// An https receiver on 127.0.0.1 with a certificate for `receiver.test` under a test CA
/// (testdata/tls-*.der); answers 204 to every request it completes.
async fn tls_receiver() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let certificate = CertificateDer::from(include_bytes!("testdata/tls-receiver.der").to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        include_bytes!("testdata/tls-receiver.key.der").to_vec(),
    ));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (address, served)
}

fn test_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(tokio_rustls::rustls::pki_types::CertificateDer::from(
            include_bytes!("testdata/tls-ca.der").to_vec(),
        ))
        .unwrap();
    roots
}

#[tokio::test]
async fn https_checks_the_certificate_against_the_host_name() {
    let (address, served) = tls_receiver().await;
    let resolver = Arc::new(LoopbackResolver(address));
    let client =
        ReceiverClient::with_roots(resolver.clone(), Arc::new(TcpConnector), test_roots()).unwrap();
    let post = |host: &'static str, client: ReceiverClient| async move {
        // Loopback allowed (the development setting) so the test receiver may be reached.
        let url =
            ReceiverUrl::parse(&format!("https://{host}:{}/ssf", address.port()), true).unwrap();
        client
            .post(
                &url,
                &[],
                "application/secevent+jwt",
                b"x".to_vec(),
                Duration::from_secs(5),
            )
            .await
    };
    let delivered = post("receiver.test", client.clone()).await.unwrap();
    assert_eq!(delivered.status, 204);
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Another name on the same address: the certificate does not match.
    let error = post("other.test", client).await.unwrap_err();
    assert!(matches!(error, DeliveryError::Tls { .. }), "{error}");
    // The public roots do not know the test CA.
    let public = ReceiverClient::with(resolver, Arc::new(TcpConnector)).unwrap();
    let error = post("receiver.test", public).await.unwrap_err();
    assert!(matches!(error, DeliveryError::Tls { .. }), "{error}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

/// A receiver answering 200 to every request on a connection, keeping it open; with
/// `close_after_one`, it closes each connection after its first answer without saying so
/// (as a receiver's idle timeout does).
async fn keep_alive_receiver(close_after_one: bool) -> TestReceiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (accepted.clone(), received.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let request = read_request(&mut stream).await;
                    if request.head.is_empty() {
                        return;
                    }
                    log.lock().unwrap().push(request);
                    let answer = "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer.as_bytes()).await.is_err() || close_after_one {
                        return;
                    }
                }
            });
        }
    });
    TestReceiver {
        port,
        accepted,
        received,
    }
}

async fn post_with(client: &ReceiverClient, receiver: &TestReceiver) -> Delivered {
    let url =
        ReceiverUrl::parse(&format!("http://127.0.0.1:{}/hook", receiver.port), true).unwrap();
    client
        .post(
            &url,
            &[],
            "application/json",
            b"{}".to_vec(),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn deliveries_reuse_a_kept_alive_connection() {
    let receiver = keep_alive_receiver(false).await;
    let client = ReceiverClient::new().unwrap();
    for _ in 0..5 {
        assert_eq!(post_with(&client, &receiver).await.status, 202);
    }
    assert_eq!(receiver.received.lock().unwrap().len(), 5);
    assert_eq!(receiver.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_receiver_closed_is_replaced_and_the_request_goes_again() {
    let receiver = keep_alive_receiver(true).await;
    let client = ReceiverClient::new().unwrap();
    for _ in 0..3 {
        // Let the close reach the client, or race it: either way the request is answered.
        assert_eq!(post_with(&client, &receiver).await.status, 202);
    }
    assert_eq!(receiver.received.lock().unwrap().len(), 3);
    assert_eq!(receiver.accepted.load(Ordering::SeqCst), 3);
}
