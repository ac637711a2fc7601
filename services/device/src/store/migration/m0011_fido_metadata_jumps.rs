//! FIDO metadata BLOB numbers an operator accepted although they jump further than
//! `webauthn.metadata.max_no_jump` from the BLOB in use (a stored, shared decision: every
//! replica adopts the accepted BLOB, none any other jump).
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum FidoMetadataAcceptedJumps {
    Table,
    No,
    AcceptedBy,
    AcceptTime,
}

pub(super) struct FidoMetadataJumps;

impl MigrationName for FidoMetadataJumps {
    fn name(&self) -> &str {
        "m0011_fido_metadata_jumps"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for FidoMetadataJumps {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(FidoMetadataAcceptedJumps::Table)
                    .if_not_exists()
                    .col(big_integer(FidoMetadataAcceptedJumps::No).primary_key())
                    .col(string(FidoMetadataAcceptedJumps::AcceptedBy))
                    .col(timestamp_with_time_zone(
                        FidoMetadataAcceptedJumps::AcceptTime,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(FidoMetadataAcceptedJumps::Table)
                    .to_owned(),
            )
            .await
    }
}
