//! Prometheus text metrics on an HTTP port, next to the OTLP export.
//!
//! One instrumentation, two exports: every instrument is created on the application's own
//! meter provider, whose Prometheus reader `GET /metrics` renders, and, when OTLP export is
//! configured, also on the process-wide provider that [`crate::telemetry::init`] installed
//! (it pushes to the collector). The application's provider is its own, not the global one,
//! so each server started in one process (the tests start many) counts only its own calls.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// `[metrics]`: where the Prometheus endpoint listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the HTTP listener serving `GET /metrics`; empty turns it off.
    pub listen_addr: String,
}

impl MetricsConfig {
    pub fn on(addr: SocketAddr) -> Self {
        Self {
            listen_addr: addr.to_string(),
        }
    }

    /// The address to bind, or `None` when the endpoint is turned off.
    pub fn listen(&self) -> Result<Option<SocketAddr>, String> {
        let addr = self.listen_addr.trim();
        if addr.is_empty() {
            return Ok(None);
        }
        addr.parse().map(Some).map_err(|_| {
            format!("metrics.listen_addr `{addr}` is not host:port (an IP address and a port; empty turns the endpoint off)")
        })
    }
}

/// Brings gauges up to date before a scrape (values that live in the database).
pub type BeforeScrape = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// The application's meter provider and the registry its Prometheus reader fills.
pub struct MetricsExport {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meters: Meters,
    before_scrape: OnceLock<BeforeScrape>,
}

impl MetricsExport {
    /// A provider for `service_name` (the binary's name, e.g. `enroll-policy`); with
    /// `also_otlp`, instruments are mirrored on the global provider that exports over OTLP.
    pub fn new(service_name: &'static str, also_otlp: bool) -> Result<Self, String> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // One scope per process: an `otel_scope_name` label on every series says nothing.
            .scope_info_enabled(false)
            .build()
            .map_err(|error| format!("Prometheus exporter: {error}"))?;
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build();
        let mut meters = vec![provider.meter(service_name)];
        if also_otlp {
            meters.push(opentelemetry::global::meter(service_name));
        }
        Ok(Self {
            provider,
            registry,
            meters: Meters(meters.into()),
            before_scrape: OnceLock::new(),
        })
    }

    /// Runs `refresh` before each scrape of `GET /metrics` (set once; later calls are
    /// ignored). It must bound its own cost: anyone who reaches the port can scrape.
    pub fn before_scrape(&self, refresh: BeforeScrape) {
        let _ = self.before_scrape.set(refresh);
    }

    /// Where the application creates its instruments.
    pub fn meters(&self) -> Meters {
        self.meters.clone()
    }

    /// Every series in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        let mut text = Vec::new();
        if let Err(error) =
            prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut text)
        {
            tracing::warn!(%error, "metrics could not be encoded");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

impl Drop for MetricsExport {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The meters instruments are created on: the application's, plus the global (OTLP) one
/// when that export is configured. Cloned into every use case that counts something.
#[derive(Clone)]
pub struct Meters(Arc<[Meter]>);

impl Meters {
    /// Meters that record nothing (unit tests of the use cases).
    pub fn none() -> Self {
        Self(Arc::new([]))
    }

    /// A monotonic counter; Prometheus shows it as `<name>_total`.
    pub fn counter(&self, name: &'static str, description: &'static str) -> Counter {
        Counter(
            self.0
                .iter()
                .map(|meter| {
                    meter
                        .u64_counter(name)
                        .with_description(description)
                        .build()
                })
                .collect(),
        )
    }

    /// A histogram of durations in seconds (`<name>_seconds_bucket` etc.).
    pub fn seconds(&self, name: &'static str, description: &'static str) -> Histogram {
        Histogram(
            self.0
                .iter()
                .map(|meter| {
                    meter
                        .f64_histogram(name)
                        .with_unit("s")
                        .with_description(description)
                        .with_boundaries(LATENCY_BUCKETS.to_vec())
                        .build()
                })
                .collect(),
        )
    }

    /// A gauge read when metrics are collected: `observe` returns each value with its labels.
    /// It must be cheap (it runs on every scrape and OTLP export): read memory, not the
    /// database.
    pub fn gauge(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        observe: impl Fn() -> Vec<(f64, Vec<KeyValue>)> + Send + Sync + 'static,
    ) {
        let observe = Arc::new(observe);
        for meter in self.0.iter() {
            let observe = observe.clone();
            // The callback stays registered with the provider; the handle is not needed.
            let _gauge = meter
                .f64_observable_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |observer| {
                    for (value, labels) in observe() {
                        observer.observe(value, &labels);
                    }
                })
                .build();
        }
    }
}

/// Request latencies from a cache hit (sub-millisecond) to an argon2 hash under load.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone)]
pub struct Counter(Arc<[opentelemetry::metrics::Counter<u64>]>);

impl Counter {
    pub fn add(&self, value: u64, labels: &[KeyValue]) {
        for counter in self.0.iter() {
            counter.add(value, labels);
        }
    }
}

#[derive(Clone)]
pub struct Histogram(Arc<[opentelemetry::metrics::Histogram<f64>]>);

impl Histogram {
    pub fn record(&self, value: f64, labels: &[KeyValue]) {
        for histogram in self.0.iter() {
            histogram.record(value, labels);
        }
    }
}

/// Scrapers are few; anything beyond this waits in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;
/// A client that does not send its request headers within this is dropped (and an idle
/// kept-alive connection closed), so slow clients cannot hold the slots.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until `stop` turns true (or its sender goes away),
/// then lets open connections finish their request.
pub async fn serve(
    listener: TcpListener,
    export: Arc<MetricsExport>,
    mut stop: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics endpoint listening");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let export = export.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let export = export.clone();
                async move { Ok::<_, Infallible>(respond(&export, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    let _drained = slots.acquire_many(MAX_CONNECTIONS as u32).await;
}

/// Waits for the endpoint started by [`serve`] to stop, at most `grace` (like the gRPC
/// server's grace period), then drops it.
pub async fn drain(task: Option<tokio::task::JoinHandle<()>>, grace: Duration) {
    let Some(mut task) = task else {
        return;
    };
    if tokio::time::timeout(grace, &mut task).await.is_err() {
        tracing::warn!("metrics endpoint still busy after the grace period, dropping it");
        task.abort();
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

async fn respond(
    export: &MetricsExport,
    request: &hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    use hyper::{Method, StatusCode, header};
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            if let Some(refresh) = export.before_scrape.get() {
                refresh().await;
            }
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                export.render(),
            )
        }
        "/" => reply(
            StatusCode::OK,
            TEXT,
            "Prometheus metrics: GET /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: GET /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_gauges_render_in_the_text_format() {
        let export = MetricsExport::new("enroll-test", false).unwrap();
        let meters = export.meters();
        let counter = meters.counter("enroll.test.things", "Things");
        counter.add(2, &[KeyValue::new("kind", "a")]);
        meters
            .seconds("enroll.test.duration", "How long")
            .record(0.003, &[]);
        meters.gauge("enroll.test.level", "", "Level", || {
            vec![(7.0, vec![KeyValue::new("state", "full")])]
        });
        let text = export.render();
        assert!(
            text.contains("enroll_test_things_total{kind=\"a\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("enroll_test_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("enroll_test_level{state=\"full\"} 7"),
            "{text}"
        );
        assert!(text.contains("service_name=\"enroll-test\""), "{text}");
    }

    #[test]
    fn with_otlp_every_instrument_also_records_on_the_global_provider() {
        // The global provider stands in for the OTLP one: a second Prometheus registry.
        let global_registry = prometheus::Registry::new();
        let global = SdkMeterProvider::builder()
            .with_reader(
                opentelemetry_prometheus::exporter()
                    .with_registry(global_registry.clone())
                    .build()
                    .unwrap(),
            )
            .build();
        opentelemetry::global::set_meter_provider(global);
        let export = MetricsExport::new("enroll-mirror-test", true).unwrap();
        export
            .meters()
            .counter("enroll.mirror.calls", "Calls")
            .add(3, &[KeyValue::new("kind", "b")]);
        let mut global_text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &global_registry.gather(),
            &mut global_text,
        )
        .unwrap();
        let global_text = String::from_utf8(global_text).unwrap();
        for text in [export.render(), global_text] {
            assert!(text.contains("enroll_mirror_calls_total{"), "{text}");
            assert!(text.contains("kind=\"b\""), "{text}");
        }
    }

    #[test]
    fn an_empty_address_turns_the_endpoint_off() {
        let config = |addr: &str| MetricsConfig {
            listen_addr: addr.to_owned(),
        };
        assert_eq!(config("").listen(), Ok(None));
        assert_eq!(
            config("127.0.0.1:9464").listen(),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 9464))))
        );
        assert!(
            config("localhost")
                .listen()
                .unwrap_err()
                .contains("metrics.listen_addr")
        );
    }
}
