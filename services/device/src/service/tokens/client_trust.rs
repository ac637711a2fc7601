//! Whom a Validate call is charged to, and what holds it back before its pass is checked:
//! the back-off of its own (user, client) pair always; the user's and the realm's failure
//! budgets only when the client is unknown, so outsiders never lock a user out of the
//! clients the user passed from.
use super::*;
use crate::domain::lockout::{ClientKey, PairState, address_key};
use crate::domain::tokens::PassAttempt;
use crate::service::budgets::BudgetKey;

/// Why a client counts as known for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    /// The user passed from this client's address recently.
    ByAddress,
    /// It presented a device token issued to the user, not distrusted by its own failures.
    ByDeviceToken,
}

/// The client of one Validate call as the lockout rules see it.
#[derive(Debug, Clone)]
pub(super) struct ClientTrust {
    /// The pair failures are charged to: the device token's when it is trusted, else the
    /// address's (or the API key's, for calls without an address).
    pub pair: ClientKey,
    /// The address's pair, when the call has an address.
    pub address: Option<ClientKey>,
    pub known: Option<Known>,
    /// The stored state of `pair`.
    pub state: PairState,
    /// What the audit event should say about the device token, if one was not trusted.
    pub notes: Vec<String>,
}

impl ClientTrust {
    /// The pairs a success marks as passed: the pair and, when it is a device token's,
    /// the address too (the user is at that address now).
    pub fn passed(&self) -> Vec<ClientKey> {
        let mut clients = vec![self.pair.clone()];
        if let Some(address) = &self.address
            && *address != self.pair
        {
            clients.push(address.clone());
        }
        clients
    }

    pub fn describe(&self) -> String {
        let known = match self.known {
            Some(Known::ByAddress) => "known by address",
            Some(Known::ByDeviceToken) => "known by device token",
            None => "unknown",
        };
        let mut text = format!("client {} {known}", self.pair);
        for note in &self.notes {
            text.push_str("; ");
            text.push_str(note);
        }
        text
    }
}

impl Tokens {
    /// The call's client key: its address, or (only when `allow_missing_client_ip` is set)
    /// its API key. A proxy that forgets the address is a bug to surface, not one client
    /// that every user's failures would share.
    pub(super) fn client_key(&self, actor: &Actor) -> Result<ClientKey, DeviceError> {
        if actor.client_ip.is_none() && !self.validation.allow_missing_client_ip {
            return Err(DeviceError::invalid(
                "client_ip",
                "required (the end user's address; see validation.allow_missing_client_ip)",
            ));
        }
        Ok(ClientKey::of(actor.client_ip, &actor.name))
    }

    /// Finds whom the call is charged to and whether its client is known for the user.
    pub(super) async fn client_trust(
        &self,
        actor: &Actor,
        attempt: &PassAttempt,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ClientTrust, DeviceError> {
        let (realm, user) = (&attempt.realm, &attempt.user);
        let known_for = self.validation.known_client_for();
        let address = actor
            .client_ip
            .map(|address| ClientKey::Address(address_key(address)));
        let mut notes = Vec::new();
        if let Some(token) = &attempt.device_token {
            match &self.device_tokens {
                None => notes.push("device token not checked: no key".to_owned()),
                Some(signer) => match signer.verify(token, realm, user, now, known_for) {
                    Err(problem) => notes.push(problem.describe().to_owned()),
                    Ok(verified) => {
                        let pair = ClientKey::Device(verified.id);
                        let state = self.store.pair_state(realm, user, &pair).await?;
                        if state.failures < self.validation.device_token_max_failures.max(1) {
                            return Ok(ClientTrust {
                                pair,
                                address,
                                known: Some(Known::ByDeviceToken),
                                state,
                                notes,
                            });
                        }
                        // OWASP: a device token that fails too often is no longer trusted.
                        notes.push(format!(
                            "device token {pair} distrusted after {} failures",
                            state.failures
                        ));
                    }
                },
            }
        }
        let pair = match &address {
            Some(address) => address.clone(),
            None => ClientKey::of(None, &actor.name),
        };
        let state = self.store.pair_state(realm, user, &pair).await?;
        // An API key stands for every client without an address: never known by itself.
        let known =
            (address.is_some() && state.passed_since(now - known_for)).then_some(Known::ByAddress);
        Ok(ClientTrust {
            pair,
            address,
            known,
            state,
            notes,
        })
    }

    /// Why the call is refused before its pass is checked, if it is: its own pair backing
    /// off, or (unknown clients only) the user's or the realm's failure budget spent.
    pub(super) async fn held_back(
        &self,
        attempt: &PassAttempt,
        trust: &ClientTrust,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, DeviceError> {
        if let Some(until) = trust.state.blocked(now) {
            return Ok(Some(format!(
                "{}: backing off until {until} after {} failures",
                trust.describe(),
                trust.state.failures
            )));
        }
        if trust.known.is_some() {
            return Ok(None);
        }
        for key in [
            BudgetKey::unknown_client_failures(&attempt.realm, &attempt.user),
            BudgetKey::realm_failures(&attempt.realm),
        ] {
            if self.budgets.exhausted(&key, now).await? {
                return Ok(Some(format!("{}: {}", trust.describe(), key.describe())));
            }
        }
        Ok(None)
    }

    /// Spends an unknown client's failure from the user's and the realm's budgets (a known
    /// client's failures only slow its own pair).
    pub(super) async fn charge_failure(
        &self,
        attempt: &PassAttempt,
        trust: &ClientTrust,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), DeviceError> {
        if trust.known.is_some() {
            return Ok(());
        }
        for key in [
            BudgetKey::unknown_client_failures(&attempt.realm, &attempt.user),
            BudgetKey::realm_failures(&attempt.realm),
        ] {
            self.budgets.spend(&key, now).await?;
        }
        Ok(())
    }
}
