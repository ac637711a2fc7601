//! The first schema: users and realms (the lock rows), tokens, audit events, idempotency
//! keys, devices, enrollment links and ceremonies.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::create_index;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Realm,
    Name,
    CreateTime,
    LockVersion,
}

#[derive(DeriveIden)]
enum Realms {
    Table,
    Name,
    LockVersion,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Serial,
    Realm,
    UserId,
    TokenType,
    State,
    SeedKeyId,
    Seed,
    Digits,
    Period,
    Algorithm,
    Counter,
    PinHash,
    FailureCount,
    Label,
    Description,
    CreateTime,
    ExpireTime,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    Time,
    Actor,
    Action,
    Realm,
    UserName,
    Subject,
    Result,
    Reason,
    TraceId,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Key,
    SealKeyId,
    Response,
    CreateTime,
}

/// Users (per realm, lowercased names): the rows enrollments lock to enforce limits.
pub(super) struct CreateUsers;

impl MigrationName for CreateUsers {
    fn name(&self) -> &str {
        "m0001_create_users"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateUsers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Users::Id))
                    .col(string(Users::Realm))
                    .col(string(Users::Name))
                    .col(timestamp_with_time_zone(Users::CreateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_by_realm_and_name")
                    .table(Users::Table)
                    .col(Users::Realm)
                    .col(Users::Name)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).if_exists().to_owned())
            .await
    }
}

/// Tokens, the realm lock rows, the audit trail and idempotency records.
pub(super) struct CreateTokens;

impl MigrationName for CreateTokens {
    fn name(&self) -> &str {
        "m0002_create_tokens_audit_idempotency"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTokens {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Enrollments upsert this column to lock the user row before counting.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(big_integer(Users::LockVersion).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Realms::Table)
                    .if_not_exists()
                    .col(string(Realms::Name).primary_key())
                    .col(big_integer(Realms::LockVersion).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Tokens::Table)
                    .if_not_exists()
                    .col(string(Tokens::Serial).primary_key())
                    .col(string(Tokens::Realm))
                    .col(big_integer_null(Tokens::UserId))
                    .col(string(Tokens::TokenType))
                    .col(string(Tokens::State))
                    .col(string(Tokens::SeedKeyId))
                    .col(binary(Tokens::Seed))
                    .col(integer(Tokens::Digits))
                    .col(integer(Tokens::Period))
                    .col(string(Tokens::Algorithm))
                    .col(big_integer(Tokens::Counter))
                    .col(text_null(Tokens::PinHash))
                    .col(integer(Tokens::FailureCount))
                    .col(string(Tokens::Label))
                    .col(text(Tokens::Description))
                    .col(timestamp_with_time_zone(Tokens::CreateTime))
                    .col(timestamp_with_time_zone_null(Tokens::ExpireTime))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Tokens::Table, Tokens::UserId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("tokens_by_user", vec![Tokens::UserId, Tokens::State]),
            ("tokens_by_realm", vec![Tokens::Realm, Tokens::Serial]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Tokens::Table).if_not_exists();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AuditEvents::Id))
                    .col(timestamp_with_time_zone(AuditEvents::Time))
                    .col(string(AuditEvents::Actor))
                    .col(string(AuditEvents::Action))
                    .col(string(AuditEvents::Realm))
                    .col(string(AuditEvents::UserName))
                    .col(string(AuditEvents::Subject))
                    .col(string(AuditEvents::Result))
                    .col(text(AuditEvents::Reason))
                    .col(string(AuditEvents::TraceId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(string(IdempotencyKeys::Key).primary_key())
                    .col(string(IdempotencyKeys::SealKeyId))
                    .col(binary(IdempotencyKeys::Response))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreateTime))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            AuditEvents::Table.into_iden(),
            Tokens::Table.into_iden(),
            Realms::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::LockVersion)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Id,
    Realm,
    UserId,
    CredentialId,
    DeviceType,
    State,
    Aaguid,
    BackupEligible,
    UserAgent,
    EnrollmentLinkId,
    Credential,
    CreateTime,
    LastUsedTime,
    ApprovedBy,
}

#[derive(DeriveIden)]
enum EnrollmentLinks {
    Table,
    Id,
    Realm,
    UserName,
    DeviceType,
    RedirectUrl,
    SecretHash,
    State,
    CreatedBy,
    CreateTime,
    ExpireTime,
    DeviceId,
}

#[derive(DeriveIden)]
enum Ceremonies {
    Table,
    Id,
    Kind,
    Realm,
    UserName,
    LinkId,
    DeviceType,
    State,
    CreateTime,
    ExpireTime,
}

/// WebAuthn devices, enrollment links (only the secret's hash) and ceremony state (so any
/// replica can finish what another began).
pub(super) struct CreateDevicesAndLinks;

impl MigrationName for CreateDevicesAndLinks {
    fn name(&self) -> &str {
        "m0003_create_devices_links_ceremonies"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateDevicesAndLinks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Devices::Table)
                    .if_not_exists()
                    .col(string(Devices::Id).primary_key())
                    .col(string(Devices::Realm))
                    .col(big_integer(Devices::UserId))
                    .col(string(Devices::CredentialId))
                    .col(string(Devices::DeviceType))
                    .col(string(Devices::State))
                    .col(string(Devices::Aaguid))
                    .col(boolean(Devices::BackupEligible))
                    .col(text(Devices::UserAgent))
                    .col(string_null(Devices::EnrollmentLinkId))
                    .col(text(Devices::Credential))
                    .col(timestamp_with_time_zone(Devices::CreateTime))
                    .col(timestamp_with_time_zone_null(Devices::LastUsedTime))
                    .col(string(Devices::ApprovedBy))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Devices::Table, Devices::UserId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // A credential id is unique across all users.
        create_index(
            manager,
            "devices_by_credential_id",
            Devices::Table,
            [Devices::CredentialId],
            true,
        )
        .await?;
        create_index(
            manager,
            "devices_by_user",
            Devices::Table,
            [Devices::UserId, Devices::State],
            false,
        )
        .await?;
        create_index(
            manager,
            "devices_by_realm",
            Devices::Table,
            [Devices::Realm, Devices::Id],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(EnrollmentLinks::Table)
                    .if_not_exists()
                    .col(string(EnrollmentLinks::Id).primary_key())
                    .col(string(EnrollmentLinks::Realm))
                    .col(string(EnrollmentLinks::UserName))
                    .col(string(EnrollmentLinks::DeviceType))
                    .col(text(EnrollmentLinks::RedirectUrl))
                    .col(string(EnrollmentLinks::SecretHash))
                    .col(string(EnrollmentLinks::State))
                    .col(string(EnrollmentLinks::CreatedBy))
                    .col(timestamp_with_time_zone(EnrollmentLinks::CreateTime))
                    .col(timestamp_with_time_zone(EnrollmentLinks::ExpireTime))
                    .col(string_null(EnrollmentLinks::DeviceId))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "links_by_secret_hash",
            EnrollmentLinks::Table,
            [EnrollmentLinks::SecretHash],
            true,
        )
        .await?;
        create_index(
            manager,
            "links_by_user",
            EnrollmentLinks::Table,
            [EnrollmentLinks::Realm, EnrollmentLinks::UserName],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(Ceremonies::Table)
                    .if_not_exists()
                    .col(string(Ceremonies::Id).primary_key())
                    .col(string(Ceremonies::Kind))
                    .col(string(Ceremonies::Realm))
                    .col(string(Ceremonies::UserName))
                    .col(string_null(Ceremonies::LinkId))
                    .col(string(Ceremonies::DeviceType))
                    .col(text(Ceremonies::State))
                    .col(timestamp_with_time_zone(Ceremonies::CreateTime))
                    .col(timestamp_with_time_zone(Ceremonies::ExpireTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "ceremonies_by_expiry",
            Ceremonies::Table,
            [Ceremonies::ExpireTime],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Ceremonies::Table.into_iden(),
            EnrollmentLinks::Table.into_iden(),
            Devices::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
