//! The `[retention]` section: how long the audit trail and the enrollment-event outbox are
//! kept, and how the purge that enforces it paces itself.
use std::time::Duration;

use serde::Deserialize;

/// Rows past their age are deleted in batches, one short transaction each with a pause
/// between them, by every replica (the deletes are idempotent: two replicas at once delete
/// each row once). An outbox row is deleted only when no enabled or paused stream still
/// needs it and no dead letter names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Audit events older than this many days are deleted (0: kept forever; default 400,
    /// a year and a margin).
    #[serde(default = "default_audit_days")]
    pub audit_days: u32,
    /// Outbox events older than this many days are deleted once every enabled or paused
    /// stream has them and no dead letter names them (0: kept forever; default 30).
    #[serde(default = "default_events_days")]
    pub events_days: u32,
    /// Rows deleted per transaction at most (100..=50000; default 5000).
    #[serde(default = "default_batch_size")]
    pub batch_size: u64,
    /// The pause between two batches (ms, 0..=60000; default 200).
    #[serde(default = "default_batch_pause_ms")]
    pub batch_pause_ms: u64,
    /// How often a replica looks for rows past their age (s, 1..=86400; default 3600).
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            audit_days: default_audit_days(),
            events_days: default_events_days(),
            batch_size: default_batch_size(),
            batch_pause_ms: default_batch_pause_ms(),
            interval_secs: default_interval_secs(),
        }
    }
}

impl RetentionConfig {
    /// How long audit events are kept; None: forever.
    pub fn audit_age(&self) -> Option<chrono::Duration> {
        (self.audit_days > 0).then(|| chrono::Duration::days(i64::from(self.audit_days)))
    }

    /// How long outbox events are kept at least; None: forever.
    pub fn events_age(&self) -> Option<chrono::Duration> {
        (self.events_days > 0).then(|| chrono::Duration::days(i64::from(self.events_days)))
    }

    pub fn batch_size(&self) -> u64 {
        self.batch_size.clamp(100, 50_000)
    }

    pub fn batch_pause(&self) -> Duration {
        Duration::from_millis(self.batch_pause_ms.min(60_000))
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs.clamp(1, 86_400))
    }
}

fn default_audit_days() -> u32 {
    400
}

fn default_events_days() -> u32 {
    30
}

fn default_batch_size() -> u64 {
    5_000
}

fn default_batch_pause_ms() -> u64 {
    200
}

fn default_interval_secs() -> u64 {
    3_600
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceConfig;

    #[test]
    fn defaults_keep_a_year_of_audit_and_a_month_of_events_and_zero_keeps_forever() {
        let config: DeviceConfig = enroll_shared::config::load_with_env(None, vec![]).unwrap();
        let retention = config.retention;
        assert_eq!(retention.audit_age(), Some(chrono::Duration::days(400)));
        assert_eq!(retention.events_age(), Some(chrono::Duration::days(30)));
        assert_eq!(retention.batch_size(), 5_000);
        assert_eq!(retention.interval(), Duration::from_secs(3_600));
        let config: DeviceConfig = enroll_shared::config::load_with_env(
            None,
            vec![
                ("ENROLL_RETENTION__AUDIT_DAYS".to_owned(), "0".to_owned()),
                ("ENROLL_RETENTION__BATCH_SIZE".to_owned(), "1".to_owned()),
                ("ENROLL_RETENTION__INTERVAL_SECS".to_owned(), "0".to_owned()),
            ],
        )
        .unwrap();
        let retention = config.retention;
        assert_eq!(retention.audit_age(), None);
        assert_eq!(retention.batch_size(), 100);
        assert_eq!(retention.interval(), Duration::from_secs(1));
    }
}
