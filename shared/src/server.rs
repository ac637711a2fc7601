//! The gRPC server shell both services share: tower layers (trace, request limits and
//! deadlines, auth), health, reflection v1 + v1alpha, optional (mutual) TLS and graceful
//! shutdown. Message size caps are set on each service's generated server by its app.
use std::{convert::Infallible, future::Future, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    body::Body,
    server::NamedService,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::{
    auth::AuthLayer,
    config::ServerConfig,
    limits::RequestLimitsLayer,
    metrics::Meters,
    starting::{Started, UntilStarted},
    telemetry::GrpcTraceLayer,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server task: {0}")]
    Task(String),
    #[error("server stopped before start-up finished")]
    StoppedEarly,
}

/// The health statuses of one server, the overall status ("") and the named service's,
/// flipped together between SERVING and NOT_SERVING, or apart with `set_each`.
#[derive(Clone)]
pub struct HealthHandle {
    reporter: HealthReporter,
    service_name: &'static str,
}

impl HealthHandle {
    /// A reporter whose statuses start NOT_SERVING, plus the health gRPC service.
    pub async fn new(service_name: &'static str) -> (Self, HealthServer<impl Health>) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let handle = Self {
            reporter,
            service_name,
        };
        handle.set(false).await;
        (handle, server)
    }

    pub async fn set(&self, serving: bool) {
        self.set_each(serving, serving).await;
    }

    /// Sets the overall status ("") and the named service's apart: the process may be up
    /// while the service cannot do its main job.
    pub async fn set_each(&self, overall: bool, service: bool) {
        self.reporter.set_service_status("", status(overall)).await;
        self.set_service(service).await;
    }

    /// Sets the named service's status only.
    pub async fn set_service(&self, serving: bool) {
        self.reporter
            .set_service_status(self.service_name, status(serving))
            .await;
    }

    /// Sets the status of another name this server reports, apart from its own: a
    /// dependency's (e.g. `enroll.device.v1.DeviceService/policy`), so a probe can watch it
    /// without the server's own status following it.
    pub async fn set_named(&self, name: &str, serving: bool) {
        self.reporter
            .set_service_status(name, status(serving))
            .await;
    }
}

fn status(serving: bool) -> tonic_health::ServingStatus {
    if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    }
}

/// A further gRPC service on the server's port, next to the main one (the device service's
/// Envoy external authorization, when its gate is on): behind the same layers (trace,
/// limits, auth) and held back until start-up like the main service.
pub struct ExtraService<E> {
    pub service: E,
    /// Its methods' full paths (`/package.Service/Method`): the request metrics count them
    /// by name (a path outside the main descriptor set counts as `unknown` otherwise).
    pub methods: &'static [&'static str],
}

/// Serves `service` (plus `extra`, health and reflection) on `listener` until `shutdown`
/// completes, then lets in-flight requests finish for at most the configured grace period.
/// Requests are counted on `meters`.
#[allow(clippy::too_many_arguments)]
pub async fn serve<S, E, H>(
    listener: TcpListener,
    config: &ServerConfig,
    file_descriptor_set: &'static [u8],
    auth: AuthLayer,
    health: HealthServer<H>,
    service: S,
    extra: Option<ExtraService<E>>,
    meters: &Meters,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    E: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    E::Future: Send + 'static,
    H: Health,
{
    // No `Server::timeout`: it answers an expired deadline with CANCELLED, and the
    // deadline is the client's as much as the server's; `RequestLimitsLayer` enforces both
    // and answers DEADLINE_EXCEEDED.
    let builder = with_tls(
        Server::builder()
            .concurrency_limit_per_connection(config.concurrency_limit_per_connection)
            .max_concurrent_streams(config.max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_secs(30))),
        config,
    )?;
    let (reflection_v1, reflection_v1alpha) = if config.reflection {
        let v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(file_descriptor_set)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|error| ServeError::Reflection(error.to_string()))?;
        let v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(file_descriptor_set)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|error| ServeError::Reflection(error.to_string()))?;
        (Some(v1), Some(v1alpha))
    } else {
        (None, None)
    };

    let extra_methods = extra.as_ref().map_or(&[][..], |extra| extra.methods);
    let router = builder
        .layer(GrpcTraceLayer::new(meters, file_descriptor_set).counting(extra_methods))
        .layer(RequestLimitsLayer::new(
            config.max_in_flight,
            config.request_timeout(),
        ))
        .layer(auth)
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(service)
        .add_optional_service(extra.map(|extra| extra.service));

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = signalled_tx.send(());
    };
    let grace = config.shutdown_grace();
    let grace_expired = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        // TCP_NODELAY: a response must not wait for Nagle's algorithm and the peer's delayed
        // ACK (a 40 ms stall per multi-segment response).
        result = router.serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal) => {
            result?;
        }
        () = grace_expired => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace period over, dropping remaining requests");
        }
    }
    Ok(())
}

/// Reads and parses `[server.tls]`, so a missing or bad file stops the service before it
/// binds or migrates (the services call this while building). Plaintext when unset.
pub fn check_tls(config: &ServerConfig) -> Result<(), ServeError> {
    with_tls(Server::builder(), config).map(drop)
}

/// `builder` serving TLS when `[server.tls]` is set. The handshake is bounded by the
/// request deadline: a client that never finishes it must not hold a connection forever.
fn with_tls(builder: Server, config: &ServerConfig) -> Result<Server, ServeError> {
    let Some(tls) = &config.tls else {
        return Ok(builder);
    };
    let tls = crate::tls::server_tls(tls, "server.tls")
        .map_err(|error| ServeError::Tls(error.to_string()))?
        .timeout(config.request_timeout());
    builder.tls_config(tls).map_err(|error| {
        ServeError::Tls(format!(
            "server.tls: the certificate, key or client CA is not usable: {}",
            crate::tls::error_chain(&error)
        ))
    })
}

/// A server running in its own task, with its health handle.
pub struct SpawnedServer {
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    pub health: HealthHandle,
    /// Flips to `true` when shutdown begins, for the service's background tasks.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    started: Started,
}

/// Starts serving at once with health NOT_SERVING and the service's RPCs answered
/// UNAVAILABLE; the caller finishes its start-up (database, migrations, caches) with
/// [`SpawnedServer::start_up`], which lets RPCs through, and flips health when ready.
#[allow(clippy::too_many_arguments)]
pub async fn spawn<S>(
    listener: TcpListener,
    config: ServerConfig,
    service_name: &'static str,
    file_descriptor_set: &'static [u8],
    auth: AuthLayer,
    service: S,
    meters: Meters,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> SpawnedServer
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    spawn_with(
        listener,
        config,
        service_name,
        file_descriptor_set,
        auth,
        service,
        None::<ExtraService<S>>,
        meters,
        shutdown,
    )
    .await
}

/// [`spawn`] with a further service on the same port (none when `extra` is `None`).
#[allow(clippy::too_many_arguments)]
pub async fn spawn_with<S, E>(
    listener: TcpListener,
    config: ServerConfig,
    service_name: &'static str,
    file_descriptor_set: &'static [u8],
    auth: AuthLayer,
    service: S,
    extra: Option<ExtraService<E>>,
    meters: Meters,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> SpawnedServer
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    E: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    E::Future: Send + 'static,
{
    let (health, health_service) = HealthHandle::new(service_name).await;
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let started = Started::default();
    let service = UntilStarted::new(service, started.clone());
    let extra = extra.map(|extra| ExtraService {
        service: UntilStarted::new(extra.service, started.clone()),
        methods: extra.methods,
    });
    let task = tokio::spawn(async move {
        serve(
            listener,
            &config,
            file_descriptor_set,
            auth,
            health_service,
            service,
            extra,
            &meters,
            async move {
                shutdown.await;
                let _ = stopping_tx.send(true);
            },
        )
        .await
    });
    SpawnedServer {
        task,
        health,
        stopping,
        started,
    }
}

impl SpawnedServer {
    /// Runs `startup` while the server already answers (health NOT_SERVING, RPCs
    /// UNAVAILABLE), then lets RPCs through; fails if the server stops first.
    pub async fn start_up<E: From<ServeError>>(
        &mut self,
        startup: impl Future<Output = Result<(), E>>,
    ) -> Result<(), E> {
        tokio::select! {
            result = &mut self.task => {
                joined(result)?;
                Err(ServeError::StoppedEarly.into())
            }
            result = startup => {
                if result.is_ok() {
                    self.started.mark();
                }
                result
            }
        }
    }

    /// Waits until the server has shut down.
    pub async fn finish(self) -> Result<(), ServeError> {
        let result = joined(self.task.await);
        self.health.set(false).await;
        result
    }
}

fn joined(
    result: Result<Result<(), ServeError>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    result.map_err(|error| ServeError::Task(error.to_string()))?
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
