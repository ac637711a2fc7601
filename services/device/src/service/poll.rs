//! RFC 8936 poll delivery, for receivers that cannot be reached (behind a firewall): the
//! receiver polls `POST /events/poll/<stream id>` on the page's port with its stream's
//! bearer token, acknowledges what it processed (`ack`) or reports what it could not
//! (`setErrs`), and gets the oldest outstanding security event tokens. An event is sent
//! again, with the same `jti`, until it is acknowledged; acknowledgements may come in any
//! order (`store::poll` keeps them and moves the cursor). Any replica answers: the state is
//! in the database, and polls of one stream are serialized by a lock on its row.
//!
//! A poll with `returnImmediately` false and nothing outstanding waits (at most
//! `events.poll_wait_secs`) for new events: woken when this replica stamps events, and
//! looking every quarter second for those stamped by others or redelivered. At most
//! [`MAX_WAITING`] polls wait at once per replica; beyond, a poll answers at once.
use std::sync::Arc;
use std::time::Duration;

use enroll_shared::metrics::{Counter, Meters};
use enroll_shared::time::SharedClock;
use opentelemetry::KeyValue;
use tokio::sync::{Notify, Semaphore};

use super::streams::{Encoding, EventKeys, EventStreams, StreamSubject, filter_of, sends};
use crate::config::EventsConfig;
use crate::domain::events::EnrollmentEvent;
use crate::error::DeviceError;
use crate::events::caep::{SetContext, security_event_token};
use crate::events::poll::{PollAnswer, PollRequest};
use crate::store::event_entities::event_streams;
use crate::store::poll::{Glance, PollStore, Reports, Round};
use crate::store::streams::DISABLED;

/// Polls waiting for events at once, per replica.
pub const MAX_WAITING: usize = 64;
/// `jti`s one poll may acknowledge or report at most (the body limit bounds them anyway).
pub const MAX_REPORTS: usize = 1_000;
/// The longest receiver's error kept as a dead letter's reason, in characters.
const MAX_REASON: usize = 512;
/// How often a waiting poll looks for events another replica stamped.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Why a poll got no answer.
#[derive(Debug)]
pub enum PollRefusal {
    /// Unknown stream, not a poll stream, or no or a wrong token: one answer for all (401),
    /// so an outsider learns nothing about which streams exist.
    Unauthenticated,
    /// A malformed request (400), with what is wrong (never a token).
    Invalid(String),
    Failed(DeviceError),
}

impl From<DeviceError> for PollRefusal {
    fn from(error: DeviceError) -> Self {
        PollRefusal::Failed(error)
    }
}

#[derive(Clone)]
pub struct EventPoll {
    store: PollStore,
    streams: EventStreams,
    keys: EventKeys,
    stamped: Arc<Notify>,
    config: EventsConfig,
    clock: SharedClock,
    issuer: String,
    deliveries: Counter,
    waiting: Arc<Semaphore>,
}

impl EventPoll {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: PollStore,
        streams: EventStreams,
        stamped: Arc<Notify>,
        config: EventsConfig,
        clock: SharedClock,
        issuer: String,
        meters: &Meters,
    ) -> Self {
        Self {
            store,
            keys: streams.keys().clone(),
            streams,
            stamped,
            config,
            clock,
            issuer,
            // The push worker's counter (same name and description: one instrument), with
            // encoding `caep_poll`: `delivered` when acknowledged, `rejected` on a setErr.
            deliveries: meters.counter(
                "enroll.device.events.deliveries",
                "Event deliveries to streams, by encoding and outcome (delivered, failed, gone)",
            ),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
        }
    }

    /// How long a poll may wait for events (`events.poll_wait_secs`).
    pub fn wait_bound(&self) -> Duration {
        self.config.poll_wait()
    }

    /// The poll stream `stream_id` if `bearer` is one of its tokens (the current one, or the
    /// previous one after a rotation); every other case is the same refusal.
    pub async fn authenticate(
        &self,
        stream_id: &str,
        bearer: Option<&str>,
    ) -> Result<event_streams::Model, PollRefusal> {
        let (Ok(id), Some(bearer)) = (uuid::Uuid::parse_str(stream_id), bearer) else {
            return Err(PollRefusal::Unauthenticated);
        };
        let Some(stream) = self.store.stream(&id.to_string()).await? else {
            return Err(PollRefusal::Unauthenticated);
        };
        if Encoding::parse(&stream.encoding) != Some(Encoding::CaepPoll) {
            return Err(PollRefusal::Unauthenticated);
        }
        // Every token is compared (no early exit), each in constant time.
        let matched = self
            .streams
            .poll_tokens(&stream)?
            .iter()
            .fold(false, |matched, token| token.matches(bearer) | matched);
        if matched {
            Ok(stream)
        } else {
            Err(PollRefusal::Unauthenticated)
        }
    }

    /// Answers one poll of an authenticated `stream`.
    pub async fn poll(
        &self,
        stream: &event_streams::Model,
        request: PollRequest,
    ) -> Result<PollAnswer, PollRefusal> {
        if request.ack.len() + request.set_errs.len() > MAX_REPORTS {
            return Err(PollRefusal::Invalid(format!(
                "at most {MAX_REPORTS} ack and setErrs entries per poll"
            )));
        }
        let max = request
            .max_events
            .map_or(self.config.poll_max_events(), |max| {
                max.min(self.config.poll_max_events())
            });
        let reports = Reports {
            acks: request.ack,
            errors: request
                .set_errs
                .into_iter()
                .map(|(jti, error)| {
                    let reason = format!("receiver error {}: {}", error.err, error.description);
                    (jti, reason.chars().take(MAX_REASON).collect())
                })
                .collect(),
        };
        // maxEvents 0 is an acknowledgement only (RFC 8936 section 2.4): no wait.
        let wait = !request.return_immediately && max > 0;
        // Looked at before the round: what is stamped after it wakes a waiting poll.
        let seen = if wait {
            self.store.glance(&stream.id).await?
        } else {
            None
        };
        let Some(mut round) = self
            .store
            .round(&stream.id, &reports, max, sendable, self.clock.now())
            .await?
        else {
            return Err(PollRefusal::Unauthenticated);
        };
        self.count(round.acknowledged, round.rejected);
        // A disabled stream keeps nothing: no use waiting for it.
        if round.events.is_empty()
            && wait
            && round.stream.status != DISABLED
            && let Ok(_place) = self.waiting.clone().try_acquire_owned()
        {
            round = self.wait(&stream.id, max, seen, round).await?;
        }
        let key = self.keys.current().await?;
        let subject = StreamSubject::parse(&round.stream.subject_format)
            .ok_or_else(|| DeviceError::corrupt("event stream", "subject_format"))?;
        let issued_at = self.clock.now().timestamp();
        let mut answer = PollAnswer {
            sets: Default::default(),
            more_available: round.more,
        };
        for event in &round.events {
            let (subject_format, email_domain) =
                subject.context(&event.realm, self.streams.email_domains());
            let context = SetContext {
                issuer: self.issuer.clone(),
                audience: round.stream.audience.clone(),
                subject_format,
                email_domain,
            };
            let token = security_event_token(event, &context, &key, issued_at)
                .map_err(|problem| DeviceError::corrupt(format!("event {}", event.id), problem))?;
            answer.sets.push((event.id.clone(), token));
        }
        Ok(answer)
    }

    /// Waits (at most `events.poll_wait_secs`) until a round finds events; `seen` is the
    /// stream as it looked before `round`.
    async fn wait(
        &self,
        id: &str,
        max: u64,
        mut seen: Option<Glance>,
        mut round: Round,
    ) -> Result<Round, PollRefusal> {
        let deadline = tokio::time::Instant::now() + self.config.poll_wait();
        while round.events.is_empty() && tokio::time::Instant::now() < deadline {
            // Registered before the look, so a stamp in between is not missed.
            let stamped = self.stamped.notified();
            let now = self.store.glance(id).await?;
            if now.is_none() {
                return Err(PollRefusal::Unauthenticated);
            }
            if now != seen {
                seen = now;
                round = self
                    .store
                    .round(id, &Reports::default(), max, sendable, self.clock.now())
                    .await?
                    .ok_or(PollRefusal::Unauthenticated)?;
                continue;
            }
            tokio::select! {
                _ = stamped => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        Ok(round)
    }

    fn count(&self, acknowledged: u64, rejected: u64) {
        for (count, outcome) in [(acknowledged, "delivered"), (rejected, "rejected")] {
            if count > 0 {
                self.deliveries.add(
                    count,
                    &[
                        KeyValue::new("encoding", Encoding::CaepPoll.as_str()),
                        KeyValue::new("outcome", outcome),
                    ],
                );
            }
        }
    }
}

/// Whether a poll stream sends `event` (the rule every stream follows: [`sends`]).
pub fn sendable(stream: &event_streams::Model, event: &EnrollmentEvent) -> bool {
    sends(stream, Encoding::CaepPoll, &filter_of(stream), event)
}
