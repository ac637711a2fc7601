//! Logs (pretty or JSON), OpenTelemetry traces and metrics over OTLP, and W3C trace-context
//! propagation across gRPC calls.
use std::{
    collections::HashSet,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use opentelemetry::{
    KeyValue, global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use prost::Message as _;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, TelemetryConfig};
use crate::metrics::{Counter, Histogram, Meters};

/// Keeps the exporters alive; flushes them on drop.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
        if let Some(provider) = self.meter_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber. Safe to call more than once (later calls keep the first
/// subscriber, as tests that start several servers in one process do).
pub fn init(service_name: &'static str, config: &TelemetryConfig) -> TelemetryGuard {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
    };

    let (tracer_provider, meter_provider) = if config.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        match build_otlp(service_name, &config.otlp_endpoint) {
            Ok(providers) => (Some(providers.0), Some(providers.1)),
            Err(error) => {
                eprintln!("OpenTelemetry export disabled: {error}");
                (None, None)
            }
        }
    };
    let otel_layer = tracer_provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name)));
    if let Some(provider) = &meter_provider {
        global::set_meter_provider(provider.clone());
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    TelemetryGuard {
        tracer_provider,
        meter_provider,
    }
}

fn build_otlp(
    service_name: &'static str,
    endpoint: &str,
) -> Result<(SdkTracerProvider, SdkMeterProvider), Box<dyn std::error::Error>> {
    let resource = service_resource(service_name);
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_resource(resource.clone())
        .build();
    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(metric_exporter)
        .with_resource(resource)
        .build();
    Ok((tracer_provider, meter_provider))
}

/// The OTLP resource of this process, by the OpenTelemetry semantic conventions:
/// `service.name` is the binary's name (`enroll-policy`), not a gRPC service name;
/// `service.namespace` groups both services; `service.instance.id` tells replicas apart.
fn service_resource(service_name: &'static str) -> Resource {
    Resource::builder()
        .with_service_name(service_name)
        .with_attributes([
            KeyValue::new("service.namespace", "enroll"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new(
                "service.instance.id",
                uuid::Uuid::new_v4().hyphenated().to_string(),
            ),
        ])
        .build()
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Writes the current span's trace context (`traceparent`) into outgoing headers.
pub fn inject_current_context(headers: &mut http::HeaderMap) {
    let context = Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// A tonic interceptor that propagates the current trace context to the callee.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateTraceContext;

impl tonic::service::Interceptor for PropagateTraceContext {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = request;
        let mut headers = std::mem::take(request.metadata_mut()).into_headers();
        inject_current_context(&mut headers);
        *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        Ok(request)
    }
}

/// The trace id of the current span (hex), or empty when not tracing.
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt;
    let context = Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Tower layer: one span per gRPC request, child of the caller's trace context, plus request
/// count and latency metrics by service, method and status code.
#[derive(Clone)]
pub struct GrpcTraceLayer {
    metrics: RequestMetrics,
}

#[derive(Clone)]
struct RequestMetrics {
    requests: Counter,
    latency: Histogram,
    /// The methods this server implements: any other path (a client may send anything) is
    /// counted as `unknown`, so the label set stays bounded.
    known: Arc<HashSet<String>>,
}

/// Health and reflection, served next to every service.
const STANDARD_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

impl GrpcTraceLayer {
    /// Counts on `meters` the calls of the services in `file_descriptor_set` (plus health
    /// and reflection).
    pub fn new(meters: &Meters, file_descriptor_set: &[u8]) -> Self {
        let mut known: HashSet<String> = STANDARD_METHODS.iter().map(|&m| m.to_owned()).collect();
        match prost_types::FileDescriptorSet::decode(file_descriptor_set) {
            Ok(set) => {
                for file in &set.file {
                    for service in &file.service {
                        let service_name = match file.package() {
                            "" => service.name().to_owned(),
                            package => format!("{package}.{}", service.name()),
                        };
                        for method in &service.method {
                            known.insert(format!("/{service_name}/{}", method.name()));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "file descriptor set unreadable: every RPC counted as unknown")
            }
        }
        Self {
            metrics: RequestMetrics {
                requests: meters.counter(
                    "rpc.server.requests",
                    "gRPC requests by service, method and status code",
                ),
                latency: meters.seconds(
                    "rpc.server.duration",
                    "gRPC request latency by service, method and status code",
                ),
                known: Arc::new(known),
            },
        }
    }
}

impl GrpcTraceLayer {
    /// Also counts `paths` (`/package.Service/Method`) by name: the methods of a service
    /// served next to the descriptor set's (e.g. Envoy's ext_authz `Check`).
    pub fn counting(mut self, paths: &[&str]) -> Self {
        if !paths.is_empty() {
            let mut known = (*self.metrics.known).clone();
            known.extend(paths.iter().map(|&path| path.to_owned()));
            self.metrics.known = Arc::new(known);
        }
        self
    }
}

impl RequestMetrics {
    /// `rpc.service` and `rpc.method` (OpenTelemetry's RPC conventions) of a request path.
    fn service_and_method(&self, path: &str) -> (String, String) {
        match path.strip_prefix('/').and_then(|rest| rest.split_once('/')) {
            Some((service, method)) if self.known.contains(path) => {
                (service.to_owned(), method.to_owned())
            }
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        }
    }
}

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTraceService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcTraceService<S> {
    inner: S,
    metrics: RequestMetrics,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcTraceService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "grpc.request",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            caller = tracing::field::Empty,
        );
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let started = Instant::now();
        Box::pin(
            async move {
                let result = inner.call(request).await;
                let code = match &result {
                    // Trailers-only responses (errors) carry `grpc-status` in the headers;
                    // successful streaming responses report it in trailers, counted as 0.
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<i32>().ok())
                        .unwrap_or(0),
                    Err(_) => tonic::Code::Internal as i32,
                };
                Span::current().record("rpc.grpc.status_code", code);
                let (service, method) = metrics.service_and_method(&method);
                let attributes = [
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", service),
                    KeyValue::new("rpc.method", method),
                    KeyValue::new("rpc.grpc.status_code", i64::from(code)),
                ];
                metrics.requests.add(1, &attributes);
                metrics
                    .latency
                    .record(started.elapsed().as_secs_f64(), &attributes);
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_follows_the_semantic_conventions() {
        let resource = service_resource("enroll-policy");
        let value = |key: &'static str| {
            resource
                .get(&opentelemetry::Key::from_static_str(key))
                .map(|value| value.to_string())
        };
        assert_eq!(value("service.name").as_deref(), Some("enroll-policy"));
        assert_eq!(value("service.namespace").as_deref(), Some("enroll"));
        assert_eq!(
            value("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let instance = value("service.instance.id").unwrap_or_default();
        assert_eq!(instance.len(), 36, "{instance}");
        let other = service_resource("enroll-policy")
            .get(&opentelemetry::Key::from_static_str("service.instance.id"))
            .map(|value| value.to_string());
        assert_ne!(other, Some(instance), "one id per process start");
    }
    use tonic::service::Interceptor;

    #[test]
    fn the_current_span_context_travels_in_traceparent() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("device.enroll");
            let _entered = span.enter();
            let trace_id = current_trace_id();
            assert_eq!(trace_id.len(), 32);

            let request = PropagateTraceContext.call(tonic::Request::new(())).unwrap();
            let traceparent = request
                .metadata()
                .get("traceparent")
                .and_then(|value| value.to_str().ok())
                .unwrap()
                .to_owned();
            assert!(traceparent.contains(&trace_id), "{traceparent}");

            // The server side continues the same trace.
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", traceparent.parse().unwrap());
            let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(&headers)));
            let child = tracing::info_span!("policy.evaluate");
            let _ = child.set_parent(parent);
            let _child = child.enter();
            assert_eq!(current_trace_id(), trace_id);
        });
    }
}
