//! WatchPolicySet's bounds: streams per API key and in all, each holding one of the
//! server's in-flight permits for its whole life, so followers of the policy set cannot
//! crowd out decisions (the limits layer alone releases a stream's permit as soon as its
//! first message is ready).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use enroll_shared::limits::InFlight;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use crate::config::WatchConfig;

#[derive(Clone)]
pub struct Watchers {
    config: WatchConfig,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_key: HashMap<String, usize>,
}

/// One admitted stream; dropping it frees its places.
pub struct WatchLease {
    key: String,
    open: Arc<Mutex<Open>>,
    _in_flight: Option<OwnedSemaphorePermit>,
}

impl Watchers {
    pub fn new(config: WatchConfig) -> Self {
        Self {
            config,
            open: Arc::default(),
        }
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// Admits a stream of `key`, or RESOURCE_EXHAUSTED naming the bound it would pass.
    pub fn admit(&self, key: &str, in_flight: Option<&InFlight>) -> Result<WatchLease, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let of_key = open.per_key.get(key).copied().unwrap_or(0);
        if of_key >= self.config.max_per_key.max(1) {
            return Err(Status::resource_exhausted(format!(
                "this API key already holds {of_key} WatchPolicySet streams (watch.max_per_key)"
            )));
        }
        if open.total >= self.config.max_total.max(1) {
            return Err(Status::resource_exhausted(format!(
                "{} WatchPolicySet streams are open (watch.max_total): retry later",
                open.total
            )));
        }
        let permit = in_flight.map(InFlight::hold).transpose()?;
        open.total += 1;
        *open.per_key.entry(key.to_owned()).or_default() += 1;
        Ok(WatchLease {
            key: key.to_owned(),
            open: self.open.clone(),
            _in_flight: permit,
        })
    }

    #[cfg(test)]
    fn open_of(&self, key: &str) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        (open.total, open.per_key.get(key).copied().unwrap_or(0))
    }
}

impl Drop for WatchLease {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_key.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_key_and_in_all_and_freed_on_drop() {
        let watchers = Watchers::new(WatchConfig {
            max_per_key: 2,
            max_total: 3,
            max_stream_secs: 60,
        });
        let a1 = watchers.admit("a", None).unwrap();
        let _a2 = watchers.admit("a", None).unwrap();
        let refused = watchers.admit("a", None).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("max_per_key"));
        let _b1 = watchers.admit("b", None).unwrap();
        let full = watchers.admit("c", None).err().unwrap();
        assert!(full.message().contains("max_total"), "{full:?}");
        drop(a1);
        assert_eq!(watchers.open_of("a"), (2, 1));
        let _c1 = watchers.admit("c", None).unwrap();
    }
}
