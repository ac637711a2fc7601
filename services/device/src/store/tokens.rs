//! Token persistence: enrollment, reads and listings. Every mutation runs in one transaction
//! that first locks the rows its limits depend on, so counting and inserting cannot race
//! (across replicas too).
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult, IntoActiveModel,
    PaginatorTrait, TransactionTrait,
};

use super::audit;
use super::convert::{self, TokenFields};
use super::entities::columns::TokenStateColumn;
use super::entities::{tokens, users};
use super::idempotency::{self, Idempotency, Outcome, Records, Retention, SealedResponse};
use super::lists;
use super::one_statement;
use super::owner_names::OwnerNames;
use super::sql::{exceeded, lock_realm, lock_user};
use crate::domain::audit::AuditRecord;
use crate::domain::decision::Limits;
use crate::domain::names::{Realm, UserName};
use crate::domain::tokens::{Token, TokenFilter};
use crate::error::DeviceError;

/// A token row with its owner's name.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub token: tokens::Model,
    pub user: Option<UserName>,
}

/// A ListTokens row before its owner's name is looked up.
#[derive(Debug, FromQueryResult)]
struct ListedToken {
    serial: String,
    realm: String,
    user_id: Option<i64>,
    token_type: String,
    state: TokenStateColumn,
    digits: i32,
    period: i32,
    algorithm: String,
    has_pin: bool,
    failure_count: i32,
    label: String,
    description: String,
    create_time: DateTime<Utc>,
    expire_time: Option<DateTime<Utc>>,
    verify_state: Option<String>,
    verify_deadline: Option<DateTime<Utc>>,
}

impl ListedToken {
    fn fields(&self) -> TokenFields<'_> {
        TokenFields {
            serial: &self.serial,
            realm: &self.realm,
            token_type: &self.token_type,
            state: self.state,
            digits: self.digits,
            period: self.period,
            algorithm: &self.algorithm,
            has_pin: self.has_pin,
            failure_count: self.failure_count,
            label: &self.label,
            description: &self.description,
            create_time: self.create_time,
            expire_time: self.expire_time,
            verify_state: self.verify_state.as_deref(),
            verify_deadline: self.verify_deadline,
        }
    }
}

#[derive(Clone)]
pub struct TokenStore {
    pub(super) db: DatabaseConnection,
    pub(super) owner_names: std::sync::Arc<OwnerNames>,
    pub(super) records: Records,
}

impl TokenStore {
    /// First responses to request ids are kept as long as `retention` says.
    pub fn new(db: DatabaseConnection, retention: Retention) -> Self {
        Self {
            db,
            owner_names: Default::default(),
            records: Records::new(retention),
        }
    }

    pub(super) async fn insert_audit(
        db: &impl ConnectionTrait,
        record: AuditRecord,
    ) -> Result<(), DeviceError> {
        audit::insert(db, record).await
    }

    /// The audit row alone, for a change that writes its events itself (their subjects
    /// differ from the audit event's).
    pub(super) async fn insert_audit_without_event(
        db: &impl ConnectionTrait,
        record: AuditRecord,
    ) -> Result<(), DeviceError> {
        use sea_orm::ActiveModelTrait;
        audit::row(record).insert(db).await?;
        Ok(())
    }

    /// The live first response stored under an idempotency key.
    pub async fn find_response(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SealedResponse>, DeviceError> {
        self.records.find(&self.db, key, now).await
    }

    /// Inserts `token` (for `user`, or into the pool) unless a limit forbids it. A refusal is
    /// audited (and committed) in the same transaction that counted.
    pub async fn enroll(
        &self,
        realm: &Realm,
        user: Option<&UserName>,
        mut token: tokens::Model,
        limits: &Limits,
        audit: AuditRecord,
        idempotency: Option<Idempotency<'_, ()>>,
    ) -> Result<Outcome<()>, DeviceError> {
        if let Some(user) = user
            && !limits.any()
            && idempotency.is_none()
            && self.db.get_database_backend() == DbBackend::Postgres
        {
            let now = token.create_time;
            let event = audit.event_kind().map(|kind| {
                let facts =
                    super::events::token_facts(&token.token_type, token.hardware, &token.label);
                super::events::row(&audit, kind, &token.serial, facts)
            });
            one_statement::enroll_for_user(
                &self.db,
                realm,
                user,
                token.into_active_model(),
                audit::row(audit),
                event,
                now,
            )
            .await?;
            return Ok(Outcome::Done(()));
        }
        let transaction = self.db.begin().await?;
        // Lock order: realm, then user (every writer takes them in this order).
        if limits.per_realm.is_some() {
            lock_realm(&transaction, realm).await?;
        }
        let user_id = match user {
            Some(user) => Some(lock_user(&transaction, realm, user, token.create_time).await?),
            None => None,
        };
        let now = audit.time;
        if let Some(first) = idempotency::replayed(idempotency.as_ref(), &transaction, now).await? {
            transaction.commit().await?;
            return Ok(Outcome::Replayed(first));
        }
        if let Some(error) = exceeded(&transaction, realm, user_id, limits, now).await? {
            Self::insert_audit(&transaction, audit.denied(error.audit_reason())).await?;
            transaction.commit().await?;
            return Err(error);
        }
        token.user_id = user_id;
        tokens::Entity::insert(token.into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        let retention = &self.records.retention;
        idempotency::remember(idempotency.as_ref(), &transaction, &(), now, retention).await?;
        transaction.commit().await?;
        Ok(Outcome::Done(()))
    }

    pub async fn get(&self, serial: &str) -> Result<Option<TokenRow>, DeviceError> {
        let Some(token) = tokens::Entity::find_by_id(serial.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let user = match token.user_id {
            Some(id) => match users::Entity::find_by_id(id).one(&self.db).await? {
                Some(user) => Some(convert::user(&format!("user {id}"), &user.name)?),
                None => None,
            },
            None => None,
        };
        Ok(Some(TokenRow { token, user }))
    }

    /// A page of tokens ordered by serial, after `after` (`lists::tokens`): reads only what
    /// a listing shows (never the sealed seed or the PIN hash).
    pub async fn list(
        &self,
        filter: &TokenFilter,
        after: Option<&str>,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Token>, DeviceError> {
        // No join: owner names come from a cache of immutable user rows, which makes the
        // page query about 40% cheaper for PostgreSQL.
        let backend = self.db.get_database_backend();
        let owners = match &filter.user {
            Some(user) => Some(lists::owner_ids(&self.db, filter.realm.as_ref(), user).await?),
            None => None,
        };
        // Nobody of that name, or that user's pool tokens (there are none).
        if owners.as_ref().is_some_and(Vec::is_empty)
            || (owners.is_some() && filter.assigned == Some(false))
        {
            return Ok(Vec::new());
        }
        let page = lists::tokens(backend, filter, owners.as_deref(), after, limit);
        let rows = ListedToken::find_by_statement(page).all(&self.db).await?;
        let names = self
            .owner_names
            .resolve(&self.db, rows.iter().filter_map(|row| row.user_id))
            .await?;
        rows.iter()
            .map(|row| {
                let owner = match row.user_id.and_then(|id| names.get(&id)) {
                    Some(name) => Some(convert::user(&format!("token `{}`", row.serial), name)?),
                    None => None,
                };
                row.fields().into_token(owner, now)
            })
            .collect()
    }

    /// How many tokens exist (tests and metrics).
    pub async fn count_all(&self) -> Result<u64, DeviceError> {
        Ok(tokens::Entity::find().count(&self.db).await?)
    }
}
