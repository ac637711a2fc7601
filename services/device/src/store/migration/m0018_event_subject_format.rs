//! How a CAEP stream names the user in its tokens' `sub_id` (`event_streams.subject_format`:
//! `iss_sub`, `opaque` or `email`); streams made before keep `iss_sub`.
use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum EventStreams {
    Table,
    SubjectFormat,
}

pub struct EventSubjectFormat;

impl MigrationName for EventSubjectFormat {
    fn name(&self) -> &str {
        "m0018_event_subject_format"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for EventSubjectFormat {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EventStreams::Table)
                    .add_column(
                        ColumnDef::new(EventStreams::SubjectFormat)
                            .string_len(16)
                            .not_null()
                            .default("iss_sub"),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EventStreams::Table)
                    .drop_column(EventStreams::SubjectFormat)
                    .to_owned(),
            )
            .await
    }
}
