//! Who a Validate failure is charged to, and the device tokens that make a client known.
//!
//! Failures slow the (user, client) pair that made them, never the token for everyone: an
//! outsider who knows a user name must not be able to lock the user out. A client is
//! "known" for a user when the user passed from it recently, by its address or by a device
//! token this service issued on that success; a known client is never held back by other
//! clients' failures (OWASP, "Slow down the (user, client) pair"; device cookies).
use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;

use super::names::{Realm, UserName};
use super::secrets::hmac_sha256;

/// The client a failure or a success is charged to, for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// A client address; an IPv6 address by its /64, what one host usually holds.
    Address(String),
    /// The random id of a device token this service issued (and verified on this call).
    Device(String),
    /// Requests without a client address, per API key (only with
    /// `validation.allow_missing_client_ip`): one proxy's clients share it.
    ApiKey(String),
}

impl ClientKey {
    /// The key of `client_ip`, or of the API key `actor_name` when there is no address.
    pub fn of(client_ip: Option<IpAddr>, actor_name: &str) -> Self {
        match client_ip {
            Some(address) => Self::Address(address_key(address)),
            None => Self::ApiKey(actor_name.to_owned()),
        }
    }

    /// The form stored in the database (and in audit reasons: no secret, a device token's
    /// id is not the token).
    pub fn stored(&self) -> String {
        match self {
            Self::Address(address) => format!("ip/{address}"),
            Self::Device(id) => format!("device/{id}"),
            Self::ApiKey(name) => format!("key/{name}"),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stored())
    }
}

/// An address as a client key: IPv4 as is, IPv6 by its /64.
pub fn address_key(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// What the stored state of one (user, client) pair says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PairState {
    /// Failures in a row since the pair's last success.
    pub failures: u32,
    /// The pair is refused until then.
    pub blocked_until: Option<DateTime<Utc>>,
    /// The user's last success from this client.
    pub last_success: Option<DateTime<Utc>>,
}

impl PairState {
    /// Whether the pair is still backing off at `now`.
    pub fn blocked(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.blocked_until.filter(|until| *until > now)
    }

    /// Whether the user passed from this client since `since`.
    pub fn passed_since(&self, since: DateTime<Utc>) -> bool {
        self.last_success.is_some_and(|last| last >= since)
    }
}

/// Signs and verifies device tokens: `dt1.<issued unix s>.<id>.<mac>`, the MAC an
/// HMAC-SHA256 over realm, user, issue time and id under a key only this service holds.
/// The token carries no name (the MAC binds them), so a token shown to someone tells
/// nothing of whose it is.
#[derive(Clone)]
pub struct DeviceTokenSigner {
    key: [u8; 32],
}

impl fmt::Debug for DeviceTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceTokenSigner(<key>)")
    }
}

/// A device token that verified: the client is the one the user passed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDeviceToken {
    /// The token's random id: its (user, client) pair.
    pub id: String,
    pub issued: DateTime<Utc>,
}

/// Why a device token is not trusted (audit reasons only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTokenProblem {
    Malformed,
    /// Forged, altered, or issued for another user or realm.
    BadSignature,
    Expired,
    /// Issued in the future (clock skew between replicas bigger than a minute, or forged).
    NotYetValid,
}

impl DeviceTokenProblem {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "device token malformed",
            Self::BadSignature => "device token signature does not match this user",
            Self::Expired => "device token expired",
            Self::NotYetValid => "device token issued in the future",
        }
    }
}

const VERSION: &str = "dt1";
/// Random id bytes: 128 bits, never reused.
const ID_BYTES: usize = 16;
/// How far in the future an issue time may be (replicas' clocks differ a little).
const SKEW_SECS: i64 = 60;

impl DeviceTokenSigner {
    /// A signer with `key` (32 bytes).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// A signer whose key is the 64 hex characters of `hex_key`.
    pub fn from_hex(hex_key: &str) -> Result<Self, &'static str> {
        hex::decode(hex_key.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Self::new)
            .ok_or("must be 64 hex characters (256 bits)")
    }

    /// A new device token for `user` of `realm` issued at `now`.
    pub fn issue(&self, realm: &Realm, user: &UserName, now: DateTime<Utc>) -> String {
        let mut id = [0u8; ID_BYTES];
        rand::rng().fill_bytes(&mut id);
        let id = URL_SAFE_NO_PAD.encode(id);
        let issued = now.timestamp();
        let mac = self.mac(realm, user, issued, &id);
        format!("{VERSION}.{issued}.{id}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// Verifies `token` for `user` of `realm`: issued by this key for them, no earlier than
    /// `max_age` before `now`. The MAC is compared in constant time.
    pub fn verify(
        &self,
        token: &str,
        realm: &Realm,
        user: &UserName,
        now: DateTime<Utc>,
        max_age: chrono::Duration,
    ) -> Result<VerifiedDeviceToken, DeviceTokenProblem> {
        let mut parts = token.split('.');
        let (Some(VERSION), Some(issued), Some(id), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(DeviceTokenProblem::Malformed);
        };
        let issued_secs: i64 = issued.parse().map_err(|_| DeviceTokenProblem::Malformed)?;
        // The canonical forms only: an altered spelling of the same values is not the token.
        if issued_secs.to_string() != issued
            || URL_SAFE_NO_PAD
                .decode(id)
                .map_or(true, |bytes| bytes.len() != ID_BYTES)
        {
            return Err(DeviceTokenProblem::Malformed);
        }
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| DeviceTokenProblem::Malformed)?;
        let expected = self.mac(realm, user, issued_secs, id);
        if !equal_in_constant_time(&mac, &expected) {
            return Err(DeviceTokenProblem::BadSignature);
        }
        let issued =
            DateTime::from_timestamp(issued_secs, 0).ok_or(DeviceTokenProblem::Malformed)?;
        if issued > now + chrono::Duration::seconds(SKEW_SECS) {
            return Err(DeviceTokenProblem::NotYetValid);
        }
        if issued + max_age <= now {
            return Err(DeviceTokenProblem::Expired);
        }
        Ok(VerifiedDeviceToken {
            id: id.to_owned(),
            issued,
        })
    }

    fn mac(&self, realm: &Realm, user: &UserName, issued: i64, id: &str) -> [u8; 32] {
        // Length-prefixed fields: no two (realm, user) pairs give the same message.
        let mut message = Vec::with_capacity(64);
        for field in [
            VERSION,
            realm.as_str(),
            user.as_str(),
            &issued.to_string(),
            id,
        ] {
            message.extend_from_slice(&(field.len() as u64).to_be_bytes());
            message.extend_from_slice(field.as_bytes());
        }
        hmac_sha256(&self.key, &message)
    }
}

/// Compares two byte strings without stopping at the first difference.
fn equal_in_constant_time(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(realm: &str, user: &str) -> (Realm, UserName) {
        (Realm::parse(realm).unwrap(), UserName::parse(user).unwrap())
    }

    const DAY: chrono::Duration = chrono::Duration::days(1);

    #[test]
    fn a_device_token_verifies_for_its_user_only() {
        let signer = DeviceTokenSigner::new([7; 32]);
        let now = Utc::now();
        let (realm, alice) = names("corp", "alice");
        let token = signer.issue(&realm, &alice, now);
        let verified = signer.verify(&token, &realm, &alice, now, DAY).unwrap();
        assert_eq!(verified.issued.timestamp(), now.timestamp());
        assert!(token.contains(&verified.id));
        assert!(!token.contains("alice") && !token.contains("corp"));
        // Two successes never share an id.
        let other = signer.issue(&realm, &alice, now);
        assert_ne!(
            signer.verify(&other, &realm, &alice, now, DAY).unwrap().id,
            verified.id
        );

        let (_, bob) = names("corp", "bob");
        let (elsewhere, _) = names("other", "alice");
        let bad = |token: &str, realm: &Realm, user: &UserName| {
            signer.verify(token, realm, user, now, DAY).unwrap_err()
        };
        assert_eq!(bad(&token, &realm, &bob), DeviceTokenProblem::BadSignature);
        assert_eq!(
            bad(&token, &elsewhere, &alice),
            DeviceTokenProblem::BadSignature
        );
        let foreign = DeviceTokenSigner::new([8; 32]).issue(&realm, &alice, now);
        assert_eq!(
            bad(&foreign, &realm, &alice),
            DeviceTokenProblem::BadSignature
        );
    }

    #[test]
    fn altered_or_malformed_tokens_are_refused() {
        let signer = DeviceTokenSigner::new([7; 32]);
        let now = Utc::now();
        let (realm, alice) = names("corp", "alice");
        let token = signer.issue(&realm, &alice, now);
        let parts: Vec<&str> = token.split('.').collect();
        let earlier = (now.timestamp() - 10).to_string();
        let altered_time = [parts[0], &earlier, parts[2], parts[3]].join(".");
        let padded_time = [parts[0], &format!("0{}", parts[1]), parts[2], parts[3]].join(".");
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for (candidate, problem) in [
            (altered_time.as_str(), DeviceTokenProblem::BadSignature),
            (flipped.as_str(), DeviceTokenProblem::BadSignature),
            (padded_time.as_str(), DeviceTokenProblem::Malformed),
            ("", DeviceTokenProblem::Malformed),
            ("dt1.1.2", DeviceTokenProblem::Malformed),
            (&format!("{token}.x"), DeviceTokenProblem::Malformed),
            (
                &token.replacen("dt1", "dt2", 1),
                DeviceTokenProblem::Malformed,
            ),
            (
                &format!("dt1.x.{}.{}", parts[2], parts[3]),
                DeviceTokenProblem::Malformed,
            ),
        ] {
            assert_eq!(
                signer.verify(candidate, &realm, &alice, now, DAY),
                Err(problem),
                "{candidate}"
            );
        }
    }

    #[test]
    fn device_tokens_expire_and_never_come_from_the_future() {
        let signer = DeviceTokenSigner::new([7; 32]);
        let now = Utc::now();
        let (realm, alice) = names("corp", "alice");
        let token = signer.issue(&realm, &alice, now);
        let verify = |at| signer.verify(&token, &realm, &alice, at, DAY);
        assert!(verify(now + DAY - chrono::Duration::seconds(1)).is_ok());
        assert_eq!(verify(now + DAY), Err(DeviceTokenProblem::Expired));
        assert_eq!(
            verify(now - chrono::Duration::minutes(5)),
            Err(DeviceTokenProblem::NotYetValid)
        );
        assert!(DeviceTokenSigner::from_hex("ab").is_err());
        assert!(DeviceTokenSigner::from_hex(&"ab".repeat(32)).is_ok());
    }

    #[test]
    fn client_keys_group_ipv6_by_64_and_never_collide_across_kinds() {
        let ip = |raw: &str| Some(raw.parse::<IpAddr>().unwrap());
        assert_eq!(
            ClientKey::of(ip("192.0.2.7"), "proxy").stored(),
            "ip/192.0.2.7"
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2:aaaa::1"), "proxy"),
            ClientKey::of(ip("2001:db8:1:2:bbbb::2"), "proxy")
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:3::1"), "proxy"),
            ClientKey::of(ip("2001:db8:1:2::1"), "proxy")
        );
        assert_eq!(ClientKey::of(None, "proxy").stored(), "key/proxy");
        assert_ne!(
            ClientKey::Device("x".into()).stored(),
            ClientKey::ApiKey("x".into()).stored()
        );
    }

    #[test]
    fn a_pair_is_known_while_its_last_success_is_recent() {
        let now = Utc::now();
        let state = PairState {
            failures: 2,
            blocked_until: Some(now + chrono::Duration::seconds(5)),
            last_success: Some(now - DAY),
        };
        assert_eq!(state.blocked(now), state.blocked_until);
        assert_eq!(state.blocked(now + chrono::Duration::seconds(5)), None);
        assert!(state.passed_since(now - DAY * 2));
        assert!(!state.passed_since(now - DAY / 2));
        assert!(!PairState::default().passed_since(now - DAY * 365));
    }
}
