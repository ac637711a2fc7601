//! The autoassignment index: for each realm, the codes its unassigned hardware pool tokens
//! show now (TOTP: the validation window around the current step, plus the next step so
//! the index outlives a step change until it is rebuilt; HOTP: the look-ahead counters), so
//! an attempt is a hash lookup instead of an HMAC per pool token. A lookup answers only
//! codes inside the validation window at the time asked. Only realms whose policy enables
//! autoassignment are indexed (the caller asks the policy first), and a realm nobody asked
//! about for `IDLE_EVICTION_SECONDS` is dropped. Rebuilt once per TOTP step (in the
//! background, so attempts do not wait for it); a hit is always re-verified against the
//! database before anything is assigned, so a stale entry can cost a miss, never a wrong
//! assignment. One build per realm runs at a time: requests that find the index
//! missing or stale wait for that build instead of each starting their own (with 100,000
//! pool tokens a build is 400,000 HMACs).
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::domain::names::Realm;
use crate::domain::otp::{Window, code};
use crate::domain::secrets::SeedCipher;
use crate::domain::tokens::{HashAlgorithm, OtpParameters, TokenKind};
use crate::error::DeviceError;
use crate::store::entities::tokens;
use crate::store::tokens::TokenStore;

/// The step length the index is organised by.
const INDEX_STEP_SECONDS: u64 = 30;

/// A realm's index is dropped after this long without a lookup.
const IDLE_EVICTION_SECONDS: u64 = 600;

/// One pool token a code may belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub serial: String,
    pub kind: TokenKind,
    pub factor: u64,
    pub digits: u8,
    /// TOTP step length (s); 0 for HOTP.
    pub period: u32,
}

impl Candidate {
    /// Whether the code is one Validate would accept at `unix_time`: a TOTP step inside the
    /// window (the index also holds the next step), any indexed HOTP counter.
    fn in_window(&self, unix_time: u64, window: Window) -> bool {
        match self.kind {
            TokenKind::Totp => {
                let now = unix_time / u64::from(self.period.max(1));
                self.factor.abs_diff(now) <= window.totp_steps
            }
            TokenKind::Hotp => true,
            TokenKind::Password => false,
        }
    }
}

pub struct RealmIndex {
    built_for_step: u64,
    by_code: HashMap<String, Vec<Candidate>>,
    /// Unix time of the last lookup: idle realms are evicted.
    last_used: AtomicU64,
}

#[derive(Clone, Default)]
pub struct PoolIndex {
    realms: Arc<Mutex<HashMap<String, Arc<RealmIndex>>>>,
    /// Per realm, held while its index is being built.
    builders: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

fn step_of(unix_time: u64) -> u64 {
    unix_time / INDEX_STEP_SECONDS
}

impl PoolIndex {
    /// The candidates whose code inside the validation window is `otp`, building the
    /// realm's index when it is missing or more than one step old. Call it only for a realm
    /// whose policy enables autoassignment.
    pub async fn lookup(
        &self,
        store: &TokenStore,
        cipher: &SeedCipher,
        realm: &Realm,
        otp: &str,
        unix_time: u64,
        window: Window,
    ) -> Result<Vec<Candidate>, DeviceError> {
        let step = step_of(unix_time);
        let index = self
            .current(store, cipher, realm, unix_time, window, |built| {
                built + 1 >= step
            })
            .await?;
        index.last_used.store(unix_time, Ordering::Relaxed);
        Ok(index
            .by_code
            .get(otp)
            .map(|found| {
                found
                    .iter()
                    .filter(|candidate| candidate.in_window(unix_time, window))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Drops the indexes of realms nobody looked up since `IDLE_EVICTION_SECONDS` before
    /// `unix_time` (their policy may no longer enable autoassignment, and memory is the pool's
    /// size times its codes).
    fn evict_idle(&self, unix_time: u64) {
        if let Ok(mut realms) = self.realms.lock() {
            realms.retain(|_, index| {
                index.last_used.load(Ordering::Relaxed) + IDLE_EVICTION_SECONDS > unix_time
            });
        }
    }

    /// The realm's index when `usable(built_for_step)`, else a new one: built by this call,
    /// or by the call that was already building it (single flight).
    async fn current(
        &self,
        store: &TokenStore,
        cipher: &SeedCipher,
        realm: &Realm,
        unix_time: u64,
        window: Window,
        usable: impl Fn(u64) -> bool,
    ) -> Result<Arc<RealmIndex>, DeviceError> {
        let ready = |index: &Arc<RealmIndex>| usable(index.built_for_step);
        if let Some(index) = self.realm(realm).filter(ready) {
            return Ok(index);
        }
        let builder = self
            .builders
            .lock()
            .map_err(|_| DeviceError::Unavailable("pool index lock poisoned".to_owned()))?
            .entry(realm.to_string())
            .or_default()
            .clone();
        let _building = builder.lock().await;
        if let Some(index) = self.realm(realm).filter(ready) {
            return Ok(index);
        }
        self.rebuild(store, cipher, realm, unix_time, window).await
    }

    fn realm(&self, realm: &Realm) -> Option<Arc<RealmIndex>> {
        self.realms
            .lock()
            .ok()
            .and_then(|realms| realms.get(realm.as_str()).cloned())
    }

    /// Forgets a realm (its pool changed here); the next lookup rebuilds it.
    pub fn invalidate(&self, realm: &Realm) {
        if let Ok(mut realms) = self.realms.lock() {
            realms.remove(realm.as_str());
        }
    }

    /// Realms indexed at all (the refresher keeps these current).
    pub fn realms(&self) -> Vec<String> {
        self.realms
            .lock()
            .map(|realms| realms.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Recomputes a realm's codes for the steps around `unix_time` (and one ahead, so the
    /// index stays usable through the next step). Callers hold the realm's builder lock.
    async fn rebuild(
        &self,
        store: &TokenStore,
        cipher: &SeedCipher,
        realm: &Realm,
        unix_time: u64,
        window: Window,
    ) -> Result<Arc<RealmIndex>, DeviceError> {
        let pool = store.pool(realm).await?;
        let cipher = cipher.clone();
        let index = tokio::task::spawn_blocking(move || build(&pool, &cipher, unix_time, window))
            .await
            .map_err(|error| DeviceError::Unavailable(format!("pool index task: {error}")))?;
        // A background refresh is not a use: the realm stays as idle as it was.
        if let Some(previous) = self.realm(realm) {
            index.last_used.store(
                previous.last_used.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
        let index = Arc::new(index);
        if let Ok(mut realms) = self.realms.lock() {
            realms.insert(realm.to_string(), index.clone());
        }
        Ok(index)
    }
}

fn build(
    pool: &[tokens::Model],
    cipher: &SeedCipher,
    unix_time: u64,
    window: Window,
) -> RealmIndex {
    let mut by_code: HashMap<String, Vec<Candidate>> = HashMap::with_capacity(pool.len() * 4);
    for token in pool {
        let (Some(kind), Some(algorithm)) = (
            TokenKind::parse(&token.token_type),
            HashAlgorithm::parse(&token.algorithm),
        ) else {
            continue;
        };
        let Ok(seed) = cipher.decrypt(&token.seed_key_id, &token.seed, &token.serial) else {
            continue;
        };
        let digits = u8::try_from(token.digits).unwrap_or(6);
        let parameters = OtpParameters {
            kind,
            digits,
            period: u32::try_from(token.period).unwrap_or(30),
            algorithm,
        };
        let next_unused = u64::try_from(token.counter).unwrap_or(0);
        let factors: Vec<u64> = match kind {
            TokenKind::Totp => {
                let period = u64::from(parameters.period.max(1));
                // Codes valid from one step back to one step past the next index step.
                let first = (unix_time / period).saturating_sub(window.totp_steps);
                let last = (unix_time + INDEX_STEP_SECONDS) / period + window.totp_steps;
                (first.max(next_unused)..=last).collect()
            }
            TokenKind::Hotp => (next_unused..next_unused + window.hotp_look_ahead).collect(),
            TokenKind::Password => continue,
        };
        for factor in factors {
            by_code
                .entry(code(&parameters, &seed, factor))
                .or_default()
                .push(Candidate {
                    serial: token.serial.clone(),
                    kind,
                    factor,
                    digits,
                    period: parameters.period,
                });
        }
    }
    RealmIndex {
        built_for_step: step_of(unix_time),
        by_code,
        last_used: AtomicU64::new(unix_time),
    }
}

/// Keeps every indexed realm current: rebuilds an index once its step has passed, ahead of
/// the attempts that would otherwise wait for it.
pub async fn keep_fresh(
    index: PoolIndex,
    store: TokenStore,
    cipher: Arc<SeedCipher>,
    window: Window,
    clock: enroll_shared::time::SharedClock,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let now = clock.now().timestamp().max(0) as u64;
        index.evict_idle(now);
        for realm in index.realms() {
            let Ok(realm) = Realm::parse(&realm) else {
                continue;
            };
            let step = step_of(now);
            let refreshed = index
                .current(&store, &cipher, &realm, now, window, |built| built >= step)
                .await;
            if let Err(error) = refreshed {
                tracing::warn!(%error, realm = %realm, "pool index refresh failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Window = Window {
        totp_steps: 1,
        hotp_look_ahead: 10,
    };

    fn candidate(kind: TokenKind, factor: u64) -> Candidate {
        Candidate {
            serial: "HW1".to_owned(),
            kind,
            factor,
            digits: 6,
            period: 30,
        }
    }

    #[test]
    fn lookups_answer_only_totp_steps_inside_the_window() {
        let now = 1_000 * 30;
        assert!(candidate(TokenKind::Totp, 999).in_window(now, WINDOW));
        assert!(candidate(TokenKind::Totp, 1_001).in_window(now, WINDOW));
        // The index holds the step after the window too, so it survives a step change.
        assert!(!candidate(TokenKind::Totp, 1_002).in_window(now, WINDOW));
        assert!(!candidate(TokenKind::Totp, 998).in_window(now, WINDOW));
        assert!(candidate(TokenKind::Hotp, 7).in_window(now, WINDOW));
    }

    #[test]
    fn idle_realms_are_evicted_and_refreshes_do_not_count_as_use() {
        let index = PoolIndex::default();
        let realm = |used: u64| {
            Arc::new(RealmIndex {
                built_for_step: 0,
                by_code: HashMap::new(),
                last_used: AtomicU64::new(used),
            })
        };
        {
            let mut realms = index.realms.lock().unwrap();
            realms.insert("busy".to_owned(), realm(10_000));
            realms.insert("idle".to_owned(), realm(10_000 - IDLE_EVICTION_SECONDS));
        }
        index.evict_idle(10_000);
        assert_eq!(index.realms(), vec!["busy".to_owned()]);
    }
}
