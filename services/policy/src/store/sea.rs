//! The sea-orm implementation of [`PolicyStore`] (PostgreSQL and SQLite).
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
    TransactionTrait,
};

use super::entities::{policies, policy_history};
use super::{
    CHANGE_CHANNEL, ChangeContext, ChangeKind, LoadedPolicies, PolicyChange, PolicyStore,
    StoreError,
};
use crate::domain::policy::{PolicySpec, StoredPolicy, UnreadablePolicy};

#[derive(Clone)]
pub struct SeaOrmPolicyStore {
    db: DatabaseConnection,
}

impl SeaOrmPolicyStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a write: bumps the version first. On SQLite the first statement being a write
    /// takes the write lock up front (so the busy timeout applies instead of a deadlock);
    /// on PostgreSQL the row lock serializes policy writes across replicas.
    ///
    /// This is also why `policy_history` can serve as an outbox read by id ("after id N",
    /// [`PolicyStore::history_after`]): every insert into it happens in `finish_write`,
    /// after this bump, in the same transaction, so its id is taken while the lock is held,
    /// and the lock is released only when that transaction commits or rolls back. A later
    /// writer takes its id after that, so ids are taken and committed in the same order and
    /// no smaller id can become visible after a larger one (a rollback leaves only a gap).
    /// This relies on the id sequence handing out values in call order across sessions
    /// (PostgreSQL's default `CACHE 1`, which m0001 keeps; SQLite assigns the next rowid
    /// under its write lock). Any new write path must start here to keep that true.
    async fn begin_write(&self) -> Result<(DatabaseTransaction, i64), StoreError> {
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let row = transaction
            .query_one_raw(Statement::from_string(
                backend,
                "UPDATE policy_set_state SET version = version + 1 WHERE id = 1 RETURNING version",
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("policy_set_state row 1".into()))?;
        let version: i64 = row.try_get("", "version")?;
        Ok((transaction, version))
    }

    /// Records the change and announces the new version, then commits.
    async fn finish_write(
        transaction: DatabaseTransaction,
        version: i64,
        change: ChangeKind,
        name: &str,
        context: &ChangeContext,
        before: Option<&PolicySpec>,
        after: Option<&PolicySpec>,
    ) -> Result<(), StoreError> {
        let to_json =
            |spec: Option<&PolicySpec>| spec.and_then(|spec| serde_json::to_string(spec).ok());
        policy_history::ActiveModel {
            policy_name: Set(name.to_owned()),
            change: Set(change.as_str().to_owned()),
            actor: Set(context.actor.clone()),
            change_time: Set(context.now),
            before_json: Set(to_json(before)),
            after_json: Set(to_json(after)),
            ..Default::default()
        }
        .insert(&transaction)
        .await?;
        if transaction.get_database_backend() == DbBackend::Postgres {
            // Delivered to listeners only if and when the transaction commits.
            transaction
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [CHANGE_CHANNEL.into(), version.to_string().into()],
                ))
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}

fn to_json(list: &impl serde::Serialize) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

fn to_row(
    spec: &PolicySpec,
    etag: String,
    create_time: chrono::DateTime<chrono::Utc>,
    update_time: chrono::DateTime<chrono::Utc>,
) -> policies::Model {
    policies::Model {
        name: spec.name.clone(),
        scope: spec.scope.clone(),
        realms: to_json(&spec.realms),
        users: to_json(&spec.users),
        clients: to_json(&spec.clients),
        actions: to_json(&spec.actions),
        priority: i64::from(spec.priority),
        active: spec.active,
        description: spec.description.clone(),
        etag,
        create_time,
        update_time,
    }
}

fn from_row(row: policies::Model) -> Result<StoredPolicy, StoreError> {
    let corrupt = |field: &str, error: serde_json::Error| StoreError::Corrupt {
        name: row.name.clone(),
        reason: format!("{field}: {error}"),
    };
    let spec = PolicySpec {
        realms: serde_json::from_str(&row.realms).map_err(|e| corrupt("realms", e))?,
        users: serde_json::from_str(&row.users).map_err(|e| corrupt("users", e))?,
        clients: serde_json::from_str(&row.clients).map_err(|e| corrupt("clients", e))?,
        actions: serde_json::from_str(&row.actions).map_err(|e| corrupt("actions", e))?,
        priority: u32::try_from(row.priority).unwrap_or(u32::MAX),
        name: row.name.clone(),
        scope: row.scope,
        active: row.active,
        description: row.description,
    };
    Ok(StoredPolicy {
        spec,
        etag: row.etag,
        create_time: row.create_time,
        update_time: row.update_time,
    })
}

/// The policy a write replaces, when its row can still be read.
fn readable_before(row: policies::Model) -> Option<StoredPolicy> {
    match from_row(row) {
        Ok(policy) => Some(policy),
        Err(error) => {
            tracing::warn!(%error, "replacing an unreadable policy row; its history has no `before`");
            None
        }
    }
}

fn from_history(row: policy_history::Model) -> PolicyChange {
    let parse = |json: Option<String>| json.and_then(|json| serde_json::from_str(&json).ok());
    PolicyChange {
        id: row.id,
        change: ChangeKind::parse(&row.change).unwrap_or(ChangeKind::Update),
        policy_name: row.policy_name,
        actor: row.actor,
        change_time: row.change_time,
        before: parse(row.before_json),
        after: parse(row.after_json),
    }
}

impl PolicyStore for SeaOrmPolicyStore {
    async fn version(&self) -> Result<i64, StoreError> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT version FROM policy_set_state WHERE id = 1",
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("policy_set_state row 1".into()))?;
        Ok(row.try_get("", "version")?)
    }

    async fn load_all(&self) -> Result<LoadedPolicies, StoreError> {
        // Read both in one transaction so the version matches the rows.
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        let version: i64 = transaction
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT version FROM policy_set_state WHERE id = 1",
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound("policy_set_state row 1".into()))?
            .try_get("", "version")?;
        let rows = policies::Entity::find()
            .order_by_asc(policies::Column::Name)
            .all(&transaction)
            .await?;
        transaction.commit().await?;
        let mut loaded = LoadedPolicies {
            version,
            ..Default::default()
        };
        for row in rows {
            let active = row.active;
            match from_row(row) {
                Ok(policy) => loaded.policies.push(policy),
                Err(StoreError::Corrupt { name, reason }) => {
                    loaded.unreadable.push(UnreadablePolicy {
                        name,
                        active,
                        reason,
                    })
                }
                Err(other) => return Err(other),
            }
        }
        Ok(loaded)
    }

    async fn get(&self, name: &str) -> Result<Option<StoredPolicy>, StoreError> {
        policies::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(from_row)
            .transpose()
    }

    async fn list(&self, after: Option<&str>, limit: u64) -> Result<Vec<StoredPolicy>, StoreError> {
        let mut query = policies::Entity::find().order_by_asc(policies::Column::Name);
        if let Some(after) = after {
            query = query.filter(policies::Column::Name.gt(after));
        }
        query
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(from_row)
            .collect()
    }

    async fn create(
        &self,
        spec: PolicySpec,
        context: ChangeContext,
    ) -> Result<StoredPolicy, StoreError> {
        let (transaction, version) = self.begin_write().await?;
        if policies::Entity::find_by_id(spec.name.clone())
            .one(&transaction)
            .await?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(spec.name));
        }
        let row = to_row(&spec, version.to_string(), context.now, context.now);
        policies::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        Self::finish_write(
            transaction,
            version,
            ChangeKind::Create,
            &spec.name,
            &context,
            None,
            Some(&spec),
        )
        .await?;
        from_row(row)
    }

    async fn update(
        &self,
        spec: PolicySpec,
        etag: &str,
        context: ChangeContext,
    ) -> Result<StoredPolicy, StoreError> {
        let (transaction, version) = self.begin_write().await?;
        let current = policies::Entity::find_by_id(spec.name.clone())
            .one(&transaction)
            .await?
            .ok_or_else(|| StoreError::NotFound(spec.name.clone()))?;
        if current.etag != etag {
            return Err(StoreError::EtagMismatch {
                name: spec.name,
                given: etag.to_owned(),
                stored: current.etag,
            });
        }
        // An unreadable row may be overwritten (that is how an admin repairs it); its
        // history entry then has no `before`.
        let before = readable_before(current.clone());
        let row = to_row(&spec, version.to_string(), current.create_time, context.now);
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&transaction)
            .await?;
        Self::finish_write(
            transaction,
            version,
            ChangeKind::Update,
            &spec.name,
            &context,
            before.as_ref().map(|before| &before.spec),
            Some(&spec),
        )
        .await?;
        from_row(row)
    }

    async fn delete(
        &self,
        name: &str,
        etag: Option<&str>,
        context: ChangeContext,
    ) -> Result<(), StoreError> {
        let (transaction, version) = self.begin_write().await?;
        let current = policies::Entity::find_by_id(name.to_owned())
            .one(&transaction)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        if let Some(etag) = etag
            && current.etag != etag
        {
            return Err(StoreError::EtagMismatch {
                name: name.to_owned(),
                given: etag.to_owned(),
                stored: current.etag,
            });
        }
        let before = readable_before(current);
        policies::Entity::delete_by_id(name.to_owned())
            .exec(&transaction)
            .await?;
        Self::finish_write(
            transaction,
            version,
            ChangeKind::Delete,
            name,
            &context,
            before.as_ref().map(|before| &before.spec),
            None,
        )
        .await
    }

    async fn history(
        &self,
        name: Option<&str>,
        before_id: Option<i64>,
        limit: u64,
    ) -> Result<Vec<PolicyChange>, StoreError> {
        let mut query = policy_history::Entity::find().order_by_desc(policy_history::Column::Id);
        if let Some(name) = name {
            query = query.filter(policy_history::Column::PolicyName.eq(name));
        }
        if let Some(before_id) = before_id {
            query = query.filter(policy_history::Column::Id.lt(before_id));
        }
        Ok(query
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(from_history)
            .collect())
    }

    async fn history_after(
        &self,
        name: Option<&str>,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<PolicyChange>, StoreError> {
        let mut query = policy_history::Entity::find()
            .filter(policy_history::Column::Id.gt(after_id))
            .order_by_asc(policy_history::Column::Id);
        if let Some(name) = name {
            query = query.filter(policy_history::Column::PolicyName.eq(name));
        }
        Ok(query
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(from_history)
            .collect())
    }
}
