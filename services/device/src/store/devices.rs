//! Persistence of WebAuthn devices, enrollment links and ceremony state. A registration
//! consumes its ceremony, redeems its link, checks the limits and inserts the device in one
//! transaction that locks the user's (and the realm's) row first.
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::entities::{ceremonies, devices, enrollment_links, idempotency_keys, users};
use super::tokens::{
    AuditRecord, EnrollOutcome, Limits, SealedResponse, TokenStore, limits_reached, statement,
};
use crate::domain::devices::link_state;
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// Filters of ListEnrollmentLinks. `expired` selects active links past their expire time.
#[derive(Debug, Clone, Default)]
pub struct LinkFilter {
    pub realm: Option<Realm>,
    pub user: Option<UserName>,
    pub state: Option<&'static str>,
    pub expired: Option<bool>,
}

/// Filters of ListDevices.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub realm: Option<Realm>,
    pub user: Option<UserName>,
    pub device_type: Option<&'static str>,
    pub state: Option<&'static str>,
}

/// A device with its owner's name.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub device: devices::Model,
    pub user: String,
}

/// Everything one registration writes.
#[derive(Debug)]
pub struct Registration {
    pub ceremony_id: String,
    pub link_id: Option<String>,
    pub realm: Realm,
    pub user: UserName,
    /// `user_id` is filled in from the locked user row.
    pub device: devices::Model,
    pub limits: Limits,
    pub audit: AuditRecord,
}

#[derive(Clone)]
pub struct DeviceStore {
    db: DatabaseConnection,
    tokens: TokenStore,
}

impl DeviceStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            tokens: TokenStore::new(db.clone()),
            db,
        }
    }

    /// A device owner's name, from the cache of immutable user rows.
    async fn owner(&self, db: &impl ConnectionTrait, user_id: i64) -> Result<String, DeviceError> {
        Ok(self
            .tokens
            .owner_names
            .resolve(db, [user_id])
            .await?
            .remove(&user_id)
            .unwrap_or_default())
    }

    pub async fn audit(&self, record: AuditRecord) -> Result<(), DeviceError> {
        TokenStore::insert_audit(&self.db, record).await
    }

    pub async fn find_response(&self, key: &str) -> Result<Option<SealedResponse>, DeviceError> {
        self.tokens.find_response(key).await
    }

    /// Stores a new link with its audit event (and the sealed response of its request id).
    pub async fn create_link(
        &self,
        link: enrollment_links::Model,
        audit: AuditRecord,
        idempotency: Option<(String, SealedResponse)>,
    ) -> Result<EnrollOutcome, DeviceError> {
        let transaction = self.db.begin().await?;
        if let Some((key, sealed)) = idempotency {
            if let Some(first) = idempotency_keys::Entity::find_by_id(key.clone())
                .one(&transaction)
                .await?
            {
                return Ok(EnrollOutcome::Replayed(SealedResponse {
                    key_id: first.seal_key_id,
                    bytes: first.response,
                }));
            }
            idempotency_keys::Entity::insert(
                idempotency_keys::Model {
                    key,
                    seal_key_id: sealed.key_id,
                    response: sealed.bytes,
                    create_time: audit.time,
                }
                .into_active_model(),
            )
            .exec_without_returning(&transaction)
            .await?;
        }
        enrollment_links::Entity::insert(link.into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        TokenStore::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(EnrollOutcome::Created)
    }

    pub async fn link(&self, id: &str) -> Result<Option<enrollment_links::Model>, DeviceError> {
        Ok(enrollment_links::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    pub async fn link_by_secret_hash(
        &self,
        hash: &str,
    ) -> Result<Option<enrollment_links::Model>, DeviceError> {
        Ok(enrollment_links::Entity::find()
            .filter(enrollment_links::Column::SecretHash.eq(hash))
            .one(&self.db)
            .await?)
    }

    /// A page of links ordered by id, after `after`.
    pub async fn list_links(
        &self,
        filter: &LinkFilter,
        now: DateTime<Utc>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<enrollment_links::Model>, DeviceError> {
        use enrollment_links::Column;
        let mut query = enrollment_links::Entity::find().order_by_asc(Column::Id);
        if let Some(realm) = &filter.realm {
            query = query.filter(Column::Realm.eq(realm.as_str()));
        }
        if let Some(user) = &filter.user {
            query = query.filter(Column::UserName.eq(user.as_str()));
        }
        if let Some(state) = filter.state {
            query = query.filter(Column::State.eq(state));
        }
        match filter.expired {
            Some(true) => query = query.filter(Column::ExpireTime.lte(now)),
            Some(false) => query = query.filter(Column::ExpireTime.gt(now)),
            None => {}
        }
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after));
        }
        Ok(query.limit(limit).all(&self.db).await?)
    }

    /// Revokes an active link; revoking a revoked link returns it unchanged.
    pub async fn revoke_link(
        &self,
        id: &str,
        audit: AuditRecord,
    ) -> Result<enrollment_links::Model, DeviceError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let revoked = transaction
            .execute_raw(statement(
                backend,
                "UPDATE enrollment_links SET state = 'revoked' WHERE id = $1 AND state = 'active'",
                vec![id.into()],
            ))
            .await?
            .rows_affected();
        let link = enrollment_links::Entity::find_by_id(id.to_owned())
            .one(&transaction)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("enrollment link `{id}`")))?;
        if revoked == 0 && link.state == link_state::USED {
            return Err(DeviceError::FailedPrecondition(format!(
                "enrollment link `{id}` was already used; revoke the device instead"
            )));
        }
        if revoked == 1 {
            TokenStore::insert_audit(&transaction, audit).await?;
        }
        transaction.commit().await?;
        Ok(link)
    }

    /// Stores a ceremony's state and drops ceremonies expired over an hour ago.
    pub async fn save_ceremony(&self, ceremony: ceremonies::Model) -> Result<(), DeviceError> {
        let stale = ceremony.create_time - chrono::Duration::hours(1);
        ceremonies::Entity::delete_many()
            .filter(ceremonies::Column::ExpireTime.lt(stale))
            .exec(&self.db)
            .await?;
        ceremonies::Entity::insert(ceremony.into_active_model())
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    pub async fn ceremony(&self, id: &str) -> Result<Option<ceremonies::Model>, DeviceError> {
        Ok(ceremonies::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Consumes a ceremony that failed (a challenge is never verified twice) and records why.
    pub async fn burn_ceremony(&self, id: &str, audit: AuditRecord) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        ceremonies::Entity::delete_by_id(id.to_owned())
            .exec(&transaction)
            .await?;
        TokenStore::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Deletes the ceremony if it is still live; false when it expired or was used.
    async fn consume_ceremony(
        transaction: &DatabaseTransaction,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, DeviceError> {
        let backend = transaction.get_database_backend();
        let deleted = transaction
            .execute_raw(statement(
                backend,
                "DELETE FROM ceremonies WHERE id = $1 AND expire_time > $2",
                vec![id.into(), now.into()],
            ))
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }

    /// Writes a registration, or nothing but the refusal's audit event.
    pub async fn register(&self, registration: Registration) -> Result<DeviceRow, DeviceError> {
        let mut audit = registration.audit.clone();
        match self.try_register(registration).await {
            Ok(row) => Ok(row),
            Err(error @ DeviceError::Database(_)) => Err(error),
            Err(error) => {
                audit.result = "denied";
                audit.reason = error.audit_reason();
                self.audit(audit).await?;
                Err(error)
            }
        }
    }

    async fn try_register(&self, registration: Registration) -> Result<DeviceRow, DeviceError> {
        let Registration {
            ceremony_id,
            link_id,
            realm,
            user,
            mut device,
            limits,
            audit,
        } = registration;
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
            TokenStore::lock_realm(&transaction, &realm).await?;
        }
        let user_id = TokenStore::lock_user(&transaction, &realm, &user, now).await?;
        let taken = devices::Entity::find()
            .filter(devices::Column::CredentialId.eq(device.credential_id.as_str()))
            .one(&transaction)
            .await?;
        if taken.is_some() {
            return Err(DeviceError::AlreadyExists(
                "this authenticator's credential is already registered".to_owned(),
            ));
        }
        if let Some(error) = self
            .tokens
            .exceeded(&transaction, &realm, Some(user_id), &limits)
            .await?
        {
            return Err(error);
        }
        device.user_id = user_id;
        devices::Entity::insert(device.clone().into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        TokenStore::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(DeviceRow {
            device,
            user: user.to_string(),
        })
    }

    /// The user's devices, oldest first.
    pub async fn user_devices(
        &self,
        realm: &Realm,
        user: &UserName,
    ) -> Result<Vec<devices::Model>, DeviceError> {
        let backend = self.db.get_database_backend();
        Ok(devices::Entity::find()
            .from_raw_sql(statement(
                backend,
                "SELECT d.* FROM devices d JOIN users u ON u.id = d.user_id \
                 WHERE u.realm = $1 AND u.name = $2 ORDER BY d.create_time, d.id",
                vec![realm.as_str().into(), user.as_str().into()],
            ))
            .all(&self.db)
            .await?)
    }

    /// The limits one more device of the user would break (CheckEnrollment's reasons).
    pub async fn limits_reached(
        &self,
        realm: &Realm,
        user: &UserName,
        limits: &Limits,
    ) -> Result<Vec<DeviceError>, DeviceError> {
        let user_id = users::Entity::find()
            .filter(users::Column::Realm.eq(realm.as_str()))
            .filter(users::Column::Name.eq(user.as_str()))
            .one(&self.db)
            .await?
            .map(|row| row.id)
            // No row has id 0: a user never seen holds nothing.
            .unwrap_or(0);
        limits_reached(&self.db, realm, Some(user_id), limits).await
    }

    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>, DeviceError> {
        let Some(device) = devices::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let user = self.owner(&self.db, device.user_id).await?;
        Ok(Some(DeviceRow { device, user }))
    }

    /// A page of devices ordered by id, after `after`.
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<DeviceRow>, DeviceError> {
        use devices::Column;
        let mut query = devices::Entity::find().order_by_asc(Column::Id);
        if let Some(realm) = &filter.realm {
            query = query.filter(Column::Realm.eq(realm.as_str()));
        }
        if let Some(user) = &filter.user {
            let mut owners = users::Entity::find().filter(users::Column::Name.eq(user.as_str()));
            if let Some(realm) = &filter.realm {
                owners = owners.filter(users::Column::Realm.eq(realm.as_str()));
            }
            let ids: Vec<i64> = owners
                .all(&self.db)
                .await?
                .into_iter()
                .map(|user| user.id)
                .collect();
            query = query.filter(Column::UserId.is_in(ids));
        }
        if let Some(device_type) = filter.device_type {
            query = query.filter(Column::DeviceType.eq(device_type));
        }
        if let Some(state) = filter.state {
            query = query.filter(Column::State.eq(state));
        }
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after));
        }
        let devices = query.limit(limit).all(&self.db).await?;
        let names = self
            .tokens
            .owner_names
            .resolve(&self.db, devices.iter().map(|device| device.user_id))
            .await?;
        Ok(devices
            .into_iter()
            .map(|device| DeviceRow {
                user: names.get(&device.user_id).cloned().unwrap_or_default(),
                device,
            })
            .collect())
    }

    /// Moves a device from one of `from` to `to`; a device already in `to` is returned
    /// unchanged (no audit event), any other state is FAILED_PRECONDITION.
    pub async fn set_device_state(
        &self,
        id: &str,
        from: &[&str],
        to: &'static str,
        approved_by: Option<&str>,
        audit: AuditRecord,
    ) -> Result<DeviceRow, DeviceError> {
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
        if device.state != to {
            if !from.contains(&device.state.as_str()) {
                return Err(DeviceError::FailedPrecondition(format!(
                    "device `{id}` is {}, so it cannot become {to}",
                    device.state
                )));
            }
            let mut active = device.clone().into_active_model();
            active.state = sea_orm::Set(to.to_owned());
            if let Some(approver) = approved_by {
                active.approved_by = sea_orm::Set(approver.to_owned());
            }
            device = sea_orm::ActiveModelTrait::update(active, &transaction).await?;
            TokenStore::insert_audit(&transaction, audit).await?;
        }
        let user = self.owner(&transaction, device.user_id).await?;
        transaction.commit().await?;
        Ok(DeviceRow { device, user })
    }

    /// Records a successful authentication: consumes the ceremony, refuses a device revoked
    /// meanwhile, stores the new counter and the time of use.
    pub async fn authenticated(
        &self,
        ceremony_id: &str,
        credential_id: &str,
        updated_passkey_json: Option<String>,
        audit: AuditRecord,
    ) -> Result<DeviceRow, DeviceError> {
        let now = audit.time;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        if !Self::consume_ceremony(&transaction, ceremony_id, now).await? {
            return Err(DeviceError::FailedPrecondition(
                "the authentication ceremony has expired or was already finished; begin again"
                    .to_owned(),
            ));
        }
        let (sql, values): (&str, Vec<sea_orm::Value>) = match updated_passkey_json {
            Some(json) => (
                "UPDATE devices SET last_used_time = $1, credential = $2 \
                 WHERE credential_id = $3 AND state <> 'revoked'",
                vec![now.into(), json.into(), credential_id.into()],
            ),
            None => (
                "UPDATE devices SET last_used_time = $1 WHERE credential_id = $2 AND state <> 'revoked'",
                vec![now.into(), credential_id.into()],
            ),
        };
        let updated = transaction
            .execute_raw(statement(backend, sql, values))
            .await?
            .rows_affected();
        if updated != 1 {
            return Err(DeviceError::Refused {
                reason: "DEVICE_REVOKED",
                message: "the device was revoked".to_owned(),
            });
        }
        TokenStore::insert_audit(&transaction, audit).await?;
        let device = devices::Entity::find()
            .filter(devices::Column::CredentialId.eq(credential_id))
            .one(&transaction)
            .await?
            .ok_or_else(|| DeviceError::NotFound("device".to_owned()))?;
        let user = self.owner(&transaction, device.user_id).await?;
        transaction.commit().await?;
        Ok(DeviceRow { device, user })
    }
}
