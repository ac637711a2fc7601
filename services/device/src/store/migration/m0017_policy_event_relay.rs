//! The policy-event relay's cursor: the last policy-history id whose change is in the
//! outbox as a `policy.*` event. One row (id 1), written the first time a replica reaches
//! the policy service (at the newest change then: old history is not replayed), then moved
//! in the transaction that writes the relayed events.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, integer, timestamp_with_time_zone};

#[derive(DeriveIden)]
enum PolicyEventRelay {
    Table,
    Id,
    LastHistoryId,
    UpdateTime,
}

pub(super) struct PolicyEventRelayCursor;

impl MigrationName for PolicyEventRelayCursor {
    fn name(&self) -> &str {
        "m0017_policy_event_relay"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PolicyEventRelayCursor {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PolicyEventRelay as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .if_not_exists()
                    .col(integer(R::Id).primary_key())
                    .col(big_integer(R::LastHistoryId))
                    .col(timestamp_with_time_zone(R::UpdateTime))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(PolicyEventRelay::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
