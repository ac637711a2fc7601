use super::*;

async fn every_enrollment_and_denial_is_audited_without_secrets(backend: Backend) {
    let one = realm_policy(
        "one-each",
        "corp",
        &[("max_token_per_user", "1"), ("otp_pin_random", "8")],
    );
    let lab = realm_policy("lab-no-totp", "lab", &[("token_types", "hotp")]);
    let stack = TestStack::with_policies(backend, [one, lab]).await;
    let mut admin = stack.admin();

    let enrolled = admin
        .enroll_token(totp("corp", "erin"))
        .await
        .unwrap()
        .into_inner();
    let serial = enrolled.token.as_ref().unwrap().serial.clone();
    admin.enroll_token(totp("corp", "erin")).await.unwrap_err();
    admin.enroll_token(totp("lab", "erin")).await.unwrap_err();

    let mut ops = stack.ops();
    let events = ops
        .list_audit_events(pb::ListAuditEventsRequest {
            user: "Erin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.realm.as_str(), e.result.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "lab",
                "denied",
                "enroll_token denied by policy: token type `totp` is not in token_types `hotp`"
            ),
            (
                "corp",
                "denied",
                "max_token_per_user 1 reached (policy one-each)"
            ),
            ("corp", "ok", ""),
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.actor == "test-admin" && e.action == "enroll_token")
    );
    assert_eq!(events[2].subject, serial);
    for event in &events {
        let text = format!("{event:?}");
        assert!(!text.contains(&enrolled.secret_base32) && !text.contains(&enrolled.pin));
    }

    // Filters and pagination.
    let page = ops
        .list_audit_events(pb::ListAuditEventsRequest {
            result: "denied".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 1);
    let rest = ops
        .list_audit_events(pb::ListAuditEventsRequest {
            result: "denied".into(),
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.events.len(), 1);
    assert!(rest.events[0].id < page.events[0].id);
}

enroll_e2e::on_both_backends!(every_enrollment_and_denial_is_audited_without_secrets);
