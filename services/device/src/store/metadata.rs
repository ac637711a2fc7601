//! The last verified FIDO metadata BLOB, shared by every replica, and the flags a BLOB puts
//! on the devices of the models it marks compromised.
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder, QuerySelect, TransactionTrait,
};

use super::entities::fido_metadata_blobs;
use super::sql::{keep_if_newest, statement};
use super::tokens::TokenStore;
use crate::domain::audit::{AuditRecord, OK};
use crate::error::DeviceError;

/// The audit action of a device flagged by the FIDO metadata.
pub const FLAG_DEVICE: &str = "flag_device";
/// The actor of the metadata's own changes.
pub const METADATA_ACTOR: &str = "fido-metadata";

/// A BLOB to keep.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub no: u64,
    pub blob: String,
    pub next_update: String,
    pub source: String,
    pub load_time: DateTime<Utc>,
}

/// A model the metadata marks compromised: its AAGUID (as devices store it) and why.
#[derive(Debug, Clone)]
pub struct CompromisedModel {
    pub aaguid: String,
    pub reason: String,
}

#[derive(Clone)]
pub struct MetadataStore {
    db: DatabaseConnection,
    /// CheckEnrollment's cache of device rows on this replica (flags drop its entries).
    check_cache: Option<std::sync::Arc<super::device_changes::UserDevicesCache>>,
}

impl MetadataStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            check_cache: None,
        }
    }

    /// Drops a flagged user's rows from `cache` at once (other replicas poll).
    pub fn with_check_cache(
        mut self,
        cache: std::sync::Arc<super::device_changes::UserDevicesCache>,
    ) -> Self {
        self.check_cache = Some(cache);
        self
    }

    /// The newest stored BLOB.
    pub async fn latest(&self) -> Result<Option<StoredBlob>, DeviceError> {
        Ok(self.newest_first(1).await?.into_iter().next())
    }

    /// Up to `limit` stored BLOBs, newest first. Usually one: a stored BLOB drops the older
    /// ones; more only when someone wrote rows around the service.
    pub async fn newest_first(&self, limit: u64) -> Result<Vec<StoredBlob>, DeviceError> {
        let rows = fido_metadata_blobs::Entity::find()
            .order_by_desc(fido_metadata_blobs::Column::No)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| StoredBlob {
                no: u64::try_from(row.no).unwrap_or_default(),
                blob: row.blob,
                next_update: row.next_update,
                source: row.source,
                load_time: row.load_time,
            })
            .collect())
    }

    /// Deletes the stored row `no` if it still holds exactly `blob` (a row found not to
    /// verify, or not adoptable; a concurrent writer's different row stays).
    pub async fn delete_row(&self, no: u64, blob: &str) -> Result<bool, DeviceError> {
        let Ok(no) = i64::try_from(no) else {
            return Ok(false);
        };
        let backend = self.db.get_database_backend();
        let deleted = self
            .db
            .execute_raw(statement(
                backend,
                "DELETE FROM fido_metadata_blobs WHERE no = $1 AND blob = $2",
                vec![no.into(), blob.to_owned().into()],
            ))
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }

    /// Whether an operator accepted BLOB number `no` beyond the jump bound.
    pub async fn jump_accepted(&self, no: u64) -> Result<bool, DeviceError> {
        let Ok(no) = i64::try_from(no) else {
            return Ok(false);
        };
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(statement(
                backend,
                "SELECT 1 AS accepted FROM fido_metadata_accepted_jumps WHERE no = $1",
                vec![no.into()],
            ))
            .await?;
        Ok(row.is_some())
    }

    /// Records an operator's acceptance of BLOB number `no` with its audit event, in one
    /// transaction. Accepting a number twice is a no-op (the first acceptance stands).
    pub async fn accept_jump(&self, no: u64, audit: AuditRecord) -> Result<(), DeviceError> {
        let no = i64::try_from(no).map_err(|_| DeviceError::invalid("no", "too large"))?;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        transaction
            .execute_raw(statement(
                backend,
                "INSERT INTO fido_metadata_accepted_jumps (no, accepted_by, accept_time) \
                 VALUES ($1, $2, $3) ON CONFLICT (no) DO NOTHING",
                vec![no.into(), audit.actor.clone().into(), audit.time.into()],
            ))
            .await?;
        TokenStore::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Keeps `blob` when its number is above every stored one and drops the older ones;
    /// false when a BLOB as new or newer is already stored (another replica got there).
    pub async fn save_if_newer(&self, blob: &StoredBlob) -> Result<bool, DeviceError> {
        let no = i64::try_from(blob.no)
            .map_err(|_| DeviceError::FailedPrecondition("BLOB number too large".to_owned()))?;
        keep_if_newest(
            &self.db,
            "fido_metadata_blobs",
            &["no", "blob", "next_update", "source", "load_time"],
            vec![
                no.into(),
                blob.blob.clone().into(),
                blob.next_update.clone().into(),
                blob.source.clone().into(),
                blob.load_time.into(),
            ],
            no,
        )
        .await
    }

    /// Flags the devices of `models` that are not flagged yet (revoking them too when
    /// `revoke`), each with an audit event in the transaction of its flag; returns how many
    /// were flagged. Idempotent: every replica may run it after loading a BLOB.
    pub async fn flag_compromised(
        &self,
        models: &[CompromisedModel],
        revoke: bool,
        now: DateTime<Utc>,
    ) -> Result<usize, DeviceError> {
        let mut flagged = 0;
        for model in models {
            let backend = self.db.get_database_backend();
            let rows = self
                .db
                .query_all_raw(statement(
                    backend,
                    "SELECT d.id, d.realm, d.user_id, u.name, d.state FROM devices d \
                     JOIN users u ON u.id = d.user_id \
                     WHERE d.aaguid = $1 AND d.model_compromise = ''",
                    vec![model.aaguid.clone().into()],
                ))
                .await?;
            for row in rows {
                let id: String = row.try_get("", "id")?;
                let realm: String = row.try_get("", "realm")?;
                let user_name: String = row.try_get("", "name")?;
                let user_id: i64 = row.try_get("", "user_id")?;
                let state: String = row.try_get("", "state")?;
                let revoking = revoke && state != "revoked";
                let reason = if revoking {
                    format!(
                        "{}; revoked (webauthn.metadata.revoke_compromised)",
                        model.reason
                    )
                } else {
                    model.reason.clone()
                };
                let transaction = self.db.begin().await?;
                let sql = if revoking {
                    "UPDATE devices SET model_compromise = $1, state = 'revoked' \
                     WHERE id = $2 AND model_compromise = ''"
                } else {
                    "UPDATE devices SET model_compromise = $1 \
                     WHERE id = $2 AND model_compromise = ''"
                };
                let updated = transaction
                    .execute_raw(statement(
                        backend,
                        sql,
                        vec![model.reason.clone().into(), id.clone().into()],
                    ))
                    .await?
                    .rows_affected();
                if updated == 1 {
                    let record = AuditRecord {
                        actor: METADATA_ACTOR.to_owned(),
                        action: FLAG_DEVICE,
                        realm: realm.clone(),
                        user: user_name.clone(),
                        subject: id,
                        result: OK,
                        reason,
                        trace_id: enroll_shared::telemetry::current_trace_id(),
                        time: now,
                        event: None,
                    };
                    TokenStore::insert_audit(&transaction, record).await?;
                    // A flag changes CheckEnrollment's answer: every replica's cache learns it.
                    super::device_changes::record_change(&transaction, user_id).await?;
                    flagged += 1;
                }
                transaction.commit().await?;
                if updated == 1
                    && let Some(cache) = &self.check_cache
                {
                    cache.changed_here(Some((&realm, &user_name)));
                }
            }
        }
        Ok(flagged)
    }
}
