//! Values one database stores and the other refuses: PostgreSQL `text` cannot hold a NUL
//! character (SQLite can). Such a request used to reach PostgreSQL and come back
//! UNAVAILABLE "database unavailable", which clients retry forever. Every free-text field
//! is now checked at the edge: INVALID_ARGUMENT naming the field, on both backends, and
//! nothing is written. Database errors are classified by SQLSTATE besides (see
//! `a_nul_the_edge_missed_is_classified_as_bad_data`).
use enroll_e2e::{Backend, TestStack, assert_invalid_field, create, policy};
use enroll_shared::db_errors::{DbFailure, classify};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;

const NUL: &str = "a\0b";
const SOME_ID: &str = "6f1c1a52-7a8e-4a43-8d8a-8a9b7f3f0c11";

async fn nul_in_any_device_text_field_is_invalid_argument_naming_it(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());

    let enroll = |change: fn(&mut pb::EnrollTokenRequest)| {
        let mut request = pb::EnrollTokenRequest {
            realm: "acme".into(),
            user: "kate".into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        };
        change(&mut request);
        request
    };
    for (field, request) in [
        ("description", enroll(|r| r.description = NUL.into())),
        ("client_ip", enroll(|r| r.client_ip = NUL.into())),
        ("request_id", enroll(|r| r.request_id = NUL.into())),
    ] {
        assert_invalid_field(admin.enroll_token(request).await, field);
    }
    assert_invalid_field(
        admin
            .import_tokens(pb::ImportTokensRequest {
                realm: "acme".into(),
                csv: "HW\u{0}1,3132333435363738393031323334353637383930,hotp,6,\n".into(),
                ..Default::default()
            })
            .await,
        "csv",
    );
    assert_invalid_field(
        admin
            .assign_token(pb::AssignTokenRequest {
                serial: "HW1".into(),
                realm: "acme".into(),
                user: "kate".into(),
                client_ip: NUL.into(),
                ..Default::default()
            })
            .await,
        "client_ip",
    );
    assert_invalid_field(
        admin
            .set_pin(pb::SetPinRequest {
                serial: "HW1".into(),
                pin: "12\u{0}34".into(),
                ..Default::default()
            })
            .await,
        "pin",
    );
    assert_invalid_field(
        admin
            .disable_token(pb::DisableTokenRequest {
                serial: "HW1".into(),
                request_id: NUL.into(),
            })
            .await,
        "request_id",
    );
    assert_invalid_field(
        admin
            .report_lost_token(pb::ReportLostTokenRequest {
                serial: "HW1".into(),
                client_ip: NUL.into(),
                ..Default::default()
            })
            .await,
        "client_ip",
    );
    assert_invalid_field(
        proxy
            .validate(pb::ValidateRequest {
                realm: "acme".into(),
                user: "kate".into(),
                pass: "1234\u{0}".into(),
                ..Default::default()
            })
            .await,
        "pass",
    );

    let link = |change: fn(&mut pb::CreateEnrollmentLinkRequest)| {
        let mut request = pb::CreateEnrollmentLinkRequest {
            realm: "acme".into(),
            user: "kate".into(),
            created_by: "console-admin".into(),
            ..Default::default()
        };
        change(&mut request);
        request
    };
    for (field, request) in [
        ("created_by", link(|r| r.created_by = NUL.into())),
        ("redirect_url", link(|r| r.redirect_url = NUL.into())),
        ("request_id", link(|r| r.request_id = NUL.into())),
    ] {
        assert_invalid_field(admin.create_enrollment_link(request).await, field);
    }
    assert_invalid_field(
        admin
            .revoke_enrollment_link(pb::RevokeEnrollmentLinkRequest {
                id: SOME_ID.into(),
                revoked_by: NUL.into(),
            })
            .await,
        "revoked_by",
    );
    assert_invalid_field(
        admin
            .approve_device(pb::ApproveDeviceRequest {
                id: SOME_ID.into(),
                approved_by: NUL.into(),
            })
            .await,
        "approved_by",
    );
    for (field, revoked_by, reason) in [("revoked_by", NUL, ""), ("reason", "admin", NUL)] {
        assert_invalid_field(
            admin
                .revoke_device(pb::RevokeDeviceRequest {
                    id: SOME_ID.into(),
                    revoked_by: revoked_by.into(),
                    reason: reason.into(),
                })
                .await,
            field,
        );
    }
    for (field, credential_json, user_agent) in [
        ("credential_json", "{\"id\":\"a\0b\"}", "ua"),
        ("user_agent", "{}", NUL),
    ] {
        assert_invalid_field(
            proxy
                .finish_device_registration(pb::FinishDeviceRegistrationRequest {
                    ceremony_id: SOME_ID.into(),
                    credential_json: credential_json.into(),
                    user_agent: user_agent.into(),
                    ..Default::default()
                })
                .await,
            field,
        );
    }
    assert_invalid_field(
        proxy
            .finish_device_authentication(pb::FinishDeviceAuthenticationRequest {
                ceremony_id: SOME_ID.into(),
                credential_json: "{\"id\":\"a\0b\"}".into(),
                ..Default::default()
            })
            .await,
        "credential_json",
    );
    for (field, credential_id, client_ip) in [("credential_id", NUL, ""), ("client_ip", "", NUL)] {
        assert_invalid_field(
            proxy
                .check_enrollment(pb::CheckEnrollmentRequest {
                    realm: "acme".into(),
                    user: "kate".into(),
                    credential_id: credential_id.into(),
                    client_ip: client_ip.into(),
                    ..Default::default()
                })
                .await,
            field,
        );
    }
    for field in ["action", "serial", "result"] {
        let mut request = pb::ListAuditEventsRequest::default();
        match field {
            "action" => request.action = NUL.into(),
            "serial" => request.serial = NUL.into(),
            _ => request.result = NUL.into(),
        }
        assert_invalid_field(admin.list_audit_events(request).await, field);
    }
    // Over-long values are refused the same way.
    assert_invalid_field(
        admin
            .enroll_token(enroll(|r| r.description = "x".repeat(257)))
            .await,
        "description",
    );

    // Nothing was written: no token, link or audit event.
    let tokens = admin
        .list_tokens(pb::ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(tokens.tokens.is_empty(), "{tokens:?}");
    let links = admin
        .list_enrollment_links(pb::ListEnrollmentLinksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(links.links.is_empty(), "{links:?}");
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(events.events.is_empty(), "{events:?}");
    stack.stop().await;
}

async fn nul_in_any_policy_text_field_is_invalid_argument_naming_it(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();

    let mut described = policy("described", &[]);
    described.description = NUL.into();
    assert_invalid_field(create(&mut admin, described).await, "policy.description");
    assert_invalid_field(
        create(&mut admin, policy("labelled", &[("tokenlabel", NUL)])).await,
        "policy.actions.tokenlabel",
    );
    assert_invalid_field(
        admin
            .create_policy(policy_pb::CreatePolicyRequest {
                policy: Some(policy("acted", &[])),
                actor: NUL.into(),
                validate_only: false,
            })
            .await,
        "actor",
    );
    assert_invalid_field(
        admin
            .get_policy(policy_pb::GetPolicyRequest { name: NUL.into() })
            .await,
        "name",
    );
    assert_invalid_field(
        admin
            .delete_policy(policy_pb::DeletePolicyRequest {
                name: NUL.into(),
                ..Default::default()
            })
            .await,
        "name",
    );
    assert_invalid_field(
        admin
            .list_policy_history(policy_pb::ListPolicyHistoryRequest {
                name: NUL.into(),
                ..Default::default()
            })
            .await,
        "name",
    );

    let policies = admin
        .list_policies(policy_pb::ListPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(policies.policies.is_empty(), "{policies:?}");
    let history = admin
        .list_policy_history(policy_pb::ListPolicyHistoryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(history.changes.is_empty(), "{history:?}");
    stack.stop().await;
}

/// Behind the edge, a value the database refuses is bad data, not an outage: PostgreSQL's
/// SQLSTATE 22021 (a NUL in text) and 22001 (too long) are INVALID_ARGUMENT material, and a
/// taken key is a duplicate; SQLite stores the NUL.
async fn a_nul_the_edge_missed_is_classified_as_bad_data(backend: Backend) {
    use sea_orm::{ConnectionTrait, Statement};
    let database = enroll_e2e::TestDatabase::create(backend).await;
    let db = enroll_shared::db::connect(&database.config())
        .await
        .unwrap();
    let db_backend = db.get_database_backend();
    db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR(4) NOT NULL)")
        .await
        .unwrap();
    let insert = |id: i32, name: &str| {
        let placeholders = match backend {
            Backend::Postgres => "($1, $2)",
            Backend::Sqlite => "(?, ?)",
        };
        Statement::from_sql_and_values(
            db_backend,
            format!("INSERT INTO t (id, name) VALUES {placeholders}"),
            [id.into(), name.into()],
        )
    };
    let with_nul = db.execute_raw(insert(1, "a\0b")).await;
    match backend {
        Backend::Postgres => {
            assert_eq!(classify(&with_nul.unwrap_err()), DbFailure::InvalidData);
            let too_long = db.execute_raw(insert(2, "abcdef")).await.unwrap_err();
            assert_eq!(classify(&too_long), DbFailure::InvalidData);
        }
        Backend::Sqlite => {
            with_nul.expect("SQLite stores a NUL in text");
        }
    }
    db.execute_raw(insert(3, "ok")).await.unwrap();
    let duplicate = db.execute_raw(insert(3, "ok")).await.unwrap_err();
    assert_eq!(classify(&duplicate), DbFailure::Duplicate);
    db.close().await.ok();
}

enroll_e2e::on_both_backends!(
    nul_in_any_device_text_field_is_invalid_argument_naming_it,
    nul_in_any_policy_text_field_is_invalid_argument_naming_it,
    a_nul_the_edge_missed_is_classified_as_bad_data,
);
