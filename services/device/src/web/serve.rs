//! The page's accept loop: at most `max_connections` connections at once (a slot is taken
//! before `accept`, so further clients wait in the kernel's backlog), each with a deadline
//! for its request headers (which also closes kept-alive connections left idle), and all
//! of them drained on shutdown.
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use super::*;

/// Everything `[web]` configures besides the listener.
#[derive(Debug, Clone)]
pub struct PageSettings {
    pub proxies: TrustedProxies,
    pub limits: RateLimits,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

/// Above this the semaphore's bookkeeping (and the process's file descriptors) would not
/// follow anyway.
const MAX_CONNECTIONS: usize = 65_536;

impl PageSettings {
    pub fn from_config(config: &crate::config::WebConfig) -> Result<Self, String> {
        let positive = |value: u64, name: &str| {
            if value == 0 {
                Err(format!("web.{name} must be at least 1"))
            } else {
                Ok(Duration::from_secs(value))
            }
        };
        if !(1..=MAX_CONNECTIONS).contains(&config.max_connections) {
            return Err(format!(
                "web.max_connections must be between 1 and {MAX_CONNECTIONS}"
            ));
        }
        if config.requests_per_address == 0 || config.begins_per_link == 0 {
            return Err(
                "web.requests_per_address and web.begins_per_link must be at least 1".to_owned(),
            );
        }
        Ok(Self {
            proxies: TrustedProxies::parse(&config.trusted_proxies)?,
            limits: RateLimits {
                window: positive(config.rate_window_secs, "rate_window_secs")?,
                requests_per_address: config.requests_per_address,
                begins_per_link: config.begins_per_link,
                capacity: config.limiter_capacity.max(1),
            },
            header_read_timeout: positive(
                config.header_read_timeout_secs,
                "header_read_timeout_secs",
            )?,
            body_read_timeout: positive(config.body_read_timeout_secs, "body_read_timeout_secs")?,
            max_connections: config.max_connections,
        })
    }
}

/// Serves the page on `listener` until `stop` turns true (or its sender goes away, which
/// means the gRPC server is gone), then lets open connections finish their requests.
pub async fn serve<R: Registrar>(
    listener: TcpListener,
    registrar: Arc<R>,
    otp: Option<OtpPage>,
    events: Option<EventsHttp>,
    settings: PageSettings,
    timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "enrollment page listening");
    }
    let app = router(registrar, otp, events, &settings, timeout);
    serve_app(
        listener,
        app,
        settings.max_connections,
        settings.header_read_timeout,
        stop,
    )
    .await;
}

/// The accept loop of an HTTP/1.1 listener (the page's, the gate's): a bounded number of
/// connections, a header deadline, a graceful drain on `stop`.
pub(crate) async fn serve_app(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before accept: pause
                    // instead of spinning, then go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            header_read_timeout,
            stop.clone(),
            slot,
        ));
    }
    // Every connection holds a slot until it ends: having them all back means drained.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _drained = slots.acquire_many(all).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let request = request.map(Body::new);
            let response = app.oneshot(request).await;
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let served = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = stopped(&mut stop) => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = result {
        // Timeouts and clients going away; nothing about the request itself.
        tracing::debug!(%error, "enrollment page connection ended");
    }
}

/// Resolves once the service is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebConfig;

    #[test]
    fn the_defaults_are_valid_and_nonsense_fails_the_start() {
        let defaults = PageSettings::from_config(&WebConfig::default()).unwrap();
        assert_eq!(defaults.max_connections, 1024);
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.limits.begins_per_link, 5);
        let bad: [fn(&mut WebConfig); 5] = [
            |c| c.trusted_proxies = vec!["10.0.0.0/40".into()],
            |c| c.max_connections = 0,
            |c| c.header_read_timeout_secs = 0,
            |c| c.rate_window_secs = 0,
            |c| c.begins_per_link = 0,
        ];
        for change in bad {
            let mut config = WebConfig::default();
            change(&mut config);
            let error = PageSettings::from_config(&config).unwrap_err();
            assert!(error.starts_with("web."), "{error}");
        }
    }
}
