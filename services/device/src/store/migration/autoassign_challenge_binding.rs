//! Autoassignment challenges a person can follow: a challenge is bound to the client that
//! opened it (one open challenge per user and client, so nobody elsewhere can answer or
//! replace it), remembers the pass that opened it (keyed digest, to recognise a retype)
//! and may be a decoy.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::create_index;

#[derive(DeriveIden)]
enum AutoassignChallenges {
    Table,
    Realm,
    UserName,
    Client,
    PassDigest,
    Decoy,
}

/// `autoassign_challenges.client`, `.pass_digest`, `.decoy`; unique per user and client.
pub(super) struct AutoassignChallengeBinding;

impl MigrationName for AutoassignChallengeBinding {
    fn name(&self) -> &str {
        "m0010_autoassign_challenge_binding"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AutoassignChallengeBinding {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Pending confirmations live two minutes and are bound to no client: they cannot be
        // answered under the new rules, so the upgrade drops them (their users start again).
        manager
            .get_connection()
            .execute_unprepared("DELETE FROM autoassign_challenges")
            .await?;
        // One column per statement: SQLite alters one thing at a time.
        for column in [
            string(AutoassignChallenges::Client).default("-").to_owned(),
            string(AutoassignChallenges::PassDigest)
                .default("")
                .to_owned(),
            boolean(AutoassignChallenges::Decoy)
                .default(false)
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AutoassignChallenges::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("autoassign_challenges_by_user")
                    .table(AutoassignChallenges::Table)
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "autoassign_challenges_by_user_client",
            AutoassignChallenges::Table,
            [
                AutoassignChallenges::Realm,
                AutoassignChallenges::UserName,
                AutoassignChallenges::Client,
            ],
            true,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DELETE FROM autoassign_challenges")
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("autoassign_challenges_by_user_client")
                    .table(AutoassignChallenges::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            AutoassignChallenges::Decoy,
            AutoassignChallenges::PassDigest,
            AutoassignChallenges::Client,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AutoassignChallenges::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        create_index(
            manager,
            "autoassign_challenges_by_user",
            AutoassignChallenges::Table,
            [AutoassignChallenges::Realm, AutoassignChallenges::UserName],
            true,
        )
        .await
    }
}
