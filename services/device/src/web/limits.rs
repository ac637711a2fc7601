//! The page's abuse limits, in memory and per replica: API calls per client address, begins
//! per link, one begin at a time per link, and a remembered refusal per dead link so that
//! hammering it writes one audit event per window, not one per request.
//!
//! A link gets a window only once the use case has looked it up and found it: a flood of
//! made-up secrets must not push real links' windows out of the bounded table (which would
//! forgive their begin counts and forget their dead-link answers). Begins in flight are
//! tracked apart, in a set as large as the requests running at once.
//!
//! Every table is a [`WindowMap`]: fixed windows that start at a key's first use, at most
//! `capacity` keys, the oldest window forgotten first. Expired windows are dropped from the
//! front of an ordered queue as requests arrive, so there is no periodic sweep and memory
//! is bounded whatever the traffic (forgetting a live window early only forgives a client
//! its count).
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::error::WebError;

/// Fixed-window values per key, bounded to `capacity` keys.
pub(super) struct WindowMap<K, V> {
    window: Duration,
    capacity: usize,
    slots: HashMap<K, Slot<V>>,
    /// One entry per slot, in order of window start (all windows are equally long, so the
    /// front is always the first to expire).
    order: VecDeque<K>,
}

struct Slot<V> {
    start: Instant,
    value: V,
}

impl<K: Hash + Eq + Clone, V: Default> WindowMap<K, V> {
    pub(super) fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            slots: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The value of `key` in its current window, a fresh one if its window is over.
    pub(super) fn entry(&mut self, key: K, now: Instant) -> &mut V {
        self.expire(now);
        if !self.slots.contains_key(&key) {
            while self.slots.len() >= self.capacity {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.slots.remove(&oldest);
            }
            self.order.push_back(key.clone());
        }
        &mut self
            .slots
            .entry(key)
            .or_insert_with(|| Slot {
                start: now,
                value: V::default(),
            })
            .value
    }

    /// The value of `key` if its window is still open.
    pub(super) fn get_mut(&mut self, key: &K, now: Instant) -> Option<&mut V> {
        self.expire(now);
        self.slots.get_mut(key).map(|slot| &mut slot.value)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let over = self
                .slots
                .get(oldest)
                .is_none_or(|slot| now.saturating_duration_since(slot.start) >= self.window);
            if !over {
                break;
            }
            if let Some(oldest) = self.order.pop_front() {
                self.slots.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// What the page remembers about one link that exists (keyed by the secret's hash, never
/// the secret).
#[derive(Default)]
struct LinkWindow {
    begins: u32,
    /// The answer that refused this link as dead (used, revoked, expired): repeated without
    /// asking the use case again, which would audit the refusal again.
    refusal: Option<WebError>,
}

/// The limits' numbers (from `[web]`).
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub window: Duration,
    pub requests_per_address: u32,
    pub begins_per_link: u32,
    pub capacity: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            requests_per_address: 60,
            begins_per_link: 5,
            capacity: 10_000,
        }
    }
}

pub(super) struct Limiter {
    limits: RateLimits,
    addresses: Mutex<WindowMap<IpAddr, u32>>,
    links: Mutex<WindowMap<String, LinkWindow>>,
    /// Secret hashes with a begin running (one at a time per link, found or not).
    in_flight: Mutex<HashSet<String>>,
}

/// Held while a begin runs; lets the next begin on the link in when dropped. The use case's
/// answer says whether the link exists: only then is the begin counted in a window.
pub(super) struct BeginTicket<'a> {
    limiter: &'a Limiter,
    link: String,
}

impl BeginTicket<'_> {
    /// The link exists: counts the begin in its window.
    pub(super) fn found(&self) {
        lock(&self.limiter.links)
            .entry(self.link.clone(), Instant::now())
            .begins += 1;
    }

    /// The link exists and is dead: counts the begin and remembers the answer for the rest
    /// of its window.
    pub(super) fn refused(&self, answer: &WebError) {
        let mut links = lock(&self.limiter.links);
        let window = links.entry(self.link.clone(), Instant::now());
        window.begins += 1;
        window.refusal = Some(answer.clone());
    }
}

impl Drop for BeginTicket<'_> {
    fn drop(&mut self) {
        lock(&self.limiter.in_flight).remove(&self.link);
    }
}

impl Limiter {
    pub(super) fn new(limits: RateLimits) -> Self {
        Self {
            addresses: Mutex::new(WindowMap::new(limits.window, limits.capacity)),
            links: Mutex::new(WindowMap::new(limits.window, limits.capacity)),
            in_flight: Mutex::default(),
            limits,
        }
    }

    /// Counts one API call from `client`; refused beyond the limit.
    pub(super) fn admit_client(&self, client: IpAddr) -> Result<(), WebError> {
        let mut addresses = lock(&self.addresses);
        let calls = addresses.entry(address_key(client), Instant::now());
        if *calls >= self.limits.requests_per_address {
            return Err(exhausted(
                "too many requests from your address; please try again later",
            ));
        }
        *calls += 1;
        Ok(())
    }

    /// Refuses `client` when its address is over the limit; counts one call when `failed`
    /// (a poll that failed to authenticate: polls that authenticate are not counted, as a
    /// receiver polls all day, but guessing costs a window).
    pub(super) fn admit_failed(&self, client: IpAddr, failed: bool) -> Result<(), WebError> {
        let mut addresses = lock(&self.addresses);
        let now = Instant::now();
        let key = address_key(client);
        let over = addresses
            .get_mut(&key, now)
            .is_some_and(|calls| *calls >= self.limits.requests_per_address);
        if over {
            return Err(exhausted(
                "too many requests from your address; please try again later",
            ));
        }
        if failed {
            *addresses.entry(key, now) += 1;
        }
        Ok(())
    }

    /// Lets a begin on the link with secret hash `link` run, or answers in its place. Looks
    /// the link's window up without creating one (see [`BeginTicket::found`]).
    pub(super) fn admit_begin(&self, link: String) -> Result<BeginTicket<'_>, WebError> {
        if let Some(window) = lock(&self.links).get_mut(&link, Instant::now()) {
            if let Some(refusal) = &window.refusal {
                return Err(refusal.clone());
            }
            if window.begins >= self.limits.begins_per_link {
                return Err(exhausted(
                    "this enrollment link was started too often; please try again later",
                ));
            }
        }
        if !lock(&self.in_flight).insert(link.clone()) {
            return Err(exhausted(
                "this enrollment link is already being started; please wait a moment",
            ));
        }
        Ok(BeginTicket {
            limiter: self,
            link,
        })
    }
}

/// IPv6 clients get a /64 each (what one host or site usually has), so one client cannot
/// spread its calls over the addresses of its own network.
fn address_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

fn exhausted(message: &str) -> WebError {
    WebError::new(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", message)
}

/// The tables hold counters only: a panic elsewhere cannot leave them inconsistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_expire_and_restart() {
        let start = Instant::now();
        let mut map: WindowMap<&str, u32> = WindowMap::new(Duration::from_secs(10), 100);
        *map.entry("a", start) += 1;
        *map.entry("a", start + Duration::from_secs(9)) += 1;
        assert_eq!(*map.entry("a", start + Duration::from_secs(9)), 2);
        assert_eq!(*map.entry("a", start + Duration::from_secs(10)), 0);
        assert!(map.get_mut(&"a", start + Duration::from_secs(21)).is_none());
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn the_oldest_window_goes_when_full() {
        let start = Instant::now();
        let mut map: WindowMap<u32, u32> = WindowMap::new(Duration::from_secs(10), 3);
        for key in 0..10 {
            *map.entry(key, start) += 1;
            assert!(map.len() <= 3);
        }
        assert!(map.get_mut(&6, start).is_none());
        assert_eq!(map.get_mut(&9, start).copied(), Some(1));
    }

    #[test]
    fn clients_are_limited_per_address_and_ipv6_per_64() {
        let limiter = Limiter::new(RateLimits {
            requests_per_address: 2,
            ..RateLimits::default()
        });
        let one: IpAddr = "2001:db8:1:1::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8:1:1::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        assert!(limiter.admit_client(one).is_ok());
        assert!(limiter.admit_client(neighbour).is_ok());
        let refused = limiter.admit_client(one).unwrap_err();
        assert_eq!(refused.code(), "RESOURCE_EXHAUSTED");
        assert!(limiter.admit_client(other).is_ok());
    }

    #[test]
    fn failed_polls_count_and_an_address_over_the_limit_is_refused_first() {
        let limiter = Limiter::new(RateLimits {
            requests_per_address: 2,
            ..RateLimits::default()
        });
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..10 {
            assert!(limiter.admit_failed(client, false).is_ok(), "not counted");
        }
        assert!(limiter.admit_failed(client, true).is_ok());
        assert!(limiter.admit_failed(client, true).is_ok());
        let refused = limiter.admit_failed(client, false).unwrap_err();
        assert_eq!(refused.code(), "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn begins_are_capped_one_at_a_time_and_dead_links_answered_from_memory() {
        let limiter = Limiter::new(RateLimits {
            begins_per_link: 2,
            ..RateLimits::default()
        });
        let ticket = limiter.admit_begin("live".into()).unwrap();
        assert!(limiter.admit_begin("live".into()).is_err(), "one at a time");
        ticket.found();
        drop(ticket);
        limiter.admit_begin("live".into()).unwrap().found();
        assert!(limiter.admit_begin("live".into()).is_err(), "cap reached");

        let dead = WebError::new(StatusCode::CONFLICT, "FAILED_PRECONDITION", "used");
        assert_eq!(
            limiter.admit_begin("dead".into()).ok().map(|_| ()),
            Some(())
        );
        limiter.admit_begin("dead".into()).unwrap().refused(&dead);
        for _ in 0..5 {
            let again = limiter.admit_begin("dead".into()).err().expect("refused");
            assert_eq!(again.code(), "FAILED_PRECONDITION");
        }
    }

    #[test]
    fn a_flood_of_unknown_secrets_never_evicts_a_real_links_window() {
        let limiter = Limiter::new(RateLimits {
            begins_per_link: 1,
            capacity: 3,
            ..RateLimits::default()
        });
        limiter.admit_begin("real".into()).unwrap().found();
        let dead = WebError::new(StatusCode::CONFLICT, "FAILED_PRECONDITION", "used");
        limiter.admit_begin("dead".into()).unwrap().refused(&dead);
        // Made-up secrets: looked up, not found, so never given a window.
        for guess in 0..1_000 {
            drop(limiter.admit_begin(format!("guess-{guess}")).unwrap());
        }
        assert_eq!(lock(&limiter.links).len(), 2);
        assert!(lock(&limiter.in_flight).is_empty());
        let capped = limiter
            .admit_begin("real".into())
            .err()
            .expect("still capped");
        assert_eq!(capped.code(), "RESOURCE_EXHAUSTED");
        let again = limiter
            .admit_begin("dead".into())
            .err()
            .expect("still dead");
        assert_eq!(again.code(), "FAILED_PRECONDITION");
    }
}
