//! Assembles the policy server: database, migrations, cache, gRPC shell.
use std::net::SocketAddr;
use std::sync::Arc;

use enroll_shared::auth::{ApiKeys, AuthLayer};
use enroll_shared::config::DEFAULT_MAX_MESSAGE_SIZE;
use enroll_shared::metrics::MetricsExport;
use enroll_shared::proto::policy::v1::policy_service_server::PolicyServiceServer;
use enroll_shared::server::{HealthHandle, ServeError, spawn};
use enroll_shared::time::{SharedClock, SystemClock};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

use crate::cache::{PolicyCache, keep_current};
use crate::config::PolicyConfig;
use crate::grpc::PolicyGrpc;
use crate::service::Policies;
use crate::store::{
    SeaOrmPolicyStore, StoreError,
    migration::{MIGRATION_LOCK_KEY, Migrator},
};
use crate::watchers::Watchers;

/// The name health checks and telemetry use.
pub use enroll_shared::proto::policy::v1::policy_service_server::SERVICE_NAME;

/// The name the metrics carry (`service_name` of `target_info`, the meter's name).
pub const METRICS_NAME: &str = "enroll-policy";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    DatabaseStart(#[from] enroll_shared::db::DatabaseStartError),
    #[error("loading the policies: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A bound, not yet serving, policy server.
pub struct Application {
    config: PolicyConfig,
    listener: TcpListener,
    db: DatabaseConnection,
    keys: ApiKeys,
    clock: SharedClock,
    metrics: Arc<MetricsExport>,
    /// The Prometheus endpoint's listener, unless `metrics.listen_addr` is empty.
    metrics_listener: Option<TcpListener>,
}

impl Application {
    /// Connects to the database and binds the port (port 0 picks a free one).
    pub async fn build(config: PolicyConfig) -> Result<Self, StartError> {
        let keys = ApiKeys::from_config(&config.auth.api_keys, &[crate::store::DEMO_ACTOR])
            .map_err(StartError::Config)?;
        config.cache.validate().map_err(StartError::Config)?;
        // TLS files first: a missing certificate stops start-up before anything is bound.
        enroll_shared::server::check_tls(&config.server)?;
        if config.auth.api_keys.is_empty() {
            tracing::warn!("no API keys configured: every call but health will be refused");
        }
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
        Ok(Self {
            config,
            listener,
            db,
            keys,
            clock: Arc::new(SystemClock),
            metrics: Arc::new(metrics),
            metrics_listener,
        })
    }

    /// Replaces the clock (tests fix time).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
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

    /// Serves until `shutdown` completes. Health is NOT_SERVING until the database answers
    /// (waited for up to `database.startup_retry_secs`), the migrations ran and the policy
    /// set is loaded; decisions are refused until then. Afterwards the overall
    /// status stays SERVING (the process works, CRUD answers, so an admin can repair a
    /// policy) while the service's own status follows whether decisions are served.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Application {
            config,
            listener,
            db,
            keys,
            clock,
            metrics,
            metrics_listener,
        } = self;
        let meters = metrics.meters();
        let store = Arc::new(SeaOrmPolicyStore::new(db.clone()));
        let cache = Arc::new(PolicyCache::new(config.cache.max_staleness()));
        let policies = Policies::new(store.clone(), cache.clone(), clock, &meters);
        let mut server = spawn(
            listener,
            config.server.clone(),
            SERVICE_NAME,
            enroll_shared::proto::policy::v1::FILE_DESCRIPTOR_SET,
            AuthLayer::new(keys, crate::access::access),
            PolicyServiceServer::new(PolicyGrpc::new(
                policies,
                Watchers::new(config.watch.clone()),
            ))
            .max_decoding_message_size(
                config
                    .server
                    .max_decoding_message_size_or(DEFAULT_MAX_MESSAGE_SIZE),
            )
            .max_encoding_message_size(config.server.max_encoding_message_size),
            meters,
            shutdown,
        )
        .await;
        // Up from the start, so a scrape during start-up sees requests refused.
        let metrics_task = metrics_listener.map(|listener| {
            tokio::spawn(enroll_shared::metrics::serve(
                listener,
                metrics,
                server.stopping.clone(),
            ))
        });
        server
            .start_up(async {
                enroll_shared::db::wait_until_reachable(&config.database).await?;
                enroll_shared::db::migrate::<Migrator>(&db, MIGRATION_LOCK_KEY).await?;
                Ok::<_, StartError>(cache.reload(store.as_ref()).await?)
            })
            .await?;
        tracing::info!(
            version = cache.loaded_version(),
            "migrations done, policy set loaded"
        );
        server
            .health
            .set_each(true, cache.decision_set().is_ok())
            .await;
        tokio::spawn(mirror_serving(
            cache.clone(),
            server.health.clone(),
            config.cache.poll_interval(),
            server.stopping.clone(),
        ));
        tokio::spawn(keep_current(
            cache,
            store,
            db,
            config.cache.poll_interval(),
            server.stopping.clone(),
        ));
        let served = server.finish().await;
        enroll_shared::metrics::drain(metrics_task, config.server.shutdown_grace()).await;
        Ok(served?)
    }
}

/// Keeps the service's health status equal to whether the cache serves decisions (an
/// unreadable policy or a set too old: NOT_SERVING, so load balancers send decisions to
/// replicas that can answer them). Re-evaluated on every change and every poll interval, so
/// a set that ages while a refresh hangs on the database still turns NOT_SERVING in time.
async fn mirror_serving(
    cache: Arc<PolicyCache>,
    health: HealthHandle,
    every: std::time::Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut serving = cache.serving();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = *serving.borrow_and_update();
        health.set_service(now).await;
        tokio::select! {
            // Shutdown sets NOT_SERVING; nothing may flip it back.
            _ = stopping.changed() => return,
            changed = serving.changed() => if changed.is_err() { return },
            _ = tick.tick() => cache.update_serving(),
        }
    }
}

/// Runs the migrations only (the `migrate` subcommand), after waiting for the database
/// as the server does.
pub async fn migrate(config: &PolicyConfig) -> Result<(), StartError> {
    let db = enroll_shared::db::connect(&config.database).await?;
    enroll_shared::db::migrate::<Migrator>(&db, MIGRATION_LOCK_KEY).await?;
    Ok(())
}
