//! The enrollment-event outbox: every change writes its event in its own transaction (and
//! a refused or rolled-back change none), the stamper gives the delivery order after
//! commit so a cursor never skips an event whose transaction committed late, and
//! WatchEnrollmentEvents streams them from a cursor, filtered, with a cap on watchers.
use std::time::Duration;

use enroll_e2e::{
    Backend, DeviceClient, RFC4226_SEED_HEX, TestStack, realm_policy, register_by_link_with,
};
use enroll_shared::proto::device::v1 as pb;
use futures::StreamExt;
use tonic::Code;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

/// The events after `after` (waiting up to 10 s for `count` of them).
async fn events(client: &mut DeviceClient, after: i64, count: usize) -> Vec<pb::EnrollmentEvent> {
    let mut stream = client
        .watch_enrollment_events(pb::WatchEnrollmentEventsRequest {
            after_seq: after,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < count {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(event)) => seen.push(event.unwrap()),
            _ => break,
        }
    }
    seen
}

fn kinds(events: &[pb::EnrollmentEvent]) -> Vec<&str> {
    events.iter().map(|event| event.r#type.as_str()).collect()
}

async fn every_change_writes_its_event(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy, mut ops) = (stack.admin(), stack.proxy(), stack.ops());
    // A software token (the one-statement path on PostgreSQL), then its life.
    let enrolled = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "alice".into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let serial = enrolled.token.unwrap().serial;
    for change in [pb::DisableTokenRequest {
        serial: serial.clone(),
        ..Default::default()
    }] {
        admin.disable_token(change).await.unwrap();
    }
    admin
        .enable_token(pb::EnableTokenRequest {
            serial: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .delete_token(pb::DeleteTokenRequest {
            serial: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A hardware pool token assigned.
    admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "corp".into(),
            csv: format!("HW-EVENT,{RFC4226_SEED_HEX},hotp,6,0\n"),
            request_id: String::new(),
        })
        .await
        .unwrap();
    admin
        .assign_token(pb::AssignTokenRequest {
            serial: "HW-EVENT".into(),
            realm: "corp".into(),
            user: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A device through a link, then revoked.
    let mut passkey = SoftPasskey::new(true);
    let device = register_by_link_with(&mut admin, &mut proxy, &mut passkey, "corp", "carol").await;
    admin
        .revoke_device(pb::RevokeDeviceRequest {
            id: device.id.clone(),
            revoked_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let seen = events(&mut ops, 0, 12).await;
    assert_eq!(
        kinds(&seen),
        [
            "token.enrolled",
            "token.disabled",
            "token.enabled",
            "token.lost",
            "token.deleted",
            "token.imported",
            "token.assigned",
            "link.created",
            "link.used",
            "device.registered",
            "device.revoked",
        ],
        "{seen:#?}"
    );
    // Ordered, stable ids, typed facts.
    assert!(seen.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    let enrolled = &seen[0];
    assert_eq!(
        (enrolled.realm.as_str(), enrolled.user.as_str()),
        ("corp", "alice")
    );
    assert_eq!(enrolled.subject, serial);
    assert_eq!(enrolled.credential.as_ref().unwrap().credential_type, "app");
    assert_eq!(enrolled.initiating_entity, "admin");
    assert_eq!(
        uuid::Uuid::parse_str(&enrolled.id)
            .unwrap()
            .get_version_num(),
        4
    );
    // A deleted token keeps its facts (from its last event).
    assert_eq!(seen[4].credential.as_ref().unwrap().credential_type, "app");
    let assigned = &seen[6];
    assert_eq!(
        assigned.credential.as_ref().unwrap().credential_type,
        "hotp-hardware"
    );
    let registered = &seen[9];
    assert_eq!(registered.subject, device.id);
    assert_eq!(registered.initiating_entity, "user");
    let credential = registered.credential.clone().unwrap();
    // A soft passkey reports no attachment: a roaming authenticator, its model the device's.
    assert_eq!(
        credential.credential_type, "fido2-roaming",
        "{credential:?}"
    );
    assert_eq!(credential.aaguid, device.aaguid, "{credential:?}");
    // The same events again from the same cursor: the same ids.
    let again = events(&mut ops, 0, 12).await;
    assert_eq!(
        again.iter().map(|event| &event.id).collect::<Vec<_>>(),
        seen.iter().map(|event| &event.id).collect::<Vec<_>>()
    );
    // Resumed after the fourth: the rest.
    let rest = events(&mut ops, seen[3].seq, 12).await;
    assert_eq!(rest.first().map(|event| &event.id), Some(&seen[4].id));
}

async fn a_refused_change_writes_no_event(backend: Backend) {
    let one = realm_policy("one", "corp", &[("max_token_per_user", "1")]);
    let stack = TestStack::with_policies(backend, [one]).await;
    let (mut admin, mut ops) = (stack.admin(), stack.ops());
    let enroll = || pb::EnrollTokenRequest {
        realm: "corp".into(),
        user: "alice".into(),
        r#type: pb::TokenType::Totp as i32,
        ..Default::default()
    };
    admin.enroll_token(enroll()).await.unwrap();
    let refused = admin.enroll_token(enroll()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let bad = admin
        .disable_token(pb::DisableTokenRequest {
            serial: "NO-SUCH".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::NotFound);
    let seen = events(&mut ops, 0, 3).await;
    assert_eq!(kinds(&seen), ["token.enrolled"]);
    assert_eq!(
        stack
            .database
            .count("SELECT COUNT(*) FROM enrollment_events")
            .await,
        1
    );
}

async fn watchers_are_capped_and_filtered(backend: Backend) {
    let stack = TestStack::builder(backend)
        .device_config(|config| config.events.max_watchers = 2)
        .start()
        .await;
    let mut admin = stack.admin();
    let open = |types: Vec<String>| {
        let mut ops = stack.ops();
        async move {
            ops.watch_enrollment_events(pb::WatchEnrollmentEventsRequest {
                from_now: true,
                types,
                ..Default::default()
            })
            .await
        }
    };
    let mut only_lost = open(vec!["token.lost".into()]).await.unwrap().into_inner();
    let _second = open(Vec::new()).await.unwrap();
    let third = open(Vec::new()).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    let unknown = admin
        .watch_enrollment_events(pb::WatchEnrollmentEventsRequest {
            types: vec!["token.stolen".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(
        unknown.map(|_| ()).unwrap_err().code(),
        Code::InvalidArgument
    );
    let enrolled = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "dave".into(),
            r#type: pb::TokenType::Hotp as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: enrolled.token.unwrap().serial,
            ..Default::default()
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), only_lost.next())
        .await
        .expect("the lost token's event")
        .unwrap()
        .unwrap();
    assert_eq!(first.r#type, "token.lost");
}

async fn links_that_end_unused_become_events_once(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut ops) = (stack.admin(), stack.ops());
    let hour = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    let device_link = admin
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "corp".into(),
            user: "alice".into(),
            device_type: pb::DeviceType::Any as i32,
            ttl: hour,
            created_by: "console".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let otp_link = admin
        .create_otp_enrollment_link(pb::CreateOtpEnrollmentLinkRequest {
            realm: "corp".into(),
            user: "bob".into(),
            r#type: pb::TokenType::Totp as i32,
            ttl: hour,
            created_by: "console".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    stack.clock().advance(Duration::from_secs(3600));
    // The scan runs every `events.expiry_scan_secs` (1 s in the tests).
    let seen = events(&mut ops, 0, 4).await;
    assert_eq!(
        kinds(&seen),
        [
            "link.created",
            "otp_link.created",
            "link.expired",
            "otp_link.expired"
        ],
        "{seen:#?}"
    );
    assert_eq!(seen[2].subject, device_link.id);
    assert_eq!(seen[3].subject, otp_link.id);
    assert_eq!(seen[2].initiating_entity, "system");
    // Once: later scans find nothing more.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        stack
            .database
            .count("SELECT COUNT(*) FROM enrollment_events WHERE event_type LIKE '%.expired'")
            .await,
        2
    );
}

enroll_e2e::on_both_backends!(
    every_change_writes_its_event,
    a_refused_change_writes_no_event,
    watchers_are_capped_and_filtered,
    links_that_end_unused_become_events_once,
);

mod cursor;
mod delivery;
mod killed;
mod parallel;
mod policy;
mod poll;
mod replicas;
mod subjects;
mod support;
