//! What the gate decided, counted and audited. A metric per decision; audit events
//! coalesced so that a busy app does not write a row per request: allowed requests once per
//! (user, device, host) and interval with their count, refusals once per (reason, user)
//! and second with their count. Written from a background task, so a slow audit table
//! never slows the door; a record carries no token, cookie or header value.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use enroll_shared::metrics::{Counter, Meters};
use opentelemetry::KeyValue;

use crate::domain::audit::{AuditRecord, DENIED, OK};
use crate::service::ports::AuditLog;

/// The actor name of the gate's own audit events.
pub const GATE_ACTOR: &str = "gate";

/// Keys the coalescing map may hold before it is flushed early (bounds memory under a
/// flood of distinct users).
const MAX_PENDING: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    action: &'static str,
    result: &'static str,
    realm: String,
    user: String,
    subject: String,
    reason: String,
}

struct Pending {
    count: u64,
    trace_id: String,
}

pub struct GateDecisions {
    decisions: Counter,
    pending: Mutex<HashMap<Key, Pending>>,
    audit: Arc<dyn AuditLog>,
}

/// One decision to record.
pub struct Decided<'a> {
    pub action: &'static str,
    pub allowed: bool,
    /// The metric's label: a closed set of codes.
    pub code: &'static str,
    pub realm: &'a str,
    pub user: &'a str,
    /// The device id (allowed) or nothing.
    pub subject: &'a str,
    /// The host (allowed) or the reason (refused): names and codes only.
    pub detail: &'a str,
}

impl GateDecisions {
    pub fn new(meters: &Meters, audit: Arc<dyn AuditLog>) -> Self {
        Self {
            decisions: meters.counter(
                "enroll.device.gate.decisions",
                "Gate decisions by outcome (allowed, or the refusal's code)",
            ),
            pending: Mutex::new(HashMap::new()),
            audit,
        }
    }

    pub fn record(&self, decided: Decided<'_>) {
        let outcome = if decided.allowed {
            "allowed"
        } else {
            decided.code
        };
        self.decisions.add(1, &[KeyValue::new("outcome", outcome)]);
        let key = Key {
            action: decided.action,
            result: if decided.allowed { OK } else { DENIED },
            realm: decided.realm.to_owned(),
            user: decided.user.to_owned(),
            subject: decided.subject.to_owned(),
            reason: if decided.allowed {
                format!("allowed to {}", decided.detail)
            } else {
                format!("{}: {}", decided.code, decided.detail)
            },
        };
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            // A flood of distinct keys: keep the count in the metric, and say in the
            // audit trail that records were summarized away.
            let overflow = Key {
                action: decided.action,
                result: DENIED,
                realm: String::new(),
                user: String::new(),
                subject: String::new(),
                reason: "GATE_AUDIT_OVERFLOW: more distinct decisions than the gate keeps \
                         between flushes; see the enroll.device.gate.decisions metric"
                    .to_owned(),
            };
            pending
                .entry(overflow)
                .or_insert_with(|| Pending {
                    count: 0,
                    trace_id: String::new(),
                })
                .count += 1;
            return;
        }
        pending
            .entry(key)
            .or_insert_with(|| Pending {
                count: 0,
                trace_id: enroll_shared::telemetry::current_trace_id(),
            })
            .count += 1;
    }

    /// Writes what was collected. Refusals every `refusals` tick, allowed decisions every
    /// `allowed` tick.
    pub async fn flush(&self, include_allowed: bool) {
        let drained: Vec<(Key, Pending)> = match self.pending.lock() {
            Ok(mut pending) => {
                let keys: Vec<Key> = pending
                    .keys()
                    .filter(|key| include_allowed || key.result != OK)
                    .cloned()
                    .collect();
                keys.into_iter()
                    .filter_map(|key| pending.remove_entry(&key))
                    .collect()
            }
            Err(_) => return,
        };
        for (key, pending) in drained {
            let reason = if pending.count > 1 {
                format!("{} ({} requests)", key.reason, pending.count)
            } else {
                key.reason
            };
            let record = AuditRecord {
                actor: GATE_ACTOR.to_owned(),
                action: key.action,
                realm: key.realm,
                user: key.user,
                subject: key.subject,
                result: key.result,
                reason,
                trace_id: pending.trace_id,
                time: Utc::now(),
                event: None,
            };
            if let Err(error) = self.audit.record(record).await {
                tracing::warn!(%error, "gate: an audit event could not be written");
            }
        }
    }

    /// Flushes refusals every second and allowed decisions every `allowed_interval`, until
    /// `stop`; then flushes everything.
    pub async fn keep_flushing(
        self: Arc<Self>,
        allowed_interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let every = allowed_interval.as_secs().max(1);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            ticks += 1;
            self.flush(ticks.is_multiple_of(every)).await;
        }
        self.flush(true).await;
    }
}
