//! One-time OTP enrollment links: issued for one user and token type with no key material,
//! redeemed once by whoever holds the secret (or only by the user the gate verified, with
//! `require_identity`). Redemption makes the seed as a verify-pending token and a
//! redemption session; only that session sees the seed again. Where a link stands is a
//! function of its row, its token and the clock, so expiry needs no sweeper.
use chrono::{DateTime, Utc};

use super::devices::LinkSecret;
use super::names::{Realm, UserName};
use super::tokens::{OtpParameters, Token};
use super::verify::EnrollmentState;

/// `otp_enrollment_links.state` of a link that was neither revoked nor superseded.
pub const ACTIVE: &str = "active";
/// `otp_enrollment_links.state` after RevokeOtpEnrollmentLink.
pub const REVOKED: &str = "revoked";
/// `otp_enrollment_links.state` after a newer link for the same user and token type.
pub const SUPERSEDED: &str = "superseded";

/// The fragment prefix that tells the enrollment page an OTP link from a device link.
pub const FRAGMENT_PREFIX: &str = "otp-";

/// Where an OTP enrollment link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OtpLinkStatus {
    /// Not redeemed, before its expire time.
    Issued,
    /// Not redeemed by its expire time.
    Expired,
    VerifyPending,
    Enrolled,
    VerifyFailed,
    VerifyExpired,
    Revoked,
    Superseded,
    /// Redeemed, and the token is gone since.
    TokenDeleted,
}

impl OtpLinkStatus {
    /// The status of a link row in `stored` state, with its token's enrollment state (None
    /// before redemption, or when the token was deleted), at `now`. An unknown stored
    /// value is taken as revoked (never usable).
    pub fn of(
        stored: &str,
        redeemed: bool,
        expire_time: DateTime<Utc>,
        token: Option<EnrollmentState>,
        now: DateTime<Utc>,
    ) -> Self {
        match stored {
            ACTIVE => {}
            SUPERSEDED => return OtpLinkStatus::Superseded,
            _ => return OtpLinkStatus::Revoked,
        }
        if !redeemed {
            return if now < expire_time {
                OtpLinkStatus::Issued
            } else {
                OtpLinkStatus::Expired
            };
        }
        match token {
            None => OtpLinkStatus::TokenDeleted,
            Some(EnrollmentState::Enrolled) => OtpLinkStatus::Enrolled,
            Some(EnrollmentState::VerifyPending) => OtpLinkStatus::VerifyPending,
            Some(EnrollmentState::VerifyFailed) => OtpLinkStatus::VerifyFailed,
            Some(EnrollmentState::VerifyExpired) => OtpLinkStatus::VerifyExpired,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OtpLinkStatus::Issued => "issued",
            OtpLinkStatus::Expired => "expired",
            OtpLinkStatus::VerifyPending => "verify pending",
            OtpLinkStatus::Enrolled => "enrolled",
            OtpLinkStatus::VerifyFailed => "verify failed",
            OtpLinkStatus::VerifyExpired => "verify expired",
            OtpLinkStatus::Revoked => "revoked",
            OtpLinkStatus::Superseded => "superseded",
            OtpLinkStatus::TokenDeleted => "token deleted",
        }
    }
}

/// An OTP enrollment link as admins see it (never a secret or seed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OtpLink {
    pub id: String,
    pub realm: Realm,
    pub user: UserName,
    pub parameters: OtpParameters,
    /// "" = the policy's label.
    pub label: String,
    pub description: String,
    /// Only when just created: it carries the secret.
    pub url: Option<String>,
    pub create_time: DateTime<Utc>,
    pub expire_time: DateTime<Utc>,
    pub created_by: String,
    pub status: OtpLinkStatus,
    pub serial: Option<String>,
    pub redeem_time: Option<DateTime<Utc>>,
    pub verify_deadline: Option<DateTime<Utc>>,
}

/// The URL of an OTP link: the enrollment page's base, then `#otp-` and the secret.
pub fn otp_link_url(base: &str, secret: &LinkSecret) -> String {
    let base = base.split_once('#').map_or(base, |(before, _)| before);
    format!("{base}#{FRAGMENT_PREFIX}{}", secret.expose())
}

/// What the PIN step asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinRule {
    pub required: bool,
    pub random: bool,
    pub min_length: u32,
}

/// A redeemed, verify-pending enrollment: what the redemption session is shown. No
/// `Debug`: it holds the seed.
#[derive(Clone)]
pub struct PendingEnrollment {
    /// The session's secret: only in Redeem's answer.
    pub session: Option<LinkSecret>,
    pub token: Token,
    pub realm: Realm,
    pub user: UserName,
    pub otpauth_uri: String,
    pub secret_base32: String,
    pub qr_png: Vec<u8>,
    pub verify_deadline: DateTime<Utc>,
    pub attempts_left: u32,
    pub pin: PinRule,
}

/// A finished enrollment: the token and the random PIN shown once. No `Debug`.
#[derive(Clone)]
pub struct FinishedEnrollment {
    pub token: Token,
    /// "" unless the policy makes PINs.
    pub pin: String,
}

/// The identity the gate (or a proxy over gRPC) verified for the redeeming person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub realm: Realm,
    pub user: UserName,
}

/// Filters of ListOtpEnrollmentLinks (the state is filtered after computing it).
#[derive(Debug, Clone, Default)]
pub struct OtpLinkFilter {
    pub realm: Option<Realm>,
    pub user: Option<UserName>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_status_follows_the_row_the_token_and_the_clock() {
        let end = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let before = end - chrono::Duration::seconds(1);
        let of =
            |stored, redeemed, token, now| OtpLinkStatus::of(stored, redeemed, end, token, now);
        assert_eq!(of(ACTIVE, false, None, before), OtpLinkStatus::Issued);
        assert_eq!(of(ACTIVE, false, None, end), OtpLinkStatus::Expired);
        assert_eq!(of(REVOKED, false, None, before), OtpLinkStatus::Revoked);
        assert_eq!(
            of(SUPERSEDED, false, None, before),
            OtpLinkStatus::Superseded
        );
        assert_eq!(of("other", false, None, before), OtpLinkStatus::Revoked);
        // A redeemed link follows its token, whatever the link's own expire time.
        let pending = Some(EnrollmentState::VerifyPending);
        assert_eq!(of(ACTIVE, true, pending, end), OtpLinkStatus::VerifyPending);
        assert_eq!(
            of(ACTIVE, true, Some(EnrollmentState::Enrolled), end),
            OtpLinkStatus::Enrolled
        );
        assert_eq!(
            of(ACTIVE, true, Some(EnrollmentState::VerifyExpired), end),
            OtpLinkStatus::VerifyExpired
        );
        assert_eq!(of(ACTIVE, true, None, end), OtpLinkStatus::TokenDeleted);
    }

    #[test]
    fn the_url_carries_the_secret_only_in_the_fragment() {
        let secret = LinkSecret::generate(&mut rand::rng());
        let url = otp_link_url("https://proxy/enroll/#old", &secret);
        assert_eq!(
            url,
            format!("https://proxy/enroll/#otp-{}", secret.expose())
        );
    }
}
