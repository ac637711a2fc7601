//! Metadata you can trust: only the pinned signer name signs a BLOB (the FIDO root is a
//! public TLS root), a BLOB number jumping beyond `max_no_jump` waits for an operator's
//! acceptance (`AcceptMetadataJump`, `enrollctl metadata accept`), plain http sources stop
//! the start, a stored row that does not verify never keeps a replica from a genuine BLOB,
//! and a renewed signer key or a BLOB past its nextUpdate raise alerts (status, health,
//! metrics) while the metadata stays in use.
use std::time::{Duration, Instant};

use enroll_device::app::METADATA_HEALTH;
use enroll_e2e::{
    ADMIN_KEY, Backend, DeviceClient, TestMetadataService, TestStack, audit_events_by_action,
    metadata_payload, metric_value,
};
use enroll_shared::auth::Role;
use enroll_shared::proto::device::v1 as pb;
use sea_orm::{ConnectionTrait, Database};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn status(client: &mut DeviceClient) -> pb::MetadataStatus {
    client
        .get_metadata_status(pb::GetMetadataStatusRequest {})
        .await
        .expect("GetMetadataStatus")
        .into_inner()
}

/// Waits (up to 20 s: the servers refresh every second) until the status satisfies `wanted`.
async fn until_status(
    client: &mut DeviceClient,
    what: &str,
    wanted: impl Fn(&pb::MetadataStatus) -> bool,
) -> pb::MetadataStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = status(client).await;
        if wanted(&current) {
            return current;
        }
        assert!(Instant::now() < deadline, "never {what}: {current:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stack whose device server loads `mds`'s BLOB numbered `no` (configured by `configure`).
async fn stack_with_blob(
    backend: Backend,
    mds: &TestMetadataService,
    no: u64,
    configure: impl Fn(&mut enroll_device::config::MetadataConfig) + 'static,
) -> TestStack {
    mds.publish(&mds.sign(&metadata_payload(no, vec![])));
    let mut config = mds.config();
    configure(&mut config);
    let stack = TestStack::builder(backend)
        .device_config(move |device| device.webauthn.metadata = config.clone())
        .start()
        .await;
    let loaded = status(&mut stack.ops()).await;
    assert_eq!(loaded.no, no, "{loaded:?}");
    stack
}

async fn metric(stack: &TestStack, name: &str, label: Option<&str>) -> f64 {
    metric_value(stack.device_metrics_addr(), name, label)
        .await
        .unwrap_or_else(|| panic!("no series {name} {label:?}"))
}

async fn a_blob_signed_under_the_root_by_another_name_is_refused(backend: Backend) {
    let mds = TestMetadataService::new("mds");
    let stack = stack_with_blob(backend, &mds, 1, |_| {}).await;
    // Anyone who holds a certificate under the (public) root signs a "newer" BLOB.
    let shop = mds.issue_signer("shop.example");
    mds.publish(&mds.sign_with(&shop, &metadata_payload(2, vec![])));
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric_value(
        stack.device_metrics_addr(),
        "enroll_device_fido_metadata_refused_total",
        Some("reason=\"signer_name\""),
    )
    .await
    .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the forged BLOB was never refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status(&mut stack.ops()).await.no,
        1,
        "the last good BLOB stays"
    );
    // The genuine signer's next BLOB is taken.
    mds.publish(&mds.sign(&metadata_payload(2, vec![])));
    until_status(&mut stack.ops(), "at BLOB 2", |status| status.no == 2).await;
}

async fn run_ctl(stack: &TestStack, key: &str, args: &[&str]) -> (i32, String, String) {
    let device = stack.device().url();
    let policy = stack.policy().url();
    let mut all = vec![
        "enrollctl",
        "--config",
        "/dev/null",
        "--policy-addr",
        &policy,
        "--device-addr",
        &device,
        "--api-key",
        key,
        "--actor",
        "e2e-operator",
    ];
    all.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut input = std::io::Cursor::new(Vec::new());
    let code = enrollctl::run_with_input(all, &mut input, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).expect("UTF-8"),
        String::from_utf8(err).expect("UTF-8"),
    )
}

async fn a_huge_number_jump_waits_until_an_operator_accepts_it(backend: Backend) {
    let mds = TestMetadataService::new("mds");
    let stack = stack_with_blob(backend, &mds, 10, |config| config.max_no_jump = 100).await;
    stack
        .device()
        .wait_for_health(
            METADATA_HEALTH,
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;
    // Within the bound: taken.
    mds.publish(&mds.sign(&metadata_payload(110, vec![])));
    until_status(&mut stack.ops(), "at BLOB 110", |status| status.no == 110).await;
    // Beyond it: refused, shown as waiting, the health name and gauge raise the alert.
    let jump = 1_000_000;
    mds.publish(&mds.sign(&metadata_payload(jump, vec![])));
    let waiting = until_status(&mut stack.ops(), "waiting", |status| {
        status.pending_jump == jump
    })
    .await;
    assert_eq!(waiting.no, 110);
    assert_eq!(waiting.max_no_jump, 100);
    stack
        .device()
        .wait_for_health(
            METADATA_HEALTH,
            ServingStatus::NotServing,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        metric(&stack, "enroll_device_fido_metadata_jump_pending", None).await,
        1.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status(&mut stack.ops()).await.no,
        110,
        "not without acceptance"
    );

    // Only an admin accepts; an ops key may look.
    let refused = stack
        .ops()
        .accept_metadata_jump(pb::AcceptMetadataJumpRequest {
            no: jump,
            accepted_by: "ops".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let (code, out, err) = run_ctl(&stack, ADMIN_KEY, &["metadata", "status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1000000") && out.contains("110"), "{out}");
    // Nothing newer than the BLOB in use is ever "accepted" backwards.
    let (code, _, err) = run_ctl(&stack, ADMIN_KEY, &["metadata", "accept", "--no", "50"]).await;
    assert_ne!(code, 0, "{err}");
    let (code, out, err) = run_ctl(
        &stack,
        ADMIN_KEY,
        &[
            "metadata",
            "accept",
            "--no",
            "1000000",
            "--reason",
            "checked with the FIDO Alliance",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let accepted = until_status(&mut stack.ops(), "at the accepted BLOB", |status| {
        status.no == jump
    })
    .await;
    assert_eq!(accepted.pending_jump, 0);
    stack
        .device()
        .wait_for_health(
            METADATA_HEALTH,
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;
    let events = audit_events_by_action(&mut stack.admin(), "accept_metadata_jump").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].reason.contains("e2e-operator") && events[0].reason.contains("FIDO Alliance"),
        "{}",
        events[0].reason
    );
}

async fn plain_http_sources_stop_the_start(backend: Backend) {
    let mds = TestMetadataService::new("mds");
    let stack = TestStack::builder(backend).start().await;
    let mut config = stack.device_config();
    config.webauthn.metadata = mds.config();
    config.webauthn.metadata.source = "http://mds3.fidoalliance.org/".to_owned();
    let error = match enroll_device::app::Application::build(config).await {
        Ok(_) => panic!("an http:// metadata source started"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("webauthn.metadata.source") && error.contains("https"),
        "{error}"
    );
}

async fn an_unverifiable_stored_row_never_keeps_a_replica_from_a_genuine_blob(backend: Backend) {
    let mds = TestMetadataService::new("mds");
    let mut stack = stack_with_blob(backend, &mds, 1, |_| {}).await;
    // Someone with database access stores a row numbered far ahead that nobody can verify.
    let forged = TestMetadataService::new("mds").sign(&metadata_payload(999_999_999, vec![]));
    let db = Database::connect(&stack.database.url)
        .await
        .expect("connect");
    let backend_kind = db.get_database_backend();
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        backend_kind,
        match backend_kind {
            sea_orm::DbBackend::Postgres => {
                "INSERT INTO fido_metadata_blobs (no, blob, next_update, source, load_time) \
                 VALUES ($1, $2, '2030-01-01', 'forged', CURRENT_TIMESTAMP)"
            }
            _ => {
                "INSERT INTO fido_metadata_blobs (no, blob, next_update, source, load_time) \
                 VALUES (?, ?, '2030-01-01', 'forged', CURRENT_TIMESTAMP)"
            }
        },
        vec![999_999_999_i64.into(), forged.into()],
    ))
    .await
    .expect("store the forged row");
    // The genuine next BLOB is adopted by the running replica and by a new one.
    mds.publish(&mds.sign(&metadata_payload(2, vec![])));
    until_status(&mut stack.ops(), "at BLOB 2", |status| status.no == 2).await;
    let config = mds.config();
    let replica = stack
        .add_device(move |device| device.webauthn.metadata = config)
        .await;
    let mut replica_ops = stack.device_on(replica, Role::Ops);
    until_status(&mut replica_ops, "at BLOB 2 on the new replica", |status| {
        status.no == 2
    })
    .await;
    assert!(
        metric(
            &stack,
            "enroll_device_fido_metadata_refused_total",
            Some("reason=\"stored_unverified\"")
        )
        .await
            >= 1.0
    );
}

async fn a_renewed_signer_key_and_a_past_next_update_alert_but_stay_in_use(backend: Backend) {
    let mds = TestMetadataService::new("mds");
    let pin = mds.signer().key_pin();
    let stack = stack_with_blob(backend, &mds, 1, move |config| {
        config.signer_key_pins = vec![pin.clone()];
    })
    .await;
    let loaded = status(&mut stack.ops()).await;
    assert!(!loaded.signer_key_changed && !loaded.stale, "{loaded:?}");
    assert_eq!(loaded.signer_keys, vec![mds.signer().key_pin()]);
    stack
        .device()
        .wait_for_health(
            METADATA_HEALTH,
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        metric(&stack, "enroll_device_fido_metadata_pin_mismatch", None).await,
        0.0
    );

    // The signer's certificate renewed (same name, new key): used, and alerted on.
    let renewed = mds.issue_signer(enroll_e2e::TEST_SIGNER_NAME);
    mds.publish(&mds.sign_with(&renewed, &metadata_payload(2, vec![])));
    let changed = until_status(&mut stack.ops(), "at BLOB 2", |status| status.no == 2).await;
    assert!(changed.signer_key_changed, "{changed:?}");
    assert_eq!(changed.signer_keys, vec![renewed.key_pin()]);
    assert_eq!(
        metric(&stack, "enroll_device_fido_metadata_pin_mismatch", None).await,
        1.0
    );
    stack
        .device()
        .wait_for_health(
            METADATA_HEALTH,
            ServingStatus::NotServing,
            Duration::from_secs(10),
        )
        .await;

    // Back under the pinned key, but past its nextUpdate: used, and shown stale.
    let mut stale = metadata_payload(3, vec![]);
    stale["nextUpdate"] = "2020-01-01".into();
    mds.publish(&mds.sign(&stale));
    let shown = until_status(&mut stack.ops(), "at BLOB 3", |status| status.no == 3).await;
    assert!(shown.stale && !shown.signer_key_changed, "{shown:?}");
    assert_eq!(shown.next_update, "2020-01-01");
    assert_eq!(
        metric(&stack, "enroll_device_fido_metadata_stale", None).await,
        1.0
    );
    assert_eq!(
        metric(&stack, "enroll_device_fido_metadata_pin_mismatch", None).await,
        0.0
    );
    stack
        .device()
        .wait_for_health(
            METADATA_HEALTH,
            ServingStatus::NotServing,
            Duration::from_secs(10),
        )
        .await;
    // A current BLOB clears every alert.
    mds.publish(&mds.sign(&metadata_payload(4, vec![])));
    until_status(&mut stack.ops(), "at BLOB 4", |status| {
        status.no == 4 && !status.stale
    })
    .await;
    stack
        .device()
        .wait_for_health(
            METADATA_HEALTH,
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;
}

enroll_e2e::on_both_backends!(
    a_blob_signed_under_the_root_by_another_name_is_refused,
    a_huge_number_jump_waits_until_an_operator_accepts_it,
    plain_http_sources_stop_the_start,
    an_unverifiable_stored_row_never_keeps_a_replica_from_a_genuine_blob,
    a_renewed_signer_key_and_a_past_next_update_alert_but_stay_in_use,
);
