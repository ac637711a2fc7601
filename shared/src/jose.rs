//! JSON Web Signatures through `jsonwebtoken` (parsing, claims, algorithm checks) with
//! `ring` doing the signature arithmetic, ring being already in the tree through rustls.
//! `jsonwebtoken`'s own backends would add either aws-lc (a C build) or the `rsa` crate,
//! whose private-key operations are not constant-time (RUSTSEC-2023-0071); ring's are.
//!
//! Only public-key algorithms exist here: a verifier for HS256/384/512 is never made, so a
//! token "signed" with a shared secret (or with a public key used as an HMAC secret, the
//! classic confusion attack) fails whatever the caller's allow-list says.
//!
//! [`install`] must run before any token is signed or verified; it is idempotent.
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature as ring_sig;

pub use jsonwebtoken;

/// Makes ring the process's JOSE backend (the first call wins; later ones are no-ops).
pub fn install() {
    let _ = PROVIDER.install_default();
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_components_from_private_key,
        compute_digest,
    },
};

/// The algorithms a verifier exists for (every asymmetric JWS algorithm).
pub const PUBLIC_KEY_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn unsupported() -> Error {
    ErrorKind::InvalidAlgorithm.into()
}

struct RingVerifier {
    algorithm: Algorithm,
    scheme: &'static dyn ring_sig::VerificationAlgorithm,
    key: KeyMaterial,
}

enum KeyMaterial {
    /// DER (RSA PKCS#1 public key) or raw bytes (an EC point, an Ed25519 key).
    Bytes(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

fn rsa_scheme(algorithm: Algorithm) -> Option<&'static ring_sig::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let algorithm = *algorithm;
    let scheme: &'static dyn ring_sig::VerificationAlgorithm = match algorithm {
        Algorithm::ES256 => &ring_sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &ring_sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &ring_sig::ED25519,
        other => match rsa_scheme(other) {
            Some(scheme) => scheme,
            // HMAC (and anything else): never.
            None => return Err(unsupported()),
        },
    };
    if key.family() != algorithm.family() {
        return Err(unsupported());
    }
    let key = match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => KeyMaterial::Bytes(bytes.clone()),
        DecodingKeyKind::RsaModulusExponent { n, e } => KeyMaterial::Rsa {
            n: n.clone(),
            e: e.clone(),
        },
    };
    Ok(Box::new(RingVerifier {
        algorithm,
        scheme,
        key,
    }))
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verified = match (&self.key, rsa_scheme(self.algorithm)) {
            (KeyMaterial::Rsa { n, e }, Some(scheme)) => ring_sig::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(scheme, message, signature),
            (KeyMaterial::Bytes(bytes), _) => {
                ring_sig::UnparsedPublicKey::new(self.scheme, bytes).verify(message, signature)
            }
            (KeyMaterial::Rsa { .. }, None) => Err(ring::error::Unspecified),
        };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

enum RingKeyPair {
    Rsa(ring_sig::RsaKeyPair, &'static dyn ring_sig::RsaEncoding),
    Ecdsa(ring_sig::EcdsaKeyPair),
    Ed25519(ring_sig::Ed25519KeyPair),
}

struct RingSigner {
    algorithm: Algorithm,
    key: RingKeyPair,
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let algorithm = *algorithm;
    let der = key.as_bytes();
    let rng = SystemRandom::new();
    let invalid = |kind: ErrorKind| -> Error { kind.into() };
    let key = match algorithm {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
            let encoding: &'static dyn ring_sig::RsaEncoding = match algorithm {
                Algorithm::RS256 => &ring_sig::RSA_PKCS1_SHA256,
                Algorithm::RS384 => &ring_sig::RSA_PKCS1_SHA384,
                _ => &ring_sig::RSA_PKCS1_SHA512,
            };
            RingKeyPair::Rsa(rsa_key_pair(der)?, encoding)
        }
        Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => {
            let encoding: &'static dyn ring_sig::RsaEncoding = match algorithm {
                Algorithm::PS256 => &ring_sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &ring_sig::RSA_PSS_SHA384,
                _ => &ring_sig::RSA_PSS_SHA512,
            };
            RingKeyPair::Rsa(rsa_key_pair(der)?, encoding)
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let scheme = if algorithm == Algorithm::ES256 {
                &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            RingKeyPair::Ecdsa(
                ring_sig::EcdsaKeyPair::from_pkcs8(scheme, der, &rng)
                    .map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?,
            )
        }
        Algorithm::EdDSA => RingKeyPair::Ed25519(
            ring_sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| invalid(ErrorKind::InvalidEddsaKey))?,
        ),
        _ => return Err(unsupported()),
    };
    Ok(Box::new(RingSigner { algorithm, key }))
}

/// An RSA private key as PKCS#8 or PKCS#1 DER.
fn rsa_key_pair(der: &[u8]) -> Result<ring_sig::RsaKeyPair, Error> {
    ring_sig::RsaKeyPair::from_pkcs8(der)
        .or_else(|_| ring_sig::RsaKeyPair::from_der(der))
        .map_err(|rejected| ErrorKind::InvalidRsaKey(rejected.to_string()).into())
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &self.key {
            RingKeyPair::Rsa(pair, encoding) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, message, &mut signature)
                    .map_err(|_| signature::Error::new())?;
                Ok(signature)
            }
            RingKeyPair::Ecdsa(pair) => pair
                .sign(&rng, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            RingKeyPair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    use ring::signature::KeyPair;
    let pair = rsa_key_pair(der)?;
    let public = pair.public_key();
    let components = ring_sig::RsaPublicKeyComponents::<Vec<u8>>::from(public);
    Ok((components.n, components.e))
}

fn rsa_components_from_public_key(_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    // ring parses no public-key DER into components; JWKs built from a public PEM are not
    // used here (keys come as JWKs, with their components).
    Err(unsupported())
}

fn ec_components_from_private_key(
    der: &[u8],
    algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    use ring::signature::KeyPair;
    let (scheme, curve, width) = match algorithm {
        Algorithm::ES256 => (
            &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
            32,
        ),
        Algorithm::ES384 => (
            &ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
            48,
        ),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = ring_sig::EcdsaKeyPair::from_pkcs8(scheme, der, &SystemRandom::new())
        .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    // Uncompressed SEC1: 0x04 || x || y.
    let point = pair.public_key().as_ref();
    if point.len() != 1 + 2 * width || point[0] != 4 {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    Ok((
        curve,
        point[1..=width].to_vec(),
        point[1 + width..].to_vec(),
    ))
}

fn ed_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, Error> {
    use ring::signature::KeyPair;
    if *curve != EllipticCurve::Ed25519 {
        return Err(unsupported());
    }
    let pair = ring_sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?;
    Ok(pair.public_key().as_ref().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Header, Validation, decode, encode};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    fn es256_pkcs8() -> Vec<u8> {
        ring_sig::EcdsaKeyPair::generate_pkcs8(
            &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap()
        .as_ref()
        .to_vec()
    }

    #[test]
    fn a_token_signed_with_ring_verifies_through_its_jwk_and_nothing_else_does() {
        install();
        let der = es256_pkcs8();
        let signing = EncodingKey::from_ec_der(&der);
        let claims = Claims {
            sub: "alice".into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
        };
        let token = encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        let jwk = Jwk::from_encoding_key(&signing, Algorithm::ES256).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let decoded = decode::<Claims>(&token, &key, &Validation::new(Algorithm::ES256)).unwrap();
        assert_eq!(decoded.claims, claims);

        // Another key: refused.
        let other = DecodingKey::from_jwk(
            &Jwk::from_encoding_key(&EncodingKey::from_ec_der(&es256_pkcs8()), Algorithm::ES256)
                .unwrap(),
        )
        .unwrap();
        assert!(decode::<Claims>(&token, &other, &Validation::new(Algorithm::ES256)).is_err());
        // HMAC: no verifier exists, whatever the key.
        let hmac = DecodingKey::from_secret(b"public key bytes").unwrap();
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"public key bytes").unwrap(),
        );
        assert!(forged.is_err(), "no HMAC signer either");
        assert!(new_verifier(&Algorithm::HS256, &hmac).is_err());
    }
}
