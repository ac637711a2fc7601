//! The enrollment-event feed: the stamper that orders committed events, and
//! WatchEnrollmentEvents' streams (a bounded buffer per stream, so a slow reader holds its
//! reader task, never the writers; a bounded number of streams).
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::config::EventsConfig;
use crate::domain::events::{EnrollmentEvent, EventKind};
use crate::error::DeviceError;
use crate::store::events::EventStore;

/// Events read per query by a watch stream.
const READ_BATCH: u64 = 100;

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Empty: every type.
    pub types: Vec<EventKind>,
    /// Empty: every realm.
    pub realms: Vec<String>,
}

impl EventFilter {
    pub fn matches(&self, event: &EnrollmentEvent) -> bool {
        (self.types.is_empty() || self.types.contains(&event.kind))
            && (self.realms.is_empty() || self.realms.contains(&event.realm))
    }
}

/// OUT_OF_RANGE for a reader at `after_seq` when the retention purge went past it to
/// `purged` (events.md: "How long events are kept").
fn purged_after(after_seq: i64, purged: i64) -> DeviceError {
    DeviceError::OutOfRange {
        field: "after_seq",
        message: format!(
            "events after seq {after_seq} were deleted by retention (retention.events_days): \
             the first kept is seq {}; resume with after_seq {purged} (or 0: from the first \
             kept) and reconcile what changed in between from the current state",
            purged + 1
        ),
        first_kept: purged + 1,
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// After this `seq` (0: from the first event kept; below the retention mark:
    /// OUT_OF_RANGE).
    After(i64),
    /// With the events stamped from now on.
    Now,
}

#[derive(Clone)]
pub struct EventFeed {
    store: EventStore,
    config: EventsConfig,
    clock: enroll_shared::time::SharedClock,
    watchers: Arc<Semaphore>,
    /// Woken when this instance stamps events (others' are seen by polling).
    stamped: Arc<Notify>,
}

impl EventFeed {
    pub fn new(
        store: EventStore,
        config: EventsConfig,
        clock: enroll_shared::time::SharedClock,
    ) -> Self {
        Self {
            watchers: Arc::new(Semaphore::new(config.max_watchers())),
            store,
            config,
            clock,
            stamped: Arc::default(),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Woken when this instance stamps events (RFC 8936 long polls wait on it).
    pub fn stamped(&self) -> Arc<Notify> {
        self.stamped.clone()
    }

    /// Stamps committed events every `events.stamp_interval_ms`, and writes the expiries of
    /// unused links every `events.expiry_scan_secs`, until `stop` changes.
    pub async fn keep_stamping(self, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.stamp_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expiries = tokio::time::interval(self.config.expiry_scan());
        expiries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = expiries.tick() => {
                    match self.store.record_expiries(self.clock.now()).await {
                        Ok(0) => {}
                        Ok(count) => tracing::info!(count, "expired enrollment links recorded"),
                        Err(error) => tracing::warn!(%error, "recording expired links failed"),
                    }
                    continue;
                }
                _ = ticker.tick() => {}
            }
            match self.store.stamp().await {
                Ok(0) => {}
                Ok(_) => self.stamped.notify_waiters(),
                Err(error) => tracing::warn!(%error, "stamping enrollment events failed"),
            }
        }
    }

    /// A stream of the events after `start` that pass `filter`, or RESOURCE_EXHAUSTED
    /// when `events.max_watchers` streams are open.
    pub async fn watch(
        &self,
        start: WatchStart,
        filter: EventFilter,
    ) -> Result<
        impl Stream<Item = Result<EnrollmentEvent, DeviceError>> + Send + 'static,
        DeviceError,
    > {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            DeviceError::RateLimited(format!(
                "{} WatchEnrollmentEvents streams are open (events.max_watchers): retry later",
                self.config.max_watchers()
            ))
        })?;
        let cursor = match start {
            // From the first event kept.
            WatchStart::After(0) => self.store.purged_through().await?,
            WatchStart::After(seq) => {
                let purged = self.store.purged_through().await?;
                if seq < purged {
                    return Err(purged_after(seq, purged));
                }
                seq
            }
            WatchStart::Now => self.store.last_seq().await?,
        };
        let (sender, receiver) = mpsc::channel(self.config.watch_buffer());
        tokio::spawn(self.clone().feed(cursor, filter, sender, permit));
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }

    /// Sends events after `cursor` until the reader goes away; `_permit` is the stream's
    /// place among the watchers.
    async fn feed(
        self,
        mut cursor: i64,
        filter: EventFilter,
        sender: mpsc::Sender<Result<EnrollmentEvent, DeviceError>>,
        _permit: OwnedSemaphorePermit,
    ) {
        loop {
            // Registered before the read, so a stamp between the read and the wait is not
            // missed.
            let stamped = self.stamped.notified();
            let batch = match self.store.after(cursor, READ_BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let full = batch.len() as u64 == READ_BATCH;
            for event in batch {
                // `seq` is dense: a gap is events the retention purge deleted while this
                // reader was behind it. Said, never skipped.
                if event.seq != cursor + 1 {
                    match self.store.purged_through().await {
                        Ok(purged) if cursor < purged => {
                            let _ = sender.send(Err(purged_after(cursor, purged))).await;
                            return;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return;
                        }
                    }
                }
                cursor = event.seq;
                // A stream's verification event is that stream's business, not a change
                // of enrollment state: watchers never see it.
                if crate::domain::events::for_stream_only(&event).is_some() {
                    continue;
                }
                if filter.matches(&event) && sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = stamped => {}
                _ = tokio::time::sleep(self.config.stamp_interval()) => {}
                _ = sender.closed() => return,
            }
        }
    }
}
