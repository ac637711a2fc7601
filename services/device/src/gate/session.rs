//! The device-bound session: a cookie sealed with AES-256-GCM under a rotated key, bound to
//! realm, user, credential id and the device type it was signed in for, with idle and
//! absolute lifetimes. The cookie is the whole session (no server-side row): every check
//! still asks CheckEnrollment about its credential, so revoking the device ends it.
use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::GateSessionConfig;
use crate::domain::devices::DeviceKind;
use crate::domain::names::{Realm, UserName};

/// Cookies longer than this are refused unread (a session is about 300 characters).
const MAX_COOKIE_CHARS: usize = 2048;
const FORMAT: &str = "v1";
/// Binds the ciphertext to its purpose: a value sealed for anything else does not open.
const ASSOCIATED_DATA: &[u8] = b"enroll-gate-session-v1";

/// A signed-in device session.
#[derive(Clone, PartialEq, Eq)]
pub struct GateSession {
    pub realm: Realm,
    pub user: UserName,
    pub credential_id: String,
    /// The device type the person authenticated for: it satisfies routes requiring it or
    /// less.
    pub device_type: DeviceKind,
    pub issued_at: DateTime<Utc>,
    /// The last time the cookie was re-sealed (idle lifetime runs from here).
    pub refreshed_at: DateTime<Utc>,
}

impl fmt::Debug for GateSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateSession")
            .field("realm", &self.realm.as_str())
            .field("user", &self.user.as_str())
            .field("device_type", &self.device_type.as_str())
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    r: String,
    u: String,
    c: String,
    t: String,
    i: i64,
    s: i64,
}

/// Why a cookie is not a session. None of them says anything about the cookie's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Not ours: malformed, tampered with, sealed with an unknown key.
    Invalid,
    /// Idle or absolute lifetime over.
    Expired,
}

/// Seals and opens sessions; the cookie's attributes.
pub struct SessionSeal {
    keys: BTreeMap<String, Aes256Gcm>,
    active: String,
    idle: Duration,
    absolute: Duration,
    domain: Option<String>,
}

impl fmt::Debug for SessionSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSeal")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl SessionSeal {
    pub fn from_config(config: &GateSessionConfig) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (id, hex_key) in &config.keys {
            if id.is_empty() || id.contains('.') {
                return Err(format!(
                    "gate.session.keys: key id `{id}` must be non-empty without '.'"
                ));
            }
            let bytes = hex::decode(hex_key.trim())
                .ok()
                .filter(|bytes| bytes.len() == 32)
                .ok_or_else(|| {
                    format!("gate.session.keys.{id} must be 64 hex characters (AES-256)")
                })?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| format!("gate.session.keys.{id} is not an AES-256 key"))?;
            keys.insert(id.clone(), cipher);
        }
        if !keys.contains_key(&config.active_key) {
            return Err(
                "gate.session.active_key must name one of gate.session.keys (the gate seals \
                 its session cookies with it)"
                    .to_owned(),
            );
        }
        if config.idle_minutes == 0 || config.absolute_minutes < config.idle_minutes {
            return Err("gate.session: idle_minutes must be at least 1 and at most \
                        absolute_minutes"
                .to_owned());
        }
        let domain = config.domain.trim().trim_start_matches('.').to_owned();
        if domain.contains(['/', ':', ';', ' ']) {
            return Err(format!("gate.session.domain `{domain}` is not a domain"));
        }
        Ok(Self {
            keys,
            active: config.active_key.clone(),
            idle: minutes(config.idle_minutes),
            absolute: minutes(config.absolute_minutes),
            domain: (!domain.is_empty()).then_some(domain),
        })
    }

    /// `__Host-` (host-only, path `/`) unless a domain is configured.
    pub fn cookie_name(&self) -> &'static str {
        if self.domain.is_some() {
            "__Secure-enroll-gate"
        } else {
            "__Host-enroll-gate"
        }
    }

    pub fn seal(&self, session: &GateSession) -> String {
        let sealed = Sealed {
            r: session.realm.to_string(),
            u: session.user.to_string(),
            c: session.credential_id.clone(),
            t: session.device_type.as_str().to_owned(),
            i: session.issued_at.timestamp(),
            s: session.refreshed_at.timestamp(),
        };
        // Serializing strings and integers cannot fail.
        let plaintext = serde_json::to_vec(&sealed).unwrap_or_default();
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.active];
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: ASSOCIATED_DATA,
                },
            )
            .unwrap_or_default();
        let mut body = nonce.to_vec();
        body.extend_from_slice(&ciphertext);
        format!("{FORMAT}.{}.{}", self.active, URL_SAFE_NO_PAD.encode(body))
    }

    /// The session a cookie value holds, if it is one of ours and still alive at `now`.
    pub fn open(&self, value: &str, now: DateTime<Utc>) -> Result<GateSession, SessionRefusal> {
        use SessionRefusal::*;
        if value.len() > MAX_COOKIE_CHARS {
            return Err(Invalid);
        }
        let mut parts = value.splitn(3, '.');
        let (Some(FORMAT), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid);
        };
        let cipher = self.keys.get(key_id).ok_or(Invalid)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| Invalid)?;
        if body.len() < 12 + 16 {
            return Err(Invalid);
        }
        let (nonce, ciphertext) = body.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| Invalid)?;
        let plaintext = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: ASSOCIATED_DATA,
                },
            )
            .map_err(|_| Invalid)?;
        let sealed: Sealed = serde_json::from_slice(&plaintext).map_err(|_| Invalid)?;
        let session = GateSession {
            realm: Realm::parse(&sealed.r).map_err(|_| Invalid)?,
            user: UserName::parse(&sealed.u).map_err(|_| Invalid)?,
            credential_id: sealed.c,
            device_type: DeviceKind::parse(&sealed.t)
                .filter(|_| !sealed.t.is_empty())
                .ok_or(Invalid)?,
            issued_at: DateTime::from_timestamp(sealed.i, 0).ok_or(Invalid)?,
            refreshed_at: DateTime::from_timestamp(sealed.s, 0).ok_or(Invalid)?,
        };
        if now >= session.issued_at + self.absolute || now >= session.refreshed_at + self.idle {
            return Err(Expired);
        }
        Ok(session)
    }

    /// Whether an active session's cookie is due to be re-sealed (a quarter of the idle
    /// lifetime has passed), so that use keeps it alive without a new cookie per request.
    pub fn due_for_refresh(&self, session: &GateSession, now: DateTime<Utc>) -> bool {
        now >= session.refreshed_at + self.idle / 4
    }

    /// The `Set-Cookie` value that stores `session`.
    pub fn set_cookie(&self, session: &GateSession) -> String {
        let remaining = (session.issued_at + self.absolute - session.refreshed_at)
            .min(self.idle)
            .num_seconds()
            .max(0);
        format!(
            "{}={}; Path=/; Max-Age={remaining}; HttpOnly; Secure; SameSite=Lax{}",
            self.cookie_name(),
            self.seal(session),
            self.domain_attribute()
        )
    }

    /// The `Set-Cookie` value that deletes the session cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax{}",
            self.cookie_name(),
            self.domain_attribute()
        )
    }

    fn domain_attribute(&self) -> String {
        self.domain
            .as_deref()
            .map(|domain| format!("; Domain={domain}"))
            .unwrap_or_default()
    }

    /// The gate's cookie value among the request's `Cookie` headers (the first one: a
    /// browser sends the most specific first).
    pub fn find<'a>(&self, cookie_headers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        let name = self.cookie_name();
        cookie_headers
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim())
    }

    /// `Cookie` header text without the gate's own cookie (what the app may see).
    pub fn strip<'a>(&self, cookie_headers: impl Iterator<Item = &'a str>) -> String {
        let name = self.cookie_name();
        cookie_headers
            .flat_map(|header| header.split(';'))
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .filter(|pair| pair.split_once('=').map(|(key, _)| key) != Some(name))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn minutes(value: u64) -> Duration {
    Duration::minutes(i64::try_from(value).unwrap_or(i64::MAX / 120_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_with(keys: &[(&str, &str)], active: &str) -> SessionSeal {
        SessionSeal::from_config(&GateSessionConfig {
            keys: keys
                .iter()
                .map(|(id, key)| (id.to_string(), key.to_string()))
                .collect(),
            active_key: active.to_owned(),
            idle_minutes: 60,
            absolute_minutes: 120,
            ..Default::default()
        })
        .unwrap()
    }

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    fn session(now: DateTime<Utc>) -> GateSession {
        GateSession {
            realm: Realm::parse("acme").unwrap(),
            user: UserName::parse("alice").unwrap(),
            credential_id: "cred-1".into(),
            device_type: DeviceKind::EnclaveOnly,
            issued_at: now,
            refreshed_at: now,
        }
    }

    #[test]
    fn a_sealed_session_opens_until_its_lifetimes_end_and_survives_rotation() {
        let now = Utc::now();
        let old = seal_with(&[("k1", K1)], "k1");
        let cookie = old.seal(&session(now));
        assert!(!cookie.contains("alice") && !cookie.contains("cred-1"));
        assert_eq!(old.open(&cookie, now).unwrap(), session(now));
        // Rotated: k2 seals, k1 still opens.
        let rotated = seal_with(&[("k1", K1), ("k2", K2)], "k2");
        assert_eq!(rotated.open(&cookie, now).unwrap(), session(now));
        assert!(rotated.seal(&session(now)).starts_with("v1.k2."));
        // k1 dropped: its cookies are gone.
        let dropped = seal_with(&[("k2", K2)], "k2");
        assert_eq!(dropped.open(&cookie, now), Err(SessionRefusal::Invalid));
        // Idle and absolute lifetimes.
        assert_eq!(
            old.open(&cookie, now + Duration::minutes(60)),
            Err(SessionRefusal::Expired)
        );
        let mut refreshed = session(now);
        refreshed.refreshed_at = now + Duration::minutes(100);
        let later = old.seal(&refreshed);
        assert!(old.open(&later, now + Duration::minutes(119)).is_ok());
        assert_eq!(
            old.open(&later, now + Duration::minutes(120)),
            Err(SessionRefusal::Expired)
        );
    }

    #[test]
    fn garbage_and_tampered_cookies_are_refused_without_panicking() {
        let now = Utc::now();
        let seal = seal_with(&[("k1", K1)], "k1");
        let cookie = seal.seal(&session(now));
        let mut tampered = cookie.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let long = "v1.k1.".to_owned() + &"A".repeat(5000);
        for garbage in [
            "",
            "v1",
            "v1.k1",
            "v1.k1.",
            "v1.k1.!!!",
            "v2.k1.AAAA",
            "v1.nokey.AAAA",
            tampered.as_str(),
            long.as_str(),
            "v1.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(
                seal.open(garbage, now),
                Err(SessionRefusal::Invalid),
                "{garbage}"
            );
        }
    }

    #[test]
    fn the_cookie_is_host_only_unless_a_domain_is_configured_and_is_stripped_for_the_app() {
        let now = Utc::now();
        let seal = seal_with(&[("k1", K1)], "k1");
        let set = seal.set_cookie(&session(now));
        assert!(set.starts_with("__Host-enroll-gate=v1.k1."), "{set}");
        for attribute in [
            "Path=/",
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Max-Age=3600",
        ] {
            assert!(set.contains(attribute), "{set}");
        }
        assert!(!set.contains("Domain"));
        let headers = ["a=1; __Host-enroll-gate=xyz", "b=2"];
        assert_eq!(seal.find(headers.iter().copied()), Some("xyz"));
        assert_eq!(seal.strip(headers.iter().copied()), "a=1; b=2");
        let mut config = GateSessionConfig {
            keys: [("k1".to_owned(), K1.to_owned())].into(),
            active_key: "k1".into(),
            domain: "example.com".into(),
            ..Default::default()
        };
        let shared = SessionSeal::from_config(&config).unwrap();
        let set = shared.set_cookie(&session(now));
        assert!(set.starts_with("__Secure-enroll-gate=") && set.contains("; Domain=example.com"));
        config.active_key = "missing".into();
        assert!(SessionSeal::from_config(&config).is_err());
    }
}
