//! Autoassignment hardening: which tokens are hardware (only those may be autoassigned),
//! the pending two-code confirmations, and the attempt budgets every replica shares.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::create_index;

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Hardware,
}

#[derive(DeriveIden)]
enum AutoassignChallenges {
    Table,
    Id,
    Realm,
    UserName,
    Serial,
    Factor,
    PinHash,
    CreateTime,
    ExpireTime,
    Attempts,
}

#[derive(DeriveIden)]
enum AttemptBudgets {
    Table,
    Key,
    WindowStart,
    Count,
}

/// `tokens.hardware`, the `autoassign_challenges` and `attempt_budgets` tables.
pub(super) struct AutoassignConfirmation;

impl MigrationName for AutoassignConfirmation {
    fn name(&self) -> &str {
        "m0004_autoassign_hardware_challenges_budgets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AutoassignConfirmation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(boolean(Tokens::Hardware).default(false))
                    .to_owned(),
            )
            .await?;
        // Until now only ImportTokens wrote this description (EnrollToken's is the caller's
        // text, empty by default), so it is the best record of which rows came from a CSV of
        // hardware tokens. Everything else stays software: never autoassignable.
        manager
            .get_connection()
            .execute_unprepared("UPDATE tokens SET hardware = TRUE WHERE description = 'imported'")
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AutoassignChallenges::Table)
                    .if_not_exists()
                    .col(string(AutoassignChallenges::Id).primary_key())
                    .col(string(AutoassignChallenges::Realm))
                    .col(string(AutoassignChallenges::UserName))
                    .col(string(AutoassignChallenges::Serial))
                    .col(big_integer(AutoassignChallenges::Factor))
                    .col(text(AutoassignChallenges::PinHash))
                    .col(timestamp_with_time_zone(AutoassignChallenges::CreateTime))
                    .col(timestamp_with_time_zone(AutoassignChallenges::ExpireTime))
                    .col(integer(AutoassignChallenges::Attempts).default(0))
                    .to_owned(),
            )
            .await?;
        // One pending confirmation per user: a new first code replaces the old one.
        create_index(
            manager,
            "autoassign_challenges_by_user",
            AutoassignChallenges::Table,
            [AutoassignChallenges::Realm, AutoassignChallenges::UserName],
            true,
        )
        .await?;
        create_index(
            manager,
            "autoassign_challenges_by_expiry",
            AutoassignChallenges::Table,
            [AutoassignChallenges::ExpireTime],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(AttemptBudgets::Table)
                    .if_not_exists()
                    .col(string(AttemptBudgets::Key).primary_key())
                    .col(timestamp_with_time_zone(AttemptBudgets::WindowStart))
                    .col(big_integer(AttemptBudgets::Count))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "attempt_budgets_by_window",
            AttemptBudgets::Table,
            [AttemptBudgets::WindowStart],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AttemptBudgets::Table.into_iden(),
            AutoassignChallenges::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .drop_column(Tokens::Hardware)
                    .to_owned(),
            )
            .await
    }
}
