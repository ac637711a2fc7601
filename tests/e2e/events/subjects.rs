//! How CAEP streams name users (RFC 9493 subject identifiers), checked by PyJWT at the
//! reference receiver: `iss_sub` by default, `opaque` on request, and `email` only for users
//! of realms the service maps to a mail domain (others keep `iss_sub`: a receiver is never
//! sent a made-up address). Webhook streams take no subject format.
use std::time::Duration;

use enroll_e2e::{Backend, DeviceClient, TestStack, accepted, python_receiver_or_skip};
use enroll_shared::proto::device::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;

use super::support::{AUDIENCE, ISSUER, enroll_hotp, reference_receiver};

async fn caep_stream(
    admin: &mut DeviceClient,
    name: &str,
    endpoint: String,
    format: pb::EventSubjectFormat,
) -> Result<pb::EventStream, tonic::Status> {
    admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: name.into(),
            encoding: pb::EventEncoding::CaepPush as i32,
            endpoint,
            audience: AUDIENCE.into(),
            subject_format: format as i32,
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .map(|response| response.into_inner().stream.unwrap())
}

async fn subjects_are_iss_sub_opaque_or_mapped_email(backend: Backend) {
    if python_receiver_or_skip("events::subjects::formats").is_none() {
        return;
    }
    let stack = TestStack::builder(backend)
        .device_config(|config| {
            config
                .events
                .realm_email_domains
                .insert("Corp".into(), "Example.COM".into());
        })
        .start()
        .await;
    let receiver = reference_receiver(&stack);
    let mut admin = stack.admin();
    let email = caep_stream(
        &mut admin,
        "idp-email",
        receiver.url("/caep"),
        pb::EventSubjectFormat::Email,
    )
    .await
    .unwrap();
    assert_eq!(email.subject_format, pb::EventSubjectFormat::Email as i32);
    caep_stream(
        &mut admin,
        "idp-opaque",
        receiver.url("/caep"),
        pb::EventSubjectFormat::Opaque,
    )
    .await
    .unwrap();
    enroll_hotp(&mut admin, "corp", "alice").await;
    enroll_hotp(&mut admin, "lab", "bob").await;
    let log = receiver
        .wait_for(
            |log| accepted(log, "set").len() == 4,
            Duration::from_secs(30),
        )
        .await;
    let mut seen: Vec<Value> = accepted(&log, "set")
        .iter()
        .map(|entry| entry["claims"]["sub_id"].clone())
        .collect();
    seen.sort_by_key(|sub| sub.to_string());
    let mut expected = vec![
        json!({"format": "email", "email": "alice@example.com"}),
        json!({"format": "iss_sub", "iss": ISSUER, "sub": "lab/bob"}),
        json!({"format": "opaque", "id": "corp/alice"}),
        json!({"format": "opaque", "id": "lab/bob"}),
    ];
    expected.sort_by_key(|sub| sub.to_string());
    assert_eq!(seen, expected);
}

async fn subject_formats_are_refused_where_they_mean_nothing(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let no_domains = caep_stream(
        &mut admin,
        "idp",
        "https://receiver.example.com/caep".into(),
        pb::EventSubjectFormat::Email,
    )
    .await
    .unwrap_err();
    assert_eq!(no_domains.code(), Code::InvalidArgument);
    assert!(
        no_domains.message().starts_with("subject_format"),
        "{no_domains:?}"
    );
    let webhook = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "siem".into(),
            encoding: pb::EventEncoding::Webhook as i32,
            endpoint: "https://receiver.example.com/hook".into(),
            subject_format: pb::EventSubjectFormat::Opaque as i32,
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(webhook.code(), Code::InvalidArgument);
    assert!(
        webhook.message().starts_with("subject_format"),
        "{webhook:?}"
    );
    let unknown = admin
        .create_event_stream(pb::CreateEventStreamRequest {
            name: "idp".into(),
            encoding: pb::EventEncoding::CaepPush as i32,
            endpoint: "https://receiver.example.com/caep".into(),
            audience: AUDIENCE.into(),
            subject_format: 42,
            created_by: "secops".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    let default = caep_stream(
        &mut admin,
        "idp",
        "https://receiver.example.com/caep".into(),
        pb::EventSubjectFormat::Unspecified,
    )
    .await
    .unwrap();
    assert_eq!(
        default.subject_format,
        pb::EventSubjectFormat::IssSub as i32
    );
}

enroll_e2e::on_both_backends!(
    subjects_are_iss_sub_opaque_or_mapped_email,
    subject_formats_are_refused_where_they_mean_nothing,
);
