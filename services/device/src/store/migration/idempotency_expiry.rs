//! Idempotency records expire and are bound to their request: `expire_time` (a record past
//! it is treated as absent and purged) and `request_digest` (a keyed SHA-256 digest of the
//! request's parameters; the same request id with other parameters is refused instead of
//! answered with the first response). Records written before this migration have neither
//! and are treated as expired: they may hold a secret that was kept with no end.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::create_index;

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    RequestDigest,
    ExpireTime,
}

pub(super) struct IdempotencyExpiry;

impl MigrationName for IdempotencyExpiry {
    fn name(&self) -> &str {
        "m0005_idempotency_expiry_and_digest"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for IdempotencyExpiry {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyKeys::Table)
                    .add_column(binary_null(IdempotencyKeys::RequestDigest))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyKeys::Table)
                    .add_column(timestamp_with_time_zone_null(IdempotencyKeys::ExpireTime))
                    .to_owned(),
            )
            .await?;
        // The purge deletes by expiry.
        create_index(
            manager,
            "idx_idempotency_keys_expire_time",
            IdempotencyKeys::Table,
            [IdempotencyKeys::ExpireTime],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_idempotency_keys_expire_time")
                    .table(IdempotencyKeys::Table)
                    .to_owned(),
            )
            .await?;
        for column in [IdempotencyKeys::ExpireTime, IdempotencyKeys::RequestDigest] {
            manager
                .alter_table(
                    Table::alter()
                        .table(IdempotencyKeys::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
