//! The app behind the proxies in the gate's tests: it answers every path with what it
//! received (method, path, every header), so a test can see exactly which identity headers
//! and cookies reached the app through a shipped proxy configuration. A browser (Accept
//! text/html) gets the same JSON in `<pre id="echo">`. A WebSocket handshake is accepted
//! on any path: the first message is the echo of the handshake, then every text message
//! comes back.
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The echo app on `127.0.0.1:<port 0>`, served by a task of the test's runtime.
pub struct EchoApp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EchoApp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the echo app");
        let addr = listener.local_addr().expect("echo app address");
        let app = Router::new().fallback(answer);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, task }
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the app received, as JSON: `{"method", "path", "headers": [[name, value], ...]}`
/// (names lowercased, in order, repeated headers repeated).
fn echo(method: &str, path: &str, headers: &HeaderMap) -> Value {
    let headers: Vec<Value> = headers
        .iter()
        .map(|(name, value)| json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())]))
        .collect();
    json!({"method": method, "path": path, "headers": headers})
}

async fn answer(mut request: Request<Body>) -> Response<Body> {
    let path = request
        .uri()
        .path_and_query()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let echoed = echo(request.method().as_str(), &path, request.headers());
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if upgrade {
        return websocket(&mut request, echoed);
    }
    let html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("text/html"));
    let (content_type, body) = if html {
        let text = echoed
            .to_string()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        (
            "text/html; charset=utf-8",
            format!("<!doctype html><title>echo</title><pre id=\"echo\">{text}</pre>"),
        )
    } else {
        ("application/json", echoed.to_string())
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// Accepts a WebSocket handshake (RFC 6455): 101 now, then the echo of the handshake and
/// of every text message on the upgraded connection.
fn websocket(request: &mut Request<Body>, echoed: Value) -> Response<Body> {
    let Some(key) = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()))
    else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::from("no Sec-WebSocket-Key"))
            .unwrap_or_default();
    };
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        if socket
            .send(Message::Text(echoed.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message
                && socket.send(Message::Text(text)).await.is_err()
            {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, key)
        .body(Body::empty())
        .unwrap_or_default()
}

/// Reads an echo (the JSON or the HTML page's `<pre>`).
#[derive(Debug, Clone)]
pub struct Echo(pub Value);

impl Echo {
    pub fn parse(body: &str) -> Self {
        let text = match body.split_once("<pre id=\"echo\">") {
            Some((_, rest)) => rest
                .split_once("</pre>")
                .map(|(json, _)| json)
                .unwrap_or(rest)
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
            None => body.to_owned(),
        };
        Self(
            serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("not the echo app's answer ({error}): {body}")),
        )
    }

    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or_default()
    }

    /// Every value of header `name` (lowercase) the app received.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.0["headers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|pair| pair[0].as_str() == Some(name))
            .filter_map(|pair| pair[1].as_str().map(str::to_owned))
            .collect()
    }

    /// The single value of header `name`, if the app received it.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.headers(name);
        assert!(
            values.len() <= 1,
            "{name} arrived {} times: {values:?}",
            values.len()
        );
        values.into_iter().next()
    }

    /// Everything the app received, as text (to look for a secret anywhere in it).
    pub fn text(&self) -> String {
        self.0.to_string()
    }
}
