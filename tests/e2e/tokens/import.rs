use super::*;
use enroll_device::domain::otp::code;
use enroll_e2e::{RFC4226_SEED_HEX as RFC_SEED_HEX, hotp_parameters};

async fn csv_rows_import_with_line_errors_and_the_realm_limit(backend: Backend) {
    let limit = realm_policy("pool-limit", "corp", &[("max_token_per_realm", "4")]);
    let stack = TestStack::with_policies(backend, [limit]).await;
    let mut admin = stack.admin();

    let csv = format!(
        "# serial,seed,type,digits,period_or_counter\n\
         HW0001,{RFC_SEED_HEX},hotp,6,2\n\
         HW0002,base32:GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,totp,8,60\n\
         HW0003,{RFC_SEED_HEX},totp,6,\n\
         HW0004,nothex,totp,6,30\n\
         HW0005,{RFC_SEED_HEX},totp,9,30\n"
    );
    let import = |csv: String| pb::ImportTokensRequest {
        realm: "corp".into(),
        csv,
        request_id: String::new(),
    };
    let first = admin
        .import_tokens(import(csv.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.imported, 3);
    let errors: Vec<(u32, &str, &str)> = first
        .errors
        .iter()
        .map(|e| (e.line, e.serial.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (5, "HW0004", "INVALID_ARGUMENT"),
            (6, "HW0005", "INVALID_ARGUMENT")
        ]
    );
    assert!(first.errors[1].reason.starts_with("digits"));

    let again = admin.import_tokens(import(csv)).await.unwrap().into_inner();
    assert_eq!(again.imported, 0);
    assert_eq!(
        again
            .errors
            .iter()
            .filter(|e| e.code == "ALREADY_EXISTS")
            .count(),
        3
    );
    assert_eq!(again.errors[0].line, 2);

    // 3 in the pool, limit 4: two more would exceed it, so none is imported.
    let over = admin
        .import_tokens(import(format!(
            "HW0010,{RFC_SEED_HEX},totp,6,30\nHW0011,{RFC_SEED_HEX},totp,6,30\n"
        )))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    let pool = admin
        .list_tokens(pb::ListTokensRequest {
            realm: "corp".into(),
            assigned: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(
        pool.iter().map(|t| t.serial.as_str()).collect::<Vec<_>>(),
        ["HW0001", "HW0002", "HW0003"]
    );

    // An imported HOTP token works from its start counter once assigned.
    admin
        .assign_token(pb::AssignTokenRequest {
            serial: "HW0001".into(),
            realm: "corp".into(),
            user: "gina".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let hotp = hotp_parameters();
    let mut proxy = stack.proxy();
    let check = |pass: String| pb::ValidateRequest {
        realm: "corp".into(),
        user: "gina".into(),
        pass,
        client_ip: "192.0.2.1".into(),
        ..Default::default()
    };
    assert!(
        !proxy
            .validate(check(code(&hotp, b"12345678901234567890", 1)))
            .await
            .unwrap()
            .into_inner()
            .ok,
        "below the start counter"
    );
    assert!(
        proxy
            .validate(check(code(&hotp, b"12345678901234567890", 2)))
            .await
            .unwrap()
            .into_inner()
            .ok
    );

    let bad = admin
        .import_tokens(pb::ImportTokensRequest {
            realm: String::new(),
            csv: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

enroll_e2e::on_both_backends!(csv_rows_import_with_line_errors_and_the_realm_limit);
