//! Autoassignment challenges, the parts that know neither gRPC nor the database: what a
//! challenge's transaction id is, how a first pass is recognised when it is typed again,
//! which client a challenge is bound to, and which passes are well formed.
//!
//! The database keeps a random row id, never the transaction id: the id the caller sees is
//! a keyed digest (HMAC under the active seed key's digest key) of that row id, so a reader
//! of the database can neither answer a challenge nor tell which pass opened it. The first
//! pass is kept the same way (keyed, bound to the row), only to recognise a retype.
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::secrets::{CipherError, SeedCipher};

/// Separates the purposes of the keyed digests made here (and from every other one).
const TRANSACTION_PURPOSE: &[u8] = b"enroll-device autoassign transaction id v1\0";
const FIRST_PASS_PURPOSE: &[u8] = b"enroll-device autoassign first pass v1\0";

/// The digits a one-time code has at least: a pass must end with that many to be a PIN
/// followed by a code.
const SHORTEST_CODE: usize = 6;

/// The transaction id of the challenge stored under `row_id`: 43 URL-safe characters
/// (256 bits), the same shape for every challenge, real or decoy.
pub fn transaction_id(cipher: &SeedCipher, row_id: &str) -> Result<String, CipherError> {
    let digest = keyed(cipher, TRANSACTION_PURPOSE, &[row_id.as_bytes()])?;
    Ok(URL_SAFE_NO_PAD.encode(digest))
}

/// Whether `offered` is the transaction id of the challenge stored under `row_id` (compared
/// in constant time: the id is a credential of the client that holds it).
pub fn is_transaction_id(cipher: &SeedCipher, row_id: &str, offered: &str) -> bool {
    transaction_id(cipher, row_id)
        .is_ok_and(|expected| equal_in_constant_time(expected.as_bytes(), offered.as_bytes()))
}

/// The stored form of the pass that opened the challenge under `row_id` (hex).
pub fn first_pass_digest(
    cipher: &SeedCipher,
    row_id: &str,
    pass: &str,
) -> Result<String, CipherError> {
    let digest = keyed(
        cipher,
        FIRST_PASS_PURPOSE,
        &[row_id.as_bytes(), b"\0", pass.as_bytes()],
    )?;
    Ok(hex::encode(digest))
}

/// Whether `pass` is the pass that opened the challenge under `row_id`.
pub fn is_first_pass(cipher: &SeedCipher, row_id: &str, stored: &str, pass: &str) -> bool {
    first_pass_digest(cipher, row_id, pass)
        .is_ok_and(|digest| equal_in_constant_time(digest.as_bytes(), stored.as_bytes()))
}

/// The client a challenge is bound to: the exact address (not the /64 the budgets count),
/// "-" for requests without one (they are all one client, as for the budgets).
pub fn client_binding(client_ip: Option<IpAddr>) -> String {
    client_ip
        .map(|address| address.to_canonical().to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// Whether `pass` can be a PIN followed by a one-time code: it ends with at least six
/// digits. Only such passes are challenged; the test looks at the pass alone, never at
/// the pool, so refusing the rest tells nothing about any token.
pub fn is_well_formed(pass: &str) -> bool {
    pass.bytes()
        .rev()
        .take_while(u8::is_ascii_digit)
        .take(SHORTEST_CODE)
        .count()
        == SHORTEST_CODE
}

fn keyed(cipher: &SeedCipher, purpose: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], CipherError> {
    let mut data = purpose.to_vec();
    for part in parts {
        data.extend_from_slice(part);
    }
    cipher.keyed_digest(cipher.active_key_id(), &data)
}

fn equal_in_constant_time(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(key: &str) -> SeedCipher {
        SeedCipher::new([("k1", key.repeat(32).as_str())], "k1").unwrap()
    }

    #[test]
    fn a_transaction_id_is_opaque_and_bound_to_its_row_and_key() {
        let cipher = cipher("ab");
        let id = transaction_id(&cipher, "row-1").unwrap();
        assert_eq!(id.len(), 43);
        assert!(!id.contains("row"));
        assert!(is_transaction_id(&cipher, "row-1", &id));
        assert!(!is_transaction_id(&cipher, "row-2", &id));
        assert!(!is_transaction_id(&cipher, "row-1", &id[..42]));
        assert!(!is_transaction_id(&self::cipher("cd"), "row-1", &id));
        assert_ne!(id, transaction_id(&cipher, "row-2").unwrap());
    }

    #[test]
    fn a_first_pass_is_recognised_only_under_its_row() {
        let cipher = cipher("ab");
        let stored = first_pass_digest(&cipher, "row-1", "5555123456").unwrap();
        assert!(!stored.contains("5555"));
        assert!(is_first_pass(&cipher, "row-1", &stored, "5555123456"));
        assert!(!is_first_pass(&cipher, "row-1", &stored, "5555123457"));
        assert!(!is_first_pass(&cipher, "row-2", &stored, "5555123456"));
    }

    #[test]
    fn clients_and_well_formed_passes() {
        assert_eq!(client_binding(None), "-");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_binding(Some(mapped)), "192.0.2.1");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(client_binding(Some(v6)), "2001:db8::1");
        assert!(is_well_formed("123456"));
        assert!(is_well_formed("pin12345678"));
        assert!(!is_well_formed("pin12345"));
        assert!(!is_well_formed("12345a"));
        assert!(!is_well_formed(""));
    }
}
