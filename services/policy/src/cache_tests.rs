//! The serving rules of the cache, on an injected monotonic clock and a scripted store.
use std::sync::Mutex;

use chrono::Utc;

use super::*;
use crate::domain::policy::{PolicySpec, StoredPolicy};
use crate::store::{ChangeContext, PolicyChange};

/// A clock the test moves by hand.
struct FakeClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl FakeClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }

    fn clock(self: &Arc<Self>) -> MonotonicClock {
        let this = self.clone();
        Arc::new(move || this.start + *this.offset.lock().unwrap())
    }
}

/// A store whose version and rows the test sets; `None` as version: the database is down.
#[derive(Default)]
struct ScriptedStore {
    version: Mutex<Option<i64>>,
    loaded: Mutex<LoadedPolicies>,
}

impl ScriptedStore {
    fn set(&self, loaded: LoadedPolicies) {
        *self.version.lock().unwrap() = Some(loaded.version);
        *self.loaded.lock().unwrap() = loaded;
    }

    fn go_down(&self) {
        *self.version.lock().unwrap() = None;
    }

    fn down() -> StoreError {
        StoreError::Database(sea_orm::DbErr::Custom("down".into()))
    }
}

impl PolicyStore for ScriptedStore {
    async fn version(&self) -> Result<i64, StoreError> {
        self.version.lock().unwrap().ok_or_else(Self::down)
    }
    async fn load_all(&self) -> Result<LoadedPolicies, StoreError> {
        match *self.version.lock().unwrap() {
            Some(_) => Ok(self.loaded.lock().unwrap().clone()),
            None => Err(Self::down()),
        }
    }
    async fn get(&self, _: &str) -> Result<Option<StoredPolicy>, StoreError> {
        unreachable!("not used by the cache")
    }
    async fn list(&self, _: Option<&str>, _: u64) -> Result<Vec<StoredPolicy>, StoreError> {
        unreachable!("not used by the cache")
    }
    async fn create(&self, _: PolicySpec, _: ChangeContext) -> Result<StoredPolicy, StoreError> {
        unreachable!("not used by the cache")
    }
    async fn update(
        &self,
        _: PolicySpec,
        _: &str,
        _: ChangeContext,
    ) -> Result<StoredPolicy, StoreError> {
        unreachable!("not used by the cache")
    }
    async fn delete(&self, _: &str, _: Option<&str>, _: ChangeContext) -> Result<(), StoreError> {
        unreachable!("not used by the cache")
    }
    async fn history(
        &self,
        _: Option<&str>,
        _: Option<i64>,
        _: u64,
    ) -> Result<Vec<PolicyChange>, StoreError> {
        unreachable!("not used by the cache")
    }
    async fn history_after(
        &self,
        _: Option<&str>,
        _: i64,
        _: u64,
    ) -> Result<Vec<PolicyChange>, StoreError> {
        unreachable!("not used by the cache")
    }
}

fn policy(name: &str, max_tokens: &str) -> StoredPolicy {
    StoredPolicy {
        spec: PolicySpec {
            name: name.into(),
            scope: "enrollment".into(),
            realms: vec![],
            users: vec![],
            clients: vec![],
            actions: [("max_token_per_user".to_owned(), max_tokens.to_owned())].into(),
            priority: 1,
            active: true,
            description: String::new(),
        },
        etag: "1".into(),
        create_time: Utc::now(),
        update_time: Utc::now(),
    }
}

fn loaded(version: i64, policies: Vec<StoredPolicy>) -> LoadedPolicies {
    LoadedPolicies {
        version,
        policies,
        unreadable: vec![],
    }
}

const MAX: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_set_not_confirmed_within_the_maximum_age_is_not_served() {
    let clock = FakeClock::new();
    let cache = PolicyCache::with_clock(MAX, clock.clock());
    let store = ScriptedStore::default();
    assert_eq!(cache.decision_set().unwrap_err(), Unservable::NotLoaded);

    store.set(loaded(3, vec![policy("limit", "2")]));
    cache.reload(&store).await.unwrap();
    assert_eq!(cache.decision_set().unwrap().version(), 3);
    assert!(*cache.serving().borrow());

    // Each successful poll of an unchanged version renews the set's age.
    clock.advance(MAX - Duration::from_secs(1));
    assert!(!cache.refresh_if_changed(&store).await.unwrap());
    clock.advance(MAX);
    assert!(
        cache.decision_set().is_ok(),
        "confirmed {MAX:?} ago: served"
    );

    // The database stops answering: the set ages, and past the maximum it is refused.
    store.go_down();
    clock.advance(Duration::from_secs(1));
    assert!(cache.refresh_if_changed(&store).await.is_err());
    cache.update_serving();
    assert_eq!(
        cache.decision_set().unwrap_err(),
        Unservable::Stale {
            age: MAX + Duration::from_secs(1),
            max: MAX
        }
    );
    assert!(!*cache.serving().borrow());
    // Conflict warnings on writes still see the last set.
    assert_eq!(cache.last_set().unwrap().version(), 3);

    // Back, at a newer version: served again at once.
    store.set(loaded(4, vec![policy("limit", "1")]));
    assert!(cache.refresh_if_changed(&store).await.unwrap());
    assert_eq!(cache.decision_set().unwrap().version(), 4);
    assert!(*cache.serving().borrow());
}

#[tokio::test]
async fn the_age_counts_from_when_the_database_was_asked() {
    let clock = FakeClock::new();
    let cache = PolicyCache::with_clock(MAX, clock.clock());
    let asked_at = (cache.clock)();
    clock.advance(MAX + Duration::from_millis(1));
    // A load that took longer than the maximum age is already stale when it lands.
    cache.install(loaded(1, vec![]), asked_at);
    assert!(matches!(
        cache.decision_set(),
        Err(Unservable::Stale { .. })
    ));
    // A confirmation asked at the same moment as the load changes nothing.
    cache.confirm(1, asked_at);
    assert!(cache.decision_set().is_err());
    cache.confirm(1, (cache.clock)());
    assert!(cache.decision_set().is_ok());
    // A confirmation of another version confirms nothing.
    clock.advance(MAX + Duration::from_millis(1));
    cache.confirm(2, (cache.clock)());
    assert!(cache.decision_set().is_err());
}

#[tokio::test]
async fn an_unreadable_active_policy_stops_decisions_until_it_is_gone() {
    let clock = FakeClock::new();
    let cache = PolicyCache::with_clock(MAX, clock.clock());
    let store = ScriptedStore::default();
    let mut broken = loaded(5, vec![policy("fine", "3"), policy("typo", "lots")]);
    broken.unreadable.push(UnreadablePolicy {
        name: "garbled".into(),
        active: true,
        reason: "realms: expected value".into(),
    });
    store.set(broken);
    cache.reload(&store).await.unwrap();
    let Err(Unservable::Unreadable(policies)) = cache.decision_set() else {
        panic!("an unreadable active policy must stop decisions");
    };
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["garbled", "typo"]);
    assert!(policies[1].reason.contains("max_token_per_user"));
    assert!(!*cache.serving().borrow());
    // The readable policies still back conflict warnings.
    assert_eq!(cache.last_set().unwrap().len(), 1);

    // Inactive broken policies decide nothing, so they do not stop decisions.
    let mut inactive = policy("typo", "lots");
    inactive.spec.active = false;
    let mut repaired = loaded(6, vec![policy("fine", "3"), inactive]);
    repaired.unreadable.push(UnreadablePolicy {
        name: "garbled-but-off".into(),
        active: false,
        reason: "users: expected value".into(),
    });
    store.set(repaired);
    assert!(cache.refresh_if_changed(&store).await.unwrap());
    assert_eq!(cache.decision_set().unwrap().len(), 1);
    assert!(*cache.serving().borrow());
}

#[tokio::test]
async fn an_older_load_never_replaces_a_newer_one() {
    let clock = FakeClock::new();
    let cache = PolicyCache::with_clock(MAX, clock.clock());
    cache.install(loaded(7, vec![policy("new", "1")]), (cache.clock)());
    cache.install(loaded(6, vec![]), (cache.clock)());
    assert_eq!(cache.decision_set().unwrap().version(), 7);
}
