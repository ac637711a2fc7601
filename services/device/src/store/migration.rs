//! The device service's schema. Its migration table is its own, so both services can share
//! one database. Token, device, link and audit tables arrive with the features that use them.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateUsers)]
    }

    fn migration_table_name() -> DynIden {
        "enroll_device_migrations".into_iden()
    }
}

/// Advisory lock key serializing this service's migrations on PostgreSQL.
pub const MIGRATION_LOCK_KEY: i64 = 0x656e_726f_6c02;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Realm,
    Name,
    CreateTime,
}

/// Users (per realm, lowercased names): the rows enrollments lock to enforce limits.
struct CreateUsers;

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
