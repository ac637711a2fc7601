//! Audit events: what was done or refused, by whom, to what, and why. Never a secret: reasons
//! are built from names and codes.
use chrono::{DateTime, Utc};

use super::actor::Actor;
use super::names::{Realm, UserName};

/// The result an audit event records.
pub const OK: &str = "ok";
pub const DENIED: &str = "denied";

/// One audit record, written in the transaction of the change it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub actor: String,
    pub action: &'static str,
    pub realm: String,
    pub user: String,
    pub subject: String,
    pub result: &'static str,
    pub reason: String,
    pub trace_id: String,
    pub time: DateTime<Utc>,
    /// The enrollment event a refusal is (an `ok` record's event follows from its action:
    /// `EventKind::of_action`).
    pub event: Option<crate::domain::events::EventKind>,
}

impl AuditRecord {
    /// `actor` doing `action` at `time`, result ok until denied; the trace id is the
    /// current span's.
    pub fn new(
        actor: &Actor,
        action: &'static str,
        realm: &Realm,
        user: Option<&UserName>,
        subject: &str,
        time: DateTime<Utc>,
    ) -> Self {
        Self {
            actor: actor.name.clone(),
            action,
            realm: realm.to_string(),
            user: user.map(ToString::to_string).unwrap_or_default(),
            subject: subject.to_owned(),
            result: OK,
            reason: String::new(),
            trace_id: enroll_shared::telemetry::current_trace_id(),
            time,
            event: None,
        }
    }

    /// The same record, as a refusal for `reason`.
    pub fn denied(mut self, reason: impl Into<String>) -> Self {
        self.result = DENIED;
        self.reason = reason.into();
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The same record, also the enrollment event `kind` (a refusal that is one).
    pub fn with_event(mut self, kind: crate::domain::events::EventKind) -> Self {
        self.event = Some(kind);
        self
    }

    /// The enrollment event this record is, if any.
    /// An explicit event counts when the record is `ok`, or when the event is itself a
    /// refusal (a failed enrollment, a refused authentication).
    pub fn event_kind(&self) -> Option<crate::domain::events::EventKind> {
        match self.event {
            Some(kind) if self.result == OK || kind.is_refusal() => Some(kind),
            Some(_) => None,
            None => crate::domain::events::EventKind::of_action(self.action, self.result == OK),
        }
    }
}

/// A stored audit event as ListAuditEvents shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub realm: String,
    pub user: String,
    pub subject: String,
    pub result: String,
    pub reason: String,
    pub trace_id: String,
}

/// Filters of ListAuditEvents (names already folded like stored names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub realm: Option<String>,
    pub user: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    pub result: Option<String>,
}
