//! Attempt budgets: how many guesses a client address, a user name or a whole realm may
//! make per window, counted in the database so every replica spends from the same budget
//! (the in-memory, per-replica, per-name limits they replace let rotating names and
//! addresses guess without end). A request without a client address is one shared client,
//! never an unlimited one; IPv6 clients are counted per /64, what one host usually holds.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::ValidationConfig;
use crate::domain::lockout::ClientKey;
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;
use crate::store::budgets::BudgetStore;

/// Spends between two sweeps of expired budget rows (per replica).
const SWEEP_EVERY: u64 = 1_024;

/// What a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    /// Validate calls of one client.
    ValidateClient,
    /// Validate failures of clients not known for one user.
    UnknownClientFailures,
    /// Validate failures of unknown clients in one realm.
    RealmFailures,
    /// Autoassignment attempts of one user.
    AutoassignUser,
    /// Autoassignment attempts of one client.
    AutoassignClient,
    /// Autoassignment attempts in one realm.
    AutoassignRealm,
}

/// One budget: its kind and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetKey {
    kind: BudgetKind,
    owner: String,
}

impl BudgetKey {
    /// One client's Validate calls: its address (IPv6 by /64); calls without one (only
    /// with `validation.allow_missing_client_ip`) are counted per API key.
    pub fn validate_client(client: &ClientKey) -> Self {
        Self {
            kind: BudgetKind::ValidateClient,
            owner: client_owner(client),
        }
    }

    /// Failures of clients unknown for `user`.
    pub fn unknown_client_failures(realm: &Realm, user: &UserName) -> Self {
        Self {
            kind: BudgetKind::UnknownClientFailures,
            owner: user_owner(realm, user),
        }
    }

    /// Failures of unknown clients in `realm`.
    pub fn realm_failures(realm: &Realm) -> Self {
        Self {
            kind: BudgetKind::RealmFailures,
            owner: realm.to_string(),
        }
    }

    pub fn autoassign_user(realm: &Realm, user: &UserName) -> Self {
        Self {
            kind: BudgetKind::AutoassignUser,
            owner: user_owner(realm, user),
        }
    }

    pub fn autoassign_client(client: &ClientKey) -> Self {
        Self {
            kind: BudgetKind::AutoassignClient,
            owner: client_owner(client),
        }
    }

    pub fn autoassign_realm(realm: &Realm) -> Self {
        Self {
            kind: BudgetKind::AutoassignRealm,
            owner: realm.to_string(),
        }
    }

    /// The key stored in the database.
    fn stored(&self) -> String {
        let prefix = match self.kind {
            BudgetKind::ValidateClient => "validate/client",
            BudgetKind::UnknownClientFailures => "validate/unknown-failures",
            BudgetKind::RealmFailures => "validate/realm-failures",
            BudgetKind::AutoassignUser => "autoassign/user",
            BudgetKind::AutoassignClient => "autoassign/client",
            BudgetKind::AutoassignRealm => "autoassign/realm",
        };
        format!("{prefix}/{}", self.owner)
    }

    /// For audit events: which budget ran out (names and addresses only, no secret).
    pub fn describe(&self) -> String {
        let what = match self.kind {
            BudgetKind::ValidateClient => "the client's Validate budget",
            BudgetKind::UnknownClientFailures => "the user's failure budget for unknown clients",
            BudgetKind::RealmFailures => "the realm's failure budget for unknown clients",
            BudgetKind::AutoassignUser => "the user's autoassignment budget",
            BudgetKind::AutoassignClient => "the client's autoassignment budget",
            BudgetKind::AutoassignRealm => "the realm's autoassignment budget",
        };
        format!("{what} ({}) is exhausted", self.owner)
    }
}

/// The owner of a user's budget: realm and user joined by a space. Names may contain `/`
/// (`a/b` + `c` and `a` + `b/c` would both be `a/b/c`), but never whitespace, so the first
/// space splits the pair one way only.
fn user_owner(realm: &Realm, user: &UserName) -> String {
    format!("{realm} {user}")
}

/// The owner of a client's budget: its address as the key holds it (IPv6 by /64), else
/// the key's stored form (`key/<API key name>` for calls without an address).
fn client_owner(client: &ClientKey) -> String {
    match client {
        ClientKey::Address(address) => address.clone(),
        other => other.stored(),
    }
}

#[derive(Clone)]
pub struct Budgets {
    store: BudgetStore,
    config: ValidationConfig,
    spends: Arc<AtomicU64>,
}

impl Budgets {
    pub fn new(store: BudgetStore, config: ValidationConfig) -> Self {
        Self {
            store,
            config,
            spends: Arc::default(),
        }
    }

    fn limit(&self, kind: BudgetKind) -> (u32, Duration) {
        let config = &self.config;
        match kind {
            BudgetKind::ValidateClient => (
                config.validate_attempts_per_client,
                config.validate_window(),
            ),
            BudgetKind::UnknownClientFailures => (
                config.unknown_client_failures_per_user,
                config.unknown_client_window(),
            ),
            BudgetKind::RealmFailures => (
                config.realm_failures_per_window,
                config.realm_failure_window(),
            ),
            BudgetKind::AutoassignUser => (
                config.autoassign_attempts_per_user,
                config.autoassign_window(),
            ),
            BudgetKind::AutoassignClient => (
                config.autoassign_attempts_per_client,
                config.autoassign_window(),
            ),
            BudgetKind::AutoassignRealm => (
                config.autoassign_attempts_per_realm,
                config.autoassign_window(),
            ),
        }
    }

    /// Counts one attempt against `key`; false when its window's budget is used up (this
    /// attempt is counted too, so hammering an exhausted budget does not refill it).
    pub async fn spend(&self, key: &BudgetKey, now: DateTime<Utc>) -> Result<bool, DeviceError> {
        let (limit, window) = self.limit(key.kind);
        let spent = self.store.spend(&key.stored(), now, window).await?;
        if self.spends.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Off the request path: the caller does not wait for the cleanup.
            let budgets = self.clone();
            tokio::spawn(async move { budgets.sweep(now).await });
        }
        Ok(spent <= u64::from(limit))
    }

    /// Whether `key`'s current window has no budget left (counts nothing: failure budgets
    /// are checked before a pass is checked and spent only when it fails).
    pub async fn exhausted(
        &self,
        key: &BudgetKey,
        now: DateTime<Utc>,
    ) -> Result<bool, DeviceError> {
        let (limit, window) = self.limit(key.kind);
        let spent = self.store.spent(&key.stored(), now, window).await?;
        Ok(spent >= u64::from(limit))
    }

    /// Drops rows whose window ended (the longest window bounds them all); a failure only
    /// leaves rows that the next sweep removes.
    async fn sweep(&self, now: DateTime<Utc>) {
        let config = &self.config;
        let longest = config
            .autoassign_window()
            .max(config.validate_window())
            .max(config.unknown_client_window())
            .max(config.realm_failure_window());
        let Ok(longest) = chrono::Duration::from_std(longest) else {
            return;
        };
        if let Err(error) = self.store.sweep(now - longest).await {
            tracing::warn!(%error, "sweeping expired attempt budgets failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_by_address_ipv6_by_64_and_without_one_per_api_key() {
        let key = |raw: &str| {
            BudgetKey::validate_client(&ClientKey::of(Some(raw.parse().unwrap()), "proxy")).owner
        };
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_eq!(key("2001:db8:1:2::9"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        let keyless = |name: &str| BudgetKey::autoassign_client(&ClientKey::of(None, name)).owner;
        assert_eq!(keyless("proxy-a"), "key/proxy-a");
        assert_ne!(keyless("proxy-a"), keyless("proxy-b"));
    }

    #[test]
    fn users_whose_names_contain_a_slash_have_their_own_budgets() {
        let name = |raw: &str| (Realm::parse(raw).unwrap(), UserName::parse(raw).unwrap());
        let (a_b, _) = name("a/b");
        let (a, _) = name("a");
        let (_, c) = name("c");
        let (_, b_c) = name("b/c");
        for key in [
            BudgetKey::unknown_client_failures,
            BudgetKey::autoassign_user,
        ] {
            assert_ne!(key(&a_b, &c).stored(), key(&a, &b_c).stored());
        }
    }

    #[test]
    fn keys_of_different_budgets_never_collide() {
        let realm = Realm::parse("corp").unwrap();
        let user = UserName::parse("alice").unwrap();
        let keys = [
            BudgetKey::validate_client(&ClientKey::ApiKey("-".into())),
            BudgetKey::unknown_client_failures(&realm, &user),
            BudgetKey::realm_failures(&realm),
            BudgetKey::autoassign_client(&ClientKey::ApiKey("-".into())),
            BudgetKey::autoassign_user(&realm, &user),
            BudgetKey::autoassign_realm(&realm),
        ]
        .map(|key| key.stored());
        let mut unique = keys.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert!(
            !BudgetKey::autoassign_user(&realm, &user)
                .describe()
                .is_empty()
        );
    }
}
