//! First responses stored under request ids, written in the transaction of the change they
//! answer: a retry (or a racing duplicate, which waits on the same locks) finds the first
//! response instead of doing the work twice.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, EntityTrait, IntoActiveModel};

use super::entities::idempotency_keys;
use crate::error::DeviceError;

/// A sealed first response (it may carry a secret returned once).
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

/// The response stored under `key`, if any.
pub(super) async fn find(
    db: &impl ConnectionTrait,
    key: &str,
) -> Result<Option<SealedResponse>, DeviceError> {
    Ok(idempotency_keys::Entity::find_by_id(key.to_owned())
        .one(db)
        .await?
        .map(|row| SealedResponse {
            key_id: row.seal_key_id,
            bytes: row.response,
        }))
}

/// The first response stored under the request id, read inside the transaction after its
/// locks.
pub(super) async fn replayed<T>(
    idempotency: Option<&Idempotency<'_, T>>,
    db: &impl ConnectionTrait,
) -> Result<Option<SealedResponse>, DeviceError> {
    match idempotency {
        Some(idempotency) => find(db, &idempotency.key).await,
        None => Ok(None),
    }
}

/// Stores the sealed response to `result` under the request id, in the change's transaction.
pub(super) async fn remember<T>(
    idempotency: Option<&Idempotency<'_, T>>,
    db: &impl ConnectionTrait,
    result: &T,
    now: DateTime<Utc>,
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
        }
        .into_active_model(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}
