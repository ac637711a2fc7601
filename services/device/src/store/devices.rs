//! Persistence of WebAuthn devices. A registration consumes its ceremony, redeems its link,
//! checks the limits and inserts the device in one transaction that locks the user's (and
//! the realm's) row first.
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    TransactionTrait,
};

use std::sync::Arc;

use super::convert;
use super::device_changes::{UserDevicesCache, record_change};
use super::entities::{devices, users};
use super::lists::{self, owner_ids};
use super::sql::{exceeded, limits_reached, lock_realm, lock_user, statement};
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::decision::Limits;
use crate::domain::devices::{Device, DeviceFilter, DeviceState};
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// A device with its stored credential (the webauthn-rs passkey JSON: public key, counter,
/// backup state; no secret).
#[derive(Debug, Clone)]
pub struct StoredDevice {
    pub device: Device,
    pub credential: String,
}

/// Everything one registration writes.
#[derive(Debug)]
pub struct Registration {
    pub ceremony_id: String,
    pub link_id: Option<String>,
    pub device: Device,
    pub credential: String,
    /// What the browser reported about the authenticator (for events).
    pub reported: crate::domain::events::ReportedAuthenticator,
    pub limits: Limits,
    pub audit: AuditRecord,
}

#[derive(Clone)]
pub struct DeviceStore {
    pub(super) db: DatabaseConnection,
    pub(super) tokens: TokenStore,
    /// CheckEnrollment's cache of users' devices (none: always read).
    check_cache: Option<Arc<UserDevicesCache>>,
}

impl DeviceStore {
    /// First responses to request ids are kept as long as `retention` says.
    pub fn new(db: DatabaseConnection, retention: super::idempotency::Retention) -> Self {
        Self {
            tokens: TokenStore::new(db.clone(), retention),
            db,
            check_cache: None,
        }
    }

    /// Serves [`DeviceStore::devices_for_check`] from `cache` while it is current.
    pub fn with_check_cache(mut self, cache: Arc<UserDevicesCache>) -> Self {
        self.check_cache = Some(cache);
        self
    }

    /// Tells this replica's cache of a committed change (other replicas learn it from the
    /// change counter).
    fn changed_here(&self, user: Option<(&Realm, &UserName)>) {
        let user = user.map(|(realm, user)| (realm.as_str(), user.as_str()));
        if let Some(cache) = &self.check_cache {
            cache.changed_here(user);
        }
    }

    /// The user's devices for CheckEnrollment: from the cache while no replica changed
    /// them (see `device_changes`), else read.
    pub async fn devices_for_check(
        &self,
        realm: &Realm,
        user: &UserName,
    ) -> Result<Arc<Vec<Device>>, DeviceError> {
        let read = async || -> Result<Vec<Device>, DeviceError> {
            Ok(self
                .user_devices(realm, user)
                .await?
                .into_iter()
                .map(|stored| stored.device)
                .collect())
        };
        let Some(cache) = &self.check_cache else {
            return Ok(Arc::new(read().await?));
        };
        if let Some(devices) = cache.get(realm, user) {
            return Ok(devices);
        }
        let epoch = cache.epoch();
        let devices = Arc::new(read().await?);
        cache.put(realm, user, epoch, devices.clone());
        Ok(devices)
    }

    /// A device row as callers see it, its owner's name from the cache of immutable user
    /// rows.
    async fn view(
        &self,
        db: &impl ConnectionTrait,
        row: &devices::Model,
    ) -> Result<Device, DeviceError> {
        let owner = self
            .tokens
            .owner_names
            .resolve(db, [row.user_id])
            .await?
            .remove(&row.user_id)
            .unwrap_or_default();
        convert::device(row, &owner)
    }

    pub async fn audit(&self, record: AuditRecord) -> Result<(), DeviceError> {
        TokenStore::insert_audit(&self.db, record).await
    }

    /// Writes a registration, or nothing but the refusal's audit event.
    /// Writes a registration, or nothing but the refusal: a refused registration (limit
    /// reached, credential already registered, link spent) still burns its ceremony, so the
    /// same challenge can never be answered again.
    pub async fn register(&self, registration: Registration) -> Result<Device, DeviceError> {
        let audit = registration.audit.clone();
        let ceremony_id = registration.ceremony_id.clone();
        match self.try_register(registration).await {
            Ok(row) => Ok(row),
            Err(error @ DeviceError::Database(_)) => Err(error),
            Err(error) => {
                self.burn_ceremony(&ceremony_id, audit.denied(error.audit_reason()))
                    .await?;
                Err(error)
            }
        }
    }

    async fn try_register(&self, registration: Registration) -> Result<Device, DeviceError> {
        let Registration {
            ceremony_id,
            link_id,
            device,
            credential,
            reported,
            limits,
            audit,
        } = registration;
        let (realm, user) = (&device.realm, &device.user);
        let now = audit.time;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        if !Self::consume_ceremony(&transaction, &ceremony_id, now).await? {
            return Err(DeviceError::FailedPrecondition(
                "the registration ceremony has expired or was already finished; begin again"
                    .to_owned(),
            ));
        }
        if let Some(link_id) = &link_id {
            let redeemed = transaction
                .execute_raw(statement(
                    backend,
                    "UPDATE enrollment_links SET state = 'used', device_id = $1 \
                     WHERE id = $2 AND state = 'active' AND expire_time > $3",
                    vec![device.id.clone().into(), link_id.clone().into(), now.into()],
                ))
                .await?
                .rows_affected();
            if redeemed != 1 {
                return Err(DeviceError::FailedPrecondition(
                    "the enrollment link was already used, revoked, or has expired".to_owned(),
                ));
            }
        }
        // Lock order: realm, then user (as every other writer).
        if limits.per_realm.is_some() {
            lock_realm(&transaction, realm).await?;
        }
        let user_id = lock_user(&transaction, realm, user, now).await?;
        let taken = devices::Entity::find()
            .filter(devices::Column::CredentialId.eq(device.credential_id.as_str()))
            .one(&transaction)
            .await?;
        if taken.is_some() {
            return Err(DeviceError::AlreadyExists(
                "this authenticator's credential is already registered".to_owned(),
            ));
        }
        if let Some(error) = exceeded(&transaction, realm, Some(user_id), &limits, now).await? {
            return Err(error);
        }
        let row = devices::Model {
            id: device.id.clone(),
            realm: realm.to_string(),
            user_id,
            credential_id: device.credential_id.clone(),
            device_type: device.kind.into(),
            state: device.state.into(),
            aaguid: device.aaguid.clone(),
            backup_eligible: device.backup_eligible,
            user_agent: device.user_agent.clone(),
            enrollment_link_id: device.enrollment_link_id.clone(),
            credential,
            create_time: device.create_time,
            last_used_time: device.last_used_time,
            approved_by: device.approved_by.clone(),
            sign_count: 0,
            model: device.model.clone(),
            certification_level: device.certification_level.clone(),
            attestation_format: device.attestation_format.clone(),
            attestation_root: device.attestation_root.clone().unwrap_or_default(),
            aaguid_verified: device.aaguid_verified,
            model_compromise: device.model_compromise.clone().unwrap_or_default(),
            attachment: reported.attachment,
            transports: reported.transports,
        };
        devices::Entity::insert(row.into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        // The audit event names the link (when there is one); the events name the link and
        // the new device.
        if let Some(link_id) = &link_id {
            super::events::record(
                &transaction,
                &audit,
                crate::domain::events::EventKind::LinkUsed,
                link_id,
            )
            .await?;
        }
        super::events::record(
            &transaction,
            &audit,
            crate::domain::events::EventKind::DeviceRegistered,
            &device.id,
        )
        .await?;
        TokenStore::insert_audit_without_event(&transaction, audit).await?;
        record_change(&transaction, user_id).await?;
        transaction.commit().await?;
        self.changed_here(Some((realm, user)));
        Ok(device)
    }

    /// The user's devices, oldest first.
    pub async fn user_devices(
        &self,
        realm: &Realm,
        user: &UserName,
    ) -> Result<Vec<StoredDevice>, DeviceError> {
        let backend = self.db.get_database_backend();
        devices::Entity::find()
            .from_raw_sql(statement(
                backend,
                "SELECT d.* FROM devices d JOIN users u ON u.id = d.user_id \
                 WHERE u.realm = $1 AND u.name = $2 ORDER BY d.create_time, d.id",
                vec![realm.as_str().into(), user.as_str().into()],
            ))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                Ok(StoredDevice {
                    device: convert::device(&row, user.as_str())?,
                    credential: row.credential,
                })
            })
            .collect()
    }

    /// The limits one more device of the user would break (CheckEnrollment's reasons).
    pub async fn limits_reached(
        &self,
        realm: &Realm,
        user: &UserName,
        limits: &Limits,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<DeviceError>, DeviceError> {
        let user_id = users::Entity::find()
            .filter(users::Column::Realm.eq(realm.as_str()))
            .filter(users::Column::Name.eq(user.as_str()))
            .one(&self.db)
            .await?
            .map(|row| row.id)
            // No row has id 0: a user never seen holds nothing.
            .unwrap_or(0);
        limits_reached(&self.db, realm, Some(user_id), limits, now).await
    }

    pub async fn device(&self, id: &str) -> Result<Option<Device>, DeviceError> {
        match devices::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        {
            Some(row) => Ok(Some(self.view(&self.db, &row).await?)),
            None => Ok(None),
        }
    }

    /// A page of devices ordered by id, after `after` (`lists::devices`).
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Device>, DeviceError> {
        let backend = self.db.get_database_backend();
        let owners = match &filter.user {
            Some(user) => Some(owner_ids(&self.db, filter.realm.as_ref(), user).await?),
            None => None,
        };
        if owners.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let page = lists::devices(backend, filter, owners.as_deref(), after, limit);
        let devices = devices::Entity::find()
            .from_raw_sql(page)
            .all(&self.db)
            .await?;
        let names = self
            .tokens
            .owner_names
            .resolve(&self.db, devices.iter().map(|device| device.user_id))
            .await?;
        devices
            .iter()
            .map(|row| {
                let owner = names
                    .get(&row.user_id)
                    .map(String::as_str)
                    .unwrap_or_default();
                convert::device(row, owner)
            })
            .collect()
    }

    /// Moves a device from one of `from` to `to`; a device already in `to` is returned
    /// unchanged (no audit event), any other state is FAILED_PRECONDITION.
    pub async fn set_device_state(
        &self,
        id: &str,
        from: &[DeviceState],
        to: DeviceState,
        approved_by: Option<&str>,
        audit: AuditRecord,
    ) -> Result<Device, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        // A no-op write first: it locks the row (and SQLite's write lock) before the read.
        let locked = transaction
            .execute_raw(statement(
                backend,
                "UPDATE devices SET state = state WHERE id = $1",
                vec![id.into()],
            ))
            .await?
            .rows_affected();
        if locked == 0 {
            return Err(DeviceError::NotFound(format!("device `{id}`")));
        }
        let mut device = devices::Entity::find_by_id(id.to_owned())
            .one(&transaction)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("device `{id}`")))?;
        let current = DeviceState::from(device.state);
        if current != to {
            if !from.contains(&current) {
                return Err(DeviceError::FailedPrecondition(format!(
                    "device `{id}` is {}, so it cannot become {}",
                    current.as_str(),
                    to.as_str()
                )));
            }
            let mut active = device.clone().into_active_model();
            active.state = sea_orm::Set(to.into());
            if let Some(approver) = approved_by {
                active.approved_by = sea_orm::Set(approver.to_owned());
            }
            device = sea_orm::ActiveModelTrait::update(active, &transaction).await?;
            TokenStore::insert_audit(&transaction, audit).await?;
            record_change(&transaction, device.user_id).await?;
        }
        let view = self.view(&transaction, &device).await?;
        transaction.commit().await?;
        if current != to {
            self.changed_here(Some((&view.realm, &view.user)));
        }
        Ok(view)
    }

    /// Records a successful authentication: consumes the ceremony, refuses a device revoked
    /// meanwhile, stores the new counter and the time of use.
    pub async fn authenticated(
        &self,
        used: DeviceUse,
        audit: AuditRecord,
    ) -> Result<Device, DeviceError> {
        let now = audit.time;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        if !Self::consume_ceremony(&transaction, &used.ceremony_id, now).await? {
            return Err(DeviceError::FailedPrecondition(
                "the authentication ceremony has expired or was already finished; begin again"
                    .to_owned(),
            ));
        }
        // One conditional update: only an approved device, and only with a counter that moved
        // forward from the stored one (0 = the authenticator keeps none), so two racing
        // ceremonies cannot both pass with one counter or move it backwards. The time of use
        // moves only when it is a grain old (see `device_changes::LAST_USED_GRAIN`).
        let counter = i64::from(used.counter);
        let grain = chrono::Duration::from_std(super::device_changes::LAST_USED_GRAIN)
            .unwrap_or(chrono::Duration::MAX);
        let stale_before = now - grain;
        let updated = transaction
            .execute_raw(statement(
                backend,
                "UPDATE devices SET last_used_time = CASE WHEN last_used_time IS NULL \
                 OR last_used_time <= $1 THEN $2 ELSE last_used_time END, \
                 credential = COALESCE($3, credential), \
                 sign_count = $4 WHERE credential_id = $5 AND state = 'approved' \
                 AND (sign_count < $6 OR (sign_count = 0 AND $7 = 0))",
                vec![
                    stale_before.into(),
                    now.into(),
                    used.updated_passkey_json.into(),
                    counter.into(),
                    used.credential_id.clone().into(),
                    counter.into(),
                    counter.into(),
                ],
            ))
            .await?
            .rows_affected();
        let device = devices::Entity::find()
            .filter(devices::Column::CredentialId.eq(used.credential_id.as_str()))
            .one(&transaction)
            .await?
            .ok_or_else(|| DeviceError::NotFound("device".to_owned()))?;
        if updated != 1 {
            return Err(match DeviceState::from(device.state) {
                DeviceState::Revoked => DeviceError::Refused {
                    reason: "DEVICE_REVOKED",
                    message: "the device was revoked".to_owned(),
                },
                DeviceState::PendingApproval => pending_approval(),
                DeviceState::Approved => DeviceError::Refused {
                    reason: "POSSIBLE_CLONED_AUTHENTICATOR",
                    message: format!(
                        "the authenticator's signature counter did not advance ({} after {}): \
                         possibly a cloned authenticator",
                        used.counter, device.sign_count
                    ),
                },
            });
        }
        TokenStore::insert_audit(&transaction, audit).await?;
        // Only an authentication that moved the time of use bumps the change counter (at
        // most once a grain per device): the counter row would otherwise serialize every
        // authentication of every replica, and the time of use changes no status.
        // Moved by this statement: `now` as stored (PostgreSQL keeps microseconds).
        let moved = device
            .last_used_time
            .is_some_and(|used_at| used_at > now - chrono::Duration::milliseconds(1));
        if moved {
            record_change(&transaction, device.user_id).await?;
        }
        let view = self.view(&transaction, &device).await?;
        transaction.commit().await?;
        self.changed_here(Some((&view.realm, &view.user)));
        Ok(view)
    }

    /// Revokes a device in its own transaction with its audit event (a device that reported
    /// something it may never be, such as a synced enclave-only credential).
    pub async fn revoke_flagged(&self, id: &str, audit: AuditRecord) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let owner = transaction
            .query_one_raw(statement(
                backend,
                "UPDATE devices SET state = 'revoked' WHERE id = $1 RETURNING user_id",
                vec![id.into()],
            ))
            .await?;
        TokenStore::insert_audit(&transaction, audit).await?;
        if let Some(owner) = owner {
            record_change(&transaction, owner.try_get_by_index(0)?).await?;
        }
        transaction.commit().await?;
        self.changed_here(None);
        Ok(())
    }
}

/// What one verified authentication writes.
#[derive(Debug, Clone)]
pub struct DeviceUse {
    pub ceremony_id: String,
    pub credential_id: String,
    /// The authenticator's signature counter in this assertion.
    pub counter: u32,
    /// The stored passkey after the assertion, when it changed.
    pub updated_passkey_json: Option<String>,
}

/// A device that waits for an administrator's approval never authenticates.
pub fn pending_approval() -> DeviceError {
    DeviceError::Blocked {
        reason: "DEVICE_PENDING_APPROVAL",
        message: "the device is waiting for an administrator's approval".to_owned(),
    }
}

impl DeviceStore {
    /// The live first response stored under an idempotency key.
    pub async fn find_response(
        &self,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<super::idempotency::SealedResponse>, DeviceError> {
        self.tokens.find_response(key, now).await
    }
}
