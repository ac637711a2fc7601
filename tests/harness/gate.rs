//! The gate's test kit: a JWT issuer made by the test (an ES256 key pair and a JWKS file,
//! as an identity proxy in front would publish), the forged tokens an attacker would try,
//! and a `[gate]` configuration that trusts the issuer.
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use enroll_device::config::{GateConfig, GateIdentityConfig, GateSessionConfig};
use enroll_shared::jose::jsonwebtoken::jwk::{Jwk, JwkSet};
use enroll_shared::jose::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

/// The issuer and audience the test gate trusts.
pub const GATE_ISSUER: &str = "https://idp.test.example";
pub const GATE_AUDIENCE: &str = "enroll-gate-tests";
/// The session key of the test gates.
pub const GATE_SESSION_KEY: &str =
    "6a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978879";

/// An identity provider of the test's own: signs JWTs, publishes its keys in a JWKS file.
pub struct JwtIssuer {
    dir: tempfile::TempDir,
    key: EncodingKey,
    kid: String,
    /// The public key as a JWK (what the JWKS lists).
    pub jwk: Jwk,
}

fn new_key() -> (EncodingKey, Jwk) {
    enroll_shared::jose::install();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("generate an ES256 key");
    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("JWK of the key");
    (key, jwk)
}

impl JwtIssuer {
    pub fn new() -> Self {
        Self::with_kid("test-key-1")
    }

    /// An issuer whose key has the id `kid`.
    pub fn with_kid(kid: &str) -> Self {
        let (key, mut jwk) = new_key();
        let kid = kid.to_owned();
        jwk.common.key_id = Some(kid.clone());
        let issuer = Self {
            dir: tempfile::tempdir().expect("JWKS dir"),
            key,
            kid,
            jwk,
        };
        issuer.publish(std::slice::from_ref(&issuer.jwk));
        issuer
    }

    /// Writes `keys` as the JWKS file the gate reads.
    pub fn publish(&self, keys: &[Jwk]) {
        let set = JwkSet {
            keys: keys.to_vec(),
        };
        std::fs::write(
            self.jwks_path(),
            serde_json::to_vec(&set).expect("JWKS JSON"),
        )
        .expect("write JWKS");
    }

    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    /// The JWKS document (for a proxy configuration that wants it inline).
    pub fn jwks_json(&self) -> String {
        std::fs::read_to_string(self.jwks_path()).expect("read JWKS")
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// The claims of a valid token for `realm`/`user`.
    pub fn claims(realm: &str, user: &str) -> Value {
        let now = Self::now();
        json!({
            "iss": GATE_ISSUER,
            "aud": GATE_AUDIENCE,
            "sub": format!("{realm}/{user}"),
            "email": user,
            "realm": realm,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
        })
    }

    /// A token signed with this issuer's key, with `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key).expect("sign JWT")
    }

    /// A token signed with this issuer's key, with `claims` and the header `typ` (e.g.
    /// `secevent+jwt`, a security event token).
    pub fn sign_typed(&self, typ: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        encode(&header, claims, &self.key).expect("sign JWT")
    }

    /// A valid token for `realm`/`user`.
    pub fn token(&self, realm: &str, user: &str) -> String {
        self.sign(&Self::claims(realm, user))
    }

    /// Signed by a key the JWKS does not list, under a `kid` it does not know.
    pub fn token_with_unknown_key(&self, realm: &str, user: &str) -> String {
        let (key, _) = new_key();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("no-such-key".to_owned());
        encode(&header, &Self::claims(realm, user), &key).expect("sign JWT")
    }

    /// Signed by another key, claiming this issuer's `kid` (a forgery).
    pub fn forged_token(&self, realm: &str, user: &str) -> String {
        let (key, _) = new_key();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, &Self::claims(realm, user), &key).expect("sign JWT")
    }

    /// `alg: none`, no signature.
    pub fn unsigned_token(&self, realm: &str, user: &str) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": self.kid});
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Self::claims(realm, user).to_string())
        )
    }

    /// HS256 with the issuer's public key (its JWK JSON) as the HMAC secret: the
    /// algorithm-confusion attack.
    pub fn hmac_with_public_key(&self, realm: &str, user: &str) -> String {
        use ring::hmac;
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Self::claims(realm, user).to_string())
        );
        let secret = serde_json::to_vec(&self.jwk).expect("JWK JSON");
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let tag = hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of a valid token, changed by `change`, signed properly.
    pub fn token_with(&self, realm: &str, user: &str, change: impl FnOnce(&mut Value)) -> String {
        let mut claims = Self::claims(realm, user);
        change(&mut claims);
        self.sign(&claims)
    }
}

impl Default for JwtIssuer {
    fn default() -> Self {
        Self::new()
    }
}

/// A `[gate]` on port 0 trusting `issuer`'s JWTs in `X-Pomerium-Jwt-Assertion` (realm
/// from the `realm` claim, user from `email`), protecting `hosts`, with the calling proxy
/// on loopback trusted for forwarding headers.
pub fn gate_config(issuer: &JwtIssuer, hosts: &[String]) -> GateConfig {
    GateConfig {
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        hosts: hosts.to_vec(),
        trusted_proxies: vec!["127.0.0.1/32".to_owned(), "::1/128".to_owned()],
        identity: GateIdentityConfig {
            header: "X-Pomerium-Jwt-Assertion".to_owned(),
            jwks_file: Some(issuer.jwks_path()),
            issuer: GATE_ISSUER.to_owned(),
            audiences: vec![GATE_AUDIENCE.to_owned()],
            algorithms: vec!["ES256".to_owned(), "RS256".to_owned()],
            leeway_secs: 5,
            user_claim: "email".to_owned(),
            realm_claim: "realm".to_owned(),
            jwks_refresh_min_secs: 1,
            ..Default::default()
        },
        session: GateSessionConfig {
            keys: [("s1".to_owned(), GATE_SESSION_KEY.to_owned())].into(),
            active_key: "s1".to_owned(),
            ..Default::default()
        },
        // Refusals within a second anyway; allowed decisions every second in tests.
        allowed_audit_interval_secs: 1,
        ..Default::default()
    }
}
