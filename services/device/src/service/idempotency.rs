//! Request ids of mutations, in one place: the id as parsed at the edge, the key its first
//! response is stored under (per caller and RPC), sealing that response (it may carry a
//! secret returned once: a seed, a PIN, a password, a link URL) and replaying it.
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::actor::Actor;
use crate::domain::secrets::SeedCipher;
use crate::error::DeviceError;
use crate::store::idempotency::{Idempotency, Outcome, SealedResponse};

/// The longest request id accepted.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// A caller's request id: a retry with the same id gets the first response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// None for an empty id (the request is not idempotent).
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        let id = raw.trim();
        enroll_shared::text::check_storable(id, MAX_REQUEST_ID_CHARS)?;
        Ok(Some(Self(id.to_owned())).filter(|id| !id.0.is_empty()))
    }
}

/// A mutation made idempotent by its request id.
pub struct Idempotent<'a> {
    key: String,
    cipher: &'a SeedCipher,
}

impl<'a> Idempotent<'a> {
    /// The request's idempotency, keyed per caller (API key name) and RPC; None without a
    /// request id. First responses are stored sealed, so a request id needs the seed keys.
    pub fn new(
        actor: &Actor,
        rpc: &str,
        request_id: Option<&RequestId>,
        cipher: Option<&'a SeedCipher>,
    ) -> Result<Option<Self>, DeviceError> {
        let Some(id) = request_id else {
            return Ok(None);
        };
        let cipher = cipher.ok_or_else(|| {
            DeviceError::FailedPrecondition(
                "request_id needs secrets.seed_keys to seal the first response".to_owned(),
            )
        })?;
        Ok(Some(Self {
            key: format!("{}|{rpc}|{}", actor.name, id.0),
            cipher,
        }))
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The response sealed for storage under this key (the key is the additional data, so
    /// a sealed response cannot be moved to another key).
    pub fn seal<R: Serialize>(&self, response: &R) -> Result<SealedResponse, DeviceError> {
        let bytes = serde_json::to_vec(response)
            .map_err(|error| DeviceError::Unavailable(format!("response encoding: {error}")))?;
        let (key_id, bytes) = self
            .cipher
            .encrypt(&bytes, &self.key)
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        Ok(SealedResponse { key_id, bytes })
    }

    /// The first response stored under this key.
    pub fn open<R: DeserializeOwned>(&self, sealed: &SealedResponse) -> Result<R, DeviceError> {
        let bytes = self
            .cipher
            .decrypt(&sealed.key_id, &sealed.bytes, &self.key)
            .map_err(|error| DeviceError::corrupt("stored response", error))?;
        serde_json::from_slice(&bytes)
            .map_err(|error| DeviceError::corrupt("stored response", error))
    }

    /// The first response when one is stored: the fast path of a retry, before the policy
    /// is asked again (the store checks once more inside the change's transaction).
    pub fn first<R: DeserializeOwned>(
        &self,
        stored: Option<SealedResponse>,
    ) -> Result<Option<R>, DeviceError> {
        stored.map(|sealed| self.open(&sealed)).transpose()
    }

    /// What the store needs to keep the response inside the change's transaction.
    pub fn for_store<'s, T>(
        &self,
        seal: &'s (dyn Fn(&T) -> Result<SealedResponse, DeviceError> + Sync),
    ) -> Idempotency<'s, T> {
        Idempotency {
            key: self.key.clone(),
            seal,
        }
    }
}

/// The response to a mutation: built from its result, or the first response replayed.
pub fn respond<T, R: DeserializeOwned>(
    idempotent: Option<&Idempotent<'_>>,
    outcome: Outcome<T>,
    response: impl FnOnce(T) -> Result<R, DeviceError>,
) -> Result<R, DeviceError> {
    match (outcome, idempotent) {
        (Outcome::Done(result), _) => response(result),
        (Outcome::Replayed(first), Some(idempotent)) => idempotent.open(&first),
        (Outcome::Replayed(_), None) => Err(DeviceError::Unavailable(
            "a stored response came back for a request without an id".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> SeedCipher {
        SeedCipher::new([("k1", "ab".repeat(32).as_str())], "k1").unwrap()
    }

    fn actor(name: &str) -> Actor {
        Actor {
            name: name.to_owned(),
            client_ip: String::new(),
        }
    }

    #[test]
    fn request_ids_are_trimmed_bounded_and_optional() {
        assert_eq!(RequestId::parse("  ").unwrap(), None);
        assert!(RequestId::parse(" r1 ").unwrap().is_some());
        assert!(RequestId::parse(&"x".repeat(128)).unwrap().is_some());
        assert!(RequestId::parse(&"x".repeat(129)).is_err());
        assert!(RequestId::parse("r\0").is_err());
    }

    #[test]
    fn a_sealed_response_opens_only_under_its_own_key() {
        let cipher = cipher();
        let id = RequestId::parse("r1").unwrap();
        let first = Idempotent::new(&actor("console"), "EnrollToken", id.as_ref(), Some(&cipher))
            .unwrap()
            .unwrap();
        let sealed = first.seal(&"the seed".to_owned()).unwrap();
        assert_eq!(first.open::<String>(&sealed).unwrap(), "the seed");
        let other = Idempotent::new(&actor("other"), "EnrollToken", id.as_ref(), Some(&cipher))
            .unwrap()
            .unwrap();
        assert!(matches!(
            other.open::<String>(&sealed),
            Err(DeviceError::Corrupt(_))
        ));
    }

    #[test]
    fn a_request_id_needs_the_seed_keys() {
        let id = RequestId::parse("r1").unwrap();
        assert!(matches!(
            Idempotent::new(&actor("console"), "CreateEnrollmentLink", id.as_ref(), None),
            Err(DeviceError::FailedPrecondition(_))
        ));
        assert!(
            Idempotent::new(&actor("console"), "CreateEnrollmentLink", None, None)
                .unwrap()
                .is_none()
        );
    }
}
