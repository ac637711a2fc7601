//! Validation back-off and lost-token replacements: `tokens.locked_until` (a token refuses
//! every pass until then, after repeated failures) and `tokens.replaced_by` (the temporary
//! password token issued for a lost token, so a report retried after an outage knows
//! whether one was issued).
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum Tokens {
    Table,
    LockedUntil,
    ReplacedBy,
}

pub(super) struct AddTokenBackoff;

impl MigrationName for AddTokenBackoff {
    fn name(&self) -> &str {
        "m0004_token_backoff_and_replacement"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddTokenBackoff {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(timestamp_with_time_zone_null(Tokens::LockedUntil))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(string_null(Tokens::ReplacedBy))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Tokens::ReplacedBy, Tokens::LockedUntil] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
