//! The policy-event relay's writes: its cursor (`policy_event_relay`, m0017) and the
//! `policy.*` events it copies from the policy service's history into the outbox. Events
//! carry the change's stable id and are inserted `ON CONFLICT (event_id) DO NOTHING` (the
//! unique index of m0015), so two replicas relaying the same change write one event; the
//! cursor moves in the transaction that writes them, so a crash between the two cannot
//! skip a change.
use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, EntityTrait, TransactionTrait,
};

use super::event_entities::enrollment_events;
use super::events::Payload;
use super::sql::statement;
use crate::domain::events::{CredentialFacts, EventKind, InitiatingEntity};
use crate::domain::policy_events::PolicyHistoryEntry;
use crate::error::DeviceError;

#[derive(Clone)]
pub struct PolicyRelayStore {
    db: DatabaseConnection,
}

impl PolicyRelayStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The last history id relayed; None until a replica first reached the policy service.
    pub async fn cursor(&self) -> Result<Option<i64>, DeviceError> {
        let backend = self.db.get_database_backend();
        Ok(self
            .db
            .query_one_raw(statement(
                backend,
                "SELECT last_history_id FROM policy_event_relay WHERE id = 1",
                vec![],
            ))
            .await?
            .map(|row| row.try_get_by_index::<i64>(0))
            .transpose()?)
    }

    /// Starts the relay after history id `newest` unless a replica started it already;
    /// returns the cursor that stands.
    pub async fn start_at(&self, newest: i64, now: DateTime<Utc>) -> Result<i64, DeviceError> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(statement(
                backend,
                "INSERT INTO policy_event_relay (id, last_history_id, update_time) \
                 VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
                vec![newest.into(), now.into()],
            ))
            .await?;
        self.cursor()
            .await?
            .ok_or_else(|| DeviceError::corrupt("policy_event_relay", "the cursor row is missing"))
    }

    /// Writes the events of `changes` (oldest first, all after the cursor) and moves the
    /// cursor to the last one, in one transaction; returns how many events were written
    /// (0 when another replica relayed them first).
    pub async fn relay(
        &self,
        changes: &[PolicyHistoryEntry],
        now: DateTime<Utc>,
    ) -> Result<u64, DeviceError> {
        let Some(last) = changes.last().map(|change| change.facts.history_id) else {
            return Ok(0);
        };
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        // The cursor first: a write, so SQLite takes its write lock at once, and on
        // PostgreSQL the row lock makes a second replica wait, then find the cursor moved.
        let moved = transaction
            .execute_raw(statement(
                backend,
                "UPDATE policy_event_relay SET last_history_id = $1, update_time = $2 \
                 WHERE id = 1 AND last_history_id < $3",
                vec![last.into(), now.into(), last.into()],
            ))
            .await?
            .rows_affected();
        if moved == 0 {
            // Another replica is past these changes (or the cursor is not started yet).
            transaction.rollback().await?;
            return Ok(0);
        }
        let mut written = 0;
        for change in changes {
            let Some(row) = row(change) else {
                tracing::warn!(
                    history_id = change.facts.history_id,
                    change = %change.facts.change,
                    "policy change of an unknown kind: not relayed"
                );
                continue;
            };
            // A change relayed before (the cursor moved back by a restore, or a replica
            // that read it before the cursor moved) keeps its one event.
            written += enrollment_events::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(enrollment_events::Column::EventId)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(written)
    }
}

/// The outbox row of one change: no realm and no user (a policy may span realms; see
/// docs/events.md for how filters treat it), the policy's name as the subject, the change's
/// actor and time.
fn row(change: &PolicyHistoryEntry) -> Option<enrollment_events::ActiveModel> {
    let kind = EventKind::of_policy_change(&change.facts.change)?;
    let payload = Payload {
        actor: change.actor.clone(),
        // Policies are changed through admin API keys (or the demo seed, also an operator).
        initiating_entity: InitiatingEntity::Admin,
        reason: format!("policy {} ({})", change.facts.change, change.facts.name),
        credential: CredentialFacts::default(),
        trace_id: String::new(),
        policy: Some(change.facts.clone()),
        state: None,
    };
    Some(enrollment_events::ActiveModel {
        event_id: Set(change.event_id.clone()),
        event_type: Set(kind.as_str().to_owned()),
        realm: Set(String::new()),
        user_name: Set(String::new()),
        subject: Set(change.facts.name.clone()),
        occurred_at: Set(change.change_time),
        // Plain data: serializing it cannot fail.
        payload: Set(serde_json::to_string(&payload).unwrap_or_default()),
        ..Default::default()
    })
}
