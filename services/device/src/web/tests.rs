//! The page's HTTP layer over a fake registrar: routes, headers, input checks, the actor,
//! and error mapping.
use super::error::code_name;
use super::*;
use crate::domain::devices::{Device, DeviceKind, DeviceState};
use crate::domain::names::{Realm, UserName};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Mutex;
use tower::ServiceExt;

/// A secret in the shape this service issues.
fn secret() -> String {
    URL_SAFE_NO_PAD.encode([7u8; 32])
}

const CEREMONY: &str = "0b6c3e43-6f4c-4a40-9a4e-2f0f1f6f6a11";

/// A use case error, its HTTP status and its gRPC code.
type ErrorCase = (fn() -> DeviceError, StatusCode, Code);

/// Records what the page asked and answers with canned results.
#[derive(Default)]
struct Fake {
    begins: Mutex<Vec<(String, Actor)>>,
    finishes: Mutex<Vec<(Actor, String, String, String)>>,
    fail_with: Option<fn() -> DeviceError>,
}

#[async_trait::async_trait]
impl Registrar for Fake {
    async fn begin(
        &self,
        actor: &Actor,
        secret: LinkSecret,
    ) -> Result<RegistrationChallenge, DeviceError> {
        self.begins
            .lock()
            .unwrap()
            .push((secret.expose().to_owned(), actor.clone()));
        if let Some(error) = self.fail_with {
            return Err(error());
        }
        Ok(RegistrationChallenge {
            ceremony_id: "c1".into(),
            options_json: r#"{"publicKey":{"challenge":"AAEC"}}"#.into(),
            expire_time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            realm: Realm::parse("acme").unwrap(),
            user: UserName::parse("alice").unwrap(),
            kind: DeviceKind::EnclaveOnly,
        })
    }

    async fn finish(
        &self,
        actor: &Actor,
        ceremony_id: &str,
        credential_json: String,
        user_agent: &str,
    ) -> Result<RegisteredDevice, DeviceError> {
        self.finishes.lock().unwrap().push((
            actor.clone(),
            ceremony_id.to_owned(),
            credential_json,
            user_agent.to_owned(),
        ));
        if let Some(error) = self.fail_with {
            return Err(error());
        }
        Ok(RegisteredDevice {
            device: Device {
                id: "d1".into(),
                realm: Realm::parse("acme").unwrap(),
                user: UserName::parse("alice").unwrap(),
                credential_id: "cred".into(),
                kind: DeviceKind::Any,
                state: DeviceState::Approved,
                aaguid: String::new(),
                backup_eligible: false,
                user_agent: user_agent.to_owned(),
                enrollment_link_id: Some("l1".into()),
                create_time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                last_used_time: None,
                approved_by: "admin".into(),
                model: String::new(),
                certification_level: String::new(),
                attestation_format: String::new(),
                attestation_root: None,
                aaguid_verified: false,
                model_compromise: None,
            },
            redirect_url: "https://app.example/".into(),
        })
    }
}

fn app(fake: Arc<Fake>) -> Router {
    let settings = PageSettings::from_config(&crate::config::WebConfig::default())
        .expect("the default settings are valid");
    router(fake, None, None, &settings, Duration::from_secs(5))
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

fn get(uri: &str) -> http::Request<Body> {
    http::Request::get(uri).body(Body::empty()).unwrap()
}

fn post_json(uri: &str, body: &str) -> http::Request<Body> {
    http::Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "TestBrowser/1.0")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn page_actor() -> Actor {
    Actor {
        name: PAGE_CALLER.into(),
        client_ip: Some("192.0.2.7".parse().unwrap()),
    }
}

#[tokio::test]
async fn page_is_static_and_carries_the_security_headers() {
    // `/enroll` and `/enroll/` for fragment links, `/enroll/<secret>` for deprecated ones.
    let legacy = format!("/enroll/{}", secret());
    for uri in ["/enroll", "/enroll/", legacy.as_str()] {
        let (status, headers, body) = send(app(Arc::default()), get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let body = String::from_utf8(body).unwrap();
        assert_eq!(body, PAGE, "the same static page for {uri}");
        assert!(!body.contains(&secret()), "the secret is not templated");
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
}

#[test]
fn the_script_takes_the_secret_from_the_fragment_and_removes_it_first() {
    // A cheap guard on the order that matters: the secret is taken and the address bar
    // cleaned before anything else runs (the browser test checks the behaviour).
    let take = SCRIPT
        .find("const LINK_SECRET = takeLinkSecret();")
        .unwrap();
    let first_fetch = SCRIPT.find("fetch(").unwrap();
    let first_element = SCRIPT.find("document.getElementById").unwrap();
    assert!(take < first_element && take < first_fetch);
    assert!(SCRIPT.contains("location.hash"));
    assert!(SCRIPT.contains("history.replaceState"));
}

#[tokio::test]
async fn begin_calls_the_use_case_as_the_page_with_the_link_secret() {
    let fake = Arc::new(Fake::default());
    let body = format!(r#"{{"secret":"{}"}}"#, secret());
    let (status, _, answer) = send(app(fake.clone()), post_json("/enroll/api/begin", &body)).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["ceremony_id"], "c1");
    assert_eq!(answer["options"]["publicKey"]["challenge"], "AAEC");
    assert_eq!(answer["realm"], "acme");
    assert_eq!(answer["user"], "alice");
    assert_eq!(answer["device_type"], "enclave_only");
    assert_eq!(answer["expire_time"], "2023-11-14T22:13:20+00:00");
    let begins = fake.begins.lock().unwrap();
    assert_eq!(*begins, vec![(secret(), page_actor())]);
}

#[tokio::test]
async fn begin_takes_only_a_well_formed_link_secret() {
    let valid = secret();
    for (body, http, code) in [
        // No self-service through the page: a realm or user is refused, not ignored.
        (
            format!(r#"{{"secret":"{valid}","realm":"acme","user":"alice"}}"#),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            r#"{"realm":"acme","user":"alice"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            r#"{"secret":"  "}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        // Malformed: like an unknown link, and never echoed.
        (
            r#"{"secret":"not-a-secret-XYZ"}"#.to_owned(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
    ] {
        let fake = Arc::new(Fake::default());
        let (status, _, answer) =
            send(app(fake.clone()), post_json("/enroll/api/begin", &body)).await;
        assert_eq!(status, http, "{body}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["code"], code, "{body}");
        let message = answer["message"].as_str().unwrap();
        assert!(!message.contains("not-a-secret-XYZ"), "{message}");
        assert!(!message.contains(&valid), "{message}");
        assert!(fake.begins.lock().unwrap().is_empty(), "{body}");
    }
}

#[tokio::test]
async fn finish_passes_the_credential_and_user_agent() {
    let fake = Arc::new(Fake::default());
    let body =
        format!(r#"{{"ceremony_id":"{CEREMONY}","credential":{{"id":"x","type":"public-key"}}}}"#);
    let (status, _, answer) = send(app(fake.clone()), post_json("/enroll/api/finish", &body)).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["device"]["id"], "d1");
    assert_eq!(answer["device"]["state"], "approved");
    assert_eq!(answer["device"]["device_type"], "any");
    assert_eq!(answer["redirect_url"], "https://app.example/");
    let finishes = fake.finishes.lock().unwrap();
    let (actor, ceremony_id, credential, user_agent) = &finishes[0];
    assert_eq!(*actor, page_actor());
    assert_eq!(ceremony_id, CEREMONY);
    assert_eq!(user_agent, "TestBrowser/1.0");
    let credential: Value = serde_json::from_str(credential).unwrap();
    assert_eq!(credential["type"], "public-key");
}

#[tokio::test]
async fn finish_checks_its_input_before_the_use_case() {
    for body in [
        r#"{"ceremony_id":"c1","credential":{"id":"x"}}"#.to_owned(),
        format!(r#"{{"ceremony_id":"{CEREMONY}","credential":null}}"#),
    ] {
        let fake = Arc::new(Fake::default());
        let (status, _, answer) =
            send(app(fake.clone()), post_json("/enroll/api/finish", &body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["code"], "INVALID_ARGUMENT");
        assert!(fake.finishes.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn use_case_errors_map_to_http_statuses_with_json() {
    let cases: [ErrorCase; 7] = [
        (
            || DeviceError::FailedPrecondition("this enrollment link was already used".into()),
            StatusCode::CONFLICT,
            Code::FailedPrecondition,
        ),
        (
            || DeviceError::NotFound("enrollment link".into()),
            StatusCode::NOT_FOUND,
            Code::NotFound,
        ),
        (
            || DeviceError::invalid("credential_json", "not JSON"),
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
        ),
        (
            || DeviceError::Refused {
                reason: "WEBAUTHN_VERIFICATION_FAILED",
                message: "verification failed".into(),
            },
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
        ),
        (
            || DeviceError::RateLimited("too many attempts".into()),
            StatusCode::TOO_MANY_REQUESTS,
            Code::ResourceExhausted,
        ),
        (
            || DeviceError::Unavailable("policy service unreachable".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
        ),
        (
            || DeviceError::corrupt("ceremony `c1`", "bad realm"),
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
        ),
    ];
    let begin = format!(r#"{{"secret":"{}"}}"#, secret());
    let finish = format!(r#"{{"ceremony_id":"{CEREMONY}","credential":{{}}}}"#);
    for (error, http, code) in cases {
        for (uri, body) in [
            ("/enroll/api/begin", &begin),
            ("/enroll/api/finish", &finish),
        ] {
            let fake = Arc::new(Fake {
                fail_with: Some(error),
                ..Default::default()
            });
            let (status, headers, answer) = send(app(fake), post_json(uri, body)).await;
            assert_eq!(status, http, "{code:?} {uri}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            let answer: Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(answer["code"], code_name(code));
            let message = answer["message"].as_str().unwrap();
            if http == StatusCode::INTERNAL_SERVER_ERROR {
                assert!(!message.contains("ceremony"), "internal details hidden");
            } else {
                assert_eq!(message, Status::from(error()).message());
            }
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
