//! PINs at rest: argon2id hashes (the default), or AES-256-GCM when the policy's
//! `otp_pin_encrypt` asks for recoverable PINs. Hashing is slow by design: callers run it on
//! the blocking pool.
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};

use super::secrets::SeedCipher;

const ENCRYPTED_PREFIX: &str = "aes-gcm:";

/// The stored form of `pin`.
pub fn seal_pin(
    pin: &str,
    encrypt: bool,
    cipher: &SeedCipher,
    serial: &str,
) -> Result<String, String> {
    if encrypt {
        let (key_id, sealed) = cipher
            .encrypt(pin.as_bytes(), &pin_context(serial))
            .map_err(|error| error.to_string())?;
        return Ok(format!(
            "{ENCRYPTED_PREFIX}{key_id}:{}",
            hex::encode(sealed)
        ));
    }
    Argon2::default()
        .hash_password(pin.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| format!("argon2: {error}"))
}

/// Whether `pin` matches the stored form (constant-time in both cases).
pub fn pin_matches(pin: &str, stored: &str, cipher: &SeedCipher, serial: &str) -> bool {
    if let Some(rest) = stored.strip_prefix(ENCRYPTED_PREFIX) {
        let Some((key_id, sealed)) = rest.split_once(':') else {
            return false;
        };
        let Some(plain) = hex::decode(sealed)
            .ok()
            .and_then(|sealed| cipher.decrypt(key_id, &sealed, &pin_context(serial)).ok())
        else {
            return false;
        };
        return constant_time_eq(&plain, pin.as_bytes());
    }
    PasswordHash::new(stored).ok().is_some_and(|hash| {
        Argon2::default()
            .verify_password(pin.as_bytes(), &hash)
            .is_ok()
    })
}

fn pin_context(serial: &str) -> String {
    format!("pin:{serial}")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> SeedCipher {
        SeedCipher::new(
            [(
                "k1",
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            )],
            "k1",
        )
        .unwrap()
    }

    #[test]
    fn hashed_and_encrypted_pins_verify() {
        let cipher = cipher();
        let hashed = seal_pin("1234", false, &cipher, "S1").unwrap();
        assert!(hashed.starts_with("$argon2id$") && !hashed.contains("1234"));
        assert!(pin_matches("1234", &hashed, &cipher, "S1"));
        assert!(!pin_matches("1235", &hashed, &cipher, "S1"));
        let encrypted = seal_pin("1234", true, &cipher, "S1").unwrap();
        assert!(encrypted.starts_with("aes-gcm:k1:") && !encrypted.contains("1234"));
        assert!(pin_matches("1234", &encrypted, &cipher, "S1"));
        assert!(
            !pin_matches("1234", &encrypted, &cipher, "S2"),
            "bound to the serial"
        );
        assert!(!pin_matches("1234", "garbage", &cipher, "S1"));
    }
}
