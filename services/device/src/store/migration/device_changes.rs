//! Device change tracking for CheckEnrollment's cache of device rows on every replica:
//! `device_changes` holds one counter, bumped in the transaction of every device change
//! (its row lock orders the changes: versions commit in increasing order), and
//! `device_user_changes` the last version that changed each user's devices, so a replica
//! that sees the counter move drops only those users' cached rows.
use sea_orm_migration::prelude::*;

use super::create_index;

#[derive(DeriveIden)]
enum DeviceUserChanges {
    Table,
    Version,
}

pub(super) struct DeviceChanges;

impl MigrationName for DeviceChanges {
    fn name(&self) -> &str {
        "m0007_device_changes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DeviceChanges {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE TABLE device_changes (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
        )
        .await?;
        db.execute_unprepared("INSERT INTO device_changes (id, version) VALUES (1, 0)")
            .await?;
        db.execute_unprepared(
            "CREATE TABLE device_user_changes (user_id BIGINT PRIMARY KEY, version BIGINT NOT NULL)",
        )
        .await?;
        // The poll reads the users changed since the version it last saw.
        create_index(
            manager,
            "idx_device_user_changes_version",
            DeviceUserChanges::Table,
            [DeviceUserChanges::Version],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE device_user_changes")
            .await?;
        db.execute_unprepared("DROP TABLE device_changes").await?;
        Ok(())
    }
}
