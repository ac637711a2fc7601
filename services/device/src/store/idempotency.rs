//! First responses stored under request ids, written in the transaction of the change they
//! answer: a retry (or a racing duplicate, which waits on the same locks) finds the first
//! response instead of doing the work twice. Each record expires (sooner when its response
//! carries a secret); an expired record is treated as absent and purged.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Condition;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
};

use super::entities::idempotency_keys;
use crate::error::DeviceError;

/// A sealed first response (it may carry a secret returned once) and the keyed digest of
/// the request it answered.
#[derive(Clone)]
pub struct SealedResponse {
    pub key_id: String,
    pub bytes: Vec<u8>,
    pub digest: Vec<u8>,
}

/// A request id of a mutation: the key its first response is stored under, whether that
/// response carries a secret (it is then kept for less time), and how to seal it from the
/// mutation's result, inside the mutation's transaction.
pub struct Idempotency<'a, T> {
    pub key: String,
    pub secret: bool,
    pub seal: &'a (dyn Fn(&T) -> Result<SealedResponse, DeviceError> + Sync),
}

/// What a mutation with an optional request id did.
pub enum Outcome<T> {
    Done(T),
    /// The request id was used before: its first response, sealed.
    Replayed(SealedResponse),
}

/// How long first responses are kept (`[idempotency]`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub ttl: Duration,
    pub secret_ttl: Duration,
}

impl Default for Retention {
    /// The defaults of `[idempotency]`.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3_600),
            secret_ttl: Duration::from_secs(600),
        }
    }
}

impl Retention {
    fn expire_time(&self, secret: bool, now: DateTime<Utc>) -> DateTime<Utc> {
        let ttl = if secret { self.secret_ttl } else { self.ttl };
        now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(30))
    }
}

/// How often at most one store purges expired records (ms).
const PURGE_EVERY_MS: i64 = 60_000;

/// The records of one store: retention and the time of its last purge.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub retention: Retention,
    last_purge_ms: Arc<AtomicI64>,
}

impl Records {
    pub fn new(retention: Retention) -> Self {
        Self {
            retention,
            last_purge_ms: Arc::default(),
        }
    }

    /// The live response stored under `key`, if any (the fast path of a retry). Expired
    /// records are purged from time to time, in the background, off the request's path.
    pub async fn find(
        &self,
        db: &DatabaseConnection,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SealedResponse>, DeviceError> {
        self.purge_if_due(db, now);
        find(db, key, now).await
    }

    fn purge_if_due(&self, db: &DatabaseConnection, now: DateTime<Utc>) {
        let last = self.last_purge_ms.load(Ordering::Relaxed);
        let due = now.timestamp_millis() - last >= PURGE_EVERY_MS;
        // One caller wins the slot; the others go on at once.
        if !due
            || self
                .last_purge_ms
                .compare_exchange(
                    last,
                    now.timestamp_millis(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let db = db.clone();
        tokio::spawn(async move {
            match idempotency_keys::Entity::delete_many()
                .filter(expired(now))
                .exec(&db)
                .await
            {
                Ok(deleted) if deleted.rows_affected > 0 => {
                    tracing::debug!(
                        deleted = deleted.rows_affected,
                        "expired request ids purged"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "purging expired request ids"),
            }
        });
    }
}

/// Records past their expiry, or written before records expired (they have no expiry and
/// no digest; they may hold a secret kept with no end).
fn expired(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(idempotency_keys::Column::ExpireTime.is_null())
        .add(idempotency_keys::Column::RequestDigest.is_null())
        .add(idempotency_keys::Column::ExpireTime.lte(now))
}

/// The live response stored under `key`, if any: an expired record is absent.
async fn find(
    db: &impl ConnectionTrait,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<SealedResponse>, DeviceError> {
    let Some(row) = idempotency_keys::Entity::find_by_id(key.to_owned())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let (Some(digest), Some(expire_time)) = (row.request_digest, row.expire_time) else {
        return Ok(None);
    };
    if expire_time <= now {
        return Ok(None);
    }
    Ok(Some(SealedResponse {
        key_id: row.seal_key_id,
        bytes: row.response,
        digest,
    }))
}

/// The live first response stored under the request id, read inside the transaction after
/// its locks. An expired record under the key is deleted here, so the change can store its
/// own response under the key.
pub(super) async fn replayed<T>(
    idempotency: Option<&Idempotency<'_, T>>,
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
) -> Result<Option<SealedResponse>, DeviceError> {
    let Some(idempotency) = idempotency else {
        return Ok(None);
    };
    idempotency_keys::Entity::delete_many()
        .filter(idempotency_keys::Column::Key.eq(idempotency.key.as_str()))
        .filter(expired(now))
        .exec(db)
        .await?;
    find(db, &idempotency.key, now).await
}

/// Stores the sealed response to `result` under the request id, in the change's
/// transaction, until its retention ends.
pub(super) async fn remember<T>(
    idempotency: Option<&Idempotency<'_, T>>,
    db: &impl ConnectionTrait,
    result: &T,
    now: DateTime<Utc>,
    retention: &Retention,
) -> Result<(), DeviceError> {
    let Some(idempotency) = idempotency else {
        return Ok(());
    };
    let sealed = (idempotency.seal)(result)?;
    idempotency_keys::Entity::insert(
        idempotency_keys::Model {
            key: idempotency.key.clone(),
            seal_key_id: sealed.key_id,
            response: sealed.bytes,
            create_time: now,
            request_digest: Some(sealed.digest),
            expire_time: Some(retention.expire_time(idempotency.secret, now)),
        }
        .into_active_model(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kept_for_less_time() {
        let retention = Retention {
            ttl: Duration::from_secs(3_600),
            secret_ttl: Duration::from_secs(60),
        };
        let now = Utc::now();
        assert_eq!(
            retention.expire_time(false, now) - now,
            chrono::Duration::hours(1)
        );
        assert_eq!(
            retention.expire_time(true, now) - now,
            chrono::Duration::minutes(1)
        );
    }
}
