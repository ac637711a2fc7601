//! The device service's own enrollment page, served over HTTP at the URL an enrollment link
//! carries: a static HTML page and script that run `navigator.credentials.create` through
//! two JSON endpoints wrapping BeginDeviceRegistration and FinishDeviceRegistration.
//!
//! The endpoints call the gRPC implementation in process, so the page gets exactly the
//! rules, policy checks and audit trail of a gRPC caller, without needing an API key of its
//! own: the link secret is the credential, and the page acts as a proxy-role caller.
//!
//! The URL path holds the link secret (a bearer credential). Nothing here logs request
//! paths or bodies, the page is never cached, and it sends no Referer anywhere.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use enroll_shared::auth::{Caller, Role};
use enroll_shared::proto::device::v1 as pb;
use pb::device_service_server::DeviceService;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::{Code, Status};

mod api;
mod error;

use api::{begin, finish};
use error::WebError;

const PAGE: &str = include_str!("enroll.html");
const SCRIPT: &str = include_str!("enroll.js");
const STYLE: &str = include_str!("enroll.css");

/// The caller name the page's in-process calls carry (audit events name it as the actor).
pub const PAGE_CALLER: &str = "enrollment-page";

/// Requests are small JSON documents; a credential with its attestation certificates is a
/// few kilobytes. The limit keeps an anonymous endpoint from buffering large bodies.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Script, styles and API calls from this origin only; nothing inline, no framing (the page
/// triggers a credential ceremony, so it must not be clickjacked), no form posts elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The two RPCs the page wraps. A seam so the HTTP layer is testable without a database;
/// every gRPC implementation of the service provides it.
#[async_trait::async_trait]
pub trait Registrar: Send + Sync + 'static {
    async fn begin(
        &self,
        request: tonic::Request<pb::BeginDeviceRegistrationRequest>,
    ) -> Result<tonic::Response<pb::BeginDeviceRegistrationResponse>, Status>;

    async fn finish(
        &self,
        request: tonic::Request<pb::FinishDeviceRegistrationRequest>,
    ) -> Result<tonic::Response<pb::FinishDeviceRegistrationResponse>, Status>;
}

#[async_trait::async_trait]
impl<T: DeviceService> Registrar for T {
    async fn begin(
        &self,
        request: tonic::Request<pb::BeginDeviceRegistrationRequest>,
    ) -> Result<tonic::Response<pb::BeginDeviceRegistrationResponse>, Status> {
        DeviceService::begin_device_registration(self, request).await
    }

    async fn finish(
        &self,
        request: tonic::Request<pb::FinishDeviceRegistrationRequest>,
    ) -> Result<tonic::Response<pb::FinishDeviceRegistrationResponse>, Status> {
        DeviceService::finish_device_registration(self, request).await
    }
}

struct WebState<R> {
    registrar: Arc<R>,
    /// The deadline of one in-process call, like the gRPC server's request timeout (the
    /// in-process call does not pass through that server's timeout layer).
    timeout: Duration,
}

impl<R> Clone for WebState<R> {
    fn clone(&self) -> Self {
        Self {
            registrar: self.registrar.clone(),
            timeout: self.timeout,
        }
    }
}

/// The enrollment page's routes. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the client address goes into the
/// policy decision.
pub fn router<R: Registrar>(registrar: Arc<R>, timeout: Duration) -> Router {
    Router::new()
        .route("/enroll/{secret}", get(page))
        .route("/enroll/assets/enroll.js", get(script))
        .route("/enroll/assets/enroll.css", get(style))
        .route("/enroll/api/begin", post(begin::<R>))
        .route("/enroll/api/finish", post(finish::<R>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(WebState { registrar, timeout })
}

/// Serves the page on `listener` until `stop` turns true (or its sender goes away, which
/// means the gRPC server is gone), then lets in-flight requests finish.
pub async fn serve<R: Registrar>(
    listener: tokio::net::TcpListener,
    registrar: Arc<R>,
    timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(registrar, timeout);
    let stopped = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "enrollment page listening");
    }
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped)
    .await;
    if let Err(error) = served {
        tracing::error!(%error, "enrollment page server failed");
    }
}

/// Headers every response carries, errors included.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    // The page URL and the API answers are tied to one secret and one ceremony: no cache
    // (browser or shared) may keep them.
    set(headers, header::CACHE_CONTROL, "no-store");
    // The URL holds the link secret: never send it to another site (redirect, subresource).
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    response
}

/// The page itself; it reads the secret from `location.pathname`, so the secret is never
/// templated into HTML.
async fn page() -> Response {
    static_asset(PAGE, "text/html; charset=utf-8")
}

async fn script() -> Response {
    static_asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    static_asset(STYLE, "text/css; charset=utf-8")
}

fn static_asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn not_found() -> Response {
    WebError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such page").into_response()
}

#[cfg(test)]
mod tests {
    use super::error::code_name;
    use super::*;
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use std::sync::Mutex;
    use tower::ServiceExt;

    /// Records what the page sent and answers with canned results.
    #[derive(Default)]
    struct Fake {
        begins: Mutex<Vec<(pb::BeginDeviceRegistrationRequest, Option<Caller>)>>,
        finishes: Mutex<Vec<pb::FinishDeviceRegistrationRequest>>,
        fail_with: Option<Code>,
    }

    #[async_trait::async_trait]
    impl Registrar for Fake {
        async fn begin(
            &self,
            request: tonic::Request<pb::BeginDeviceRegistrationRequest>,
        ) -> Result<tonic::Response<pb::BeginDeviceRegistrationResponse>, Status> {
            let caller = request.extensions().get::<Caller>().cloned();
            self.begins
                .lock()
                .unwrap()
                .push((request.into_inner(), caller));
            if let Some(code) = self.fail_with {
                return Err(Status::new(code, "this enrollment link was already used"));
            }
            Ok(tonic::Response::new(pb::BeginDeviceRegistrationResponse {
                ceremony_id: "c1".into(),
                creation_options_json: r#"{"publicKey":{"challenge":"AAEC"}}"#.into(),
                expire_time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                realm: "acme".into(),
                user: "alice".into(),
                device_type: pb::DeviceType::EnclaveOnly as i32,
            }))
        }

        async fn finish(
            &self,
            request: tonic::Request<pb::FinishDeviceRegistrationRequest>,
        ) -> Result<tonic::Response<pb::FinishDeviceRegistrationResponse>, Status> {
            self.finishes.lock().unwrap().push(request.into_inner());
            Ok(tonic::Response::new(pb::FinishDeviceRegistrationResponse {
                device: Some(pb::Device {
                    id: "d1".into(),
                    credential_id: "cred".into(),
                    device_type: pb::DeviceType::Any as i32,
                    state: pb::DeviceState::Approved as i32,
                    ..Default::default()
                }),
                redirect_url: "https://app.example/".into(),
            }))
        }
    }

    fn app(fake: Arc<Fake>) -> Router {
        router(fake, Duration::from_secs(5))
            .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 7], 4711))))
    }

    async fn send(app: Router, request: http::Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    fn post_json(uri: &str, body: &str) -> http::Request<Body> {
        http::Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "TestBrowser/1.0")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn page_is_static_and_carries_the_security_headers() {
        let request = http::Request::get("/enroll/s3cr3t-value")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = send(app(Arc::default()), request).await;
        assert_eq!(status, StatusCode::OK);
        let body = String::from_utf8(body).unwrap();
        assert!(
            !body.contains("s3cr3t-value"),
            "the secret is not templated"
        );
        assert!(body.contains(r#"src="/enroll/assets/enroll.js""#));
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }

    #[tokio::test]
    async fn begin_calls_the_rpc_as_the_page_with_the_peer_address() {
        let fake = Arc::new(Fake::default());
        let (status, _, body) = send(
            app(fake.clone()),
            post_json("/enroll/api/begin", r#"{"secret":"abc"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["ceremony_id"], "c1");
        assert_eq!(answer["options"]["publicKey"]["challenge"], "AAEC");
        assert_eq!(answer["realm"], "acme");
        assert_eq!(answer["user"], "alice");
        assert_eq!(answer["device_type"], "enclave_only");
        assert_eq!(answer["expire_time"], "2023-11-14T22:13:20+00:00");
        let begins = fake.begins.lock().unwrap();
        let (request, caller) = &begins[0];
        assert_eq!(request.link_secret, "abc");
        assert_eq!(request.client_ip, "192.0.2.7");
        assert_eq!(
            caller.as_ref(),
            Some(&Caller {
                name: PAGE_CALLER.into(),
                role: Role::Proxy
            })
        );
    }

    #[tokio::test]
    async fn finish_passes_the_credential_and_user_agent() {
        let fake = Arc::new(Fake::default());
        let (status, _, body) = send(
            app(fake.clone()),
            post_json(
                "/enroll/api/finish",
                r#"{"ceremony_id":"c1","credential":{"id":"x","type":"public-key"}}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["device"]["id"], "d1");
        assert_eq!(answer["device"]["state"], "approved");
        assert_eq!(answer["device"]["device_type"], "any");
        assert_eq!(answer["redirect_url"], "https://app.example/");
        let finishes = fake.finishes.lock().unwrap();
        assert_eq!(finishes[0].ceremony_id, "c1");
        assert_eq!(finishes[0].user_agent, "TestBrowser/1.0");
        assert_eq!(finishes[0].client_ip, "192.0.2.7");
        let credential: Value = serde_json::from_str(&finishes[0].credential_json).unwrap();
        assert_eq!(credential["type"], "public-key");
    }

    #[tokio::test]
    async fn rpc_errors_map_to_http_statuses_with_json() {
        for (code, http) in [
            (Code::FailedPrecondition, StatusCode::CONFLICT),
            (Code::NotFound, StatusCode::NOT_FOUND),
            (Code::InvalidArgument, StatusCode::BAD_REQUEST),
            (Code::PermissionDenied, StatusCode::FORBIDDEN),
            (Code::ResourceExhausted, StatusCode::TOO_MANY_REQUESTS),
            (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let fake = Arc::new(Fake {
                fail_with: Some(code),
                ..Default::default()
            });
            let (status, headers, body) = send(
                app(fake),
                post_json("/enroll/api/begin", r#"{"secret":"abc"}"#),
            )
            .await;
            assert_eq!(status, http, "{code:?}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            let answer: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["code"], code_name(code));
            let message = answer["message"].as_str().unwrap();
            if http == StatusCode::INTERNAL_SERVER_ERROR {
                assert!(!message.contains("already used"), "internal details hidden");
            } else {
                assert_eq!(message, "this enrollment link was already used");
            }
        }
    }

    #[tokio::test]
    async fn malformed_bodies_are_invalid_argument() {
        let (status, _, body) = send(
            app(Arc::default()),
            post_json("/enroll/api/begin", r#"{"nope":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["code"], "INVALID_ARGUMENT");
    }
}
