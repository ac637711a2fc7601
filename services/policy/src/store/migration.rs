//! The policy service's schema. Its migration table is its own, so both services can share
//! one database.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreatePolicyTables)]
    }

    fn migration_table_name() -> DynIden {
        "enroll_policy_migrations".into_iden()
    }
}

/// Advisory lock key serializing this service's migrations on PostgreSQL.
pub const MIGRATION_LOCK_KEY: i64 = 0x656e_726f_6c01;

#[derive(DeriveIden)]
enum Policies {
    Table,
    Name,
    Scope,
    Realms,
    Users,
    Clients,
    Actions,
    Priority,
    Active,
    Description,
    Etag,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum PolicyHistory {
    Table,
    Id,
    PolicyName,
    Change,
    Actor,
    ChangeTime,
    BeforeJson,
    AfterJson,
}

#[derive(DeriveIden)]
enum PolicySetState {
    Table,
    Id,
    Version,
}

struct CreatePolicyTables;

impl MigrationName for CreatePolicyTables {
    fn name(&self) -> &str {
        "m0001_create_policy_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePolicyTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Policies::Table)
                    .if_not_exists()
                    .col(string(Policies::Name).primary_key())
                    .col(string(Policies::Scope))
                    .col(text(Policies::Realms))
                    .col(text(Policies::Users))
                    .col(text(Policies::Clients))
                    .col(text(Policies::Actions))
                    .col(big_integer(Policies::Priority))
                    .col(boolean(Policies::Active))
                    .col(text(Policies::Description))
                    .col(string(Policies::Etag))
                    .col(timestamp_with_time_zone(Policies::CreateTime))
                    .col(timestamp_with_time_zone(Policies::UpdateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PolicyHistory::Table)
                    .if_not_exists()
                    .col(big_pk_auto(PolicyHistory::Id))
                    .col(string(PolicyHistory::PolicyName))
                    .col(string(PolicyHistory::Change))
                    .col(string(PolicyHistory::Actor))
                    .col(timestamp_with_time_zone(PolicyHistory::ChangeTime))
                    .col(text_null(PolicyHistory::BeforeJson))
                    .col(text_null(PolicyHistory::AfterJson))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("policy_history_by_name")
                    .table(PolicyHistory::Table)
                    .col(PolicyHistory::PolicyName)
                    .col(PolicyHistory::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // One row: the policy-set version, bumped by every change. Replicas poll it, and
        // every write updates it first, which serializes policy writes.
        manager
            .create_table(
                Table::create()
                    .table(PolicySetState::Table)
                    .if_not_exists()
                    .col(integer(PolicySetState::Id).primary_key())
                    .col(big_integer(PolicySetState::Version))
                    .to_owned(),
            )
            .await?;
        let mut insert = Query::insert();
        insert
            .into_table(PolicySetState::Table)
            .columns([PolicySetState::Id, PolicySetState::Version])
            .values([1.into(), 0.into()])
            .map_err(|error| DbErr::Migration(error.to_string()))?;
        manager.exec_stmt(insert).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Policies::Table.into_iden(),
            PolicyHistory::Table.into_iden(),
            PolicySetState::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
