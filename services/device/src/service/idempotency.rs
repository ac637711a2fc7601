//! Request ids of mutations, in one place: the id as parsed at the edge, the key its first
//! response is stored under (per caller and RPC), the digest of the request's parameters it
//! is bound to, sealing that response (it may carry a secret returned once: a seed, a PIN,
//! a password, a link URL) and replaying it. How long records live is the store's
//! (`Retention`): less when the response carries a secret.
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

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

/// The mutations that take a request id. Those whose response carries a secret returned
/// once are kept for less time (`idempotency.secret_ttl_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    EnrollToken,
    ImportTokens,
    AssignToken,
    UnassignToken,
    SetPin,
    EnableToken,
    DisableToken,
    DeleteToken,
    ReportLostToken,
    CreateEnrollmentLink,
    CreateOtpEnrollmentLink,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Rpc::EnrollToken => "EnrollToken",
            Rpc::ImportTokens => "ImportTokens",
            Rpc::AssignToken => "AssignToken",
            Rpc::UnassignToken => "UnassignToken",
            Rpc::SetPin => "SetPin",
            Rpc::EnableToken => "EnableToken",
            Rpc::DisableToken => "DisableToken",
            Rpc::DeleteToken => "DeleteToken",
            Rpc::ReportLostToken => "ReportLostToken",
            Rpc::CreateEnrollmentLink => "CreateEnrollmentLink",
            Rpc::CreateOtpEnrollmentLink => "CreateOtpEnrollmentLink",
        }
    }

    /// The seed (and random PIN), the temporary password, the link URL.
    fn response_carries_a_secret(self) -> bool {
        matches!(
            self,
            Rpc::EnrollToken
                | Rpc::ReportLostToken
                | Rpc::CreateEnrollmentLink
                | Rpc::CreateOtpEnrollmentLink
        )
    }
}

/// A digest of a request's validated parameters, field by field (each name and value
/// length-prefixed, so no two requests encode alike). A request id used again with another
/// digest is another request, and is refused rather than answered with the first response.
#[derive(Clone, Default)]
pub struct Digest(Sha256);

impl Digest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(mut self, name: &str, value: &[u8]) -> Self {
        for part in [name.as_bytes(), value] {
            self.0.update((part.len() as u64).to_be_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn text(self, name: &str, value: &str) -> Self {
        self.bytes(name, value.as_bytes())
    }

    /// An optional value: absent differs from empty.
    pub fn optional(self, name: &str, value: Option<&str>) -> Self {
        match value {
            Some(value) => self.text(&format!("{name}?"), value),
            None => self.text(&format!("{name}-"), ""),
        }
    }

    pub fn number(self, name: &str, value: impl Into<i128>) -> Self {
        self.bytes(name, &value.into().to_be_bytes())
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The key a first response is stored under: the caller's API key name, the RPC and the
/// request id, so a replay is only ever handed to the key that made the request. Key names
/// are free text and may contain `|`, so the name's `\` and `|` are escaped: `a|EnrollToken`
/// with id `x` and `a` with id `EnrollToken|x` would otherwise share a record. Names without
/// either character keep the key they always had, so records survive an upgrade.
fn record_key(caller: &str, rpc: Rpc, id: &str) -> String {
    let caller = caller.replace('\\', "\\\\").replace('|', "\\|");
    format!("{caller}|{}|{id}", rpc.name())
}

/// A mutation made idempotent by its request id.
pub struct Idempotent<'a> {
    id: String,
    key: String,
    rpc: Rpc,
    digest: [u8; 32],
    cipher: &'a SeedCipher,
}

impl<'a> Idempotent<'a> {
    /// The request's idempotency, keyed per caller (API key name) and RPC and bound to the
    /// digest of its parameters; None without a request id. First responses are stored
    /// sealed, so a request id needs the seed keys.
    pub fn new(
        actor: &Actor,
        rpc: Rpc,
        request_id: Option<&RequestId>,
        digest: Digest,
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
            id: id.0.clone(),
            key: record_key(&actor.name, rpc, &id.0),
            rpc,
            digest: digest.finish(),
            cipher,
        }))
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The response sealed for storage under this key (the key is the additional data, so
    /// a sealed response cannot be moved to another key), with the request's digest keyed
    /// under the same key id.
    pub fn seal<R: Serialize>(&self, response: &R) -> Result<SealedResponse, DeviceError> {
        let bytes = serde_json::to_vec(response)
            .map_err(|error| DeviceError::Unavailable(format!("response encoding: {error}")))?;
        let (key_id, bytes) = self
            .cipher
            .encrypt(&bytes, &self.key)
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        let digest = self
            .cipher
            .keyed_digest(&key_id, &self.digest)
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        Ok(SealedResponse {
            key_id,
            bytes,
            digest: digest.to_vec(),
        })
    }

    /// The first response stored under this key, if it answered this very request; the
    /// same request id with other parameters is FAILED_PRECONDITION.
    pub fn open<R: DeserializeOwned>(&self, sealed: &SealedResponse) -> Result<R, DeviceError> {
        let digest = self
            .cipher
            .keyed_digest(&sealed.key_id, &self.digest)
            .map_err(|error| DeviceError::corrupt("stored response", error))?;
        if !equal_in_constant_time(&digest, &sealed.digest) {
            return Err(DeviceError::RequestIdReused {
                rpc: self.rpc.name(),
                request_id: self.id.clone(),
            });
        }
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
            secret: self.rpc.response_carries_a_secret(),
            seal,
        }
    }
}

fn equal_in_constant_time(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
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
            client_ip: None,
        }
    }

    #[test]
    fn records_are_kept_per_caller_even_when_names_contain_the_separator() {
        assert_eq!(
            record_key("console", Rpc::EnrollToken, "r1"),
            "console|EnrollToken|r1",
            "unchanged for ordinary names"
        );
        assert_ne!(
            record_key("a|EnrollToken", Rpc::EnrollToken, "x"),
            record_key("a", Rpc::EnrollToken, "EnrollToken|x")
        );
        assert_ne!(
            record_key("a\\", Rpc::EnrollToken, "x"),
            record_key("a", Rpc::EnrollToken, "\\|x")
        );
        assert_ne!(
            record_key("console", Rpc::EnrollToken, "r1"),
            record_key("console-2", Rpc::EnrollToken, "r1")
        );
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
        let digest = || Digest::new().text("realm", "acme");
        let first = Idempotent::new(
            &actor("console"),
            Rpc::EnrollToken,
            id.as_ref(),
            digest(),
            Some(&cipher),
        )
        .unwrap()
        .unwrap();
        let sealed = first.seal(&"the seed".to_owned()).unwrap();
        assert_eq!(first.open::<String>(&sealed).unwrap(), "the seed");
        let other = Idempotent::new(
            &actor("other"),
            Rpc::EnrollToken,
            id.as_ref(),
            digest(),
            Some(&cipher),
        )
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
        let link = Rpc::CreateEnrollmentLink;
        assert!(matches!(
            Idempotent::new(&actor("console"), link, id.as_ref(), Digest::new(), None),
            Err(DeviceError::FailedPrecondition(_))
        ));
        assert!(
            Idempotent::new(&actor("console"), link, None, Digest::new(), None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_same_id_with_other_parameters_is_refused() {
        let cipher = cipher();
        let id = RequestId::parse("r1").unwrap();
        let request = |user: &str| {
            Idempotent::new(
                &actor("console"),
                Rpc::SetPin,
                id.as_ref(),
                Digest::new().text("serial", "T1").text("pin", user),
                Some(&cipher),
            )
            .unwrap()
            .unwrap()
        };
        let sealed = request("1234").seal(&"token".to_owned()).unwrap();
        assert_eq!(request("1234").open::<String>(&sealed).unwrap(), "token");
        assert!(matches!(
            request("9999").open::<String>(&sealed),
            Err(DeviceError::RequestIdReused { .. })
        ));
        // The stored digest is keyed: it is not the plain SHA-256 of the parameters.
        let plain: [u8; 32] = Digest::new()
            .text("serial", "T1")
            .text("pin", "1234")
            .finish();
        assert_ne!(sealed.digest, plain.to_vec());
    }

    #[test]
    fn digests_tell_fields_apart() {
        let one = Digest::new().text("a", "bc").finish();
        assert_ne!(one, Digest::new().text("ab", "c").finish());
        assert_ne!(
            Digest::new().optional("user", None).finish(),
            Digest::new().optional("user", Some("")).finish()
        );
        assert_eq!(one, Digest::new().text("a", "bc").finish());
    }
}
