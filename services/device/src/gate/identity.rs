//! Who the user is, as the proxy in front (Pomerium, oauth2-proxy, Envoy's jwt_authn, an
//! IdP's gateway) says: a JWT verified against a JWKS, or a plain header accepted only from
//! the gate's trusted proxy addresses. Every failure is the same [`IdentityRefused`] to the
//! caller (401, nothing more); its kind goes to the audit trail and the metric only.
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use enroll_shared::jose::jsonwebtoken::jwk::JwkSet;
use enroll_shared::jose::jsonwebtoken::{self, Algorithm, DecodingKey, Validation};
use http::HeaderMap;
use serde_json::Value;

use crate::config::{GateIdentityConfig, IdentityMode};
use crate::domain::names::{Realm, UserName};
use crate::forwarding::TrustedProxies;

/// JWTs longer than this are refused unparsed.
const MAX_TOKEN_CHARS: usize = 16 * 1024;
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Verified tokens remembered at most (see [`VerifiedTokens`]).
const MAX_VERIFIED_TOKENS: usize = 4096;

/// The verified user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub realm: Realm,
    pub user: UserName,
}

/// Why no identity was accepted (for the audit trail and metrics only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityRefused {
    Missing,
    UntrustedPeer,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    AlgorithmRefused,
    NoUserClaim,
    BadName,
    KeysUnavailable,
}

impl IdentityRefused {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "IDENTITY_MISSING",
            Self::UntrustedPeer => "IDENTITY_FROM_UNTRUSTED_PEER",
            Self::Malformed => "IDENTITY_MALFORMED",
            Self::UnknownKey => "IDENTITY_UNKNOWN_KEY",
            Self::BadSignature => "IDENTITY_BAD_SIGNATURE",
            Self::Expired => "IDENTITY_EXPIRED",
            Self::NotYetValid => "IDENTITY_NOT_YET_VALID",
            Self::WrongIssuer => "IDENTITY_WRONG_ISSUER",
            Self::WrongAudience => "IDENTITY_WRONG_AUDIENCE",
            Self::AlgorithmRefused => "IDENTITY_ALGORITHM_REFUSED",
            Self::NoUserClaim => "IDENTITY_NO_USER_CLAIM",
            Self::BadName => "IDENTITY_BAD_NAME",
            Self::KeysUnavailable => "IDENTITY_KEYS_UNAVAILABLE",
        }
    }
}

/// Where the identity comes from, built once from `[gate.identity]`.
pub struct IdentitySource {
    mode: Mode,
    header: http::HeaderName,
    default_realm: Option<Realm>,
    realm_header: Option<http::HeaderName>,
    proxies: TrustedProxies,
}

enum Mode {
    Jwt(Box<JwtVerifier>),
    Header,
}

impl IdentitySource {
    pub fn from_config(
        config: &GateIdentityConfig,
        proxies: TrustedProxies,
    ) -> Result<Self, String> {
        let header_name = if config.header.trim().is_empty() {
            match config.mode {
                IdentityMode::Jwt => "x-pomerium-jwt-assertion",
                IdentityMode::Header => "x-forwarded-user",
            }
        } else {
            config.header.trim()
        };
        let header = http::HeaderName::try_from(header_name)
            .map_err(|_| format!("gate.identity.header `{header_name}` is not a header name"))?;
        let default_realm = if config.realm.trim().is_empty() {
            None
        } else {
            Some(
                Realm::parse(config.realm.trim())
                    .map_err(|error| format!("gate.identity.realm: {error}"))?,
            )
        };
        let realm_header = match config.realm_header.trim() {
            "" => None,
            name => Some(http::HeaderName::try_from(name).map_err(|_| {
                format!("gate.identity.realm_header `{name}` is not a header name")
            })?),
        };
        let mode = match config.mode {
            IdentityMode::Jwt => {
                if config.realm_claim.trim().is_empty() && default_realm.is_none() {
                    return Err(
                        "gate.identity: set realm_claim or realm (the realm of every user)"
                            .to_owned(),
                    );
                }
                Mode::Jwt(Box::new(JwtVerifier::from_config(config)?))
            }
            IdentityMode::Header => {
                if proxies.is_empty() {
                    return Err(
                        "gate.identity.mode = \"header\" needs gate.trusted_proxies: a \
                                plain header is believed only from those addresses"
                            .to_owned(),
                    );
                }
                if realm_header.is_none() && default_realm.is_none() {
                    return Err(
                        "gate.identity: set realm_header or realm (the realm of every user)"
                            .to_owned(),
                    );
                }
                Mode::Header
            }
        };
        Ok(Self {
            mode,
            header,
            default_realm,
            realm_header,
            proxies,
        })
    }

    /// The identity `headers` assert, coming over a connection from `peer` (the proxy).
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Identity, IdentityRefused> {
        let value = headers
            .get(&self.header)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .ok_or(IdentityRefused::Missing)?;
        match &self.mode {
            Mode::Header => {
                if !self.proxies.trusts(peer) {
                    return Err(IdentityRefused::UntrustedPeer);
                }
                let realm = match &self.realm_header {
                    Some(name) => match headers.get(name).and_then(|v| v.to_str().ok()) {
                        Some(text) => {
                            Realm::parse(text.trim()).map_err(|_| IdentityRefused::BadName)?
                        }
                        None => self.default_realm.clone().ok_or(IdentityRefused::Missing)?,
                    },
                    None => self.default_realm.clone().ok_or(IdentityRefused::Missing)?,
                };
                let user = UserName::parse(value).map_err(|_| IdentityRefused::BadName)?;
                Ok(Identity { realm, user })
            }
            Mode::Jwt(verifier) => {
                let token = if self.header == http::header::AUTHORIZATION {
                    value
                        .strip_prefix("Bearer ")
                        .or_else(|| value.strip_prefix("bearer "))
                        .ok_or(IdentityRefused::Malformed)?
                        .trim()
                } else {
                    value
                };
                let claims = verifier.verify(token).await?;
                let realm = match verifier.realm_claim.as_deref() {
                    Some(claim) => match claims.get(claim).and_then(Value::as_str) {
                        Some(text) => Realm::parse(text).map_err(|_| IdentityRefused::BadName)?,
                        None => self
                            .default_realm
                            .clone()
                            .ok_or(IdentityRefused::NoUserClaim)?,
                    },
                    None => self
                        .default_realm
                        .clone()
                        .ok_or(IdentityRefused::NoUserClaim)?,
                };
                let user = claims
                    .get(&verifier.user_claim)
                    .and_then(Value::as_str)
                    .ok_or(IdentityRefused::NoUserClaim)?;
                let user = UserName::parse(user).map_err(|_| IdentityRefused::BadName)?;
                Ok(Identity { realm, user })
            }
        }
    }
}

/// Where the signing keys come from.
enum KeySource {
    File(std::path::PathBuf),
    Url(url::Url),
}

struct Keys {
    set: Arc<JwkSet>,
    fetched_at: Option<Instant>,
}

/// Tokens whose signature and claims were verified, until their `exp`: the proxy in front
/// sends the same token with every request of a session (an ID token, an assertion until
/// it is re-signed), and verifying an ECDSA or RSA signature costs more than the rest of a
/// check together. Keyed by the whole token, so only that exact string is believed again;
/// forgotten when the keys change.
#[derive(Default)]
struct VerifiedTokens(std::sync::Mutex<std::collections::HashMap<String, (Claims, i64)>>);

type Claims = Arc<serde_json::Map<String, Value>>;

impl VerifiedTokens {
    /// The claims of `token` if it was verified and has not expired at `now` (`leeway`
    /// seconds past `exp` allowed, as when it was verified).
    fn get(&self, token: &str, now: i64, leeway: i64) -> Option<Claims> {
        let entries = self.0.lock().ok()?;
        let (claims, exp) = entries.get(token)?;
        (now < exp.saturating_add(leeway)).then(|| claims.clone())
    }

    fn insert(&self, token: &str, claims: Claims, now: i64, leeway: i64) {
        let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
            return;
        };
        if let Ok(mut entries) = self.0.lock() {
            if entries.len() >= MAX_VERIFIED_TOKENS {
                entries.retain(|_, (_, exp)| now < exp.saturating_add(leeway));
                if entries.len() >= MAX_VERIFIED_TOKENS {
                    entries.clear();
                }
            }
            entries.insert(token.to_owned(), (claims, exp));
        }
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.0.lock() {
            entries.clear();
        }
    }
}

pub struct JwtVerifier {
    source: KeySource,
    keys: RwLock<Keys>,
    verified: VerifiedTokens,
    /// One refresh at a time; a token with an unknown `kid` waits for it.
    refreshing: tokio::sync::Mutex<()>,
    refresh_min: Duration,
    validation: Validation,
    algorithms: Vec<Algorithm>,
    user_claim: String,
    realm_claim: Option<String>,
}

impl JwtVerifier {
    fn from_config(config: &GateIdentityConfig) -> Result<Self, String> {
        enroll_shared::jose::install();
        let source = match (&config.jwks_file, config.jwks_url.trim()) {
            (Some(path), "") => KeySource::File(path.clone()),
            (None, url) if !url.is_empty() => {
                let url = url::Url::parse(url)
                    .map_err(|error| format!("gate.identity.jwks_url: {error}"))?;
                if url.scheme() != "https" {
                    return Err("gate.identity.jwks_url must be https://".to_owned());
                }
                KeySource::Url(url)
            }
            _ => {
                return Err("gate.identity: set exactly one of jwks_file and jwks_url".to_owned());
            }
        };
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let algorithm: Algorithm = name.trim().parse().map_err(|_| {
                format!("gate.identity.algorithms: `{name}` is not a JWS algorithm")
            })?;
            if !enroll_shared::jose::PUBLIC_KEY_ALGORITHMS.contains(&algorithm) {
                return Err(format!(
                    "gate.identity.algorithms: `{name}` is refused (only public-key \
                     algorithms: a proxy's token is verified, never shared-secret signed)"
                ));
            }
            algorithms.push(algorithm);
        }
        if algorithms.is_empty() {
            return Err("gate.identity.algorithms must name at least one algorithm".to_owned());
        }
        if config.issuer.trim().is_empty() || config.audiences.is_empty() {
            return Err("gate.identity: issuer and audiences are required".to_owned());
        }
        if config.leeway_secs > 300 {
            return Err("gate.identity.leeway_secs must be at most 300".to_owned());
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.clone();
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[config.issuer.trim()]);
        validation.set_audience(&config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let verifier = Self {
            source,
            keys: RwLock::new(Keys {
                set: Arc::new(JwkSet { keys: Vec::new() }),
                fetched_at: None,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            verified: VerifiedTokens::default(),
            refresh_min: Duration::from_secs(config.jwks_refresh_min_secs.max(1)),
            validation,
            algorithms,
            user_claim: config.user_claim.trim().to_owned(),
            realm_claim: Some(config.realm_claim.trim().to_owned()).filter(|c| !c.is_empty()),
        };
        // A file is read now, so a broken one fails the start.
        if let KeySource::File(path) = &verifier.source {
            let set = read_jwks_file(path)?;
            verifier.store(set);
        }
        Ok(verifier)
    }

    fn store(&self, set: JwkSet) {
        // A key no longer listed must not keep vouching for the tokens it signed.
        self.verified.clear();
        if let Ok(mut keys) = self.keys.write() {
            *keys = Keys {
                set: Arc::new(set),
                fetched_at: Some(Instant::now()),
            };
        }
    }

    fn current(&self) -> (Arc<JwkSet>, Option<Instant>) {
        match self.keys.read() {
            Ok(keys) => (keys.set.clone(), keys.fetched_at),
            Err(_) => (Arc::new(JwkSet { keys: Vec::new() }), None),
        }
    }

    async fn verify(&self, token: &str) -> Result<Claims, IdentityRefused> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(IdentityRefused::Malformed);
        }
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(0);
        if let Some(claims) = self.verified.get(token, now, leeway) {
            return Ok(claims);
        }
        // `alg: none` and unknown algorithms fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| IdentityRefused::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(IdentityRefused::AlgorithmRefused);
        }
        let key = match self.key_for(header.kid.as_deref(), header.alg) {
            Some(key) => key,
            None => {
                self.refresh_after_unknown_kid().await;
                self.key_for(header.kid.as_deref(), header.alg)
                    .ok_or(IdentityRefused::UnknownKey)?
            }
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .map_err(|error| refusal_of(error.kind()))?;
        let claims = Arc::new(data.claims);
        self.verified.insert(token, claims.clone(), now, leeway);
        Ok(claims)
    }

    /// The key a token names: by `kid`, or the only key of the set when the token names
    /// none. A JWK that declares another algorithm than the token's is not used.
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let (set, _) = self.current();
        let jwk = match kid {
            Some(kid) => set.find(kid)?,
            None if set.keys.len() == 1 => &set.keys[0],
            None => return None,
        };
        if let Some(declared) = jwk.common.key_algorithm
            && declared.to_string() != format!("{alg:?}")
        {
            return None;
        }
        let key = DecodingKey::from_jwk(jwk).ok()?;
        (key.family() == alg.family()).then_some(key)
    }

    /// Fetches the keys again (a URL) or re-reads them (a file), at most once per
    /// `jwks_refresh_min_secs`: a stream of tokens with made-up `kid`s costs one fetch.
    async fn refresh_after_unknown_kid(&self) {
        let _one = self.refreshing.lock().await;
        let (_, fetched_at) = self.current();
        if fetched_at.is_some_and(|at| at.elapsed() < self.refresh_min) {
            return;
        }
        let fetched = match &self.source {
            KeySource::File(path) => read_jwks_file(path),
            KeySource::Url(url) => fetch_jwks(url).await,
        };
        match fetched {
            Ok(set) => self.store(set),
            Err(error) => {
                tracing::warn!(%error, "gate: the JWKS could not be refreshed; keeping the known keys");
                // Count the attempt, so a failing source is not hammered.
                if let Ok(mut keys) = self.keys.write() {
                    keys.fetched_at = Some(Instant::now());
                }
            }
        }
    }

    /// Fetches the keys of a URL source before the gate serves (a start with no keys would
    /// refuse everyone until the first token arrives).
    pub async fn prefetch(&self) {
        if let KeySource::Url(url) = &self.source {
            match fetch_jwks(url).await {
                Ok(set) => self.store(set),
                Err(error) => tracing::warn!(%error, "gate: JWKS fetch at start failed"),
            }
        }
    }
}

impl IdentitySource {
    /// Fetches a JWKS URL's keys once at start.
    pub async fn prefetch(&self) {
        if let Mode::Jwt(verifier) = &self.mode {
            verifier.prefetch().await;
        }
    }
}

fn refusal_of(kind: &jsonwebtoken::errors::ErrorKind) -> IdentityRefused {
    use jsonwebtoken::errors::ErrorKind as Kind;
    match kind {
        Kind::ExpiredSignature => IdentityRefused::Expired,
        Kind::ImmatureSignature => IdentityRefused::NotYetValid,
        Kind::InvalidIssuer => IdentityRefused::WrongIssuer,
        Kind::InvalidAudience => IdentityRefused::WrongAudience,
        Kind::InvalidSignature => IdentityRefused::BadSignature,
        Kind::InvalidAlgorithm | Kind::InvalidAlgorithmName => IdentityRefused::AlgorithmRefused,
        _ => IdentityRefused::Malformed,
    }
}

fn read_jwks_file(path: &std::path::Path) -> Result<JwkSet, String> {
    let text = std::fs::read(path)
        .map_err(|error| format!("gate.identity.jwks_file {}: {error}", path.display()))?;
    if text.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "gate.identity.jwks_file {} is too large",
            path.display()
        ));
    }
    serde_json::from_slice(&text)
        .map_err(|error| format!("gate.identity.jwks_file {}: {error}", path.display()))
}

async fn fetch_jwks(url: &url::Url) -> Result<JwkSet, String> {
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        crate::adapters::fido_metadata::http::get(url, MAX_JWKS_BYTES),
    )
    .await
    .map_err(|_| format!("{url}: no answer within 10 s"))??;
    serde_json::from_slice(&body).map_err(|error| format!("{url}: not a JWKS: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        let mut claims = serde_json::Map::new();
        claims.insert("exp".to_owned(), Value::from(exp));
        Arc::new(claims)
    }

    #[test]
    fn a_verified_token_is_believed_again_until_it_expires() {
        let verified = VerifiedTokens::default();
        assert!(verified.get("a.b.c", 1_000, 5).is_none());
        verified.insert("a.b.c", claims(1_010), 1_000, 5);
        assert!(verified.get("a.b.c", 1_000, 5).is_some());
        assert!(
            verified.get("a.b.C", 1_000, 5).is_none(),
            "only the exact token"
        );
        assert!(
            verified.get("a.b.c", 1_014, 5).is_some(),
            "within the leeway"
        );
        assert!(verified.get("a.b.c", 1_015, 5).is_none(), "expired");
        verified.clear();
        assert!(
            verified.get("a.b.c", 1_000, 5).is_none(),
            "forgotten with the keys"
        );
    }

    #[test]
    fn the_remembered_tokens_are_bounded() {
        let verified = VerifiedTokens::default();
        for index in 0..MAX_VERIFIED_TOKENS {
            verified.insert(
                &format!("t{index}"),
                claims(if index == 0 { 900 } else { 2_000 }),
                1_000,
                0,
            );
        }
        // Full: the expired entry goes first.
        verified.insert("new", claims(2_000), 1_000, 0);
        assert!(verified.get("new", 1_000, 0).is_some());
        assert!(verified.get("t1", 1_000, 0).is_some());
        // Full of live entries: all are forgotten rather than growing.
        verified.insert("newer", claims(2_000), 1_000, 0);
        assert!(verified.get("newer", 1_000, 0).is_some());
        assert!(verified.get("t1", 1_000, 0).is_none());
    }
}
