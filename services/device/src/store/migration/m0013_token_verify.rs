//! OTP tokens enrolled with a verify step: the token waits for a first correct code
//! (`VerifyToken`) until `verify_deadline`, with `verify_attempts_left` wrong codes allowed.
//! `verify_state` is NULL for every token enrolled without the step (all tokens before this
//! migration), `pending` while it waits, `failed` after the last wrong code (the seed is
//! erased then); a pending token past its deadline is expired, by the clock, with no sweeper.
use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Tokens {
    Table,
    VerifyState,
    VerifyDeadline,
    VerifyAttemptsLeft,
}

pub(super) struct TokenVerify;

impl MigrationName for TokenVerify {
    fn name(&self) -> &str {
        "m0013_token_verify"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TokenVerify {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            ColumnDef::new(Tokens::VerifyState)
                .string_len(16)
                .null()
                .to_owned(),
            ColumnDef::new(Tokens::VerifyDeadline)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Tokens::VerifyAttemptsLeft)
                .integer()
                .null()
                .to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Tokens::VerifyState,
            Tokens::VerifyDeadline,
            Tokens::VerifyAttemptsLeft,
        ] {
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
