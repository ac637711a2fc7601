//! Seeds (and other secrets kept for later use) at rest: AES-256-GCM with a key id stored
//! beside each ciphertext, so keys can be rotated: add a new key, make it active, and old
//! rows still decrypt with the key id they name.
use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest as _, Sha256};

const NONCE_LEN: usize = 12;

/// Encrypts and decrypts with the configured keys.
#[derive(Clone)]
pub struct SeedCipher {
    keys: HashMap<String, Aes256Gcm>,
    /// Per key id, a key derived for keyed digests only (never used to encrypt).
    digest_keys: HashMap<String, [u8; 32]>,
    active: String,
}

/// What the digest keys are derived for: one purpose per derived key.
const DIGEST_KEY_PURPOSE: &[u8] = b"enroll-device keyed request digest v1";

impl fmt::Debug for SeedCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedCipher")
            .field("active", &self.active)
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    #[error("secrets.seed_keys: key `{0}` must be 64 hex characters (256 bits)")]
    BadKey(String),
    #[error("secrets.active_seed_key `{0}` is not among secrets.seed_keys")]
    UnknownActive(String),
    #[error("no key `{0}` to decrypt with")]
    UnknownKey(String),
    #[error("ciphertext does not decrypt with key `{0}`")]
    Corrupt(String),
}

impl SeedCipher {
    /// `keys`: id -> hex key; `active`: the id new secrets are encrypted with.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        active: &str,
    ) -> Result<Self, CipherError> {
        let mut ciphers = HashMap::new();
        let mut digest_keys = HashMap::new();
        for (id, hex_key) in keys {
            let bytes = hex::decode(hex_key.trim())
                .ok()
                .filter(|bytes| bytes.len() == 32)
                .ok_or_else(|| CipherError::BadKey(id.to_owned()))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| CipherError::BadKey(id.to_owned()))?;
            ciphers.insert(id.to_owned(), cipher);
            digest_keys.insert(id.to_owned(), hmac_sha256(&bytes, DIGEST_KEY_PURPOSE));
        }
        if !ciphers.contains_key(active) {
            return Err(CipherError::UnknownActive(active.to_owned()));
        }
        Ok(Self {
            keys: ciphers,
            digest_keys,
            active: active.to_owned(),
        })
    }

    /// HMAC-SHA256 of `data` under the digest key derived from key `key_id`: a digest of
    /// something that may hold a low-entropy secret (a PIN) which, unlike a plain SHA-256,
    /// cannot be reversed by trying every PIN without the key.
    pub fn keyed_digest(&self, key_id: &str, data: &[u8]) -> Result<[u8; 32], CipherError> {
        let key = self
            .digest_keys
            .get(key_id)
            .ok_or_else(|| CipherError::UnknownKey(key_id.to_owned()))?;
        Ok(hmac_sha256(key, data))
    }

    /// A 256-bit key for `purpose` derived from the active key's digest key (a different
    /// purpose label gives an unrelated key): for MACs that need no key of their own in
    /// config. Rotating the active key changes it.
    pub fn derive_key(&self, purpose: &[u8]) -> Result<[u8; 32], CipherError> {
        self.keyed_digest(&self.active, purpose)
    }

    /// The key id new secrets and keyed digests are made with.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Encrypts `plaintext` bound to `context` (e.g. the serial: a ciphertext moved to another
    /// row does not decrypt). Returns the key id and nonce || ciphertext.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        context: &str,
    ) -> Result<(String, Vec<u8>), CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = self
            .keys
            .get(&self.active)
            .ok_or_else(|| CipherError::UnknownKey(self.active.clone()))?;
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CipherError::Corrupt(self.active.clone()))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok((self.active.clone(), out))
    }

    pub fn decrypt(
        &self,
        key_id: &str,
        sealed: &[u8],
        context: &str,
    ) -> Result<Vec<u8>, CipherError> {
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| CipherError::UnknownKey(key_id.to_owned()))?;
        let corrupt = || CipherError::Corrupt(key_id.to_owned());
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN).ok_or_else(corrupt)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| corrupt())?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CipherError::Corrupt(key_id.to_owned()))
    }
}

/// HMAC-SHA256 (RFC 2104); a key longer than a block (64 bytes) is hashed first.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|byte| byte ^ 0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|byte| byte ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn keyed_digests_differ_per_key() {
        let cipher = SeedCipher::new([("k1", K1), ("k2", K2)], "k1").unwrap();
        let one = cipher.keyed_digest("k1", b"request").unwrap();
        assert_eq!(one, cipher.keyed_digest("k1", b"request").unwrap());
        assert_ne!(one, cipher.keyed_digest("k2", b"request").unwrap());
        assert_ne!(one, cipher.keyed_digest("k1", b"other").unwrap());
        assert!(cipher.keyed_digest("k9", b"request").is_err());
    }

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn round_trip_bound_to_context_and_rotation() {
        let old = SeedCipher::new([("k1", K1)], "k1").unwrap();
        let (id, sealed) = old.encrypt(b"seed", "TOTP1").unwrap();
        assert_eq!(id, "k1");
        assert!(!sealed.windows(4).any(|w| w == b"seed"));
        assert_eq!(old.decrypt(&id, &sealed, "TOTP1").unwrap(), b"seed");
        assert!(old.decrypt(&id, &sealed, "TOTP2").is_err());
        let rotated = SeedCipher::new([("k1", K1), ("k2", K2)], "k2").unwrap();
        assert_eq!(rotated.decrypt(&id, &sealed, "TOTP1").unwrap(), b"seed");
        assert_eq!(rotated.encrypt(b"x", "s").unwrap().0, "k2");
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert_eq!(
            SeedCipher::new([("k1", "abc")], "k1").unwrap_err(),
            CipherError::BadKey("k1".into())
        );
        assert_eq!(
            SeedCipher::new([("k1", K1)], "k9").unwrap_err(),
            CipherError::UnknownActive("k9".into())
        );
    }
}
