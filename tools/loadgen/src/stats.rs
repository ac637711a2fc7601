//! Latency statistics of one scenario.
use std::time::Duration;

/// What one scenario measured.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub error_samples: Vec<String>,
}

impl Summary {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds == 0.0 {
            0.0
        } else {
            (self.requests - self.errors) as f64 / seconds
        }
    }
}

/// The `quantile` (0..=1) of sorted latencies, nearest-rank.
pub fn percentile(sorted_micros: &[u32], quantile: f64) -> Duration {
    if sorted_micros.is_empty() {
        return Duration::ZERO;
    }
    let rank = (quantile * sorted_micros.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_micros.len()) - 1;
    Duration::from_micros(u64::from(sorted_micros[index]))
}

/// Merges the per-task samples into a summary.
pub fn summarize(
    name: &str,
    mut latencies_micros: Vec<u32>,
    errors: u64,
    error_samples: Vec<String>,
    elapsed: Duration,
) -> Summary {
    latencies_micros.sort_unstable();
    Summary {
        name: name.to_owned(),
        requests: latencies_micros.len() as u64,
        errors,
        elapsed,
        p50: percentile(&latencies_micros, 0.50),
        p90: percentile(&latencies_micros, 0.90),
        p99: percentile(&latencies_micros, 0.99),
        max: percentile(&latencies_micros, 1.0),
        error_samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.50), Duration::from_micros(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&samples, 1.0), Duration::from_micros(100));
        assert_eq!(percentile(&samples, 0.0), Duration::from_micros(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&[7], 0.99), Duration::from_micros(7));
    }

    #[test]
    fn throughput_counts_successes_only() {
        let summary = summarize("x", vec![10; 100], 20, vec![], Duration::from_secs(2));
        assert_eq!(summary.requests, 100);
        assert!((summary.throughput() - 40.0).abs() < f64::EPSILON);
    }
}
