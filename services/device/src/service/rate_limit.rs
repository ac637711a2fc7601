//! A keyed fixed-window limiter (per user, per client address) for autoassignment attempts,
//! on the injected clock. Per instance: N replicas allow up to N times the limit, which
//! still bounds guessing.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub struct RateLimiter {
    max: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (DateTime<Utc>, u32)>>,
}

impl RateLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn expired(&self, start: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        (now - start).to_std().unwrap_or_default() >= self.window
    }

    /// Counts an attempt for `key`; false when the key has used up its window.
    pub fn allow(&self, key: &str, now: DateTime<Utc>) -> bool {
        let Ok(mut counts) = self.counts.lock() else {
            return false;
        };
        if counts.len() > 100_000 {
            counts.retain(|_, (start, _)| !self.expired(*start, now));
        }
        let entry = counts.entry(key.to_owned()).or_insert((now, 0));
        if self.expired(entry.0, now) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_reset_and_keys_are_independent() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let start = Utc::now();
        assert!(limiter.allow("u", start));
        assert!(limiter.allow("u", start));
        assert!(!limiter.allow("u", start));
        assert!(limiter.allow("v", start));
        assert!(limiter.allow("u", start + chrono::Duration::seconds(61)));
    }
}
