//! The device service's schema, one file per migration. Its migration table is its own, so
//! both services can share one database. Add a migration as a new file and one line in
//! `migrations()`; never edit one that has shipped.
use sea_orm_migration::prelude::*;

mod aaguid_verified;
mod autoassign_challenge_binding;
mod autoassign_confirmation;
mod device_changes;
mod device_security;
mod fido_metadata;
mod idempotency_expiry;
mod initial;
mod m0011_fido_metadata_jumps;
mod m0013_token_verify;
mod m0014_otp_enrollment_links;
mod m0015_enrollment_events;
mod m0016_event_poll_acks;
mod m0017_policy_event_relay;
mod m0018_event_subject_format;
mod m0019_list_indexes;
mod m0020_event_retention;
mod policy_snapshot;
mod token_backoff;
mod validation_clients;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(initial::CreateUsers),
            Box::new(initial::CreateTokens),
            Box::new(initial::CreateDevicesAndLinks),
            Box::new(device_security::DeviceApprovalAndCounters),
            Box::new(token_backoff::AddTokenBackoff),
            Box::new(autoassign_confirmation::AutoassignConfirmation),
            Box::new(idempotency_expiry::IdempotencyExpiry),
            Box::new(fido_metadata::FidoMetadata),
            Box::new(device_changes::DeviceChanges),
            Box::new(validation_clients::ValidationClientsTable),
            Box::new(policy_snapshot::PolicySetSnapshot),
            Box::new(autoassign_challenge_binding::AutoassignChallengeBinding),
            Box::new(m0011_fido_metadata_jumps::FidoMetadataJumps),
            Box::new(aaguid_verified::AaguidVerified),
            Box::new(m0013_token_verify::TokenVerify),
            Box::new(m0014_otp_enrollment_links::OtpEnrollmentLinksTable),
            Box::new(m0015_enrollment_events::EnrollmentEventsTables),
            Box::new(m0016_event_poll_acks::EventPollAcksTable),
            Box::new(m0017_policy_event_relay::PolicyEventRelayCursor),
            Box::new(m0018_event_subject_format::EventSubjectFormat),
            Box::new(m0019_list_indexes::ListIndexes),
            Box::new(m0020_event_retention::EventRetentionMark),
        ]
    }

    fn migration_table_name() -> DynIden {
        "enroll_device_migrations".into_iden()
    }
}

/// Advisory lock key serializing this service's migrations on PostgreSQL.
pub const MIGRATION_LOCK_KEY: i64 = 0x656e_726f_6c02;

pub(super) async fn create_index<T: Iden + 'static, C: Iden + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: impl IntoIterator<Item = C>,
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for column in columns {
        index.col(column);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database, Statement};

    use super::*;

    /// m0019 down and up again (with m0020, which comes after it): the list indexes go and
    /// come back, the three narrower indexes they replaced come back in between.
    #[tokio::test]
    async fn list_indexes_go_down_and_up() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let indexes = async |db: &sea_orm::DatabaseConnection| -> Vec<String> {
            db.query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name",
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String>("", "name").unwrap())
            .collect()
        };
        Migrator::up(&db, None).await.unwrap();
        let up = indexes(&db).await;
        for name in [
            "devices_by_state",
            "tokens_in_pool",
            "audit_events_by_realm",
        ] {
            assert!(up.iter().any(|index| index == name), "{name}: {up:?}");
        }
        assert!(!up.iter().any(|index| index == "devices_by_user"));
        Migrator::down(&db, Some(2)).await.unwrap();
        let down = indexes(&db).await;
        assert!(!down.iter().any(|index| index == "devices_by_state"));
        for name in ["devices_by_user", "tokens_by_user", "links_by_user"] {
            assert!(down.iter().any(|index| index == name), "{name}: {down:?}");
        }
        Migrator::up(&db, None).await.unwrap();
        assert_eq!(indexes(&db).await, up);
    }

    /// m0012 on a database that already holds devices: a device whose chain was verified
    /// keeps counting its model as verified (the rule it was registered under), one without
    /// a verified chain does not.
    #[tokio::test]
    async fn devices_registered_before_keep_their_recorded_model_facts() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let before = Migrator::migrations()
            .iter()
            .position(|migration| migration.name() == "m0012_aaguid_verified")
            .unwrap();
        Migrator::up(
            &db,
            Some(<u32 as TryFrom<usize>>::try_from(before).unwrap()),
        )
        .await
        .unwrap();
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            "INSERT INTO users (id, realm, name, create_time) \
             VALUES (1, 'acme', 'alice', '2026-01-01T00:00:00Z')",
        ))
        .await
        .unwrap();
        for (id, root) in [("bound", "Apple WebAuthn Root CA"), ("claimed", "")] {
            db.execute_raw(Statement::from_string(
                db.get_database_backend(),
                format!(
                    "INSERT INTO devices (id, realm, user_id, credential_id, device_type, state, \
                     aaguid, backup_eligible, user_agent, credential, create_time, approved_by, \
                     attestation_root) VALUES ('{id}', 'acme', 1, 'cred-{id}', 'any', \
                     'approved', '', false, '', '{{}}', '2026-01-01T00:00:00Z', '', '{root}')"
                ),
            ))
            .await
            .unwrap();
        }
        Migrator::up(&db, Some(1)).await.unwrap();
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT id, aaguid_verified FROM devices ORDER BY id",
            ))
            .await
            .unwrap();
        let verified: Vec<(String, bool)> = rows
            .iter()
            .map(|row| {
                (
                    row.try_get::<String>("", "id").unwrap(),
                    row.try_get::<bool>("", "aaguid_verified").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            verified,
            [("bound".to_owned(), true), ("claimed".to_owned(), false)]
        );
    }
}
