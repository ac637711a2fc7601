//! Assembles the device server: database, migrations, policy client, gRPC shell, and the
//! health watch that keeps it NOT_SERVING while the policy service is unreachable.
use std::net::SocketAddr;

use enroll_shared::auth::{ApiKeys, AuthLayer};
use enroll_shared::proto::device::v1::device_service_server::DeviceServiceServer;
use enroll_shared::server::{HealthHandle, ServeError, spawn};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

use std::sync::Arc;

use enroll_shared::time::{SharedClock, SystemClock};

use crate::device_service::{Devices, LinkSettings};
use crate::domain::devices::RedirectAllowList;
use crate::policy_gate::PolicyGate;
use crate::relying_party::RelyingParty;
use crate::store::devices::DeviceStore;

use crate::config::{DeviceConfig, SecretsConfig};
use crate::domain::secrets::SeedCipher;
use crate::grpc::DeviceGrpc;
use crate::policy_client::{PolicyClient, PolicyClientError};
use crate::store::migration::{MIGRATION_LOCK_KEY, Migrator};
use crate::store::tokens::TokenStore;
use crate::token_service::Tokens;

/// The name health checks and telemetry use.
pub const SERVICE_NAME: &str = "enroll.device.v1.DeviceService";
/// The policy service's health name.
pub const POLICY_SERVICE_NAME: &str = "enroll.policy.v1.PolicyService";

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
    Serve(#[from] ServeError),
}

/// A bound, not yet serving, device server.
pub struct Application {
    config: DeviceConfig,
    listener: TcpListener,
    /// The enrollment page's listener, unless `web.listen` turned it off.
    web_listener: Option<TcpListener>,
    db: DatabaseConnection,
    keys: ApiKeys,
    policy: PolicyClient,
    cipher: Option<Arc<SeedCipher>>,
    relying_party: Arc<RelyingParty>,
    redirects: RedirectAllowList,
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
    /// Connects to the database and binds the port (port 0 picks a free one). The policy
    /// service is not contacted yet.
    pub async fn build(config: DeviceConfig) -> Result<Self, StartError> {
        let keys = ApiKeys::from_config(&config.auth.api_keys).map_err(StartError::Config)?;
        if config.auth.api_keys.is_empty() {
            tracing::warn!("no API keys configured: every call but health will be refused");
        }
        let policy = PolicyClient::new(&config.policy_service)?;
        let cipher = seed_cipher(&config.secrets)?;
        let relying_party =
            Arc::new(RelyingParty::new(&config.webauthn).map_err(StartError::Config)?);
        let redirects = RedirectAllowList::new(&config.webauthn.redirect_allow_list)
            .map_err(StartError::Config)?;
        let db = enroll_shared::db::connect(&config.database).await?;
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let web_listener = match config.web.listen {
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
            web_listener,
            db,
            keys,
            policy,
            cipher,
            relying_party,
            redirects,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The enrollment page's address, when it is served.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes.
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
            cipher,
            relying_party,
            redirects,
        } = self;
        let clock: SharedClock = Arc::new(SystemClock);
        // One policy gate: tokens and devices ask and audit denials the same way.
        let gate = PolicyGate::new(policy.clone(), TokenStore::new(db.clone()), clock.clone());
        let devices = Devices::new(
            DeviceStore::new(db.clone()),
            gate.clone(),
            relying_party,
            cipher.clone(),
            clock.clone(),
            LinkSettings {
                base_url: config.webauthn.enrollment_base_url.clone(),
                redirects,
                ceremony_ttl: config.webauthn.ceremony_ttl(),
            },
        );
        let cipher_for_index = cipher.clone();
        let tokens = Tokens::new(
            TokenStore::new(db.clone()),
            policy.clone(),
            gate,
            cipher,
            clock,
            config.validation.clone(),
        );
        let (pool_index, window, tokens_cipher) = (
            tokens.pool_index().clone(),
            tokens.window(),
            cipher_for_index,
        );
        // One implementation behind both the gRPC server and the enrollment page.
        let grpc = Arc::new(DeviceGrpc::new(tokens, devices));
        let mut server = spawn(
            listener,
            config.server.clone(),
            SERVICE_NAME,
            enroll_shared::proto::device::v1::FILE_DESCRIPTOR_SET,
            AuthLayer::new(keys, crate::access::access),
            DeviceServiceServer::from_arc(grpc.clone()),
            shutdown,
        )
        .await;
        server
            .start_up(async {
                enroll_shared::db::migrate::<Migrator>(&db, MIGRATION_LOCK_KEY)
                    .await
                    .map_err(StartError::from)
            })
            .await?;
        tracing::info!("migrations done");
        // Started after the migrations so the page never runs against a half-built schema;
        // until then its listener just queues connections.
        let web = web_listener.map(|listener| {
            tokio::spawn(crate::web::serve(
                listener,
                grpc.clone(),
                config.server.request_timeout(),
                server.stopping.clone(),
            ))
        });
        if let Some(cipher) = tokens_cipher {
            tokio::spawn(crate::pool_index::keep_fresh(
                pool_index,
                TokenStore::new(db.clone()),
                cipher,
                window,
                server.stopping.clone(),
            ));
        }
        tokio::spawn(watch_policy_service(
            policy,
            server.health.clone(),
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
        Ok(served?)
    }
}

/// SERVING only while the policy service answers SERVING: every mutation needs a decision,
/// so a device replica that cannot get one must leave the load balancer's rotation.
async fn watch_policy_service(
    policy: PolicyClient,
    health: HealthHandle,
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
        if serving != Some(reachable) {
            if reachable {
                tracing::info!("policy service reachable: SERVING");
            } else {
                tracing::warn!("policy service unreachable: NOT_SERVING");
            }
            health.set(reachable).await;
            serving = Some(reachable);
        }
    }
}

/// Runs the migrations only (the `migrate` subcommand).
pub async fn migrate(config: &DeviceConfig) -> Result<(), StartError> {
    let db = enroll_shared::db::connect(&config.database).await?;
    enroll_shared::db::migrate::<Migrator>(&db, MIGRATION_LOCK_KEY).await?;
    Ok(())
}
