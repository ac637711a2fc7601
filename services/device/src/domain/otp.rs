//! RFC 4226 (HOTP) and RFC 6238 (TOTP) codes via totp-rs, with the replay rules: a code is
//! accepted only for a step/counter at or after the token's next unused one.
use totp_rs::{Algorithm, Builder};

use super::tokens::{HashAlgorithm, OtpParameters, TokenKind};

fn algorithm(algorithm: HashAlgorithm) -> Algorithm {
    match algorithm {
        HashAlgorithm::Sha1 => Algorithm::SHA1,
        HashAlgorithm::Sha256 => Algorithm::SHA256,
        HashAlgorithm::Sha512 => Algorithm::SHA512,
    }
}

/// The code for `moving_factor` (the TOTP step number or the HOTP counter).
pub fn code(parameters: &OtpParameters, seed: &[u8], moving_factor: u64) -> String {
    // A step of 1 second makes totp-rs's time the moving factor itself; imported hardware
    // seeds may be shorter than RFC 6238 wants, hence the non-compliant builder.
    Builder::new()
        .with_algorithm(algorithm(parameters.algorithm))
        .with_digits(parameters.digits)
        .with_secret(seed.to_vec())
        .with_step_duration(1)
        .build_noncompliant()
        .generate(moving_factor)
        .to_string()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// How far a code may be from the expected moving factor.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// TOTP: steps accepted on either side of now (clock drift).
    pub totp_steps: u64,
    /// HOTP: counters accepted ahead of the next unused one (button presses not sent).
    pub hotp_look_ahead: u64,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            totp_steps: 1,
            hotp_look_ahead: 10,
        }
    }
}

/// The last factor a code may be accepted for: accepting factor `f` stores `f + 1` as the
/// token's next unused one in a signed 64-bit column, so `f + 1` must fit. A token whose
/// counter reached the end refuses every code instead of wrapping back (which would reopen
/// every used code) or panicking.
pub const LAST_FACTOR: u64 = i64::MAX as u64 - 1;

/// The moving factor `otp` is the code of, if it is acceptable: TOTP near `unix_time`, HOTP
/// within the look-ahead, never below `next_unused` (no replay) and never past
/// [`LAST_FACTOR`].
pub fn matching_factor(
    parameters: &OtpParameters,
    seed: &[u8],
    otp: &str,
    unix_time: u64,
    next_unused: u64,
    window: Window,
) -> Option<u64> {
    if otp.len() != usize::from(parameters.digits) || !otp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let candidates: Vec<u64> = match parameters.kind {
        TokenKind::Totp => {
            let now = unix_time / u64::from(parameters.period.max(1));
            let last = now.saturating_add(window.totp_steps).min(LAST_FACTOR);
            (now.saturating_sub(window.totp_steps)..=last).collect()
        }
        TokenKind::Hotp => {
            let end = next_unused
                .saturating_add(window.hotp_look_ahead)
                .min(LAST_FACTOR.saturating_add(1));
            (next_unused..end).collect()
        }
        TokenKind::Password => return None,
    };
    candidates
        .into_iter()
        .filter(|factor| *factor >= next_unused && *factor <= LAST_FACTOR)
        .find(|factor| same(&code(parameters, seed, *factor), otp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(
        kind: TokenKind,
        digits: u32,
        period: u64,
        algorithm: HashAlgorithm,
    ) -> OtpParameters {
        OtpParameters::new(kind, digits, period, algorithm).unwrap()
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        let hotp = params(TokenKind::Hotp, 6, 0, HashAlgorithm::Sha1);
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code_expected) in expected.iter().enumerate() {
            assert_eq!(
                code(&hotp, b"12345678901234567890", counter as u64),
                *code_expected
            );
        }
    }

    #[test]
    fn rfc6238_totp_vectors_at_fixed_instants() {
        let cases: [(HashAlgorithm, &[u8], u64, &str); 6] = [
            (HashAlgorithm::Sha1, b"12345678901234567890", 59, "94287082"),
            (
                HashAlgorithm::Sha256,
                b"12345678901234567890123456789012",
                59,
                "46119246",
            ),
            (
                HashAlgorithm::Sha512,
                b"1234567890123456789012345678901234567890123456789012345678901234",
                59,
                "90693936",
            ),
            (
                HashAlgorithm::Sha1,
                b"12345678901234567890",
                1111111109,
                "07081804",
            ),
            (
                HashAlgorithm::Sha1,
                b"12345678901234567890",
                2000000000,
                "69279037",
            ),
            (
                HashAlgorithm::Sha256,
                b"12345678901234567890123456789012",
                20000000000,
                "77737706",
            ),
        ];
        for (algorithm, seed, time, expected) in cases {
            let totp = params(TokenKind::Totp, 8, 30, algorithm);
            assert_eq!(
                code(&totp, seed, time / 30),
                expected,
                "{algorithm:?} at {time}"
            );
            assert_eq!(
                matching_factor(&totp, seed, expected, time, 0, Window::default()),
                Some(time / 30)
            );
        }
    }

    #[test]
    fn a_counter_at_the_end_refuses_instead_of_overflowing() {
        let hotp = params(TokenKind::Hotp, 6, 0, HashAlgorithm::Sha1);
        let seed = b"12345678901234567890";
        let end = i64::MAX as u64;
        let at = |factor: u64, next_unused: u64| {
            matching_factor(
                &hotp,
                seed,
                &code(&hotp, seed, factor),
                0,
                next_unused,
                Window::default(),
            )
        };
        // The last factor whose successor fits is accepted, the one after never is.
        assert_eq!(at(end - 1, end - 5), Some(end - 1));
        assert_eq!(at(end, end - 5), None);
        assert_eq!(at(end, end), None, "a counter at i64::MAX refuses");
        assert_eq!(at(u64::MAX, u64::MAX - 1), None, "no overflow at u64::MAX");
        let totp = params(TokenKind::Totp, 6, 1, HashAlgorithm::Sha1);
        assert_eq!(
            matching_factor(&totp, seed, "000000", u64::MAX, 0, Window::default()),
            None
        );
    }

    #[test]
    fn replays_and_out_of_window_codes_are_refused() {
        let totp = params(TokenKind::Totp, 8, 30, HashAlgorithm::Sha1);
        let seed = b"12345678901234567890";
        let step = 59 / 30;
        assert_eq!(
            matching_factor(&totp, seed, "94287082", 59, step + 1, Window::default()),
            None,
            "step already used"
        );
        assert_eq!(
            matching_factor(&totp, seed, "94287082", 59 + 30, 0, Window::default()),
            Some(step),
            "one step late"
        );
        assert_eq!(
            matching_factor(&totp, seed, "94287082", 59 + 90, 0, Window::default()),
            None,
            "too late"
        );
        assert_eq!(
            matching_factor(&totp, seed, "9428708", 59, 0, Window::default()),
            None,
            "wrong length"
        );
        let hotp = params(TokenKind::Hotp, 6, 0, HashAlgorithm::Sha1);
        assert_eq!(
            matching_factor(&hotp, seed, "520489", 0, 0, Window::default()),
            Some(9)
        );
        assert_eq!(
            matching_factor(&hotp, seed, "755224", 0, 1, Window::default()),
            None,
            "counter 0 used"
        );
        assert_eq!(
            matching_factor(
                &hotp,
                seed,
                "520489",
                0,
                0,
                Window {
                    totp_steps: 1,
                    hotp_look_ahead: 5
                }
            ),
            None
        );
    }
}
