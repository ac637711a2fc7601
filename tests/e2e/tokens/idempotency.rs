use super::*;

/// How many audit events of `action` the trail holds.
async fn audited(client: &mut DeviceClient, action: &str) -> usize {
    client
        .list_audit_events(pb::ListAuditEventsRequest {
            action: action.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .len()
}

/// Every token mutation with a request id: a retry (sequential or racing) returns the
/// first result, changes nothing more and writes no second audit event; the id is
/// scoped to its RPC.
async fn retried_mutations_return_the_first_result(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let pool = |i: usize| -> String {
        let seed: String = (0..20)
            .map(|b| format!("{:02x}", (i * 13 + b) % 251))
            .collect();
        format!("IDEM{i},{seed},hotp,6,0\n")
    };

    // ImportTokens: the retry reports the first import, not ALREADY_EXISTS rows.
    let import = pb::ImportTokensRequest {
        realm: "corp".into(),
        csv: format!("{}{}{}", pool(1), pool(2), pool(3)),
        request_id: "import-1".into(),
    };
    let imported = admin
        .import_tokens(import.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((imported.imported, imported.errors.len()), (3, 0));
    let again = admin.import_tokens(import).await.unwrap().into_inner();
    assert_eq!(again, imported);
    assert_eq!(audited(&mut admin, "import_tokens").await, 1);

    // AssignToken: a retry returns the first; the same id with another body is another
    // request and is refused (it used to be answered with the first response: the
    // defect tests/e2e/idempotency.rs covers).
    let assign = pb::AssignTokenRequest {
        serial: "IDEM1".into(),
        realm: "corp".into(),
        user: "alice".into(),
        request_id: "assign-1".into(),
        ..Default::default()
    };
    let assigned = admin
        .assign_token(assign.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.user, "alice");
    let retried = admin
        .assign_token(assign.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, assigned);
    let other_body = admin
        .assign_token(pb::AssignTokenRequest {
            serial: "IDEM2".into(),
            user: "bob".into(),
            ..assign.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(
        other_body.code(),
        Code::FailedPrecondition,
        "{other_body:?}"
    );
    assert_eq!(
        reason(&other_body).as_deref(),
        Some("IDEMPOTENCY_KEY_REUSED")
    );
    assert_eq!(list(&mut admin, "corp", "bob").await.len(), 0);
    assert_eq!(audited(&mut admin, "assign_token").await, 1);

    // SetPin.
    let set_pin = pb::SetPinRequest {
        serial: "IDEM1".into(),
        pin: "4321".into(),
        request_id: "pin-1".into(),
        ..Default::default()
    };
    let pinned = admin.set_pin(set_pin.clone()).await.unwrap().into_inner();
    assert!(pinned.has_pin);
    assert_eq!(admin.set_pin(set_pin).await.unwrap().into_inner(), pinned);
    assert_eq!(audited(&mut admin, "set_pin").await, 1);

    // DisableToken, then EnableToken; the disable's retry returns its first result and
    // does not disable the token again.
    let disable = pb::DisableTokenRequest {
        serial: "IDEM1".into(),
        request_id: "state-1".into(),
    };
    let disabled = admin
        .disable_token(disable.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.state, pb::TokenState::Disabled as i32);
    // The same id on another RPC is another request.
    let enabled = admin
        .enable_token(pb::EnableTokenRequest {
            serial: "IDEM1".into(),
            request_id: "state-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enabled.state, pb::TokenState::Enabled as i32);
    assert_eq!(
        admin.disable_token(disable).await.unwrap().into_inner(),
        disabled
    );
    let now = admin
        .get_token(pb::GetTokenRequest {
            serial: "IDEM1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.state, pb::TokenState::Enabled as i32);
    assert_eq!(audited(&mut admin, "disable_token").await, 1);
    assert_eq!(audited(&mut admin, "enable_token").await, 1);

    // ReportLostToken, retried concurrently: one replacement, one password, returned
    // to every retry (stored sealed).
    let lost = pb::ReportLostTokenRequest {
        serial: "IDEM1".into(),
        request_id: "lost-1".into(),
        ..Default::default()
    };
    let reports: Vec<_> = (0..6)
        .map(|_| {
            let (mut admin, lost) = (admin.clone(), lost.clone());
            tokio::spawn(async move { admin.report_lost_token(lost).await })
        })
        .collect();
    let mut responses = Vec::new();
    for report in reports {
        responses.push(report.await.unwrap().unwrap().into_inner());
    }
    assert!(responses[0].password.len() >= 10);
    assert!(responses.iter().all(|response| *response == responses[0]));
    let alice = list(&mut admin, "corp", "alice").await;
    assert_eq!(alice.len(), 2, "the lost token and one password token");
    assert_eq!(audited(&mut admin, "report_lost_token").await, 1);

    // UnassignToken and DeleteToken (the retry of a deletion finds no token, and still
    // returns the first result).
    admin
        .assign_token(pb::AssignTokenRequest {
            serial: "IDEM2".into(),
            realm: "corp".into(),
            user: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let unassign = pb::UnassignTokenRequest {
        serial: "IDEM2".into(),
        request_id: "unassign-1".into(),
    };
    let unassigned = admin
        .unassign_token(unassign.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unassigned.user, "");
    assert_eq!(
        admin.unassign_token(unassign).await.unwrap().into_inner(),
        unassigned
    );
    assert_eq!(audited(&mut admin, "unassign_token").await, 1);
    let delete = pb::DeleteTokenRequest {
        serial: "IDEM3".into(),
        request_id: "delete-1".into(),
    };
    let deletes: Vec<_> = (0..4)
        .map(|_| {
            let (mut admin, delete) = (admin.clone(), delete.clone());
            tokio::spawn(async move { admin.delete_token(delete).await })
        })
        .collect();
    for delete in deletes {
        delete.await.unwrap().unwrap();
    }
    assert_eq!(audited(&mut admin, "delete_token").await, 1);
    let gone = admin
        .delete_token(pb::DeleteTokenRequest {
            serial: "IDEM3".into(),
            request_id: "delete-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

enroll_e2e::on_both_backends!(retried_mutations_return_the_first_result);
