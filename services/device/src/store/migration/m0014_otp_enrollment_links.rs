//! One-time OTP enrollment links: issued for one user and token type with no key material;
//! the seed is made when the link is redeemed, as a verify-pending token (`serial`), and
//! only the redemption session (`session_hash`) sees it again. `state` is `active`,
//! `revoked` or `superseded`; issued, expired, pending, enrolled, failed are computed from
//! the row, its token and the clock.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    integer, string, string_len, string_null, text, timestamp_with_time_zone,
    timestamp_with_time_zone_null,
};

use super::create_index;

#[derive(DeriveIden)]
enum OtpEnrollmentLinks {
    Table,
    Id,
    Realm,
    UserName,
    TokenType,
    Digits,
    Period,
    Algorithm,
    Label,
    Description,
    SecretHash,
    State,
    CreatedBy,
    CreateTime,
    ExpireTime,
    Serial,
    SessionHash,
    RedeemTime,
}

pub(super) struct OtpEnrollmentLinksTable;

impl MigrationName for OtpEnrollmentLinksTable {
    fn name(&self) -> &str {
        "m0014_otp_enrollment_links"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OtpEnrollmentLinksTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use OtpEnrollmentLinks as L;
        manager
            .create_table(
                Table::create()
                    .table(L::Table)
                    .if_not_exists()
                    .col(string(L::Id).primary_key())
                    .col(string(L::Realm))
                    .col(string(L::UserName))
                    .col(string_len(L::TokenType, 16))
                    .col(integer(L::Digits))
                    .col(integer(L::Period))
                    .col(string_len(L::Algorithm, 16))
                    .col(string(L::Label))
                    .col(text(L::Description))
                    .col(string(L::SecretHash))
                    .col(string_len(L::State, 16))
                    .col(string(L::CreatedBy))
                    .col(timestamp_with_time_zone(L::CreateTime))
                    .col(timestamp_with_time_zone(L::ExpireTime))
                    .col(string_null(L::Serial))
                    .col(string_null(L::SessionHash))
                    .col(timestamp_with_time_zone_null(L::RedeemTime))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "otp_links_by_secret_hash",
            L::Table,
            [L::SecretHash],
            true,
        )
        .await?;
        create_index(
            manager,
            "otp_links_by_session_hash",
            L::Table,
            [L::SessionHash],
            true,
        )
        .await?;
        // Superseding finds a user's earlier links of one type; lists filter by user.
        create_index(
            manager,
            "otp_links_by_user",
            L::Table,
            [L::Realm, L::UserName, L::TokenType],
            false,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(OtpEnrollmentLinks::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
