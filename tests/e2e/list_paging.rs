//! Keyset pages hold still while rows are added: paging through ListTokens,
//! ListAuditEvents and ListDevices with rows inserted between pages (newer audit events and
//! devices sorting first land in front of the reader's position) shows every row that
//! existed before exactly once, and none twice. A forged page token is INVALID_ARGUMENT
//! naming `page_token` on every list, never a database error.
use std::collections::BTreeSet;

use enroll_e2e::{Backend, DeviceClient, TestDatabase, TestStack};
use enroll_shared::proto::device::v1 as pb;
use tonic::Code;

async fn enroll(admin: &mut DeviceClient, user: &str) -> String {
    admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "acme".into(),
            user: user.into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .serial
}

/// Inserts device `id` of `user` in realm acme (and the user, on first use).
async fn insert_device(database: &TestDatabase, user: &str, id: &str) {
    database
        .execute(&format!(
            "INSERT INTO users (realm, name, create_time, lock_version) \
             SELECT 'acme', '{user}', '2026-01-01T00:00:00Z', 0 \
             WHERE NOT EXISTS (SELECT 1 FROM users WHERE realm = 'acme' AND name = '{user}')"
        ))
        .await;
    database
        .execute(&format!(
            "INSERT INTO devices (id, realm, user_id, credential_id, device_type, state, aaguid, \
             backup_eligible, user_agent, credential, create_time, approved_by) \
             SELECT '{id}', 'acme', id, 'cred-{id}', 'any', 'approved', '', false, '', '{{}}', \
             '2026-01-01T00:00:00Z', '' FROM users WHERE realm = 'acme' AND name = '{user}'"
        ))
        .await;
}

/// No key twice, and every key of `before` among those seen.
fn each_once(seen: &[String], before: &BTreeSet<String>) -> BTreeSet<String> {
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a row shown twice: {seen:?}");
    let missing: Vec<&String> = before.difference(&unique).collect();
    assert!(missing.is_empty(), "rows skipped: {missing:?}");
    unique
}

async fn pages_hold_still_while_rows_are_added(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut ops) = (stack.admin(), stack.ops());
    let mut before: BTreeSet<String> = BTreeSet::new();
    for n in 0..12 {
        before.insert(enroll(&mut admin, &format!("user{n}")).await);
    }

    // Tokens: random serials, so the new ones land on both sides of the reader.
    let (mut seen, mut page_token, mut late) = (Vec::new(), String::new(), 0);
    loop {
        let page = admin
            .list_tokens(pb::ListTokensRequest {
                realm: "acme".into(),
                page_size: 5,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.tokens.into_iter().map(|token| token.serial));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        for _ in 0..3 {
            enroll(&mut admin, &format!("late{late}")).await;
            late += 1;
        }
    }
    each_once(&seen, &before);

    // Audit events, newest first: every enrollment between pages is in front of the reader.
    let events = |page_token: String| pb::ListAuditEventsRequest {
        action: "enroll_token".into(),
        page_size: 4,
        page_token,
        ..Default::default()
    };
    let everything = ops.list_audit_events(pb::ListAuditEventsRequest {
        action: "enroll_token".into(),
        page_size: 1000,
        ..Default::default()
    });
    let everything = everything.await.unwrap().into_inner().events;
    let before: BTreeSet<String> = everything.iter().map(|e| e.id.to_string()).collect();
    let (mut ids, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = ops
            .list_audit_events(events(page_token.clone()))
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.events.iter().map(|event| event.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        for _ in 0..2 {
            enroll(&mut admin, &format!("late{late}")).await;
            late += 1;
        }
    }
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "{ids:?}");
    let seen: Vec<String> = ids.iter().map(i64::to_string).collect();
    assert_eq!(
        each_once(&seen, &before),
        before,
        "newer events are in front"
    );

    // Devices by id: inserted between pages both in front of the reader and behind it.
    let mut before = BTreeSet::new();
    for n in 0..11 {
        let id = format!("m-device-{n:02}");
        insert_device(&stack.database, &format!("owner{}", n % 3), &id).await;
        before.insert(id);
    }
    let (mut seen, mut page_token, mut added) = (Vec::new(), String::new(), 0);
    loop {
        let page = admin
            .list_devices(pb::ListDevicesRequest {
                realm: "acme".into(),
                page_size: 4,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.devices.into_iter().map(|device| device.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        for side in ["a", "z"] {
            insert_device(&stack.database, "owner9", &format!("{side}-late-{added}")).await;
            added += 1;
        }
    }
    let unique = each_once(&seen, &before);
    assert!(
        unique.iter().all(|id| !id.starts_with("a-late")),
        "{seen:?}"
    );
    assert!(unique.iter().any(|id| id.starts_with("z-late")), "{seen:?}");

    // The user filter (a user id) pages the same way.
    let owned = admin
        .list_devices(pb::ListDevicesRequest {
            realm: "acme".into(),
            user: "owner1".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(owned.devices.len(), 2);
    let rest = admin
        .list_devices(pb::ListDevicesRequest {
            realm: "acme".into(),
            user: "owner1".into(),
            page_size: 10,
            page_token: owned.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = owned
        .devices
        .iter()
        .chain(&rest.devices)
        .map(|device| device.id.clone())
        .collect();
    assert_eq!(
        ids,
        ["m-device-01", "m-device-04", "m-device-07", "m-device-10"]
    );
}

async fn forged_page_tokens_are_invalid_arguments(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    enroll(&mut admin, "erin").await;
    let long = hex::encode("k".repeat(600));
    // Not hex; hex of a NUL (which PostgreSQL cannot compare); of a key longer than any.
    for forged in ["zz", "00", "6100", long.as_str()] {
        let page_token = forged.to_owned();
        let refusals = [
            admin
                .list_tokens(pb::ListTokensRequest {
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            admin
                .list_devices(pb::ListDevicesRequest {
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            admin
                .list_audit_events(pb::ListAuditEventsRequest {
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            admin
                .list_enrollment_links(pb::ListEnrollmentLinksRequest {
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            admin
                .list_otp_enrollment_links(pb::ListOtpEnrollmentLinksRequest {
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ];
        for (n, refusal) in refusals.into_iter().enumerate() {
            let status = refusal.expect_err(&format!("list {n} accepted `{forged}`"));
            assert_eq!(status.code(), Code::InvalidArgument, "list {n}: {status:?}");
            assert!(status.message().contains("page_token"), "{status:?}");
        }
    }
}

enroll_e2e::on_both_backends!(
    pages_hold_still_while_rows_are_added,
    forged_page_tokens_are_invalid_arguments
);
