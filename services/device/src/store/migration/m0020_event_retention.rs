//! The outbox's retention mark: `purged_through` is the largest `seq` the retention purge
//! went past (every stamped event at or below it is deleted, or kept only because a dead
//! letter names it). One row (id 1), inserted here at 0 and moved by the purge in the
//! transaction of each batch; a reader resuming below it has lost events
//! (WatchEnrollmentEvents answers OUT_OF_RANGE).
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, integer, timestamp_with_time_zone};

#[derive(DeriveIden)]
enum EventRetention {
    Table,
    Id,
    PurgedThrough,
    UpdateTime,
}

pub(super) struct EventRetentionMark;

impl MigrationName for EventRetentionMark {
    fn name(&self) -> &str {
        "m0020_event_retention"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for EventRetentionMark {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use EventRetention as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .if_not_exists()
                    .col(integer(R::Id).primary_key())
                    .col(big_integer(R::PurgedThrough))
                    .col(timestamp_with_time_zone(R::UpdateTime))
                    .to_owned(),
            )
            .await?;
        // The one row, so every purge only updates it.
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO event_retention (id, purged_through, update_time) \
                 VALUES (1, 0, '1970-01-01T00:00:00Z')",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(EventRetention::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
