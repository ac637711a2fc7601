//! What the event delivery tests share: the reference receiver (PyJWT and
//! `standardwebhooks`) set up for the stack's issuer and the CAEP audience, a webhook
//! stream to it, and a token enrollment that makes one event.
use enroll_e2e::{DeviceClient, PythonReceiver, ReceiverOptions, TestStack};
use enroll_shared::proto::device::v1 as pb;

/// The tokens' issuer in the test stacks: the origin of the enrollment base URL.
pub const ISSUER: &str = "http://localhost:8080";
/// The CAEP streams' audience in these tests.
pub const AUDIENCE: &str = "https://receiver.test/caep";

/// The reference receiver, verifying tokens against the stack's published JWKS.
pub fn reference_receiver(stack: &TestStack) -> PythonReceiver {
    PythonReceiver::start(ReceiverOptions {
        jwks_url: format!("{}{}", stack.page_origin(), enroll_device::web::JWKS_PATH),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        webhook_secrets: Vec::new(),
    })
}

/// A webhook stream `name` to the receiver's `/webhook`, whose secret the receiver then
/// verifies with.
pub async fn webhook_stream(
    admin: &mut DeviceClient,
    receiver: &PythonReceiver,
    name: &str,
) -> pb::EventStream {
    let created = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: name.into(),
            encoding: pb::EventEncoding::Webhook as i32,
            endpoint: receiver.url("/webhook"),
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    receiver.set_webhook_secrets(&[&created.secret]).await;
    created.stream.unwrap()
}

/// Enrolls an HOTP token for `realm`/`user` (a `token.enrolled` event); its serial.
pub async fn enroll_hotp(admin: &mut DeviceClient, realm: &str, user: &str) -> String {
    admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: realm.into(),
            user: user.into(),
            r#type: pb::TokenType::Hotp as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .serial
}
