//! FIDO metadata: the last verified MDS3 BLOB (kept in the database so every replica and
//! every restart uses the same version, and a failed download never loses it), and on each
//! device what the metadata said of its model at registration (description, certification
//! level), its attestation's format and the root its chain was verified to, and the flag a later BLOB sets when it
//! marks the model compromised.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveIden)]
enum FidoMetadataBlobs {
    Table,
    No,
    Blob,
    NextUpdate,
    Source,
    LoadTime,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Model,
    CertificationLevel,
    AttestationFormat,
    AttestationRoot,
    ModelCompromise,
}

pub(super) struct FidoMetadata;

impl MigrationName for FidoMetadata {
    fn name(&self) -> &str {
        "m0006_fido_metadata"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for FidoMetadata {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(FidoMetadataBlobs::Table)
                    .if_not_exists()
                    .col(big_integer(FidoMetadataBlobs::No).primary_key())
                    .col(text(FidoMetadataBlobs::Blob))
                    .col(string(FidoMetadataBlobs::NextUpdate))
                    .col(string(FidoMetadataBlobs::Source))
                    .col(timestamp_with_time_zone(FidoMetadataBlobs::LoadTime))
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite alters one column at a time.
        for column in [
            ColumnDef::new(Devices::Model)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(Devices::CertificationLevel)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(Devices::AttestationFormat)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            // Empty: the attestation chain was not verified.
            ColumnDef::new(Devices::AttestationRoot)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            // Empty: not flagged; otherwise why the metadata marks the model compromised.
            ColumnDef::new(Devices::ModelCompromise)
                .text()
                .not_null()
                .default("")
                .to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Devices::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        // Until now only enclave_only registrations verified the attestation chain, to one
        // of `webauthn.trusted_roots` (which one was not recorded).
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE devices SET attestation_root = 'trusted_roots' WHERE device_type = 'enclave_only'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Devices::ModelCompromise,
            Devices::AttestationRoot,
            Devices::AttestationFormat,
            Devices::CertificationLevel,
            Devices::Model,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Devices::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(FidoMetadataBlobs::Table).to_owned())
            .await
    }
}
