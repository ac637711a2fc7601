//! The autoassignment index: for each realm, the codes its unassigned pool tokens show now
//! (TOTP: the current step and its neighbours; HOTP: the look-ahead counters), so an attempt
//! is a hash lookup instead of an HMAC per pool token. Rebuilt once per TOTP step (in the
//! background, so attempts do not wait for it); a hit is always re-verified against the
//! database inside the assigning transaction, so a stale entry can cost a miss, never a
//! wrong assignment. One build per realm runs at a time: requests that find the index
//! missing or stale wait for that build instead of each starting their own (with 100,000
//! pool tokens a build is 400,000 HMACs).
use std::collections::HashMap;
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

/// One pool token a code may belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub serial: String,
    pub kind: TokenKind,
    pub factor: u64,
    pub digits: u8,
}

pub struct RealmIndex {
    built_for_step: u64,
    by_code: HashMap<String, Vec<Candidate>>,
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
    /// The candidates whose current code is `otp`, building the realm's index when it is
    /// missing or more than one step old.
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
        Ok(index.by_code.get(otp).cloned().unwrap_or_default())
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
                });
        }
    }
    RealmIndex {
        built_for_step: step_of(unix_time),
        by_code,
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
