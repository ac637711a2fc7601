//! PINs at rest: argon2id hashes (the default), or AES-256-GCM when the policy's
//! `otp_pin_encrypt` asks for recoverable PINs. Hashing is slow by design: callers run it on
//! the blocking pool.
use std::sync::{Mutex, OnceLock};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::secrets::SeedCipher;

/// argon2's working memory (19 MiB with the default parameters), kept for the next hash
/// instead of freed: glibc's allocator raises its mmap threshold after the first free of a
/// block that size, so freed blocks stayed in the heap of whichever thread hashed, and a
/// service that had checked PINs on a dozen blocking threads held over 400 MiB (peak RSS
/// under `scripts/bench-tokens.sh`). Kept: one block per core, as many as hash at once
/// ([`crate::service::blocking`] runs one job per core).
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `hash` with working memory of `blocks` blocks, taken from and given back to
/// [`MEMORY`].
fn with_memory<T>(blocks: usize, hash: impl FnOnce(&mut [Block]) -> T) -> T {
    let pooled = MEMORY.lock().ok().and_then(|mut pool| pool.pop());
    let mut memory = match pooled {
        Some(memory) if memory.len() == blocks => memory,
        _ => vec![Block::default(); blocks],
    };
    let result = hash(&mut memory);
    // Read once: on Linux it reads the cgroup's CPU quota from /proc.
    static KEPT: OnceLock<usize> = OnceLock::new();
    let kept = *KEPT.get_or_init(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    if let Ok(mut pool) = MEMORY.lock()
        && pool.len() < kept
    {
        pool.push(memory);
    }
    result
}

/// The argon2id hash of `pin` with a fresh salt, in PHC string form.
fn hash_pin(pin: &[u8]) -> Result<String, String> {
    let argon2 = Argon2::default();
    let params = Params::default();
    let salt = Salt::generate();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(pin, &salt, &mut out, memory)
    })
    .map_err(|error| format!("argon2: {error}"))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(&params).map_err(|error| format!("argon2: {error}"))?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|error| format!("argon2: {error}"))?),
    };
    Ok(hash.to_string())
}

/// Whether `pin` hashes to the stored PHC string, with the parameters stored in it.
fn hash_matches(pin: &[u8], stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let computed = with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(pin, salt, &mut out, memory)
    });
    computed.is_ok() && constant_time_eq(&out, expected.as_bytes())
}

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
    hash_pin(pin.as_bytes())
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
    hash_matches(pin.as_bytes(), stored)
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

    /// Hashes stored before the working memory was pooled (made by the argon2 crate's own
    /// hasher) still verify, with their own parameters, and new ones verify there.
    #[test]
    fn pooled_hashing_agrees_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let cipher = cipher();
        let by_crate = Argon2::default()
            .hash_password(b"4321")
            .unwrap()
            .to_string();
        assert!(pin_matches("4321", &by_crate, &cipher, "S1"));
        assert!(!pin_matches("4322", &by_crate, &cipher, "S1"));
        let ours = seal_pin("4321", false, &cipher, "S1").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"4321", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"4322", &parsed).is_err());
        // Other parameters: a smaller memory size than the pooled blocks.
        let small = Params::new(8 * 1024, 1, 1, None).unwrap();
        let light = Argon2::new(Algorithm::Argon2id, Version::V0x13, small)
            .hash_password(b"4321")
            .unwrap()
            .to_string();
        assert!(light.contains("m=8192"));
        assert!(pin_matches("4321", &light, &cipher, "S1"));
        assert!(!pin_matches("0000", &light, &cipher, "S1"));
        // Truncated or tampered strings never match.
        assert!(!pin_matches("4321", &ours[..ours.len() - 4], &cipher, "S1"));
        assert!(!pin_matches(
            "4321",
            &ours.replace("argon2id", "argon2x"),
            &cipher,
            "S1"
        ));
    }
}
