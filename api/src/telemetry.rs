//! Logs and traces (docs/observability.md). Logs: JSON lines on stdout (human-readable with
//! `log.format = "pretty"`), `RUST_LOG` overriding the configured filter. Traces: the same
//! `tracing` spans exported over OTLP when `tracing.exporter = "otlp"` (off by default), with
//! the W3C trace context carried through HTTP, event metadata and Kafka headers.
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::{LogSettings, TracingSettings};

/// Keeps the trace exporter running; dropping it flushes and stops it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// The log layer `settings` ask for.
pub fn log_layer<S>(settings: &LogSettings) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.filter.clone()));
    if settings.format == "pretty" {
        fmt::layer().with_target(true).with_filter(filter).boxed()
    } else {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .with_filter(filter)
            .boxed()
    }
}

/// The tracer provider `settings` ask for (`None`: tracing off).
pub fn tracer_provider(settings: &TracingSettings) -> anyhow::Result<Option<SdkTracerProvider>> {
    if settings.exporter == "none" {
        return Ok(None);
    }
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.otlp_endpoint.clone())
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    Ok(Some(provider))
}

/// The OpenTelemetry layer over `provider`: every span becomes an OpenTelemetry span.
pub fn trace_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("answers"))
        // Only our spans' own timing; no per-event OpenTelemetry span events (logs go to logs).
        .with_tracked_inactivity(false)
}

/// Installs the process's logs and, when configured, trace export. A subscriber already
/// installed (a test harness's) is kept; an exporter that cannot be set up is an error.
pub fn init(log: &LogSettings, tracing: &TracingSettings) -> anyhow::Result<Telemetry> {
    let provider = tracer_provider(tracing)?;
    let trace = provider.as_ref().map(trace_layer::<Registry>);
    let _ = tracing_subscriber::registry()
        .with(trace)
        .with(log_layer(log))
        .try_init();
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(exporter: &str) -> TracingSettings {
        TracingSettings {
            exporter: exporter.into(),
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            sample_ratio: 1.0,
            service_name: "answers-test".into(),
        }
    }

    #[test]
    fn tracing_is_off_unless_an_exporter_is_configured() {
        assert!(matches!(tracer_provider(&settings("none")), Ok(None)));
    }

    #[tokio::test]
    async fn the_otlp_exporter_starts_without_a_collector_reachable_yet() {
        // A collector that starts after the service (or restarts) must not stop it: the
        // channel connects lazily and the batch processor retries at its next export.
        let provider = tracer_provider(&settings("otlp"));
        assert!(matches!(provider, Ok(Some(_))), "{:?}", provider.err());
    }
}
