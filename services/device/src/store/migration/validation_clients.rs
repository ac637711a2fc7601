//! No lockout by outsiders: Validate failures are counted per (user, client) pair in
//! `validation_clients` (shared by every replica), which also records from where each user
//! last passed (a known client). The token row no longer backs off for everyone, so the
//! back-offs stored there are cleared.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::create_index;

#[derive(DeriveIden)]
enum ValidationClients {
    Table,
    Realm,
    UserName,
    Client,
    Failures,
    BlockedUntil,
    LastSuccess,
    UpdateTime,
}

pub(super) struct ValidationClientsTable;

impl MigrationName for ValidationClientsTable {
    fn name(&self) -> &str {
        "m0008_validation_clients"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ValidationClientsTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ValidationClients::Table)
                    .if_not_exists()
                    .col(string(ValidationClients::Realm))
                    .col(string(ValidationClients::UserName))
                    .col(string(ValidationClients::Client))
                    .col(integer(ValidationClients::Failures).default(0))
                    .col(timestamp_with_time_zone_null(
                        ValidationClients::BlockedUntil,
                    ))
                    .col(timestamp_with_time_zone_null(
                        ValidationClients::LastSuccess,
                    ))
                    .col(timestamp_with_time_zone(ValidationClients::UpdateTime))
                    .primary_key(
                        Index::create()
                            .col(ValidationClients::Realm)
                            .col(ValidationClients::UserName)
                            .col(ValidationClients::Client),
                    )
                    .to_owned(),
            )
            .await?;
        // The sweep of pairs nobody used for longer than a client stays known.
        create_index(
            manager,
            "validation_clients_by_update_time",
            ValidationClients::Table,
            [ValidationClients::UpdateTime],
            false,
        )
        .await?;
        // A token backing off refused its owner too; pairs back off instead now.
        manager
            .get_connection()
            .execute_unprepared("UPDATE tokens SET locked_until = NULL")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ValidationClients::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
