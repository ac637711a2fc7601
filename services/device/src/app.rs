//! Assembles the device server: database, migrations, policy client, gRPC shell, and the
//! health watch that reports whether the policy service answers, under its own name.
use std::net::SocketAddr;
use std::sync::Arc;

use enroll_shared::auth::{ApiKeys, AuthLayer};
use enroll_shared::metrics::MetricsExport;
use enroll_shared::proto::device::v1::device_service_server::DeviceServiceServer;
use enroll_shared::server::{ExtraService, HealthHandle, ServeError, spawn_with};
use enroll_shared::time::{SharedClock, SystemClock};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

use crate::adapters::fido_metadata::FidoBlobs;
use crate::adapters::last_known_policy::LastKnownPolicy;
use crate::adapters::policy_client::{PolicyClient, PolicyClientError};
use crate::adapters::relying_party::WebauthnRelyingParty;
use crate::config::{DeviceConfig, SecretsConfig};
use crate::domain::devices::RedirectAllowList;
use crate::domain::lockout::DeviceTokenSigner;
use crate::domain::otp::Window;
use crate::domain::secrets::SeedCipher;
use crate::gate::Gate;
use crate::gate::decisions::GateDecisions;
use crate::grpc::DeviceGrpc;
use crate::service::audit::AuditTrail;
use crate::service::decision_cache::DecisionCache;
use crate::service::devices::{Devices, LinkSettings};
use crate::service::gate::PolicyGate;
use crate::service::metadata::{FidoMetadata, MetadataRefresher};
use crate::service::metadata_admin::MetadataAdmin;
use crate::service::metrics::{DeviceGauges, DeviceMetrics};
use crate::service::pool_index::PoolIndex;
use crate::service::tokens::Tokens;
use crate::store::audit::AuditStore;
use crate::store::device_changes::UserDevicesCache;
use crate::store::devices::DeviceStore;
use crate::store::idempotency::Retention;
use crate::store::metadata::MetadataStore;
use crate::store::migration::{MIGRATION_LOCK_KEY, Migrator};
use crate::store::policy_snapshot::PolicySnapshotStore;
use crate::store::tokens::TokenStore;

/// The name health checks and telemetry use.
pub use enroll_shared::proto::device::v1::device_service_server::SERVICE_NAME;

/// The health name under which the device server reports whether the policy service
/// answers. Its own names (`""` and [`SERVICE_NAME`]) do not follow the policy service:
/// reads, `Validate`, `CheckEnrollment` and WebAuthn authentication work without it, so an
/// outage of the policy service must not take every device replica out of rotation.
pub const POLICY_DEPENDENCY_HEALTH: &str = "enroll.device.v1.DeviceService/policy";

/// The health name under which the device server reports whether its FIDO metadata can be
/// trusted as current: SERVING while a BLOB is loaded, within its `nextUpdate`, signed under
/// a pinned key (when pins are set) and no BLOB number waits for acceptance; NOT_SERVING
/// otherwise. An alert, not a readiness signal: stale metadata is still used (it still flags
/// compromised models). Registered only with `[webauthn.metadata]`.
pub const METADATA_HEALTH: &str = "enroll.device.v1.DeviceService/fido-metadata";

/// How often [`METADATA_HEALTH`] is recomputed (an in-memory check).
const METADATA_HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The name the metrics carry (`service_name` of `target_info`, the meter's name).
pub const METRICS_NAME: &str = "enroll-device";

/// The actors this service writes audit events as on its own: no API key may be named
/// like one (see `ApiKeys::from_config`).
pub const INTERNAL_ACTORS: [&str; 3] = [
    crate::web::PAGE_CALLER,
    crate::store::metadata::METADATA_ACTOR,
    crate::gate::decisions::GATE_ACTOR,
];

/// How often the pool and link gauges are counted when nobody scrapes (OTLP export).
const GAUGE_RECOUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    PolicyClient(#[from] PolicyClientError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    DatabaseStart(#[from] enroll_shared::db::DatabaseStartError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A bound, not yet serving, device server with every part constructed.
pub struct Application {
    config: DeviceConfig,
    listener: TcpListener,
    /// The enrollment page's listener, unless `web.listen` turned it off.
    web_listener: Option<TcpListener>,
    db: DatabaseConnection,
    keys: ApiKeys,
    policy: PolicyClient,
    grpc: Arc<DeviceGrpc>,
    /// The enrollment page's own handle on the device use cases (it calls them directly,
    /// as `Finisher::Page`, not through the gRPC implementation).
    page: Arc<Devices>,
    /// The page's OTP-link part: the token use cases and the gate's identity source.
    otp_page: crate::web::OtpPage,
    /// What the pool-index refresher needs, when OTP tokens can be stored.
    pool_refresh: Option<PoolRefresh>,
    /// Erases the seeds of expired verify-pending enrollments, when OTP tokens can be stored.
    purge: Option<Tokens>,
    clock: SharedClock,
    metrics: Arc<MetricsExport>,
    /// The Prometheus endpoint's listener, unless `metrics.listen_addr` is empty.
    metrics_listener: Option<TcpListener>,
    gauges: Arc<DeviceGauges>,
    /// CheckEnrollment's caches, when `check_cache.enabled`.
    check_caches: Option<CheckCaches>,
    /// The last policy set streamed (the proxy's path during a policy outage).
    last_known: Arc<LastKnownPolicy>,
    /// Keeps the FIDO metadata current, when `[webauthn.metadata]` names a source.
    metadata_refresher: Option<MetadataRefresher>,
    /// The metadata in use, for its health name (with `metadata_refresher`).
    metadata: FidoMetadata,
    /// The gate and its listener, when `gate.listen` is set.
    gate: Option<(Arc<Gate>, TcpListener)>,
    /// The enrollment-event feed (its stamper runs with the server).
    events: crate::service::events::EventFeed,
    /// Delivers events to the streams.
    delivery: crate::service::delivery::Delivery,
    /// The JWKS and SSF configuration documents on the page's port.
    events_http: crate::web::EventsHttp,
    /// Deletes audit and outbox rows past `[retention]`'s ages.
    retention: crate::service::retention::RetentionPurge,
}

type CheckCaches = (Arc<DecisionCache>, Arc<UserDevicesCache>);

/// The autoassignment index and what keeps it current.
struct PoolRefresh {
    index: PoolIndex,
    cipher: Arc<SeedCipher>,
    window: Window,
}

/// The seed cipher, when keys are configured (token enrollment needs it).
fn seed_cipher(secrets: &SecretsConfig) -> Result<Option<Arc<SeedCipher>>, StartError> {
    if secrets.seed_keys.is_empty() {
        tracing::warn!("no secrets.seed_keys configured: OTP tokens cannot be enrolled");
        return Ok(None);
    }
    let keys = secrets
        .seed_keys
        .iter()
        .map(|(id, key)| (id.as_str(), key.as_str()));
    SeedCipher::new(keys, &secrets.active_seed_key)
        .map(|cipher| Some(Arc::new(cipher)))
        .map_err(|error| StartError::Config(error.to_string()))
}

impl Application {
    /// Connects to the database, binds the ports and constructs the use cases (port 0
    /// picks a free one). The policy service is not contacted yet.
    pub async fn build(config: DeviceConfig) -> Result<Self, StartError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] on `clock` (tests move time forward instead of waiting).
    pub async fn build_with_clock(
        config: DeviceConfig,
        clock: SharedClock,
    ) -> Result<Self, StartError> {
        let keys = ApiKeys::from_config(&config.auth.api_keys, &INTERNAL_ACTORS)
            .map_err(StartError::Config)?;
        if config.auth.api_keys.is_empty() {
            tracing::warn!("no API keys configured: every call but health will be refused");
        }
        // TLS files first: a missing certificate stops start-up before anything is bound.
        enroll_shared::server::check_tls(&config.server)?;
        let policy = PolicyClient::new(&config.policy_service)?;
        let cipher = seed_cipher(&config.secrets)?;
        let metadata = FidoMetadata::default();
        let blobs =
            FidoBlobs::from_config(&config.webauthn.metadata).map_err(StartError::Config)?;
        let mut relying_party = WebauthnRelyingParty::new(&config.webauthn, clock.clone())
            .map_err(StartError::Config)?;
        if blobs.is_some() {
            relying_party = relying_party.with_anchors(Arc::new(metadata.clone()));
        }
        let relying_party = Arc::new(relying_party);
        let redirects = RedirectAllowList::new(&config.webauthn.redirect_allow_list)
            .map_err(StartError::Config)?;
        let metrics_addr = config.metrics.listen().map_err(StartError::Config)?;
        let metrics = MetricsExport::new(METRICS_NAME, !config.telemetry.otlp_endpoint.is_empty())
            .map_err(StartError::Config)?;
        // No connection yet: the server binds and answers health (NOT_SERVING) while
        // `run_until` waits for the database.
        let db = enroll_shared::db::open(&config.database).await?;
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let metrics_listener = match metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        // Checked before anything binds: a bad `[web]` section fails the start, not the page.
        crate::web::PageSettings::from_config(&config.web).map_err(StartError::Config)?;
        let web_listener = match config.web.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        // One policy gate: tokens and devices ask and audit denials the same way.
        let audit = AuditStore::new(db.clone());
        let mut gate = PolicyGate::new(
            Arc::new(policy.clone()),
            Arc::new(audit.clone()),
            clock.clone(),
        );
        // CheckEnrollment's caches, fed once the schema is there (below).
        let check_caches = config.check_cache.enabled.then(|| {
            (
                Arc::new(DecisionCache::new(config.check_cache.max_entries())),
                Arc::new(UserDevicesCache::new(
                    config.check_cache.max_entries(),
                    config.check_cache.poll_interval(),
                )),
            )
        });
        if let Some((decisions, _)) = &check_caches {
            gate = gate.with_check_cache(decisions.clone());
        }
        // The last policy set streamed, for the proxy's path while the policy service
        // cannot answer; loaded from the database once the schema is there (below).
        let last_known = Arc::new(LastKnownPolicy::new(
            PolicySnapshotStore::new(db.clone()),
            clock.clone(),
        ));
        gate = gate.with_last_known(last_known.clone());
        let retention = Retention {
            ttl: config.idempotency.ttl(),
            secret_ttl: config.idempotency.secret_ttl(),
        };
        let meters = metrics.meters();
        let counters = DeviceMetrics::new(&meters);
        // Reads only: they never store a response under a request id.
        let gauges = DeviceGauges::new(
            TokenStore::new(db.clone(), Retention::default()),
            DeviceStore::new(db.clone(), Retention::default()),
            clock.clone(),
            &meters,
        );
        let mut device_store = DeviceStore::new(db.clone(), retention);
        if let Some((_, rows)) = &check_caches {
            device_store = device_store.with_check_cache(rows.clone());
        }
        let devices = Devices::new(
            device_store,
            gate.clone(),
            relying_party,
            cipher.clone(),
            LinkSettings {
                base_url: config.webauthn.enrollment_base_url.clone(),
                redirects,
                ceremony_ttl: config.webauthn.ceremony_ttl(),
            },
        )
        .with_metrics(counters.clone())
        .with_metadata(metadata.clone());
        let metadata_store = match &check_caches {
            Some((_, rows)) => MetadataStore::new(db.clone()).with_check_cache(rows.clone()),
            None => MetadataStore::new(db.clone()),
        };
        let metadata_admin = match &blobs {
            Some(_) => {
                FidoMetadata::register_gauges(&meters, metadata.clone(), clock.clone());
                MetadataAdmin::new(
                    metadata.clone(),
                    metadata_store.clone(),
                    config.webauthn.metadata.max_no_jump,
                    clock.clone(),
                )
            }
            None => MetadataAdmin::disabled(clock.clone()),
        };
        let metadata_refresher = blobs.map(|blobs| {
            MetadataRefresher::new(
                metadata.clone(),
                metadata_store,
                Arc::new(blobs),
                clock.clone(),
            )
            .revoking(config.webauthn.metadata.revoke_compromised)
            .every(config.webauthn.metadata.refresh_interval())
            .max_no_jump(config.webauthn.metadata.max_no_jump)
            .with_metrics(counters.clone())
        });
        let mut tokens = Tokens::new(
            TokenStore::new(db.clone(), retention),
            gate,
            cipher.clone(),
            clock.clone(),
            config.validation.clone(),
        )
        .with_enrollment_page(config.webauthn.enrollment_base_url.clone())
        .with_metrics(counters);
        if let Some(key) = &config.validation.device_token_key {
            let signer = DeviceTokenSigner::from_hex(&key.0).map_err(|problem| {
                StartError::Config(format!("validation.device_token_key: {problem}"))
            })?;
            tokens = tokens.with_device_token_signer(signer);
        }
        if config.validation.permanent_lock_after.is_some() {
            tracing::warn!(
                "validation.permanent_lock_after is deprecated and ignored: failures slow the \
                 (user, client) pair instead of locking the token for everyone"
            );
        }
        let cipher_for_events = cipher.clone();
        let purge = cipher.is_some().then(|| tokens.clone());
        let pool_refresh = cipher.map(|cipher| PoolRefresh {
            index: tokens.pool_index().clone(),
            cipher,
            window: tokens.window(),
        });
        // The page calls the device use cases itself (a clone sharing store, gate and
        // relying party), so it can finish as `Finisher::Page`: link ceremonies only.
        let page = Arc::new(devices.clone());
        let gate = match config.gate.listen {
            Some(addr) => {
                let decisions = Arc::new(GateDecisions::new(&meters, Arc::new(audit.clone())));
                let gate = Gate::new(
                    &config.gate,
                    Arc::new(devices.clone()),
                    decisions,
                    clock.clone(),
                )
                .map_err(StartError::Config)?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some((Arc::new(gate), listener))
            }
            None => None,
        };
        let otp_page = crate::web::OtpPage {
            enroller: Arc::new(tokens.clone()),
            identity: gate.as_ref().map(|(gate, _)| gate.clone()),
        };
        let events = crate::service::events::EventFeed::new(
            crate::store::events::EventStore::new(db.clone()),
            config.events.clone(),
            clock.clone(),
        );
        let stream_store = crate::store::streams::StreamStore::new(db.clone());
        let event_keys = crate::service::streams::EventKeys::new(
            stream_store.clone(),
            cipher_for_events.clone(),
            clock.clone(),
        );
        let streams = crate::service::streams::EventStreams::new(
            stream_store.clone(),
            events.store().clone(),
            event_keys,
            cipher_for_events,
            clock.clone(),
            config.events.allow_loopback_http,
        )
        .with_email_domains(config.events.email_domains().map_err(StartError::Config)?);
        let delivery = crate::service::delivery::Delivery::new(
            stream_store,
            streams.clone(),
            events.store().clone(),
            crate::events::receiver::ReceiverClient::new().map_err(StartError::Config)?,
            config.events.clone(),
            clock.clone(),
            event_issuer(&config),
            &meters,
        );
        let events_http = crate::web::EventsHttp {
            keys: streams.keys().clone(),
            issuer: event_issuer(&config),
            poll: crate::service::poll::EventPoll::new(
                crate::store::poll::PollStore::new(db.clone()),
                streams.clone(),
                events.stamped(),
                config.events.clone(),
                clock.clone(),
                event_issuer(&config),
                &meters,
            ),
        };
        let retention = crate::service::retention::RetentionPurge::new(
            crate::store::retention::RetentionStore::new(db.clone()),
            audit.clone(),
            config.retention.clone(),
            clock.clone(),
            &meters,
        );
        let grpc = Arc::new(DeviceGrpc::new(
            tokens,
            devices,
            AuditTrail::new(audit),
            metadata_admin,
            events.clone(),
            streams,
        ));
        Ok(Self {
            config,
            listener,
            web_listener,
            db,
            keys,
            policy,
            grpc,
            page,
            otp_page,
            pool_refresh,
            purge,
            clock,
            metrics: Arc::new(metrics),
            metrics_listener,
            gauges,
            check_caches,
            last_known,
            metadata_refresher,
            metadata,
            gate,
            events,
            delivery,
            events_http,
            retention,
        })
    }

    /// The gate's address, when it is served.
    pub fn gate_addr(&self) -> Option<SocketAddr> {
        self.gate
            .as_ref()
            .and_then(|(_, listener)| listener.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The Prometheus endpoint's address, when it is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The enrollment page's address, when it is served.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes. Health is NOT_SERVING until the database answers
    /// (waited for up to `database.startup_retry_secs`) and the migrations ran.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Application {
            config,
            listener,
            web_listener,
            db,
            keys,
            policy,
            grpc,
            page,
            otp_page,
            pool_refresh,
            purge,
            clock,
            metrics,
            metrics_listener,
            gauges,
            check_caches,
            last_known,
            metadata_refresher,
            metadata,
            gate,
            events,
            delivery,
            events_http,
            retention,
        } = self;
        let meters = metrics.meters();
        // Envoy's ext_authz next to the DeviceService, on the same port and key check.
        let ext_authz = gate.as_ref().map(|(gate, _)| ExtraService {
            service: crate::grpc::ext_authz::ExtAuthz::server(gate.clone()),
            methods: crate::grpc::ext_authz::METHODS,
        });
        let mut server = spawn_with(
            listener,
            config.server.clone(),
            SERVICE_NAME,
            enroll_shared::proto::device::v1::FILE_DESCRIPTOR_SET,
            AuthLayer::new(keys, crate::grpc::access::access),
            DeviceServiceServer::from_arc(grpc)
                .max_decoding_message_size(
                    config
                        .server
                        .max_decoding_message_size_or(crate::grpc::MAX_REQUEST_BYTES),
                )
                .max_encoding_message_size(config.server.max_encoding_message_size),
            ext_authz,
            meters,
            shutdown,
        )
        .await;
        // Up from the start, so a scrape during start-up sees requests refused.
        let metrics_task = metrics_listener.map(|listener| {
            tokio::spawn(enroll_shared::metrics::serve(
                listener,
                metrics.clone(),
                server.stopping.clone(),
            ))
        });
        // Known (NOT_SERVING) from the start, until the first check says otherwise.
        server
            .health
            .set_named(POLICY_DEPENDENCY_HEALTH, false)
            .await;
        server
            .start_up(async {
                enroll_shared::db::wait_until_reachable(&config.database).await?;
                enroll_shared::db::migrate::<Migrator>(&db, MIGRATION_LOCK_KEY).await?;
                Ok::<_, StartError>(())
            })
            .await?;
        tracing::info!("migrations done");
        // Before SERVING: registrations on a fresh replica already know compromised models.
        if let Some(refresher) = metadata_refresher {
            server.health.set_named(METADATA_HEALTH, false).await;
            refresher.load_at_start().await;
            tokio::spawn(refresher.keep_fresh(server.stopping.clone()));
            tokio::spawn(watch_metadata(
                metadata,
                clock.clone(),
                server.health.clone(),
                server.stopping.clone(),
            ));
        }
        // Before SERVING: a replica started during a policy outage decides the proxy's path
        // from the last policy set any replica received.
        last_known.load_stored().await;
        server.health.set(true).await;
        // After the migrations: the gauges count tables that exist by then.
        let counting = gauges.clone();
        metrics.before_scrape(Box::new(move || {
            let gauges = counting.clone();
            Box::pin(async move { gauges.recount().await })
        }));
        tokio::spawn(crate::service::metrics::keep_counted(
            gauges.clone(),
            GAUGE_RECOUNT_INTERVAL,
            server.stopping.clone(),
        ));
        // Started after the migrations so the page never runs against a half-built schema;
        // until then its listener just queues connections.
        let page_settings =
            crate::web::PageSettings::from_config(&config.web).map_err(StartError::Config)?;
        if let Some((gate, listener)) = gate {
            gate.prefetch_keys().await;
            tokio::spawn(
                gate.decisions()
                    .keep_flushing(gate.allowed_audit_interval(), server.stopping.clone()),
            );
            tokio::spawn(crate::web::gate::serve(
                listener,
                gate,
                page_settings.clone(),
                config.gate.requests_per_address,
                config.server.request_timeout(),
                server.stopping.clone(),
            ));
        }
        let web = web_listener.map(|listener| {
            tokio::spawn(crate::web::serve(
                listener,
                page,
                Some(otp_page),
                Some(events_http),
                page_settings,
                config.server.request_timeout(),
                server.stopping.clone(),
            ))
        });
        tokio::spawn(events.keep_stamping(server.stopping.clone()));
        tokio::spawn(delivery.keep_delivering(server.stopping.clone()));
        tokio::spawn(retention.keep_purging(server.stopping.clone()));
        if let Some(purge) = purge {
            // Every `tokens::PURGE_INTERVAL`: docs/tokens.md states the bound.
            tokio::spawn(purge.keep_purging(server.stopping.clone()));
        }
        if let Some(refresh) = pool_refresh {
            tokio::spawn(crate::service::pool_index::keep_fresh(
                refresh.index,
                // Reads only: it never stores a response under a request id.
                TokenStore::new(db.clone(), Retention::default()),
                refresh.cipher,
                refresh.window,
                clock.clone(),
                server.stopping.clone(),
            ));
        }
        let (decisions, rows) = check_caches.unzip();
        // The policy-set versions the watch sees wake the policy-event relay.
        let (versions, announced) = tokio::sync::watch::channel(0);
        tokio::spawn(crate::adapters::policy_watch::follow_policy_set(
            policy.clone(),
            decisions,
            last_known,
            versions,
            server.stopping.clone(),
        ));
        let relay = crate::service::policy_events::PolicyRelay::new(
            Arc::new(policy.clone()),
            crate::store::policy_events::PolicyRelayStore::new(db.clone()),
            clock.clone(),
            config.events.policy_relay(),
        );
        tokio::spawn(relay.keep_relaying(announced, server.stopping.clone()));
        if let Some(rows) = rows {
            tokio::spawn(crate::store::device_changes::keep_current(
                rows,
                db.clone(),
                config.check_cache.poll_interval(),
                server.stopping.clone(),
            ));
        }
        tokio::spawn(watch_policy_service(
            policy,
            server.health.clone(),
            gauges,
            config.policy_service.health_check_interval(),
            server.stopping.clone(),
        ));
        let served = server.finish().await;
        if let Some(mut web) = web {
            // The page stops on the same signal; bounded like the gRPC server's grace.
            let grace = config.server.shutdown_grace();
            if tokio::time::timeout(grace, &mut web).await.is_err() {
                tracing::warn!("enrollment page still busy after the grace period, dropping it");
                web.abort();
            }
        }
        enroll_shared::metrics::drain(metrics_task, config.server.shutdown_grace()).await;
        Ok(served?)
    }
}

/// Reports under [`POLICY_DEPENDENCY_HEALTH`] whether the policy service answers SERVING.
/// Only that name follows it: mutations that need a decision fail closed on their own
/// (UNAVAILABLE), while everything that needs none keeps being served.
async fn watch_policy_service(
    policy: PolicyClient,
    health: HealthHandle,
    gauges: Arc<DeviceGauges>,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut serving = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let reachable = policy.is_serving().await;
        gauges.set_policy_serving(reachable);
        if serving != Some(reachable) {
            if reachable {
                tracing::info!(
                    health = POLICY_DEPENDENCY_HEALTH,
                    "policy service reachable"
                );
            } else {
                tracing::warn!(
                    health = POLICY_DEPENDENCY_HEALTH,
                    "policy service unreachable: mutations fail closed until it answers"
                );
            }
            health.set_named(POLICY_DEPENDENCY_HEALTH, reachable).await;
            serving = Some(reachable);
        }
    }
}

/// Reports under [`METADATA_HEALTH`] whether the FIDO metadata in use is healthy, logging
/// each change (the reasons are in `GetMetadataStatus` and the metadata gauges).
async fn watch_metadata(
    metadata: FidoMetadata,
    clock: SharedClock,
    health: HealthHandle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut healthy = None;
    let mut ticker = tokio::time::interval(METADATA_HEALTH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let status = metadata.status(clock.now().date_naive());
        let now_healthy = status.healthy();
        if healthy != Some(now_healthy) {
            if !now_healthy {
                tracing::warn!(
                    health = METADATA_HEALTH,
                    no = ?status.no,
                    stale = status.stale,
                    signer_key_changed = status.signer_key_changed,
                    pending_jump = ?status.pending_jump,
                    "FIDO metadata needs attention (enrollctl metadata status)"
                );
            }
            health.set_named(METADATA_HEALTH, now_healthy).await;
            healthy = Some(now_healthy);
        }
    }
}

/// Runs the migrations only (the `migrate` subcommand), after waiting for the database
/// as the server does.
pub async fn migrate(config: &DeviceConfig) -> Result<(), StartError> {
    let db = enroll_shared::db::connect(&config.database).await?;
    enroll_shared::db::migrate::<Migrator>(&db, MIGRATION_LOCK_KEY).await?;
    Ok(())
}

/// The `iss` of security event tokens: `events.issuer`, else the origin of the enrollment
/// page's base URL.
fn event_issuer(config: &DeviceConfig) -> String {
    if !config.events.issuer.trim().is_empty() {
        return config.events.issuer.trim().trim_end_matches('/').to_owned();
    }
    url::Url::parse(&config.webauthn.enrollment_base_url)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default()
}
