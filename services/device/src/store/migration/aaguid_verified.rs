//! Whether a device's attestation certificate bound its AAGUID (its model), recorded at
//! registration: model allow-lists and minimum certification trust only a bound model.
//! Devices registered before keep the facts recorded for them: until now a verified chain
//! (a non-empty `attestation_root`) was taken to vouch for the model, so they start bound,
//! and nothing changes for them on upgrade (`enrollctl upgrade-report` lists those whose
//! model a new registration would treat as a claim).
use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Devices {
    Table,
    AaguidVerified,
    AttestationRoot,
}

pub(super) struct AaguidVerified;

impl MigrationName for AaguidVerified {
    fn name(&self) -> &str {
        "m0012_aaguid_verified"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AaguidVerified {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .add_column(
                        ColumnDef::new(Devices::AaguidVerified)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        // Today's rule for the devices already there: a verified chain vouched for the model.
        manager
            .exec_stmt(
                Query::update()
                    .table(Devices::Table)
                    .value(Devices::AaguidVerified, true)
                    .and_where(Expr::col(Devices::AttestationRoot).ne(""))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .drop_column(Devices::AaguidVerified)
                    .to_owned(),
            )
            .await
    }
}
