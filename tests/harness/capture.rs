//! Everything a scenario emits, kept in memory: every log line (TRACE, all crates) and every
//! span exported through OpenTelemetry (names, attributes, events, statuses), so a test can
//! search them for secrets.
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;

/// A log sink the fmt layer writes into.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An in-memory span exporter (the SDK's own sits behind its `testing` feature, which would
/// change the features every crate of the workspace is built with).
#[derive(Clone, Debug, Default)]
struct SpanBuffer(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for SpanBuffer {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        if let Ok(mut spans) = self.0.lock() {
            spans.extend(batch);
        }
        std::future::ready(Ok(()))
    }
}

/// What a scenario run under [`capture`] emitted.
pub struct Captured {
    /// The log lines, as written (no ANSI colours).
    pub logs: Vec<u8>,
    /// One line per exported span: its name, attributes, events with their attributes, and
    /// status.
    pub spans: Vec<String>,
}

/// Runs `scenario` with a TRACE subscriber for this thread that logs into memory and exports
/// every span into memory. Only work on the calling thread is seen: run it on a
/// current-thread runtime so that every server task is.
pub async fn capture<T>(scenario: impl Future<Output = T>) -> (T, Captured) {
    let logs = LogBuffer::default();
    let spans = SpanBuffer::default();
    // Span limits raised so no event or attribute is dropped before it can be searched.
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .with_max_events_per_span(u32::MAX)
        .with_max_attributes_per_span(u32::MAX)
        .with_max_attributes_per_event(u32::MAX)
        .build();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false),
        )
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("secret-scan")));
    let output = {
        let _guard = tracing::subscriber::set_default(subscriber);
        // Callsites first hit on another test's thread (with no subscriber there) may be
        // cached as uninteresting: ask again now that this thread has one.
        tracing::callsite::rebuild_interest_cache();
        scenario.await
    };
    let _ = provider.force_flush();
    let logs = logs
        .0
        .lock()
        .map(|buffer| buffer.clone())
        .unwrap_or_default();
    let spans = spans
        .0
        .lock()
        .map(|spans| spans.iter().map(describe_span).collect())
        .unwrap_or_default();
    (output, Captured { logs, spans })
}

fn describe_span(span: &SpanData) -> String {
    let mut line = format!("span {}", span.name);
    for attribute in &span.attributes {
        line.push_str(&format!(" {}={}", attribute.key, attribute.value));
    }
    for event in &span.events.events {
        line.push_str(&format!(" | event {}", event.name));
        for attribute in &event.attributes {
            line.push_str(&format!(" {}={}", attribute.key, attribute.value));
        }
    }
    line.push_str(&format!(" | status {:?}", span.status));
    line
}
