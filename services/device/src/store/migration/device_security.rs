//! Device guarantees held by the server: a ceremony remembers whether its device must wait
//! for approval (fixed when it begins), and a device keeps its last signature counter as a
//! column so a counter that does not advance is refused by one conditional update.
use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Ceremonies {
    Table,
    RequireApproval,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    SignCount,
}

pub(super) struct DeviceApprovalAndCounters;

impl MigrationName for DeviceApprovalAndCounters {
    fn name(&self) -> &str {
        "m0004_device_approval_and_counters"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DeviceApprovalAndCounters {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Two statements: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Ceremonies::Table)
                    .add_column(
                        ColumnDef::new(Ceremonies::RequireApproval)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .add_column(
                        ColumnDef::new(Devices::SignCount)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .drop_column(Devices::SignCount)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Ceremonies::Table)
                    .drop_column(Ceremonies::RequireApproval)
                    .to_owned(),
            )
            .await
    }
}
