//! The device service's schema, one file per migration. Its migration table is its own, so
//! both services can share one database. Add a migration as a new file and one line in
//! `migrations()`; never edit one that has shipped.
use sea_orm_migration::prelude::*;

mod autoassign_challenge_binding;
mod autoassign_confirmation;
mod device_changes;
mod device_security;
mod fido_metadata;
mod idempotency_expiry;
mod initial;
mod m0011_fido_metadata_jumps;
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
