//! OTP token parameters, serials and provisioning URIs.
use std::fmt;

use chrono::{DateTime, Utc};
use rand::Rng;

use super::names::{Realm, UserName};

/// The kinds of token this service holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenKind {
    Totp,
    Hotp,
    Password,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Totp => "totp",
            TokenKind::Hotp => "hotp",
            TokenKind::Password => "password",
        }
    }

    pub fn parse(value: &str) -> Option<TokenKind> {
        [TokenKind::Totp, TokenKind::Hotp, TokenKind::Password]
            .into_iter()
            .find(|kind| kind.as_str() == value)
    }

    fn serial_prefix(self) -> &'static str {
        match self {
            TokenKind::Totp => "TOTP",
            TokenKind::Hotp => "HOTP",
            TokenKind::Password => "PASS",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "SHA1",
            HashAlgorithm::Sha256 => "SHA256",
            HashAlgorithm::Sha512 => "SHA512",
        }
    }

    pub fn parse(value: &str) -> Option<HashAlgorithm> {
        [
            HashAlgorithm::Sha1,
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|algorithm| algorithm.as_str() == value)
    }

    /// Seed length recommended by RFC 4226/6238 for the HMAC: the hash's output size.
    pub fn seed_len(self) -> usize {
        match self {
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

/// How codes of one OTP token are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OtpParameters {
    pub kind: TokenKind,
    pub digits: u8,
    /// TOTP step in seconds; 0 for HOTP.
    pub period: u32,
    pub algorithm: HashAlgorithm,
}

impl OtpParameters {
    /// Checks digits (6 or 8; 0 means 6) and the TOTP period (1..=300 s; 0 means 30).
    /// The error is (field, reason).
    pub fn new(
        kind: TokenKind,
        digits: u32,
        period_seconds: u64,
        algorithm: HashAlgorithm,
    ) -> Result<Self, (&'static str, String)> {
        let digits = match digits {
            0 | 6 => 6,
            8 => 8,
            other => return Err(("digits", format!("must be 6 or 8, got {other}"))),
        };
        let period = match kind {
            TokenKind::Totp => match period_seconds {
                0 => 30,
                seconds @ 1..=300 => seconds as u32,
                other => return Err(("period", format!("must be 1..=300 seconds, got {other}"))),
            },
            TokenKind::Hotp => {
                if period_seconds != 0 {
                    return Err(("period", "HOTP tokens have no period".to_owned()));
                }
                0
            }
            TokenKind::Password => {
                return Err((
                    "type",
                    "password tokens are issued by ReportLostToken".to_owned(),
                ));
            }
        };
        Ok(Self {
            kind,
            digits,
            period,
            algorithm,
        })
    }
}

/// A new serial: type prefix + 12 random hex digits (48 bits: with a million tokens a
/// collision has odds of about 1 in 280 million; the insert still enforces uniqueness).
pub fn new_serial(kind: TokenKind, rng: &mut impl Rng) -> String {
    format!(
        "{}{:012X}",
        kind.serial_prefix(),
        rng.random::<u64>() & 0xFFFF_FFFF_FFFF
    )
}

/// A fresh random seed of the algorithm's recommended length.
pub fn new_seed(algorithm: HashAlgorithm, rng: &mut impl Rng) -> Vec<u8> {
    let mut seed = vec![0u8; algorithm.seed_len()];
    rng.fill_bytes(&mut seed);
    seed
}

/// Base32 (RFC 4648, no padding), as authenticator apps want seeds.
pub fn base32(bytes: &[u8]) -> String {
    totp_rs::Secret::from(bytes.to_vec())
        .to_base32()
        .trim_end_matches('=')
        .to_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The Key Uri Format (`otpauth://totp/Issuer:label?secret=..&issuer=..`) for an app.
pub struct ProvisioningUri<'a> {
    pub parameters: OtpParameters,
    pub seed: &'a [u8],
    pub label: &'a str,
    pub issuer: &'a str,
    pub counter: u64,
}

impl fmt::Display for ProvisioningUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.parameters;
        write!(
            f,
            "otpauth://{}/{}:{}?secret={}&issuer={}&algorithm={}&digits={}",
            p.kind.as_str(),
            encode(self.issuer),
            encode(self.label),
            base32(self.seed),
            encode(self.issuer),
            p.algorithm.as_str(),
            p.digits
        )?;
        match p.kind {
            TokenKind::Totp => write!(f, "&period={}", p.period),
            _ => write!(f, "&counter={}", self.counter),
        }
    }
}

/// A QR code of `uri` as a PNG (the otpauth URI, for authenticator apps to scan). It
/// carries the secret: it is returned once, like the URI, and never logged.
pub fn qr_png(uri: &str) -> Result<Vec<u8>, &'static str> {
    // The library's error names the failure only (the data is too long), never the data.
    qrcodegen_image::draw_png(uri).map_err(|_| "the otpauth URI does not fit in a QR code")
}

/// Renders `<s>` (left by the policy service when it did not know the serial).
pub fn render_serial(template: &str, serial: &str) -> String {
    template.replace("<s>", serial)
}

/// Filters of ListTokens.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub realm: Option<Realm>,
    pub user: Option<UserName>,
    pub kind: Option<TokenKind>,
    pub assigned: Option<bool>,
    pub state: Option<TokenState>,
}

/// What to change on one token.
#[derive(Debug, Clone)]
pub enum TokenChange {
    Enable,
    Disable,
    Unassign,
    SetPin(String),
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parameters_are_checked_with_defaults() {
        let totp = OtpParameters::new(TokenKind::Totp, 0, 0, HashAlgorithm::Sha1).unwrap();
        assert_eq!((totp.digits, totp.period), (6, 30));
        assert_eq!(
            OtpParameters::new(TokenKind::Totp, 7, 30, HashAlgorithm::Sha1)
                .unwrap_err()
                .0,
            "digits"
        );
        assert_eq!(
            OtpParameters::new(TokenKind::Totp, 8, 301, HashAlgorithm::Sha1)
                .unwrap_err()
                .0,
            "period"
        );
        assert_eq!(
            OtpParameters::new(TokenKind::Hotp, 8, 30, HashAlgorithm::Sha1)
                .unwrap_err()
                .0,
            "period"
        );
        assert_eq!(
            OtpParameters::new(TokenKind::Hotp, 8, 0, HashAlgorithm::Sha512)
                .unwrap()
                .digits,
            8
        );
    }

    #[test]
    fn serials_and_uris() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let serial = new_serial(TokenKind::Totp, &mut rng);
        assert!(serial.starts_with("TOTP") && serial.len() == 16, "{serial}");
        let parameters = OtpParameters::new(TokenKind::Totp, 6, 30, HashAlgorithm::Sha1).unwrap();
        let uri = ProvisioningUri {
            parameters,
            seed: b"12345678901234567890",
            label: "alice@corp",
            issuer: "ACME Co",
            counter: 0,
        }
        .to_string();
        assert_eq!(
            uri,
            "otpauth://totp/ACME%20Co:alice%40corp?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME%20Co&algorithm=SHA1&digits=6&period=30"
        );
        let hotp = OtpParameters::new(TokenKind::Hotp, 8, 0, HashAlgorithm::Sha256).unwrap();
        let uri = ProvisioningUri {
            parameters: hotp,
            seed: &[0; 32],
            label: "x",
            issuer: "i",
            counter: 5,
        }
        .to_string();
        assert!(
            uri.starts_with("otpauth://hotp/i:x?") && uri.ends_with("&digits=8&counter=5"),
            "{uri}"
        );
        assert_eq!(render_serial("<u>/<s>", "S1"), "<u>/S1");
    }

    #[test]
    fn a_qr_code_is_a_png() {
        let png = qr_png("otpauth://totp/acme:alice?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
}

/// The lifecycle of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenState {
    Enabled,
    Disabled,
    /// Too many failed validations.
    Locked,
    /// Reported lost: replaced by a temporary password token.
    Lost,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Enabled => "enabled",
            TokenState::Disabled => "disabled",
            TokenState::Locked => "locked",
            TokenState::Lost => "lost",
        }
    }
}

/// A token as callers see it: never its seed or PIN, only whether a PIN is set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub serial: String,
    pub kind: TokenKind,
    pub realm: Realm,
    pub user: Option<UserName>,
    pub state: TokenState,
    pub label: String,
    pub digits: u32,
    /// TOTP step in seconds; 0 for other kinds.
    pub period: u32,
    pub algorithm: HashAlgorithm,
    pub has_pin: bool,
    pub failure_count: u32,
    pub create_time: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
    pub description: String,
    /// Enrolled, or where its verify step stands (at the time the view was made).
    #[serde(default)]
    pub enrollment: super::verify::EnrollmentState,
}

/// An enrolled token with what is shown once: the seed (in the URI and base32) and a
/// generated PIN.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrolledToken {
    pub token: Token,
    pub otpauth_uri: String,
    pub secret_base32: String,
    /// "" unless the policy generates PINs.
    pub pin: String,
    /// Empty unless asked for.
    pub qr_png: Vec<u8>,
}

impl fmt::Debug for EnrolledToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrolledToken")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// The temporary password token that replaces a lost one; the password is shown once.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LostTokenReplacement {
    pub token: Token,
    pub password: String,
    pub expire_time: Option<DateTime<Utc>>,
}

impl fmt::Debug for LostTokenReplacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LostTokenReplacement")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// One Validate call, decoded at the edge.
#[derive(Clone, PartialEq, Eq)]
pub struct PassAttempt {
    pub realm: Realm,
    pub user: UserName,
    /// PIN followed by the one-time code: a secret.
    pub pass: String,
    /// The challenge this call answers, if any.
    pub transaction_id: Option<String>,
    /// The device token the proxy forwards for this client, if any (opaque, signed).
    pub device_token: Option<String>,
}

impl fmt::Debug for PassAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassAttempt")
            .field("realm", &self.realm)
            .field("user", &self.user)
            .field("transaction_id", &self.transaction_id)
            .field(
                "device_token",
                &self.device_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// The outcome of Validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The pass matched: `device_token` marks the client as known to later calls (none
    /// when the service has no key to sign it with).
    Accepted {
        serial: String,
        device_token: Option<String>,
    },
    /// A pool token was assigned; `device_token` as with `Accepted`.
    Autoassigned {
        serial: String,
        device_token: Option<String>,
    },
    Refused {
        reason: &'static str,
    },
    /// Not accepted yet: the user answers with the next Validate, carrying the transaction
    /// id (autoassignment's "enter the next code"). Real or decoy, it looks the same.
    Challenged {
        transaction_id: String,
        message: &'static str,
        expire_time: DateTime<Utc>,
    },
}

/// What an autoassignment challenge asks the user, real or decoy.
pub const NEXT_CODE_MESSAGE: &str = "enter the next code your token shows";
