//! RFC 8936 poll delivery: `event_poll_acks` holds the events a poll receiver acknowledged
//! (or reported an error for) beyond its stream's cursor. Acknowledgements may come in any
//! order; the cursor moves over the contiguous acknowledged prefix and the rows at or below
//! it are deleted in the same transaction, so the table holds only the gaps' right sides.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, string};

#[derive(DeriveIden)]
enum EventPollAcks {
    Table,
    StreamId,
    Seq,
}

pub(super) struct EventPollAcksTable;

impl MigrationName for EventPollAcksTable {
    fn name(&self) -> &str {
        "m0016_event_poll_acks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for EventPollAcksTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use EventPollAcks as A;
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .if_not_exists()
                    .col(string(A::StreamId))
                    .col(big_integer(A::Seq))
                    .primary_key(Index::create().col(A::StreamId).col(A::Seq))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(EventPollAcks::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
