//! The last policy set the policy service streamed (WatchPolicySet), kept so that a replica
//! started while the policy service is down still decides CheckEnrollment's model rules and
//! device authentication from the organisation's rules instead of from none.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum PolicySetSnapshots {
    Table,
    Version,
    Policies,
    ReceiveTime,
}

pub(super) struct PolicySetSnapshot;

impl MigrationName for PolicySetSnapshot {
    fn name(&self) -> &str {
        "m0009_policy_set_snapshot"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PolicySetSnapshot {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PolicySetSnapshots::Table)
                    .if_not_exists()
                    .col(big_integer(PolicySetSnapshots::Version).primary_key())
                    .col(text(PolicySetSnapshots::Policies))
                    .col(timestamp_with_time_zone(PolicySetSnapshots::ReceiveTime))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PolicySetSnapshots::Table).to_owned())
            .await
    }
}
