//! The token findings of the security review that concern admins, over real gRPC on both
//! backends: removing access never waits for the policy service (outage, `token_types`),
//! a lost token is disabled even when no temporary password can be issued (and a retry
//! issues it), the limits count devices (ImportTokens, EnableToken), and an enrollment
//! whose audit event cannot be written leaves nothing behind.
use enroll_e2e::{
    Backend, TestStack, audit_events, enroll_token, get_token, realm_policy,
    register_device_by_link, validate_request,
};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::status::reason;
use tonic::Code;

mod removal {
    use super::*;

    /// Disable, unassign and delete proceed while the policy service is down, audited with
    /// why; enable, assign and SetPin still fail closed (see also `tokens::lifecycle`).
    async fn removing_access_proceeds_without_the_policy_service(backend: Backend) {
        let mut stack = TestStack::start(backend).await;
        let mut admin = stack.admin();
        let alice = enroll_token(&mut admin, "corp", "alice", pb::TokenType::Totp).await;
        let bob = enroll_token(&mut admin, "corp", "bob", pb::TokenType::Totp).await;
        let pooled = enroll_token(&mut admin, "corp", "", pb::TokenType::Hotp).await;
        stack.stop_policy().await;

        let disabled = admin
            .disable_token(pb::DisableTokenRequest {
                serial: alice.serial.clone(),
                ..Default::default()
            })
            .await
            .expect("disabling never waits for the policy service")
            .into_inner();
        assert_eq!(disabled.state, pb::TokenState::Disabled as i32);
        let unassigned = admin
            .unassign_token(pb::UnassignTokenRequest {
                serial: bob.serial.clone(),
                ..Default::default()
            })
            .await
            .expect("unassigning never waits for the policy service")
            .into_inner();
        assert_eq!(unassigned.user, "");
        admin
            .delete_token(pb::DeleteTokenRequest {
                serial: pooled.serial.clone(),
                ..Default::default()
            })
            .await
            .expect("deleting never waits for the policy service");

        for (serial, action) in [
            (&alice.serial, "disable_token"),
            (&bob.serial, "unassign_token"),
            (&pooled.serial, "delete_token"),
        ] {
            let events = audit_events(&mut admin, serial, action).await;
            assert_eq!(events.len(), 1, "{action}");
            assert_eq!(events[0].result, "ok");
            assert!(
                events[0].reason.contains("no policy decision")
                    && events[0].reason.contains("never blocked"),
                "{action}: {}",
                events[0].reason
            );
        }

        let enable = admin
            .enable_token(pb::EnableTokenRequest {
                serial: alice.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(enable.code(), Code::Unavailable);
        assert_eq!(
            get_token(&mut admin, &alice.serial).await.state,
            pb::TokenState::Disabled as i32
        );
    }

    /// A `token_types` that leaves out the token's type does not keep an admin from
    /// disabling, unassigning or deleting it; enabling it stays denied.
    async fn token_types_never_block_removing_access(backend: Backend) {
        let stack = TestStack::start(backend).await;
        let mut admin = stack.admin();
        let alice = enroll_token(&mut admin, "corp", "alice", pb::TokenType::Totp).await;
        let bob = enroll_token(&mut admin, "corp", "bob", pb::TokenType::Totp).await;
        let carol = enroll_token(&mut admin, "corp", "carol", pb::TokenType::Totp).await;
        stack
            .create_policy(realm_policy(
                "corp-no-totp",
                "corp",
                &[("token_types", "hotp,password")],
            ))
            .await;

        let disabled = admin
            .disable_token(pb::DisableTokenRequest {
                serial: alice.serial.clone(),
                ..Default::default()
            })
            .await
            .expect("token_types never blocks disabling")
            .into_inner();
        assert_eq!(disabled.state, pb::TokenState::Disabled as i32);
        admin
            .unassign_token(pb::UnassignTokenRequest {
                serial: bob.serial.clone(),
                ..Default::default()
            })
            .await
            .expect("token_types never blocks unassigning");
        admin
            .delete_token(pb::DeleteTokenRequest {
                serial: carol.serial.clone(),
                ..Default::default()
            })
            .await
            .expect("token_types never blocks deleting");
        let events = audit_events(&mut admin, &alice.serial, "disable_token").await;
        assert!(
            events[0]
                .reason
                .contains("TOKEN_TYPE_NOT_ALLOWED (corp-no-totp)")
                && events[0].reason.contains("never blocked"),
            "{}",
            events[0].reason
        );

        let enable = admin
            .enable_token(pb::EnableTokenRequest {
                serial: alice.serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(enable.code(), Code::PermissionDenied);
        assert_eq!(reason(&enable).as_deref(), Some("TOKEN_TYPE_NOT_ALLOWED"));
    }

    enroll_e2e::on_both_backends!(
        removing_access_proceeds_without_the_policy_service,
        token_types_never_block_removing_access,
    );
}

mod lost {
    use super::*;

    fn report(serial: &str, request_id: &str) -> pb::ReportLostTokenRequest {
        pb::ReportLostTokenRequest {
            serial: serial.into(),
            request_id: request_id.into(),
            ..Default::default()
        }
    }

    /// During an outage the token is still marked lost (audited) and the answer says no
    /// password was issued; reporting it again once the policy answers issues it, once.
    async fn an_outage_disables_the_lost_token_and_a_retry_issues_the_password(backend: Backend) {
        let mut stack = TestStack::start(backend).await;
        let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
        let original = enroll_token(&mut admin, "corp", "frank", pb::TokenType::Hotp).await;
        stack.stop_policy().await;

        let refused = admin
            .report_lost_token(report(&original.serial, "lost-1"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("was disabled")
                && refused
                    .message()
                    .contains("no temporary password was issued"),
            "{}",
            refused.message()
        );
        let lost = get_token(&mut admin, &original.serial).await;
        assert_eq!(lost.state, pb::TokenState::Lost as i32);
        let events = audit_events(&mut admin, &original.serial, "report_lost_token").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].result, "ok");
        assert!(
            events[0]
                .reason
                .starts_with("marked lost; no temporary password issued"),
            "{}",
            events[0].reason
        );

        stack.restart_policy().await;
        // The same request id: the refused first attempt remembered nothing.
        let replaced = admin
            .report_lost_token(report(&original.serial, "lost-1"))
            .await
            .expect("the retry issues the temporary password")
            .into_inner();
        let replacement = replaced.token.unwrap();
        assert!(replacement.serial.starts_with("PASS"));
        assert_eq!(replacement.user, "frank");
        let ok = proxy
            .validate(validate_request("corp", "frank", &replaced.password))
            .await
            .unwrap()
            .into_inner();
        assert!(ok.ok && ok.serial == replacement.serial, "{ok:?}");
        let again = admin
            .report_lost_token(report(&original.serial, ""))
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition);
        assert!(
            again.message().contains(&replacement.serial),
            "{}",
            again.message()
        );
        let passwords = admin
            .list_tokens(pb::ListTokensRequest {
                realm: "corp".into(),
                user: "frank".into(),
                r#type: pb::TokenType::Password as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tokens;
        assert_eq!(passwords.len(), 1, "one temporary password");
    }

    /// A LOST_TOKEN denial (passwords left out of `token_types`) still disables the token;
    /// once the policy allows it, reporting again issues the password.
    async fn a_denied_password_still_disables_the_lost_token(backend: Backend) {
        let stack = TestStack::start(backend).await;
        let mut admin = stack.admin();
        let original = enroll_token(&mut admin, "corp", "frank", pb::TokenType::Totp).await;
        let strict = stack
            .create_policy(realm_policy(
                "corp-no-passwords",
                "corp",
                &[("token_types", "hotp")],
            ))
            .await;

        let denied = admin
            .report_lost_token(report(&original.serial, ""))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert_eq!(reason(&denied).as_deref(), Some("TOKEN_TYPE_NOT_ALLOWED"));
        assert!(
            denied
                .message()
                .contains("no temporary password was issued"),
            "{}",
            denied.message()
        );
        assert_eq!(
            get_token(&mut admin, &original.serial).await.state,
            pb::TokenState::Lost as i32
        );

        stack
            .policy_admin()
            .delete_policy(enroll_shared::proto::policy::v1::DeletePolicyRequest {
                name: strict.name,
                ..Default::default()
            })
            .await
            .unwrap();
        let replaced = admin
            .report_lost_token(report(&original.serial, ""))
            .await
            .expect("allowed now: the password is issued")
            .into_inner();
        assert!(!replaced.password.is_empty());
    }

    enroll_e2e::on_both_backends!(
        an_outage_disables_the_lost_token_and_a_retry_issues_the_password,
        a_denied_password_still_disables_the_lost_token,
    );
}

mod limits {
    use super::*;

    /// ImportTokens counts the realm's devices toward `max_token_per_realm`, as every
    /// other writer does.
    async fn import_counts_devices_toward_the_realm_limit(backend: Backend) {
        let limit = realm_policy("corp-three", "corp", &[("max_token_per_realm", "3")]);
        let stack = TestStack::with_policies(backend, [limit]).await;
        let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
        register_device_by_link(&mut admin, &mut proxy, "corp", "alice").await;
        register_device_by_link(&mut admin, &mut proxy, "corp", "bob").await;
        let refused = admin
            .import_tokens(pb::ImportTokensRequest {
                realm: "corp".into(),
                csv: format!(
                    "HW1,{seed},hotp,6,0\nHW2,{seed},hotp,6,0\n",
                    seed = enroll_e2e::RFC4226_SEED_HEX
                ),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("max_token_per_realm 3"));
        let one = admin
            .import_tokens(pb::ImportTokensRequest {
                realm: "corp".into(),
                csv: format!("HW1,{},hotp,6,0\n", enroll_e2e::RFC4226_SEED_HEX),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one.imported, 1, "two devices and one token make three");
    }

    /// EnableToken keeps `max_active_token_per_user`, devices counted: a disabled or
    /// locked token is not enabled past it.
    async fn enabling_keeps_the_active_limit(backend: Backend) {
        let limit = realm_policy(
            "corp-one-active",
            "corp",
            &[("max_active_token_per_user", "1")],
        );
        let stack = TestStack::with_policies(backend, [limit]).await;
        let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
        let first = enroll_token(&mut admin, "corp", "alice", pb::TokenType::Totp).await;
        let disable = |serial: &str| pb::DisableTokenRequest {
            serial: serial.into(),
            ..Default::default()
        };
        let enable = |serial: &str| pb::EnableTokenRequest {
            serial: serial.into(),
            ..Default::default()
        };
        admin.disable_token(disable(&first.serial)).await.unwrap();
        let second = enroll_token(&mut admin, "corp", "alice", pb::TokenType::Totp).await;
        let over = admin.enable_token(enable(&first.serial)).await.unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
        assert!(
            over.message().contains("max_active_token_per_user 1")
                && over.message().contains("corp-one-active"),
            "{}",
            over.message()
        );
        assert_eq!(
            get_token(&mut admin, &first.serial).await.state,
            pb::TokenState::Disabled as i32
        );
        let events = audit_events(&mut admin, &first.serial, "enable_token").await;
        assert_eq!(events[0].result, "denied");
        // Enabling an enabled token adds nothing: allowed.
        admin.enable_token(enable(&second.serial)).await.unwrap();

        // A device is an active credential too.
        admin.disable_token(disable(&second.serial)).await.unwrap();
        register_device_by_link(&mut admin, &mut proxy, "corp", "alice").await;
        let over = admin
            .enable_token(enable(&second.serial))
            .await
            .unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    }

    enroll_e2e::on_both_backends!(
        import_counts_devices_toward_the_realm_limit,
        enabling_keeps_the_active_limit,
    );
}

mod atomic_enrollment {
    use super::*;
    use enroll_e2e::TestDatabase;
    use sea_orm::{ConnectionTrait, Database, Statement};

    async fn count(database: &TestDatabase, sql: &str) -> i64 {
        let db = Database::connect(&database.url).await.expect("connect");
        let backend = db.get_database_backend();
        let row = db
            .query_one_raw(Statement::from_string(backend, sql))
            .await
            .expect("query")
            .expect("a row");
        db.close().await.ok();
        row.try_get_by_index::<i64>(0).expect("a count")
    }

    /// Makes every audit insert about `victim` fail, as a full disk or a broken constraint
    /// would.
    async fn refuse_audit_events_of_victim(database: &TestDatabase) {
        if database.backend == Backend::Postgres {
            database
                .execute(
                    "CREATE FUNCTION refuse_victim_audit() RETURNS trigger AS $$ BEGIN \
                     IF NEW.user_name = 'victim' THEN RAISE EXCEPTION 'injected audit failure'; END IF; \
                     RETURN NEW; END $$ LANGUAGE plpgsql",
                )
                .await;
            database
                .execute(
                    "CREATE TRIGGER refuse_victim_audit BEFORE INSERT ON audit_events \
                     FOR EACH ROW EXECUTE FUNCTION refuse_victim_audit()",
                )
                .await;
        } else {
            database
                .execute(
                    "CREATE TRIGGER refuse_victim_audit BEFORE INSERT ON audit_events \
                     WHEN NEW.user_name = 'victim' BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END",
                )
                .await;
        }
    }

    /// The token, its owner's row and its audit event are written together or not at all,
    /// on the path without limits (one statement on PostgreSQL) and on the path that counts
    /// under a limit (a transaction).
    async fn a_failed_audit_write_leaves_no_token_and_no_user(backend: Backend) {
        let limit = realm_policy("limited-five", "limited", &[("max_token_per_user", "5")]);
        let stack = TestStack::with_policies(backend, [limit]).await;
        let mut admin = stack.admin();
        refuse_audit_events_of_victim(&stack.database).await;
        for realm in ["corp", "limited"] {
            let failed = admin
                .enroll_token(pb::EnrollTokenRequest {
                    realm: realm.into(),
                    user: "victim".into(),
                    r#type: pb::TokenType::Totp as i32,
                    ..Default::default()
                })
                .await
                .expect_err("the audit event could not be written");
            assert!(!failed.message().contains("otpauth"), "{realm}: {failed:?}");
            let enrolled = enroll_token(&mut admin, realm, "alice", pb::TokenType::Totp).await;
            assert!(!enrolled.serial.is_empty());
        }
        assert_eq!(
            count(
                &stack.database,
                "SELECT COUNT(*) FROM users WHERE name = 'victim'"
            )
            .await,
            0,
            "the user row was rolled back with the token"
        );
        assert_eq!(
            count(
                &stack.database,
                "SELECT COUNT(*) FROM tokens t JOIN users u ON t.user_id = u.id WHERE u.name = 'victim'"
            )
            .await,
            0
        );
        assert_eq!(
            count(
                &stack.database,
                "SELECT COUNT(*) FROM tokens t JOIN users u ON t.user_id = u.id WHERE u.name = 'alice'"
            )
            .await,
            2,
            "alice's enrollments in both realms are stored"
        );
        assert_eq!(
            count(
                &stack.database,
                "SELECT COUNT(*) FROM audit_events WHERE user_name = 'alice' AND action = 'enroll_token'"
            )
            .await,
            2
        );
    }

    enroll_e2e::on_both_backends!(a_failed_audit_write_leaves_no_token_and_no_user);
}
