//! The device server's enrollment page from a test: its URLs on the real page port, and
//! plain HTTP/1.1 requests to it (what a browser without JavaScript, or a script, sends).
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::TestStack;

/// How long one request to the page may take.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// A response from the page.
#[derive(Debug)]
pub struct PageAnswer {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl PageAnswer {
    /// The body as JSON (the API's answers and errors are JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl TestStack {
    /// The first device server's page port.
    fn page_port(&self) -> u16 {
        self.device()
            .web_addr
            .expect("the device server serves the page")
            .port()
    }

    /// The page's origin; `localhost`, not 127.0.0.1: an IP address is not a valid
    /// relying-party id, and http is a secure context only on localhost.
    pub fn page_origin(&self) -> String {
        format!("http://localhost:{}", self.page_port())
    }

    /// The URL CreateEnrollmentLink returned, moved to the test page's origin: the path,
    /// query and fragment stay exactly as issued (the configured base URL names a fixed
    /// port, the test server listens on port 0).
    pub fn page_url_of(&self, link_url: &str) -> String {
        let mut url = url::Url::parse(link_url).expect("the link URL is a URL");
        url.set_scheme("http").expect("http");
        url.set_host(Some("localhost")).expect("host");
        url.set_port(Some(self.page_port())).expect("port");
        url.to_string()
    }

    /// A deprecated path link (`/enroll/<secret>`) on the test page.
    pub fn legacy_page_url(&self, secret: &str) -> String {
        format!("{}/enroll/{secret}", self.page_origin())
    }

    /// `GET path` on the page.
    pub async fn page_get(&self, path: &str) -> PageAnswer {
        self.page_request("GET", path, None).await
    }

    /// `POST path` with a JSON body on the page.
    pub async fn page_post(&self, path: &str, body: &Value) -> PageAnswer {
        self.page_request("POST", path, Some(body.to_string()))
            .await
    }

    /// `POST path` with a JSON body from the local address `from` (any 127.0.0.0/8 address
    /// on Linux: a second client address without a second host), with extra `headers`
    /// (e.g. `X-Forwarded-For`).
    pub async fn page_post_from(
        &self,
        from: IpAddr,
        headers: &[(&str, &str)],
        path: &str,
        body: &Value,
    ) -> PageAnswer {
        let request = self.page_request_text("POST", path, headers, Some(body.to_string()));
        let stream = self.page_connect_from(from).await;
        exchange(stream, request).await
    }

    async fn page_request(&self, method: &str, path: &str, body: Option<String>) -> PageAnswer {
        let request = self.page_request_text(method, path, &[], body);
        let stream = self.page_connect_from(IpAddr::from([127, 0, 0, 1])).await;
        exchange(stream, request).await
    }

    fn page_request_text(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> String {
        let port = self.page_port();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\
             User-Agent: enroll-e2e\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = &body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body.as_deref().unwrap_or_default());
        request
    }

    /// A blocking connection to the page from the local address `from`.
    pub async fn page_connect_from(&self, from: IpAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the client address");
        let stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], self.page_port())))
            .await
            .expect("connect to the page");
        let stream = stream.into_std().expect("std stream");
        stream.set_nonblocking(false).expect("blocking");
        stream
    }

    /// A blocking connection to the page from 127.0.0.1.
    pub async fn page_connect(&self) -> TcpStream {
        self.page_connect_from(IpAddr::from([127, 0, 0, 1])).await
    }
}

/// Sends `request` and reads the answer to the end (the request says `Connection: close`).
pub(crate) async fn exchange(mut stream: TcpStream, request: String) -> PageAnswer {
    // Blocking std I/O on a blocking thread: a request is a few kilobytes.
    let raw = tokio::task::spawn_blocking(move || {
        stream.set_read_timeout(Some(PAGE_WAIT)).expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read the answer");
        raw
    })
    .await
    .expect("page request");
    parse_answer(&raw)
}

/// Parses a raw HTTP/1.1 answer read from the page.
pub fn parse_page_answer(raw: &[u8]) -> PageAnswer {
    parse_answer(raw)
}

fn parse_answer(raw: &[u8]) -> PageAnswer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    PageAnswer {
        status,
        headers,
        body,
    }
}

/// A chunked body's data (sizes in hex, each chunk followed by CRLF).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}
