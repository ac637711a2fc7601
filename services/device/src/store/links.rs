//! Enrollment links and WebAuthn ceremony state. A link is redeemed by a conditional update
//! inside the registration's transaction (see `devices.rs`), so two racing registrations
//! cannot both use it.
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    TransactionTrait,
};

use super::convert;
use super::devices::DeviceStore;
use super::entities::columns::LinkStateColumn;
use super::entities::{ceremonies, enrollment_links};
use super::idempotency::{self, Idempotency, Outcome};
use super::sql::statement;
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::devices::{Link, LinkFilter};
use crate::error::DeviceError;

/// How many links are in each state now (the metrics' link gauge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Active and not expired.
    pub active: u64,
    pub used: u64,
    pub revoked: u64,
    /// Active but past their expire time.
    pub expired: u64,
}

impl DeviceStore {
    /// Counts the links by state at `now`.
    pub async fn count_links(&self, now: DateTime<Utc>) -> Result<LinkCounts, DeviceError> {
        use enrollment_links::Column;
        use sea_orm::PaginatorTrait;
        let in_state = |state: LinkStateColumn| {
            enrollment_links::Entity::find().filter(Column::State.eq(state))
        };
        Ok(LinkCounts {
            active: in_state(LinkStateColumn::Active)
                .filter(Column::ExpireTime.gt(now))
                .count(&self.db)
                .await?,
            used: in_state(LinkStateColumn::Used).count(&self.db).await?,
            revoked: in_state(LinkStateColumn::Revoked).count(&self.db).await?,
            expired: in_state(LinkStateColumn::Active)
                .filter(Column::ExpireTime.lte(now))
                .count(&self.db)
                .await?,
        })
    }

    /// Stores a new link with its audit event (and the sealed response of its request id).
    pub async fn create_link(
        &self,
        link: enrollment_links::Model,
        audit: AuditRecord,
        idempotency: Option<Idempotency<'_, ()>>,
    ) -> Result<Outcome<()>, DeviceError> {
        let now = audit.time;
        let transaction = self.db.begin().await?;
        if let Some(first) = idempotency::replayed(idempotency.as_ref(), &transaction, now).await? {
            return Ok(Outcome::Replayed(first));
        }
        let retention = &self.tokens.records.retention;
        idempotency::remember(idempotency.as_ref(), &transaction, &(), now, retention).await?;
        enrollment_links::Entity::insert(link.into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        TokenStore::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(Outcome::Done(()))
    }

    pub async fn link(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Link>, DeviceError> {
        enrollment_links::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(|row| convert::link(&row, now))
            .transpose()
    }

    pub async fn link_by_secret_hash(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Link>, DeviceError> {
        enrollment_links::Entity::find()
            .filter(enrollment_links::Column::SecretHash.eq(hash))
            .one(&self.db)
            .await?
            .map(|row| convert::link(&row, now))
            .transpose()
    }

    /// A page of links ordered by id, after `after` (`lists::links`).
    pub async fn list_links(
        &self,
        filter: &LinkFilter,
        now: DateTime<Utc>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Link>, DeviceError> {
        let backend = self.db.get_database_backend();
        enrollment_links::Entity::find()
            .from_raw_sql(super::lists::links(backend, filter, now, after, limit))
            .all(&self.db)
            .await?
            .iter()
            .map(|row| convert::link(row, now))
            .collect()
    }

    /// Revokes an active link; revoking a revoked link returns it unchanged.
    pub async fn revoke_link(&self, id: &str, audit: AuditRecord) -> Result<Link, DeviceError> {
        let now = audit.time;
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
        if revoked == 0 && link.state == LinkStateColumn::Used {
            return Err(DeviceError::FailedPrecondition(format!(
                "enrollment link `{id}` was already used; revoke the device instead"
            )));
        }
        if revoked == 1 {
            TokenStore::insert_audit(&transaction, audit).await?;
        }
        transaction.commit().await?;
        convert::link(&link, now)
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
    pub(super) async fn consume_ceremony(
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
}
