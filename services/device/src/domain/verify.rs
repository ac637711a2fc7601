//! The verify step of an OTP enrollment: a token enrolled with it is usable only after a
//! first correct code. Its state is a function of the stored row and the clock, so expiry
//! needs no sweeper.
use chrono::{DateTime, Utc};

/// What `tokens.verify_state` stores while the token waits for its first code.
pub const PENDING: &str = "pending";
/// What `tokens.verify_state` stores after the last allowed wrong code.
pub const FAILED: &str = "failed";

/// How far a token's enrollment got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EnrollmentState {
    /// Enrolled without a verify step, or verified: usable.
    #[default]
    Enrolled,
    /// Waiting for its first correct code until the deadline.
    VerifyPending,
    /// The allowed wrong codes were used up; the seed is erased.
    VerifyFailed,
    /// The window ended with no correct code; the seed is erased by the purge.
    VerifyExpired,
}

impl EnrollmentState {
    /// The state of a row with `verify_state` and `deadline` at `now`. An unknown stored
    /// value is taken as failed (never usable).
    pub fn of(
        verify_state: Option<&str>,
        deadline: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        match verify_state {
            None => EnrollmentState::Enrolled,
            Some(PENDING) => match deadline {
                Some(deadline) if now < deadline => EnrollmentState::VerifyPending,
                _ => EnrollmentState::VerifyExpired,
            },
            Some(_) => EnrollmentState::VerifyFailed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentState::Enrolled => "enrolled",
            EnrollmentState::VerifyPending => "verify pending",
            EnrollmentState::VerifyFailed => "verify failed",
            EnrollmentState::VerifyExpired => "verify expired",
        }
    }

    /// Whether the token holds a slot in the user and realm limits: enrolled or pending,
    /// not once failed or expired.
    pub fn holds_slot(self) -> bool {
        matches!(
            self,
            EnrollmentState::Enrolled | EnrollmentState::VerifyPending
        )
    }
}

/// The SQL condition (on the `tokens` columns, alias-free) of a token that holds a limit
/// slot at the time bound to `$n`: the SQL twin of [`EnrollmentState::holds_slot`].
pub fn holds_slot_sql(now_placeholder: &str) -> String {
    format!(
        "(verify_state IS NULL OR (verify_state = '{PENDING}' AND verify_deadline > {now_placeholder}))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_state_follows_the_row_and_the_clock() {
        let deadline = Utc.with_ymd_and_hms(2026, 1, 1, 12, 10, 0).unwrap();
        let before = deadline - chrono::Duration::seconds(1);
        let of = |state, now| EnrollmentState::of(state, Some(deadline), now);
        assert_eq!(
            EnrollmentState::of(None, None, deadline),
            EnrollmentState::Enrolled
        );
        assert_eq!(of(Some(PENDING), before), EnrollmentState::VerifyPending);
        assert_eq!(of(Some(PENDING), deadline), EnrollmentState::VerifyExpired);
        assert_eq!(
            of(Some(PENDING), deadline + chrono::Duration::days(1)),
            EnrollmentState::VerifyExpired
        );
        assert_eq!(of(Some(FAILED), before), EnrollmentState::VerifyFailed);
        // Fail closed: no deadline, or a value this release does not know.
        assert_eq!(
            EnrollmentState::of(Some(PENDING), None, before),
            EnrollmentState::VerifyExpired
        );
        assert_eq!(of(Some("other"), before), EnrollmentState::VerifyFailed);
    }

    #[test]
    fn only_enrolled_and_pending_tokens_hold_a_slot() {
        assert!(EnrollmentState::Enrolled.holds_slot());
        assert!(EnrollmentState::VerifyPending.holds_slot());
        assert!(!EnrollmentState::VerifyFailed.holds_slot());
        assert!(!EnrollmentState::VerifyExpired.holds_slot());
        assert_eq!(
            holds_slot_sql("$2"),
            "(verify_state IS NULL OR (verify_state = 'pending' AND verify_deadline > $2))"
        );
    }
}
