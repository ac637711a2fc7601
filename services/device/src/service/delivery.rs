//! Delivery of enrollment events to streams: at least once, in order per stream (so per
//! user too), from any instance holding the stream's lease (one at a time: no double sends
//! in normal operation; another instance takes over when a holder dies and its lease
//! lapses, re-sending at most the event it was on). A failed delivery is retried with
//! exponential back-off and jitter (longer when the receiver sends `Retry-After`), on the
//! service's clock; past `events.dead_letter_after_secs` the event goes to the dead letters,
//! and later events of the same user are held behind it (order per user kept) until they
//! are redelivered. 410 Gone disables the stream. Delivery runs in its own task: a slow or
//! dead receiver never slows a request.
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use enroll_shared::metrics::{Counter, Meters};
use enroll_shared::time::SharedClock;
use futures::StreamExt;
use opentelemetry::KeyValue;
use rand::Rng;
use tokio::sync::watch;

use super::streams::{Encoding, EventKeys, EventStreams, StreamSubject, filter_of, sends};
use crate::config::EventsConfig;
use crate::domain::audit::{AuditRecord, OK};
use crate::domain::events::EnrollmentEvent;
use crate::error::DeviceError;
use crate::events::caep::{SetContext, security_event_token};
use crate::events::receiver::{ReceiverClient, ReceiverUrl};
use crate::events::webhooks;
use crate::store::event_entities::event_streams;
use crate::store::events::EventStore;
use crate::store::streams::{HeldEvent, StreamStore};

/// Events read per stream per batch (the cursor moves once per batch).
const BATCH: u64 = 200;
/// Dead letters redelivered per stream per round at most.
const REDRIVE_ROUND: u64 = 20;

/// What became of one event of a batch.
enum Outcome {
    /// Delivered, or not for this stream.
    Done,
    /// Held behind an earlier dead letter of its user (true: being redelivered).
    Held(bool),
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
    /// After a failure of an earlier event of its user: waits for it.
    NotTried,
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// The receiver said the stream is gone (410).
    Gone(String),
    /// Try again later (at least `retry_after` when the receiver said so).
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
}

#[derive(Clone)]
pub struct Delivery {
    streams: StreamStore,
    admin: EventStreams,
    events: EventStore,
    keys: EventKeys,
    client: ReceiverClient,
    config: EventsConfig,
    clock: SharedClock,
    /// This instance's lease owner name.
    owner: String,
    issuer: String,
    deliveries: Counter,
    /// Each stream's backlog and the age of its oldest undelivered event, as of the last
    /// round (the gauges read this, never the database).
    backlog: std::sync::Arc<std::sync::Mutex<Vec<(String, i64, f64)>>>,
    /// Per stream: events above its cursor this instance delivered while an earlier one of
    /// another user waits for its retry.
    sent_ahead: std::sync::Arc<std::sync::Mutex<HashMap<String, HashSet<i64>>>>,
}

impl Delivery {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        streams: StreamStore,
        admin: EventStreams,
        events: EventStore,
        client: ReceiverClient,
        config: EventsConfig,
        clock: SharedClock,
        issuer: String,
        meters: &Meters,
    ) -> Self {
        let backlog: std::sync::Arc<std::sync::Mutex<Vec<(String, i64, f64)>>> =
            std::sync::Arc::default();
        let read = backlog.clone();
        meters.gauge(
            "enroll.device.events.backlog",
            "{event}",
            "Events not yet delivered to each enabled stream (as of the last delivery round)",
            move || {
                read.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(name, count, _)| {
                        (*count as f64, vec![KeyValue::new("stream", name.clone())])
                    })
                    .collect()
            },
        );
        let read = backlog.clone();
        meters.gauge(
            "enroll.device.events.oldest_undelivered_age",
            "s",
            "Age of the oldest event not yet delivered to each enabled stream",
            move || {
                read.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(name, _, age)| (*age, vec![KeyValue::new("stream", name.clone())]))
                    .collect()
            },
        );
        Self {
            backlog,
            sent_ahead: std::sync::Arc::default(),
            keys: admin.keys().clone(),
            streams,
            admin,
            events,
            client,
            config,
            clock,
            owner: format!("enroll-device-{}", uuid::Uuid::new_v4()),
            issuer,
            deliveries: meters.counter(
                "enroll.device.events.deliveries",
                "Event deliveries to streams, by encoding and outcome (delivered, failed, gone)",
            ),
        }
    }

    /// Delivers every `events.delivery_poll_ms` until `stop` changes.
    pub async fn keep_delivering(self, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.delivery_poll());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.round().await {
                tracing::warn!(%error, "event delivery round failed");
            }
        }
        // Let another instance take over at once.
        if let Ok(streams) = self.streams.list().await {
            for stream in streams {
                let _ = self.streams.release(&stream.id, &self.owner).await;
            }
        }
    }

    /// One round: every enabled stream whose lease this instance holds or can take, the
    /// streams side by side (a slow receiver holds up only its own stream).
    pub async fn round(&self) -> Result<(), DeviceError> {
        let streams = self.streams.list().await?;
        let mut backlog = Vec::new();
        for stream in streams
            .iter()
            .filter(|stream| stream.status == crate::store::streams::ENABLED)
        {
            let (count, oldest) = self.events.pending_after(stream.cursor).await?;
            let age = oldest
                .map(|oldest| (self.clock.now() - oldest).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            backlog.push((stream.name.clone(), count, age));
        }
        *self.backlog.lock().unwrap_or_else(|p| p.into_inner()) = backlog;
        let runs = streams.into_iter().map(|stream| async move {
            if let Err(error) = self.lease_and_run(&stream).await {
                tracing::warn!(%error, stream = %stream.name, "event delivery failed");
            }
        });
        futures::future::join_all(runs).await;
        Ok(())
    }

    /// Takes or renews the stream's lease, then delivers batches while they come full and
    /// go out whole, for at most a third of the lease (then the next round, which renews it).
    async fn lease_and_run(&self, stream: &event_streams::Model) -> Result<(), DeviceError> {
        let lease = chrono::Duration::from_std(self.config.lease()).unwrap_or_default();
        let started = self.clock.now();
        let mut stream = stream.clone();
        loop {
            let now = self.clock.now();
            if !self
                .streams
                .lease(&stream.id, &self.owner, now, now + lease)
                .await?
            {
                self.forget_sent_ahead(&stream.id);
                return Ok(());
            }
            if stream.next_attempt_at.is_some_and(|next| next > now) {
                return Ok(());
            }
            if !self.run(&stream).await? || self.clock.now() - started > lease / 3 {
                return Ok(());
            }
            match self.streams.get(&stream.id).await? {
                Some(fresh) => stream = fresh,
                None => return Ok(()),
            }
        }
    }

    /// Delivers the stream's redelivered dead letters, then a batch of its new events: the
    /// events of different users side by side (at most `events.delivery_concurrency` at
    /// once), each user's in order; the first failure stops new attempts. The cursor then
    /// moves once, past every event before the first one not delivered; events of other
    /// users delivered beyond it are remembered so the retry does not send them twice.
    /// True when a full batch went out whole (more may be waiting).
    async fn run(&self, stream: &event_streams::Model) -> Result<bool, DeviceError> {
        let encoding = Encoding::parse(&stream.encoding)
            .ok_or_else(|| DeviceError::corrupt("event stream", "encoding"))?;
        if encoding == Encoding::CaepPoll {
            // Its receiver polls (service::poll): nothing to push.
            return Ok(false);
        }
        let url = ReceiverUrl::parse(&stream.endpoint, self.config.allow_loopback_http)
            .map_err(|problem| DeviceError::corrupt("event stream endpoint", problem))?;
        let filter = filter_of(stream);
        if !self.redrive(stream, encoding, &url).await? {
            return Ok(false);
        }
        let events = self.events.after(stream.cursor, BATCH).await?;
        if events.is_empty() {
            return Ok(false);
        }
        let full = events.len() as u64 == BATCH;
        let held_subjects = self.streams.held_subjects(&stream.id).await?;
        let sent_ahead = self.sent_ahead(&stream.id, stream.cursor);

        // What each event of the batch comes to, in seq order.
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(events.len());
        let mut to_send: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
        for (index, event) in events.iter().enumerate() {
            let subject = subject_key(event);
            outcomes.push(if !sends(stream, encoding, &filter, event) {
                Outcome::Done
            } else if let Some(redriving) = held_subjects.get(&subject) {
                Outcome::Held(*redriving)
            } else if sent_ahead.contains(&event.seq) {
                Outcome::Done
            } else {
                to_send.push_back(index);
                Outcome::NotTried
            });
        }
        let attempted = self
            .send_side_by_side(stream, encoding, &url, &events, to_send)
            .await;
        let mut gone = None;
        for (index, attempt) in attempted {
            outcomes[index] = match attempt {
                Attempt::Delivered => Outcome::Done,
                Attempt::Gone(error) => {
                    gone = Some(error.clone());
                    Outcome::Failed {
                        error,
                        retry_after: None,
                    }
                }
                Attempt::Failed { error, retry_after } => Outcome::Failed { error, retry_after },
            };
        }
        if let Some(error) = gone {
            self.forget_sent_ahead(&stream.id);
            self.gone(stream, &error).await?;
            return Ok(false);
        }

        // The cursor moves past everything before the first event not delivered.
        let first_open = outcomes
            .iter()
            .position(|outcome| matches!(outcome, Outcome::Failed { .. } | Outcome::NotTried))
            .unwrap_or(outcomes.len());
        if first_open > 0 {
            let held: Vec<HeldEvent> = events[..first_open]
                .iter()
                .zip(&outcomes[..first_open])
                .filter_map(|(event, outcome)| match outcome {
                    Outcome::Held(redrive) => Some(HeldEvent {
                        seq: event.seq,
                        event_id: event.id.clone(),
                        subject_key: subject_key(event),
                        redrive: *redrive,
                    }),
                    _ => None,
                })
                .collect();
            let last = events[first_open - 1].seq;
            if !self
                .streams
                .advance_batch(&stream.id, &self.owner, last, &held, self.clock.now())
                .await?
            {
                // Another instance took the stream over meanwhile.
                self.forget_sent_ahead(&stream.id);
                return Ok(false);
            }
        }
        let ahead: Vec<i64> = events[first_open..]
            .iter()
            .zip(&outcomes[first_open..])
            .filter(|(_, outcome)| matches!(outcome, Outcome::Done))
            .map(|(event, _)| event.seq)
            .collect();
        self.remember_sent_ahead(&stream.id, ahead);
        let Some(Outcome::Failed { error, retry_after }) = outcomes.get(first_open) else {
            return Ok(full);
        };
        let event = &events[first_open];
        let now = self.clock.now();
        let fresh = self.streams.get(&stream.id).await?;
        let current = fresh.as_ref().unwrap_or(stream);
        if self.expired(current, now) {
            self.streams
                .dead_letter(
                    &stream.id,
                    &self.owner,
                    event.seq,
                    &event.id,
                    &subject_key(event),
                    error,
                    current.attempts.saturating_add(1),
                    false,
                    now,
                )
                .await?;
            tracing::warn!(stream = %stream.name, event = %event.id, "event dead-lettered");
        } else {
            self.retry_later(current, now, error, *retry_after).await?;
        }
        Ok(false)
    }

    /// Sends `to_send` (indexes into `events`, in seq order): the oldest event whose user
    /// has none in flight goes next, at most `events.delivery_concurrency` at once, so each
    /// user's events go in order (with a concurrency of 1, exactly the stream's order). The
    /// first failure stops new attempts (those in flight finish): a receiver that is down
    /// gets a few requests per retry, not one per user.
    async fn send_side_by_side(
        &self,
        stream: &event_streams::Model,
        encoding: Encoding,
        url: &ReceiverUrl,
        events: &[EnrollmentEvent],
        mut to_send: std::collections::VecDeque<usize>,
    ) -> Vec<(usize, Attempt)> {
        let mut attempted = Vec::with_capacity(to_send.len());
        let mut busy: HashSet<String> = HashSet::new();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut halted = false;
        loop {
            while !halted && in_flight.len() < self.config.delivery_concurrency() {
                let Some(position) = to_send
                    .iter()
                    .position(|index| !busy.contains(&subject_key(&events[*index])))
                else {
                    break;
                };
                let Some(index) = to_send.remove(position) else {
                    break;
                };
                busy.insert(subject_key(&events[index]));
                in_flight.push(async move {
                    let attempt = self
                        .attempt(stream, encoding, url, &events[index])
                        .await
                        .unwrap_or_else(|error| Attempt::Failed {
                            error: error.to_string(),
                            retry_after: None,
                        });
                    (index, attempt)
                });
            }
            let Some((index, attempt)) = in_flight.next().await else {
                break;
            };
            if matches!(attempt, Attempt::Delivered) {
                busy.remove(&subject_key(&events[index]));
            } else {
                // The user stays busy: its later events wait for this one's retry.
                halted = true;
            }
            attempted.push((index, attempt));
        }
        attempted
    }

    /// Sends the stream's redelivered dead letters, oldest first; false when one failed
    /// (the stream then waits for its retry).
    async fn redrive(
        &self,
        stream: &event_streams::Model,
        encoding: Encoding,
        url: &ReceiverUrl,
    ) -> Result<bool, DeviceError> {
        for letter in self
            .streams
            .dead_letters(&stream.id, 0, REDRIVE_ROUND, true)
            .await?
        {
            let Some(event) = self.events.by_id(&letter.event_id).await? else {
                self.streams.delivered_dead_letter(letter.id).await?;
                continue;
            };
            match self.attempt(stream, encoding, url, &event).await? {
                Attempt::Delivered => self.streams.delivered_dead_letter(letter.id).await?,
                Attempt::Gone(error) => {
                    self.gone(stream, &error).await?;
                    return Ok(false);
                }
                Attempt::Failed { error, retry_after } => {
                    let now = self.clock.now();
                    if self.expired(stream, now) {
                        self.streams.rest_dead_letter(letter.id, &error).await?;
                        self.streams.clear_retry(&stream.id, &self.owner).await?;
                    } else {
                        self.retry_later(stream, now, &error, retry_after).await?;
                    }
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The events above the stream's cursor this instance already delivered (forgetting
    /// those the cursor passed).
    fn sent_ahead(&self, stream_id: &str, cursor: i64) -> HashSet<i64> {
        let mut all = self.sent_ahead.lock().unwrap_or_else(|p| p.into_inner());
        let Some(seqs) = all.get_mut(stream_id) else {
            return HashSet::new();
        };
        seqs.retain(|seq| *seq > cursor);
        seqs.clone()
    }

    fn remember_sent_ahead(&self, stream_id: &str, seqs: Vec<i64>) {
        let mut all = self.sent_ahead.lock().unwrap_or_else(|p| p.into_inner());
        if seqs.is_empty() && !all.contains_key(stream_id) {
            return;
        }
        all.entry(stream_id.to_owned()).or_default().extend(seqs);
    }

    /// After losing a lease: the next holder decides what goes out.
    fn forget_sent_ahead(&self, stream_id: &str) {
        self.sent_ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(stream_id);
    }

    /// Whether the stream has retried its current event past the dead-letter time.
    fn expired(&self, stream: &event_streams::Model, now: DateTime<Utc>) -> bool {
        let limit = chrono::Duration::from_std(self.config.dead_letter_after()).unwrap_or_default();
        stream
            .first_failure_at
            .is_some_and(|first| now - first >= limit)
    }

    async fn retry_later(
        &self,
        stream: &event_streams::Model,
        now: DateTime<Utc>,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), DeviceError> {
        let delay = backoff(
            self.config.retry_base(),
            self.config.retry_max(),
            u32::try_from(stream.attempts).unwrap_or(0),
            retry_after,
            rand::rng().random_range(0.5..=1.0),
        );
        let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
        self.streams
            .failed(&stream.id, &self.owner, now, next, error)
            .await
    }

    async fn gone(&self, stream: &event_streams::Model, error: &str) -> Result<(), DeviceError> {
        let audit = AuditRecord {
            actor: "enroll-device".to_owned(),
            action: "disable_event_stream",
            realm: String::new(),
            user: String::new(),
            subject: stream.id.clone(),
            result: OK,
            reason: format!(
                "the receiver answered 410 Gone: stream `{}` disabled",
                stream.name
            ),
            trace_id: String::new(),
            time: self.clock.now(),
            event: None,
        };
        tracing::warn!(stream = %stream.name, "receiver gone (410): stream disabled");
        self.streams.gone(&stream.id, error, audit).await
    }

    /// One delivery of `event`.
    async fn attempt(
        &self,
        stream: &event_streams::Model,
        encoding: Encoding,
        url: &ReceiverUrl,
        event: &EnrollmentEvent,
    ) -> Result<Attempt, DeviceError> {
        let now = self.clock.now().timestamp();
        let (headers, content_type, body) = match encoding {
            Encoding::Webhook => {
                let secrets = self.admin.secrets(stream)?;
                let body = webhooks::body(event);
                let headers: Vec<(&str, String)> =
                    webhooks::headers(&secrets, &event.id, now, &body);
                (headers, "application/json", body)
            }
            Encoding::CaepPush | Encoding::CaepPoll => {
                let key = self.keys.current().await?;
                let subject = StreamSubject::parse(&stream.subject_format)
                    .ok_or_else(|| DeviceError::corrupt("event stream", "subject_format"))?;
                let (subject_format, email_domain) =
                    subject.context(&event.realm, self.admin.email_domains());
                let context = SetContext {
                    issuer: self.issuer.clone(),
                    audience: stream.audience.clone(),
                    subject_format,
                    email_domain,
                };
                let token =
                    security_event_token(event, &context, &key, now).map_err(|problem| {
                        DeviceError::corrupt(format!("event {}", event.id), problem)
                    })?;
                (Vec::new(), "application/secevent+jwt", token.into_bytes())
            }
        };
        let answer = self
            .client
            .post(
                url,
                &headers,
                content_type,
                body,
                self.config.delivery_timeout(),
            )
            .await;
        let outcome = match answer {
            Ok(delivered) if delivered.is_success() => Attempt::Delivered,
            Ok(delivered) if delivered.status == 410 => {
                Attempt::Gone(format!("410: {}", delivered.body_snippet))
            }
            Ok(delivered) => Attempt::Failed {
                error: format!("{}: {}", delivered.status, delivered.body_snippet),
                retry_after: delivered.retry_after,
            },
            Err(error) => Attempt::Failed {
                error: error.to_string(),
                retry_after: None,
            },
        };
        let label = match &outcome {
            Attempt::Delivered => "delivered",
            Attempt::Gone(_) => "gone",
            Attempt::Failed { .. } => "failed",
        };
        self.deliveries.add(
            1,
            &[
                KeyValue::new("encoding", encoding.as_str()),
                KeyValue::new("outcome", label),
            ],
        );
        Ok(outcome)
    }
}

/// Per-user order: events of one realm and user.
fn subject_key(event: &EnrollmentEvent) -> String {
    format!("{}/{}", event.realm, event.user)
}

/// The delay before retry number `attempts + 1`: `base` doubled per attempt up to `max`,
/// scaled by `jitter` (0.5..=1), and never shorter than the receiver's `Retry-After`.
pub fn backoff(
    base: Duration,
    max: Duration,
    attempts: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exponential = base
        .checked_mul(1u32.checked_shl(attempts.min(30)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let jittered = exponential.mul_f64(jitter.clamp(0.5, 1.0));
    retry_after.map_or(jittered, |asked| {
        jittered.max(asked.min(Duration::from_secs(86_400)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_the_cap_with_jitter_and_honours_retry_after() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(backoff(base, max, 0, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(base, max, 3, None, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(base, max, 3, None, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(base, max, 20, None, 1.0), max);
        assert_eq!(backoff(base, max, 64, None, 1.0), max);
        assert_eq!(
            backoff(base, max, 0, Some(Duration::from_secs(120)), 1.0),
            Duration::from_secs(120)
        );
        // A receiver cannot park a stream for more than a day.
        assert_eq!(
            backoff(base, max, 0, Some(Duration::from_secs(10_000_000)), 1.0),
            Duration::from_secs(86_400)
        );
    }
}
