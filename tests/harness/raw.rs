//! A gRPC call written by hand over HTTP/2: any request body and any headers, with none of
//! a gRPC client's own behaviour (tonic's client, for one, enforces `grpc-timeout` itself
//! and answers CANCELLED before the server's answer arrives).
use enroll_shared::auth::Role;
use tonic::Status;

use crate::{RunningServer, key_for};

/// Calls `path` (e.g. `/enroll.device.v1.DeviceService/GetToken`) on a plaintext `server`
/// as `role`, with `message` framed as one uncompressed gRPC message and `grpc-timeout`
/// when given (e.g. `"150m"`). Returns the server's status (code OK on success).
pub async fn raw_unary(
    server: &RunningServer,
    role: Role,
    path: &str,
    message: &[u8],
    grpc_timeout: Option<&str>,
) -> Status {
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = http::Request::post(format!("http://{}{path}", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", key_for(role)));
    if let Some(timeout) = grpc_timeout {
        request = request.header("grpc-timeout", timeout);
    }
    let request = request.body(()).expect("request");
    let mut client = client.ready().await.expect("stream");
    let (response, mut body) = client.send_request(request, false).expect("send");
    let length = u32::try_from(message.len()).expect("message under 4 GiB");
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(message);
    body.send_data(frame.into(), true).expect("send body");

    let response = response.await.expect("response");
    // Trailers-only (an error before any message) carries the status in the headers.
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let mut answer = response.into_body();
    while let Some(data) = answer.data().await {
        let data = data.expect("response data");
        let _ = answer.flow_control().release_capacity(data.len());
    }
    let trailers = answer.trailers().await.expect("trailers");
    trailers
        .as_ref()
        .and_then(Status::from_header_map)
        .unwrap_or_else(|| Status::unknown("no grpc-status in the response"))
}
