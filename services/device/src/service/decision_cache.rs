//! CheckEnrollment's cache of policy decisions. A decision is kept only while it was made
//! with the policy set the policy service says it decides with now (its WatchPolicySet
//! stream): every version change drops them all, and while the stream is down, silent
//! longer than [`WATCH_TRUST`] or says "not serving", nothing is cached or served. So a
//! cached decision is never older than the policy service's own propagation plus the
//! stream's delay. Mutations never use it: they ask the policy service every time.
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use enroll_shared::clock_cache::ClockCache;

use crate::domain::decision::{Decision, PolicyQuestion};

/// How long one WatchPolicySet message vouches for the version (the stream repeats it every
/// second; three missed heartbeats and the cache stops being used). Changes themselves
/// arrive at once; this only bounds how long a half-open stream goes unnoticed.
pub const WATCH_TRUST: Duration = Duration::from_secs(3);

/// What the policy service last said about its set.
#[derive(Debug, Clone, Copy)]
struct Watched {
    version: i64,
    /// Whether decisions of this version depend on the client IP (else it is not keyed).
    client_ip_used: bool,
    heard_at: Instant,
}

struct State {
    /// None while the stream is down or the policy service is not serving.
    watched: Option<Watched>,
    /// Bounded; a full cache evicts a decision not used lately (CLOCK), so the users a
    /// proxy checks often keep theirs however many users there are.
    entries: ClockCache<String, Arc<Decision>>,
}

pub struct DecisionCache {
    state: RwLock<State>,
}

impl DecisionCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            state: RwLock::new(State {
                watched: None,
                entries: ClockCache::new(max_entries),
            }),
        }
    }

    /// The policy-set version decisions are cached for now; None while nothing may be
    /// cached (the stream is down, silent or not serving).
    pub fn current_version(&self) -> Option<i64> {
        current(&self.read()).map(|watched| watched.version)
    }

    /// The key of `question` under the current version: every field the policy service
    /// decides on (the client IP only when some policy of the set restricts clients), and
    /// the version it was made for; None while nothing may be cached.
    pub fn key(
        &self,
        question: &PolicyQuestion<'_>,
        client_ip: Option<IpAddr>,
    ) -> Option<CacheKey> {
        let watched = current(&self.read())?;
        let client_ip = client_ip.filter(|_| watched.client_ip_used);
        // NUL never occurs in names, IPs, token types or serials: the fields cannot blur.
        let key = format!(
            "{}\0{}\0{}\0{}\0{}\0{}",
            question.realm,
            question.user.map(|user| user.as_str()).unwrap_or_default(),
            ClientIp(client_ip),
            question.action as u8,
            question.token_type,
            question.serial,
        );
        Some(CacheKey {
            key,
            version: watched.version,
        })
    }

    /// A message of the watch stream: the policy service decides with `version` now.
    pub fn observe(&self, version: i64, serving: bool, client_ip_used: bool) {
        let mut state = self.write();
        let same = state
            .watched
            .is_some_and(|watched| watched.version == version);
        if !serving
            || !same
            || state
                .watched
                .is_some_and(|w| w.client_ip_used != client_ip_used)
        {
            state.entries.clear();
        }
        state.watched = serving.then(|| Watched {
            version,
            client_ip_used,
            heard_at: Instant::now(),
        });
    }

    /// The stream broke: nothing is cached until it is back.
    pub fn lost(&self) {
        let mut state = self.write();
        state.watched = None;
        state.entries.clear();
    }

    /// The cached decision for `key`, if it was made with the current version.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Decision>> {
        let state = self.read();
        let version = current(&state)?.version;
        if key.version != version {
            return None;
        }
        state
            .entries
            .get(&key.key)
            .filter(|decision| decision.policy_set_version == version)
            .cloned()
    }

    /// Keeps `decision` if it was made with the current version (one made before a change
    /// that the stream already reported is not kept under the new version).
    /// The key must have been made under that version too (it decides whether the client
    /// IP is part of it).
    pub fn put(&self, key: CacheKey, decision: Arc<Decision>) {
        let mut state = self.write();
        let version = current(&state).map(|watched| watched.version);
        if version != Some(decision.policy_set_version) || version != Some(key.version) {
            return;
        }
        state.entries.insert(key.key, decision);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the stream vouches for now, if anything.
fn current(state: &State) -> Option<Watched> {
    state
        .watched
        .filter(|watched| watched.heard_at.elapsed() <= WATCH_TRUST)
}

/// An optional address in a key: empty when absent, written without a temporary String.
struct ClientIp(Option<IpAddr>);

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => Ok(()),
        }
    }
}

/// A decision's place in the cache, made under one policy-set version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    key: String,
    version: i64,
}

impl CacheKey {
    /// The policy-set version the key was made under.
    pub fn version(&self) -> i64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::PolicyAction;
    use crate::domain::names::{Realm, UserName};

    fn decision(version: i64) -> Arc<Decision> {
        Arc::new(Decision {
            policy_set_version: version,
            ..Decision::default()
        })
    }

    fn question<'a>(realm: &'a Realm, user: &'a UserName) -> PolicyQuestion<'a> {
        PolicyQuestion {
            action: PolicyAction::RegisterDevice,
            audit_action: "register_device",
            realm,
            user: Some(user),
            subject: "",
            token_type: "webauthn",
            serial: "",
        }
    }

    #[test]
    fn serves_only_decisions_of_the_watched_version() {
        let (realm, user) = (
            Realm::parse("acme").unwrap(),
            UserName::parse("al").unwrap(),
        );
        let question = question(&realm, &user);
        let cache = DecisionCache::new(10);
        assert!(
            cache
                .key(&question, Some("10.0.0.1".parse().unwrap()))
                .is_none(),
            "nothing before the stream"
        );
        cache.observe(1, true, false);
        let key = cache
            .key(&question, Some("10.0.0.1".parse().unwrap()))
            .unwrap();
        cache.put(key.clone(), decision(1));
        assert_eq!(cache.get(&key).map(|d| d.policy_set_version), Some(1));
        // Without client restrictions every address shares the answer.
        let other_ip = cache
            .key(&question, Some("10.9.9.9".parse().unwrap()))
            .unwrap();
        assert!(cache.get(&other_ip).is_some());
        // A decision fetched before a change, stored after it was announced: not kept.
        cache.observe(2, true, true);
        assert!(cache.get(&key).is_none());
        let key = cache
            .key(&question, Some("10.0.0.1".parse().unwrap()))
            .unwrap();
        cache.put(key.clone(), decision(1));
        assert!(cache.get(&key).is_none());
        cache.put(key.clone(), decision(2));
        assert!(cache.get(&key).is_some());
        // With client restrictions the address is part of the key.
        assert!(
            cache
                .get(
                    &cache
                        .key(&question, Some("10.9.9.9".parse().unwrap()))
                        .unwrap()
                )
                .is_none()
        );
        // A key made under an older version is refused, even with a current decision.
        cache.observe(3, true, false);
        cache.put(key, decision(3));
        assert!(cache.read().entries.is_empty());
        let key = cache
            .key(&question, Some("10.0.0.1".parse().unwrap()))
            .unwrap();
        cache.put(key.clone(), decision(3));
        cache.observe(3, false, false);
        assert!(cache.get(&key).is_none(), "not serving drops everything");
        cache.observe(3, true, false);
        cache.put(key.clone(), decision(3));
        cache.lost();
        assert!(cache.get(&key).is_none());
    }

    #[test]
    fn bounded() {
        let realm = Realm::parse("acme").unwrap();
        let cache = DecisionCache::new(3);
        cache.observe(7, true, false);
        let users: Vec<UserName> = (0..10)
            .map(|index| UserName::parse(&format!("u{index}")).unwrap())
            .collect();
        for user in &users {
            let key = cache.key(&question(&realm, user), None).unwrap();
            cache.put(key, decision(7));
        }
        assert_eq!(cache.read().entries.len(), 3);
        let last = cache.key(&question(&realm, &users[9]), None).unwrap();
        assert!(cache.get(&last).is_some());
    }
}
