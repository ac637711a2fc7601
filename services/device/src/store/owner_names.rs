//! User names by user id, for the list reads. A user row is never renamed or deleted, so a
//! cached name never goes stale; the map is dropped whole when it outgrows its bound.
use std::collections::HashMap;
use std::sync::RwLock;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use super::entities::users;
use crate::error::DeviceError;

/// Names kept at most; a realm's active users fit many times over.
const CAPACITY: usize = 200_000;

#[derive(Debug, Default)]
pub struct OwnerNames {
    names: RwLock<HashMap<i64, String>>,
}

impl OwnerNames {
    /// The names of `ids`, reading only the ones not seen before.
    pub async fn resolve(
        &self,
        db: &impl ConnectionTrait,
        ids: impl IntoIterator<Item = i64>,
    ) -> Result<HashMap<i64, String>, DeviceError> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let names = self
                .names
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for id in ids {
                match names.get(&id) {
                    Some(name) => {
                        found.insert(id, name.clone());
                    }
                    None => missing.push(id),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        missing.sort_unstable();
        missing.dedup();
        let rows: Vec<(i64, String)> = users::Entity::find()
            .select_only()
            .column(users::Column::Id)
            .column(users::Column::Name)
            .filter(users::Column::Id.is_in(missing))
            .into_tuple()
            .all(db)
            .await?;
        let mut names = self
            .names
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if names.len() + rows.len() > CAPACITY {
            names.clear();
        }
        for (id, name) in rows {
            names.insert(id, name.clone());
            found.insert(id, name);
        }
        Ok(found)
    }
}
