//! Outgoing event streams: the admin use cases (create, list, pause, resume, disable,
//! change the filter, delete, rotate a webhook secret, list and redeliver dead letters) and
//! the security event tokens' signing keys (made on first use, rotated with both keys
//! published during the overlap).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use enroll_shared::time::SharedClock;

use crate::domain::actor::Actor;
use crate::domain::events::{EnrollmentEvent, EventKind, for_stream_only};
use crate::domain::secrets::SeedCipher;
use crate::error::DeviceError;
use crate::events::caep::SubjectFormat;
use crate::events::poll::PollToken;
use crate::events::receiver::{ReceiverUrl, vet};
use crate::events::signing::{SigningAlgorithm, SigningKey, jwks};
use crate::events::webhooks::WebhookSecret;
use crate::service::events::EventFilter;
use crate::store::event_entities::{event_signing_keys, event_streams};
use crate::store::events::EventStore;
use crate::store::streams::{DISABLED, ENABLED, PAUSED, StreamStore};

/// How long signing keys are cached in memory.
const KEY_CACHE: Duration = Duration::from_secs(5);
/// The previous key stays published this long after a rotation, unless told otherwise.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3_600);

/// How a stream's events are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    CaepPush,
    Webhook,
    /// CAEP security event tokens the receiver fetches (RFC 8936 poll delivery).
    CaepPoll,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::CaepPush => "caep_push",
            Encoding::Webhook => "webhook",
            Encoding::CaepPoll => "caep_poll",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "caep_push" => Some(Encoding::CaepPush),
            "webhook" => Some(Encoding::Webhook),
            "caep_poll" => Some(Encoding::CaepPoll),
            _ => None,
        }
    }
}

/// Whether `stream` (of `encoding`, with `filter`) sends `event` at all, pushed or polled:
/// a verification event only to the stream it is for; any other by the filter, and on a
/// CAEP stream only a credential event with a user (what a security event token can say).
pub fn sends(
    stream: &event_streams::Model,
    encoding: Encoding,
    filter: &EventFilter,
    event: &EnrollmentEvent,
) -> bool {
    if let Some(only) = for_stream_only(event) {
        return only == stream.id;
    }
    filter.matches(event)
        && (encoding == Encoding::Webhook
            || (event.kind.caep_change_type().is_some() && !event.user.is_empty()))
}

/// A stream's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Enabled,
    Paused,
    Disabled,
}

impl StreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Enabled => ENABLED,
            StreamStatus::Paused => PAUSED,
            StreamStatus::Disabled => DISABLED,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            ENABLED => Some(StreamStatus::Enabled),
            PAUSED => Some(StreamStatus::Paused),
            DISABLED => Some(StreamStatus::Disabled),
            _ => None,
        }
    }
}

/// How a CAEP stream names the user in `sub_id` (RFC 9493 subject identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamSubject {
    /// `iss_sub` with `<realm>/<user>` (the default).
    #[default]
    IssSub,
    /// `opaque` with `<realm>/<user>`.
    Opaque,
    /// `email` with the user's address in realms that `events.realm_email_domains` maps to
    /// a mail domain; `iss_sub` in the others (a receiver is never sent a made-up address).
    Email,
}

impl StreamSubject {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamSubject::IssSub => "iss_sub",
            StreamSubject::Opaque => "opaque",
            StreamSubject::Email => "email",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "iss_sub" => Some(StreamSubject::IssSub),
            "opaque" => Some(StreamSubject::Opaque),
            "email" => Some(StreamSubject::Email),
            _ => None,
        }
    }

    /// The token builder's subject settings for an event of `realm`.
    pub fn context(
        self,
        realm: &str,
        email_domains: &std::collections::BTreeMap<String, String>,
    ) -> (SubjectFormat, Option<String>) {
        match self {
            StreamSubject::IssSub => (SubjectFormat::IssSub, None),
            StreamSubject::Opaque => (SubjectFormat::Opaque, None),
            StreamSubject::Email => (
                SubjectFormat::IssSub,
                email_domains.get(&realm.to_ascii_lowercase()).cloned(),
            ),
        }
    }
}

/// A validated CreateEventStream request.
#[derive(Debug, Clone)]
pub struct NewStream {
    pub name: String,
    pub encoding: Encoding,
    pub endpoint: String,
    pub audience: String,
    pub subject: StreamSubject,
    pub filter: EventFilter,
    pub from_beginning: bool,
    pub created_by: String,
}

/// A stream as admins see it (never a secret).
#[derive(Debug, Clone)]
pub struct StreamView {
    pub id: String,
    pub name: String,
    pub encoding: Encoding,
    pub endpoint: String,
    pub audience: String,
    pub subject: StreamSubject,
    pub filter: EventFilter,
    pub status: StreamStatus,
    pub cursor: i64,
    pub backlog: i64,
    pub attempts: u32,
    pub next_attempt_time: Option<DateTime<Utc>>,
    pub last_error: String,
    pub dead_letters: i64,
    pub created_by: String,
    pub create_time: DateTime<Utc>,
}

/// A change of a stream.
#[derive(Debug, Clone, Default)]
pub struct StreamChange {
    pub status: Option<StreamStatus>,
    pub filter: Option<EventFilter>,
    pub changed_by: String,
}

/// A dead letter with its event.
#[derive(Debug, Clone)]
pub struct DeadLetterView {
    pub event: EnrollmentEvent,
    pub reason: String,
    pub attempts: u32,
    pub dead_time: DateTime<Utc>,
    pub redelivering: bool,
}

/// The filter as stored: comma lists.
pub fn filter_of(row: &event_streams::Model) -> EventFilter {
    EventFilter {
        types: row
            .event_types
            .split(',')
            .filter_map(|name| EventKind::parse(name.trim()))
            .collect(),
        realms: row
            .realms
            .split(',')
            .filter(|realm| !realm.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

fn store_filter(row: &mut event_streams::Model, filter: &EventFilter) {
    row.event_types = filter
        .types
        .iter()
        .map(|kind| kind.as_str())
        .collect::<Vec<_>>()
        .join(",");
    row.realms = filter.realms.join(",");
}

/// The context a stream's secrets are sealed under.
fn secret_context(id: &str) -> String {
    format!("event-stream:{id}")
}

/// The published keys and when they were read.
type CachedKeys = (std::time::Instant, Vec<SigningKey>);

/// The security event tokens' signing keys.
#[derive(Clone)]
pub struct EventKeys {
    store: StreamStore,
    cipher: Option<Arc<SeedCipher>>,
    clock: SharedClock,
    cache: Arc<Mutex<Option<CachedKeys>>>,
}

impl EventKeys {
    pub fn new(store: StreamStore, cipher: Option<Arc<SeedCipher>>, clock: SharedClock) -> Self {
        Self {
            store,
            cipher,
            clock,
            cache: Arc::default(),
        }
    }

    fn cipher(&self) -> Result<&SeedCipher, DeviceError> {
        self.cipher.as_deref().ok_or_else(|| {
            DeviceError::FailedPrecondition(
                "event signing keys cannot be stored: configure secrets.seed_keys and secrets.active_seed_key".to_owned(),
            )
        })
    }

    /// The published keys, newest (the signing one) first; the first key is made (ES256)
    /// when there is none.
    pub async fn published(&self) -> Result<Vec<SigningKey>, DeviceError> {
        if let Some((at, keys)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && at.elapsed() < KEY_CACHE
        {
            return Ok(keys.clone());
        }
        let now = self.clock.now();
        let mut rows = self.store.signing_keys(now).await?;
        if rows.is_empty() {
            self.add(SigningAlgorithm::Es256, None, None).await?;
            rows = self.store.signing_keys(now).await?;
        }
        let cipher = self.cipher()?;
        let keys = rows
            .iter()
            .map(|row| {
                let alg = SigningAlgorithm::parse(&row.algorithm)
                    .ok_or_else(|| DeviceError::corrupt("event signing key", "algorithm"))?;
                let der = cipher
                    .decrypt(&row.seed_key_id, &row.sealed_key, &row.kid)
                    .map_err(|error| {
                        DeviceError::corrupt("event signing key", error.to_string())
                    })?;
                SigningKey::from_pkcs8(row.kid.clone(), alg, &der)
                    .map_err(|error| DeviceError::corrupt("event signing key", error))
            })
            .collect::<Result<Vec<_>, _>>()?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// The key new tokens are signed with.
    pub async fn current(&self) -> Result<SigningKey, DeviceError> {
        self.published()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| DeviceError::Unavailable("no event signing key".to_owned()))
    }

    /// The published key set (public keys only).
    pub async fn jwks(&self) -> Result<serde_json::Value, DeviceError> {
        Ok(jwks(&self.published().await?))
    }

    /// A new signing key. A rotation (`overlap` and its audit record) keeps the previous
    /// keys published for `overlap`; the first key (None) retires nothing.
    pub async fn add(
        &self,
        algorithm: SigningAlgorithm,
        rsa_pkcs8: Option<&[u8]>,
        rotation: Option<(Duration, crate::domain::audit::AuditRecord)>,
    ) -> Result<String, DeviceError> {
        let now = self.clock.now();
        let kid = format!(
            "{}-{}",
            now.format("%Y%m%d"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (key, der) = match (algorithm, rsa_pkcs8) {
            (SigningAlgorithm::Es256, None) => {
                SigningKey::generate_es256(kid.clone()).map_err(DeviceError::Unavailable)?
            }
            (SigningAlgorithm::Rs256, Some(der)) => (
                SigningKey::from_pkcs8(kid.clone(), algorithm, der)
                    .map_err(|error| DeviceError::invalid("rsa_pkcs8_der", error))?,
                der.to_vec(),
            ),
            (SigningAlgorithm::Rs256, None) => {
                return Err(DeviceError::invalid(
                    "rsa_pkcs8_der",
                    "required for RS256 (the service cannot make RSA keys)",
                ));
            }
            (SigningAlgorithm::Es256, Some(_)) => {
                return Err(DeviceError::invalid(
                    "rsa_pkcs8_der",
                    "only with algorithm RS256",
                ));
            }
        };
        let (seed_key_id, sealed_key) = self
            .cipher()?
            .encrypt(&der, key.kid())
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        let retire = rotation
            .map(|(overlap, audit)| {
                chrono::Duration::from_std(overlap)
                    .map(|overlap| (now + overlap, audit))
                    .map_err(|_| DeviceError::invalid("overlap", "too long"))
            })
            .transpose()?;
        self.store
            .add_signing_key(
                event_signing_keys::Model {
                    kid: kid.clone(),
                    algorithm: algorithm.as_str().to_owned(),
                    seed_key_id,
                    sealed_key,
                    create_time: now,
                    retire_time: None,
                },
                retire,
            )
            .await?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(kid)
    }
}

/// The stream admin use cases.
#[derive(Clone)]
pub struct EventStreams {
    store: StreamStore,
    events: EventStore,
    keys: EventKeys,
    cipher: Option<Arc<SeedCipher>>,
    clock: SharedClock,
    allow_loopback_http: bool,
    /// `events.realm_email_domains`, keys in lowercase.
    email_domains: Arc<std::collections::BTreeMap<String, String>>,
}

impl EventStreams {
    pub fn new(
        store: StreamStore,
        events: EventStore,
        keys: EventKeys,
        cipher: Option<Arc<SeedCipher>>,
        clock: SharedClock,
        allow_loopback_http: bool,
    ) -> Self {
        Self {
            store,
            events,
            keys,
            cipher,
            clock,
            allow_loopback_http,
            email_domains: Arc::default(),
        }
    }

    /// Realms whose users have mail addresses `<user>@<domain>` (CAEP `email` subjects).
    pub fn with_email_domains(
        mut self,
        domains: std::collections::BTreeMap<String, String>,
    ) -> Self {
        self.email_domains = Arc::new(domains);
        self
    }

    pub fn email_domains(&self) -> &std::collections::BTreeMap<String, String> {
        &self.email_domains
    }

    pub fn keys(&self) -> &EventKeys {
        &self.keys
    }

    fn cipher(&self) -> Result<&SeedCipher, DeviceError> {
        self.cipher.as_deref().ok_or_else(|| {
            DeviceError::FailedPrecondition(
                "stream secrets cannot be stored: configure secrets.seed_keys and secrets.active_seed_key".to_owned(),
            )
        })
    }

    /// An audit record of a stream change: streams belong to no realm or user.
    fn record(
        &self,
        actor: &Actor,
        action: &'static str,
        subject: &str,
    ) -> crate::domain::audit::AuditRecord {
        crate::domain::audit::AuditRecord {
            actor: actor.name.clone(),
            action,
            realm: String::new(),
            user: String::new(),
            subject: subject.to_owned(),
            result: crate::domain::audit::OK,
            reason: String::new(),
            trace_id: enroll_shared::telemetry::current_trace_id(),
            time: self.clock.now(),
            event: None,
        }
    }

    /// Creates a stream; a webhook stream's secret, or a poll stream's bearer token, is
    /// returned once.
    pub async fn create(
        &self,
        actor: &Actor,
        request: NewStream,
    ) -> Result<(StreamView, Option<String>), DeviceError> {
        if request.encoding == Encoding::CaepPoll {
            // The receiver comes to us (RFC 8936): there is nothing to send to.
            if !request.endpoint.trim().is_empty() {
                return Err(DeviceError::invalid(
                    "endpoint",
                    "a poll stream has none: its receiver polls POST /events/poll/<stream id>",
                ));
            }
        } else {
            self.vet_endpoint(&request.endpoint)?;
        }
        if request.encoding != Encoding::Webhook && request.audience.is_empty() {
            return Err(DeviceError::invalid(
                "audience",
                "required for a CAEP stream (the tokens' `aud`)",
            ));
        }
        if request.encoding == Encoding::Webhook && request.subject != StreamSubject::IssSub {
            return Err(DeviceError::invalid(
                "subject_format",
                "only CAEP streams name subjects (webhooks carry realm and user)",
            ));
        }
        if request.subject == StreamSubject::Email && self.email_domains.is_empty() {
            return Err(DeviceError::invalid(
                "subject_format",
                "email needs realms mapped to mail domains (events.realm_email_domains)",
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now();
        let secret = match request.encoding {
            Encoding::Webhook => Some(WebhookSecret::generate().expose()),
            Encoding::CaepPoll => Some(PollToken::generate().expose()),
            Encoding::CaepPush => None,
        };
        let (secret_key_id, sealed_secrets) = match &secret {
            Some(secret) => self.seal(&id, std::slice::from_ref(secret))?,
            None => (String::new(), Vec::new()),
        };
        self.events.stamp().await?;
        let cursor = if request.from_beginning {
            // The first event kept (retention deleted those before).
            self.events.purged_through().await?
        } else {
            self.events.last_seq().await?
        };
        let mut row = event_streams::Model {
            id: id.clone(),
            name: request.name.clone(),
            encoding: request.encoding.as_str().to_owned(),
            endpoint: request.endpoint.clone(),
            audience: request.audience.clone(),
            subject_format: request.subject.as_str().to_owned(),
            event_types: String::new(),
            realms: String::new(),
            status: ENABLED.to_owned(),
            secret_key_id,
            sealed_secrets,
            cursor,
            lease_owner: None,
            lease_until: None,
            attempts: 0,
            next_attempt_at: None,
            first_failure_at: None,
            last_error: String::new(),
            created_by: request.created_by.clone(),
            create_time: now,
            update_time: now,
        };
        store_filter(&mut row, &request.filter);
        let audit = self
            .record(actor, "create_event_stream", &id)
            .with_reason(format!(
                "`{}` ({}) created by {}",
                request.name,
                request.encoding.as_str(),
                request.created_by
            ));
        self.store.create(row, audit).await?;
        if request.encoding != Encoding::Webhook {
            // The first token's key exists before the first delivery.
            self.keys.current().await?;
        }
        let view = self.view(&id).await?;
        Ok((view, secret))
    }

    /// A push receiver's URL: https (or loopback http when allowed), and an address written
    /// into it judged now; names are resolved and judged at every delivery (a name may
    /// point elsewhere later).
    fn vet_endpoint(&self, endpoint: &str) -> Result<(), DeviceError> {
        ReceiverUrl::parse(endpoint, self.allow_loopback_http)
            .map_err(|problem| DeviceError::invalid("endpoint", problem))?;
        let literal = url::Url::parse(endpoint.trim())
            .ok()
            .and_then(|url| match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            });
        if let Some(address) = literal {
            vet(address, self.allow_loopback_http)
                .map_err(|refused| DeviceError::invalid("endpoint", refused.to_string()))?;
        }
        Ok(())
    }

    fn seal(&self, id: &str, secrets: &[String]) -> Result<(String, Vec<u8>), DeviceError> {
        let json = serde_json::to_vec(secrets).unwrap_or_default();
        self.cipher()?
            .encrypt(&json, &secret_context(id))
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))
    }

    /// A webhook stream's secrets, newest first.
    pub fn secrets(&self, row: &event_streams::Model) -> Result<Vec<WebhookSecret>, DeviceError> {
        self.sealed_texts(row)?
            .iter()
            .map(|text| {
                WebhookSecret::parse(text)
                    .map_err(|error| DeviceError::corrupt("stream secret", error))
            })
            .collect()
    }

    /// A poll stream's bearer tokens, newest first (two after a rotation).
    pub fn poll_tokens(&self, row: &event_streams::Model) -> Result<Vec<PollToken>, DeviceError> {
        self.sealed_texts(row)?
            .iter()
            .map(|text| {
                PollToken::parse(text).map_err(|error| DeviceError::corrupt("poll token", error))
            })
            .collect()
    }

    /// The texts sealed in a stream's row (webhook secrets or poll tokens), newest first.
    fn sealed_texts(&self, row: &event_streams::Model) -> Result<Vec<String>, DeviceError> {
        if row.sealed_secrets.is_empty() {
            return Ok(Vec::new());
        }
        let json = self
            .cipher()?
            .decrypt(
                &row.secret_key_id,
                &row.sealed_secrets,
                &secret_context(&row.id),
            )
            .map_err(|error| DeviceError::corrupt("stream secrets", error.to_string()))?;
        serde_json::from_slice(&json)
            .map_err(|error| DeviceError::corrupt("stream secrets", error.to_string()))
    }

    async fn row(&self, id: &str) -> Result<event_streams::Model, DeviceError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("event stream `{id}`")))
    }

    pub async fn view(&self, id: &str) -> Result<StreamView, DeviceError> {
        let row = self.row(id).await?;
        self.view_of(row).await
    }

    async fn view_of(&self, row: event_streams::Model) -> Result<StreamView, DeviceError> {
        // `seq` is dense: the backlog is the largest one minus the cursor.
        let backlog = (self.events.last_seq().await? - row.cursor).max(0);
        let dead_letters = self.store.count_dead_letters(&row.id).await? as i64;
        Ok(StreamView {
            filter: filter_of(&row),
            encoding: Encoding::parse(&row.encoding)
                .ok_or_else(|| DeviceError::corrupt("event stream", "encoding"))?,
            status: StreamStatus::parse(&row.status)
                .ok_or_else(|| DeviceError::corrupt("event stream", "status"))?,
            id: row.id,
            name: row.name,
            endpoint: row.endpoint,
            audience: row.audience,
            subject: StreamSubject::parse(&row.subject_format)
                .ok_or_else(|| DeviceError::corrupt("event stream", "subject_format"))?,
            cursor: row.cursor,
            backlog,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            next_attempt_time: row.next_attempt_at,
            last_error: row.last_error,
            dead_letters,
            created_by: row.created_by,
            create_time: row.create_time,
        })
    }

    pub async fn list(&self) -> Result<Vec<StreamView>, DeviceError> {
        let mut views = Vec::new();
        for row in self.store.list().await? {
            views.push(self.view_of(row).await?);
        }
        Ok(views)
    }

    /// Pauses, resumes or disables a stream, or replaces its filter. Disabling (and
    /// enabling a disabled stream) moves the cursor to now: a disabled stream keeps nothing.
    pub async fn update(
        &self,
        actor: &Actor,
        id: &str,
        change: StreamChange,
    ) -> Result<StreamView, DeviceError> {
        let mut row = self.row(id).await?;
        let before = row.status.clone();
        let mut what = Vec::new();
        if let Some(status) = change.status
            && status.as_str() != before
        {
            if status == StreamStatus::Disabled || before == DISABLED {
                self.events.stamp().await?;
                row.cursor = row.cursor.max(self.events.last_seq().await?);
                row.attempts = 0;
                row.next_attempt_at = None;
                row.first_failure_at = None;
            }
            row.status = status.as_str().to_owned();
            what.push(format!("{before} -> {}", status.as_str()));
        }
        if let Some(filter) = &change.filter {
            store_filter(&mut row, filter);
            what.push(format!(
                "filter types [{}] realms [{}]",
                row.event_types, row.realms
            ));
        }
        row.update_time = self.clock.now();
        let audit = self
            .record(actor, "update_event_stream", id)
            .with_reason(format!("{} by {}", what.join("; "), change.changed_by));
        self.store.update(row, audit).await?;
        self.view(id).await
    }

    pub async fn delete(
        &self,
        actor: &Actor,
        id: &str,
        deleted_by: &str,
    ) -> Result<(), DeviceError> {
        let audit = self
            .record(actor, "delete_event_stream", id)
            .with_reason(format!("deleted by {deleted_by}"));
        if !self.store.delete(id, audit).await? {
            return Err(DeviceError::NotFound(format!("event stream `{id}`")));
        }
        Ok(())
    }

    /// A webhook stream's new secret, or a poll stream's new bearer token (returned once);
    /// the previous one stays valid until the next rotation.
    pub async fn rotate_secret(
        &self,
        actor: &Actor,
        id: &str,
        rotated_by: &str,
    ) -> Result<String, DeviceError> {
        let mut row = self.row(id).await?;
        let fresh = match Encoding::parse(&row.encoding) {
            Some(Encoding::Webhook) => WebhookSecret::generate().expose(),
            Some(Encoding::CaepPoll) => PollToken::generate().expose(),
            _ => {
                return Err(DeviceError::invalid(
                    "id",
                    "not a webhook or poll stream (a push stream has no secret)",
                ));
            }
        };
        let mut previous = self.sealed_texts(&row)?;
        previous.truncate(1);
        let texts: Vec<String> = std::iter::once(fresh.clone()).chain(previous).collect();
        let (key_id, sealed) = self.seal(id, &texts)?;
        row.secret_key_id = key_id;
        row.sealed_secrets = sealed;
        row.update_time = self.clock.now();
        let audit = self
            .record(actor, "rotate_event_stream_secret", id)
            .with_reason(format!(
                "rotated by {rotated_by}; the previous secret stays valid"
            ));
        self.store.update(row, audit).await?;
        Ok(fresh)
    }

    /// Queues the SSF verification event for stream `id` alone (delivered in order with
    /// its events, retried, returned by its polls); returns the event's id (the token's
    /// `jti`). `state` is echoed to the receiver. A disabled stream would drop it: refused.
    pub async fn verify(
        &self,
        actor: &Actor,
        id: &str,
        state: Option<String>,
        requested_by: &str,
    ) -> Result<String, DeviceError> {
        let row = self.row(id).await?;
        if row.status == DISABLED {
            return Err(DeviceError::FailedPrecondition(format!(
                "event stream `{id}` is disabled: enable it first (a disabled stream keeps nothing)"
            )));
        }
        // The state is the receiver's opaque value, not a secret, but not the audit's
        // business either: its length only.
        let audit = self
            .record(actor, "verify_event_stream", id)
            .with_reason(format!(
                "verification of `{}` requested by {requested_by}{}",
                row.name,
                state
                    .as_ref()
                    .map(|state| format!(" (state of {} characters)", state.chars().count()))
                    .unwrap_or_default()
            ));
        self.store.queue_verification(id, state, audit).await
    }

    /// A new signing key; the previous one stays published for `overlap`.
    pub async fn rotate_signing_key(
        &self,
        actor: &Actor,
        algorithm: SigningAlgorithm,
        rsa_pkcs8: Option<&[u8]>,
        overlap: Duration,
        rotated_by: &str,
    ) -> Result<(String, serde_json::Value), DeviceError> {
        let audit = self
            .record(actor, "rotate_event_signing_key", algorithm.as_str())
            .with_reason(format!(
                "rotated by {rotated_by}; the previous key stays published {} s",
                overlap.as_secs()
            ));
        let kid = self
            .keys
            .add(algorithm, rsa_pkcs8, Some((overlap, audit)))
            .await?;
        Ok((kid, self.keys.jwks().await?))
    }

    pub async fn dead_letters(
        &self,
        id: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<DeadLetterView>, DeviceError> {
        self.row(id).await?;
        let mut views = Vec::new();
        for row in self.store.dead_letters(id, after, limit, false).await? {
            let event = self
                .events
                .by_id(&row.event_id)
                .await?
                .ok_or_else(|| DeviceError::corrupt("dead letter", "its event is gone"))?;
            views.push(DeadLetterView {
                event: EnrollmentEvent {
                    seq: row.seq,
                    ..event
                },
                reason: row.reason,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                dead_time: row.dead_at,
                redelivering: row.redrive,
            });
        }
        Ok(views)
    }

    pub async fn redeliver(
        &self,
        actor: &Actor,
        id: &str,
        requested_by: &str,
    ) -> Result<u64, DeviceError> {
        self.row(id).await?;
        let audit = self
            .record(actor, "redeliver_events", id)
            .with_reason(format!("requested by {requested_by}"));
        self.store.redrive(id, audit).await
    }
}
