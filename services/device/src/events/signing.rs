//! Security event token signing keys: ES256 (P-256) or RS256 (RSA of 2048 bits or more),
//! loaded from PKCS#8 DER (the caller keeps them sealed) or generated (ES256), and their
//! public JWKs for the transmitter's `jwks_uri`.
//!
//! Signing goes through `jsonwebtoken` with ring as its backend (`enroll_shared::jose`),
//! never the `rsa` crate (its private-key operations are not constant-time,
//! RUSTSEC-2023-0071). Keys are parsed with ring when loaded, so a bad key fails at start-up
//! or rotation rather than at the first delivery. Key material never reaches `Debug`.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use enroll_shared::jose::jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as ring_sig, KeyPair};
use serde_json::{Value, json};

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The JWS algorithm of a signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl SigningAlgorithm {
    /// The JWA name (`alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::Rs256 => "RS256",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ES256" => Some(SigningAlgorithm::Es256),
            "RS256" => Some(SigningAlgorithm::Rs256),
            _ => None,
        }
    }

    pub fn jsonwebtoken(self) -> Algorithm {
        match self {
            SigningAlgorithm::Es256 => Algorithm::ES256,
            SigningAlgorithm::Rs256 => Algorithm::RS256,
        }
    }
}

/// A private key that signs security event tokens, with its key id.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    /// The PKCS#8 DER, zeroized on drop by `jsonwebtoken`.
    encoding: EncodingKey,
    /// The public JWK, computed once when loaded.
    public_jwk: Value,
}

impl SigningKey {
    /// A key from its PKCS#8 DER. Refused: an empty `kid`, DER that does not parse as a key
    /// of `alg` (a P-256 key for ES256; RSA for RS256), an RSA key under 2048 bits.
    pub fn from_pkcs8(
        kid: impl Into<String>,
        alg: SigningAlgorithm,
        pkcs8: &[u8],
    ) -> Result<Self, String> {
        let kid = kid.into();
        if kid.trim().is_empty() {
            return Err("a signing key needs a key id (kid)".to_owned());
        }
        let (encoding, public) = match alg {
            SigningAlgorithm::Es256 => {
                let pair = ring_sig::EcdsaKeyPair::from_pkcs8(
                    &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8,
                    &SystemRandom::new(),
                )
                .map_err(|rejected| {
                    format!("key {kid}: not a P-256 private key in PKCS#8 DER ({rejected})")
                })?;
                (
                    EncodingKey::from_ec_der(pkcs8),
                    ec_jwk(pair.public_key().as_ref())?,
                )
            }
            SigningAlgorithm::Rs256 => {
                let pair = ring_sig::RsaKeyPair::from_pkcs8(pkcs8).map_err(|rejected| {
                    format!(
                        "key {kid}: not an RSA private key of at least {MIN_RSA_BITS} bits in PKCS#8 DER ({rejected})"
                    )
                })?;
                let bits = pair.public().modulus_len() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "key {kid}: an RSA key of {bits} bits is too small (at least {MIN_RSA_BITS})"
                    ));
                }
                let components = ring_sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                (
                    EncodingKey::from_rsa_der(pkcs8),
                    json!({
                        "kty": "RSA",
                        "n": URL_SAFE_NO_PAD.encode(&components.n),
                        "e": URL_SAFE_NO_PAD.encode(&components.e),
                    }),
                )
            }
        };
        let mut public_jwk = public;
        if let Value::Object(members) = &mut public_jwk {
            members.insert("kid".to_owned(), Value::String(kid.clone()));
            members.insert("alg".to_owned(), Value::String(alg.as_str().to_owned()));
            members.insert("use".to_owned(), Value::String("sig".to_owned()));
        }
        Ok(SigningKey {
            kid,
            alg,
            encoding,
            public_jwk,
        })
    }

    /// A new random P-256 key, with its PKCS#8 DER for the caller to store (sealed).
    pub fn generate_es256(kid: impl Into<String>) -> Result<(Self, Vec<u8>), String> {
        let pkcs8 = ring_sig::EcdsaKeyPair::generate_pkcs8(
            &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|_| "could not generate a P-256 key".to_owned())?;
        let der = pkcs8.as_ref().to_vec();
        let key = SigningKey::from_pkcs8(kid, SigningAlgorithm::Es256, &der)?;
        Ok((key, der))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlgorithm {
        self.alg
    }

    /// The public JWK: `kty`, the curve point or modulus and exponent (base64url), `kid`,
    /// `alg`, `use: sig`.
    pub fn public_jwk(&self) -> Value {
        self.public_jwk.clone()
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// The JWK of an uncompressed SEC1 P-256 point (`0x04 || x || y`).
fn ec_jwk(point: &[u8]) -> Result<Value, String> {
    const WIDTH: usize = 32;
    match point.split_first() {
        Some((4, coordinates)) if coordinates.len() == 2 * WIDTH => {
            let (x, y) = coordinates.split_at(WIDTH);
            Ok(json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
            }))
        }
        _ => Err("unexpected P-256 public key encoding".to_owned()),
    }
}

/// The JWK Set of the given keys (`{"keys": [...]}`): during a rotation both the new key
/// and the old one, so receivers verify tokens signed with either.
pub fn jwks(keys: &[SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use enroll_shared::jose::jsonwebtoken::jwk::Jwk;
    use enroll_shared::jose::jsonwebtoken::{DecodingKey, Header, Validation, decode, encode};

    pub(crate) const RSA_2048: &[u8] = include_bytes!("testdata/rsa2048.pk8.der");
    pub(crate) const RSA_1024: &[u8] = include_bytes!("testdata/rsa1024.pk8.der");

    pub(crate) fn rsa_key(kid: &str) -> SigningKey {
        SigningKey::from_pkcs8(kid, SigningAlgorithm::Rs256, RSA_2048).unwrap()
    }

    fn round_trip(key: &SigningKey) {
        enroll_shared::jose::install();
        let alg = key.alg().jsonwebtoken();
        let token = encode(
            &Header::new(alg),
            &json!({"sub": "x", "exp": 4_000_000_000u64}),
            key.encoding_key(),
        )
        .unwrap();
        let jwk: Jwk = serde_json::from_value(key.public_jwk()).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let claims = decode::<Value>(&token, &decoding, &Validation::new(alg))
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "x");
    }

    #[test]
    fn a_generated_es256_key_reloads_from_its_der_and_its_jwk_verifies_its_signatures() {
        let (key, der) = SigningKey::generate_es256("k1").unwrap();
        let reloaded = SigningKey::from_pkcs8("k1", SigningAlgorithm::Es256, &der).unwrap();
        assert_eq!(key.public_jwk(), reloaded.public_jwk());
        let jwk = key.public_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        for coordinate in ["x", "y"] {
            let bytes = URL_SAFE_NO_PAD
                .decode(jwk[coordinate].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes.len(), 32);
        }
        assert!(jwk.get("d").is_none(), "never the private scalar");
        round_trip(&key);
        // Two generations differ.
        let (other, _) = SigningKey::generate_es256("k1").unwrap();
        assert_ne!(other.public_jwk(), key.public_jwk());
    }

    #[test]
    fn an_rsa_2048_key_loads_and_its_jwk_verifies_its_signatures() {
        let key = rsa_key("r1");
        let jwk = key.public_jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        assert!(jwk.get("d").is_none() && jwk.get("p").is_none());
        round_trip(&key);
    }

    #[test]
    fn small_rsa_keys_wrong_algorithms_garbage_and_empty_kids_are_refused() {
        let small = SigningKey::from_pkcs8("r", SigningAlgorithm::Rs256, RSA_1024).unwrap_err();
        assert!(small.contains("2048"), "{small}");
        let (_, ec) = SigningKey::generate_es256("e").unwrap();
        assert!(SigningKey::from_pkcs8("e", SigningAlgorithm::Rs256, &ec).is_err());
        assert!(SigningKey::from_pkcs8("r", SigningAlgorithm::Es256, RSA_2048).is_err());
        assert!(SigningKey::from_pkcs8("g", SigningAlgorithm::Es256, b"garbage").is_err());
        assert!(SigningKey::from_pkcs8(" ", SigningAlgorithm::Es256, &ec).is_err());
    }

    #[test]
    fn the_jwks_lists_every_key_and_debug_shows_no_key_material() {
        let (old, der) = SigningKey::generate_es256("old").unwrap();
        let new = rsa_key("new");
        let set = jwks(&[old.clone(), new.clone()]);
        let keys = set["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], "old");
        assert_eq!(keys[1]["kid"], "new");
        let set: enroll_shared::jose::jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(set).unwrap();
        assert!(set.find("old").is_some() && set.find("new").is_some());

        let debug = format!("{old:?} {new:?}");
        assert!(debug.contains("old") && debug.contains("<redacted>"));
        for secret in [&der[..], RSA_2048] {
            assert!(!debug.contains(&URL_SAFE_NO_PAD.encode(secret)));
            assert!(!debug.contains(&hex::encode(secret)));
            assert!(!debug.contains(&format!("{:?}", &secret[..8])));
        }
        assert_eq!(
            SigningAlgorithm::parse(SigningAlgorithm::Rs256.as_str()),
            Some(SigningAlgorithm::Rs256)
        );
        assert_eq!(SigningAlgorithm::parse("HS256"), None);
    }
}
