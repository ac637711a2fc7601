//! Retention: every replica deletes, every `retention.interval_secs`, the audit events older
//! than `retention.audit_days` and the outbox events older than `retention.events_days`
//! that no stream needs any more (`store::retention` says which), in batches of
//! `retention.batch_size`, pausing `retention.batch_pause_ms` between them so a long purge
//! never holds locks for long or slows requests. Ages are on the service's clock. A run
//! that deleted something writes one audit event (`retention_purge`, with the counts),
//! after its deletes: never purged by the run that wrote it.
use enroll_shared::metrics::{Counter, Meters};
use enroll_shared::time::SharedClock;
use opentelemetry::KeyValue;
use tokio::sync::watch;

use crate::config::RetentionConfig;
use crate::domain::audit::{AuditRecord, OK};
use crate::error::DeviceError;
use crate::store::audit::AuditStore;
use crate::store::retention::RetentionStore;

/// The audit action of a run that deleted rows.
pub const PURGE_ACTION: &str = "retention_purge";

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub audit_events: u64,
    pub enrollment_events: u64,
    /// Batches that deleted rows (each its own short transaction).
    pub batches: u64,
}

#[derive(Clone)]
pub struct RetentionPurge {
    store: RetentionStore,
    audit: AuditStore,
    config: RetentionConfig,
    clock: SharedClock,
    deleted: Counter,
    batches: Counter,
}

impl RetentionPurge {
    pub fn new(
        store: RetentionStore,
        audit: AuditStore,
        config: RetentionConfig,
        clock: SharedClock,
        meters: &Meters,
    ) -> Self {
        Self {
            store,
            audit,
            config,
            clock,
            deleted: meters.counter(
                "enroll.device.retention.deleted",
                "Rows deleted by the retention purge, by table (audit_events, enrollment_events)",
            ),
            batches: meters.counter(
                "enroll.device.retention.batches",
                "Batches (one transaction each) of the retention purge that deleted rows, by table",
            ),
        }
    }

    /// Purges every `retention.interval_secs` (the first run at once) until `stop` changes.
    pub async fn keep_purging(self, mut stop: watch::Receiver<bool>) {
        if self.config.audit_age().is_none() && self.config.events_age().is_none() {
            return;
        }
        let mut ticker = tokio::time::interval(self.config.interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
            }
            match self.run(Some(&mut stop)).await {
                Ok(purged) if purged.batches > 0 => tracing::info!(
                    audit_events = purged.audit_events,
                    enrollment_events = purged.enrollment_events,
                    batches = purged.batches,
                    "retention purge"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "retention purge failed"),
            }
        }
    }

    /// One run to the end (tests, and `keep_purging`'s rounds).
    pub async fn run_once(&self) -> Result<Purged, DeviceError> {
        self.run(None).await
    }

    async fn run(
        &self,
        mut stop: Option<&mut watch::Receiver<bool>>,
    ) -> Result<Purged, DeviceError> {
        let now = self.clock.now();
        let limit = self.config.batch_size();
        let mut purged = Purged::default();
        let audit_before = self.config.audit_age().map(|age| now - age);
        let events_before = self.config.events_age().map(|age| now - age);
        if let Some(before) = audit_before {
            let mut after = 0;
            loop {
                let batch = self.store.purge_audit(before, after, limit).await?;
                self.count("audit_events", batch.deleted, &mut purged);
                purged.audit_events += batch.deleted;
                after = batch.next;
                if !batch.more || !self.pause(&mut stop).await {
                    break;
                }
            }
        }
        if let Some(before) = events_before {
            let released = self.store.purge_released(before, limit).await?;
            self.count("enrollment_events", released, &mut purged);
            purged.enrollment_events += released;
            loop {
                let batch = self.store.purge_events(before, limit, now).await?;
                self.count("enrollment_events", batch.deleted, &mut purged);
                purged.enrollment_events += batch.deleted;
                if !batch.more || !self.pause(&mut stop).await {
                    break;
                }
            }
        }
        if purged.audit_events + purged.enrollment_events > 0 {
            let mut reason = format!(
                "deleted {} audit events and {} enrollment events in {} batches",
                purged.audit_events, purged.enrollment_events, purged.batches
            );
            if let Some(before) = audit_before {
                reason.push_str(&format!("; audit before {}", before.to_rfc3339()));
            }
            if let Some(before) = events_before {
                reason.push_str(&format!("; events before {}", before.to_rfc3339()));
            }
            self.audit
                .record(AuditRecord {
                    actor: "enroll-device".to_owned(),
                    action: PURGE_ACTION,
                    realm: String::new(),
                    user: String::new(),
                    subject: "retention".to_owned(),
                    result: OK,
                    reason,
                    trace_id: String::new(),
                    time: self.clock.now(),
                    event: None,
                })
                .await?;
        }
        Ok(purged)
    }

    fn count(&self, table: &'static str, deleted: u64, purged: &mut Purged) {
        if deleted == 0 {
            return;
        }
        purged.batches += 1;
        let labels = [KeyValue::new("table", table)];
        self.deleted.add(deleted, &labels);
        self.batches.add(1, &labels);
    }

    /// The pause between two batches; false when `stop` changed meanwhile.
    async fn pause(&self, stop: &mut Option<&mut watch::Receiver<bool>>) -> bool {
        let pause = tokio::time::sleep(self.config.batch_pause());
        match stop {
            Some(stop) => tokio::select! {
                _ = stop.changed() => false,
                _ = pause => true,
            },
            None => {
                pause.await;
                true
            }
        }
    }
}
