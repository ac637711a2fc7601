//! The enrollment-event outbox and its streams: `enrollment_events` (written in the
//! transaction of each change; `seq` stamped after commit, in commit order, so cursors
//! never skip an event whose transaction committed late), `event_streams` (receivers,
//! their encoding, filter, status, cursor and delivery lease), `event_dead_letters` (events
//! a stream gave up on, kept for redelivery), `event_signing_keys` (the security event
//! tokens' keys, sealed like seeds), and what a registration's browser reported about the
//! authenticator (`devices.attachment`, `devices.transports`) for CAEP's credential type.
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, binary, boolean, integer, string, string_len, string_null, text,
    timestamp_with_time_zone, timestamp_with_time_zone_null,
};

use super::create_index;

#[derive(DeriveIden)]
enum EnrollmentEvents {
    Table,
    Id,
    Seq,
    EventId,
    EventType,
    Realm,
    UserName,
    Subject,
    OccurredAt,
    Payload,
}

#[derive(DeriveIden)]
enum EventStreams {
    Table,
    Id,
    Name,
    Encoding,
    Endpoint,
    Audience,
    EventTypes,
    Realms,
    Status,
    SecretKeyId,
    SealedSecrets,
    Cursor,
    LeaseOwner,
    LeaseUntil,
    Attempts,
    NextAttemptAt,
    FirstFailureAt,
    LastError,
    CreatedBy,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum EventDeadLetters {
    Table,
    Id,
    StreamId,
    Seq,
    EventId,
    SubjectKey,
    Reason,
    Attempts,
    DeadAt,
    Redrive,
}

#[derive(DeriveIden)]
enum EventSigningKeys {
    Table,
    Kid,
    Algorithm,
    SeedKeyId,
    SealedKey,
    CreateTime,
    RetireTime,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Attachment,
    Transports,
}

/// Whether a link's expiry was written as an event (`link.expired`, `otp_link.expired`):
/// expiry is a matter of the clock, so a job writes it once, after the fact.
#[derive(DeriveIden)]
enum EnrollmentLinks {
    Table,
    ExpiryRecorded,
}

#[derive(DeriveIden)]
enum OtpEnrollmentLinks {
    Table,
}

pub(super) struct EnrollmentEventsTables;

impl MigrationName for EnrollmentEventsTables {
    fn name(&self) -> &str {
        "m0015_enrollment_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for EnrollmentEventsTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use EnrollmentEvents as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(E::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(big_integer_null(E::Seq))
                    .col(string(E::EventId))
                    .col(string_len(E::EventType, 48))
                    .col(string(E::Realm))
                    .col(string(E::UserName))
                    .col(string(E::Subject))
                    .col(timestamp_with_time_zone(E::OccurredAt))
                    .col(text(E::Payload))
                    .to_owned(),
            )
            .await?;
        create_index(manager, "events_by_seq", E::Table, [E::Seq], true).await?;
        create_index(manager, "events_by_event_id", E::Table, [E::EventId], true).await?;
        // The last event of a subject (credential facts of a deleted token or device).
        create_index(
            manager,
            "events_by_subject",
            E::Table,
            [E::Subject, E::Id],
            false,
        )
        .await?;

        use EventStreams as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .if_not_exists()
                    .col(string(S::Id).primary_key())
                    .col(string(S::Name))
                    .col(string_len(S::Encoding, 16))
                    .col(text(S::Endpoint))
                    .col(string(S::Audience))
                    .col(text(S::EventTypes))
                    .col(text(S::Realms))
                    .col(string_len(S::Status, 16))
                    .col(string(S::SecretKeyId))
                    .col(binary(S::SealedSecrets))
                    .col(big_integer(S::Cursor))
                    .col(string_null(S::LeaseOwner))
                    .col(timestamp_with_time_zone_null(S::LeaseUntil))
                    .col(integer(S::Attempts))
                    .col(timestamp_with_time_zone_null(S::NextAttemptAt))
                    .col(timestamp_with_time_zone_null(S::FirstFailureAt))
                    .col(text(S::LastError))
                    .col(string(S::CreatedBy))
                    .col(timestamp_with_time_zone(S::CreateTime))
                    .col(timestamp_with_time_zone(S::UpdateTime))
                    .to_owned(),
            )
            .await?;
        create_index(manager, "streams_by_name", S::Table, [S::Name], true).await?;

        use EventDeadLetters as D;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(D::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string(D::StreamId))
                    .col(big_integer(D::Seq))
                    .col(string(D::EventId))
                    .col(string(D::SubjectKey))
                    .col(text(D::Reason))
                    .col(integer(D::Attempts))
                    .col(timestamp_with_time_zone(D::DeadAt))
                    .col(boolean(D::Redrive))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "dead_letters_by_stream",
            D::Table,
            [D::StreamId, D::Seq],
            true,
        )
        .await?;
        create_index(
            manager,
            "dead_letters_by_subject",
            D::Table,
            [D::StreamId, D::SubjectKey],
            false,
        )
        .await?;

        use EventSigningKeys as K;
        manager
            .create_table(
                Table::create()
                    .table(K::Table)
                    .if_not_exists()
                    .col(string(K::Kid).primary_key())
                    .col(string_len(K::Algorithm, 8))
                    .col(string(K::SeedKeyId))
                    .col(binary(K::SealedKey))
                    .col(timestamp_with_time_zone(K::CreateTime))
                    .col(timestamp_with_time_zone_null(K::RetireTime))
                    .to_owned(),
            )
            .await?;

        for table in [
            EnrollmentLinks::Table.into_iden(),
            OtpEnrollmentLinks::Table.into_iden(),
        ] {
            let mut column = ColumnDef::new(EnrollmentLinks::ExpiryRecorded)
                .boolean()
                .not_null()
                .default(false)
                .to_owned();
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        // SQLite adds one column per ALTER TABLE.
        for column in [
            ColumnDef::new(Devices::Attachment)
                .string_len(16)
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(Devices::Transports)
                .string()
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
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            EnrollmentLinks::Table.into_iden(),
            OtpEnrollmentLinks::Table.into_iden(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .drop_column(EnrollmentLinks::ExpiryRecorded)
                        .to_owned(),
                )
                .await?;
        }
        for column in [Devices::Attachment, Devices::Transports] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Devices::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            EventSigningKeys::Table.into_iden(),
            EventDeadLetters::Table.into_iden(),
            EventStreams::Table.into_iden(),
            EnrollmentEvents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
