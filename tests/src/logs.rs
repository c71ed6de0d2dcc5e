//! Everything the process logs, captured for tests that read it (each such test is a binary of
//! its own: the subscriber is process-wide).
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::Layer;

/// The captured output of the process's subscriber.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Installs the process-wide subscriber (JSON, every level, every crate) writing here.
    pub fn install() -> Self {
        let captured = Self::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .init();
        captured
    }

    /// Installs the process-wide subscriber with the service's OpenTelemetry layer over
    /// `provider` beside the JSON log layer writing here.
    pub fn install_with_traces(provider: &opentelemetry_sdk::trace::SdkTracerProvider) -> Self {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let captured = Self::default();
        let writer = captured.clone();
        tracing_subscriber::registry()
            .with(answers_api::telemetry::trace_layer(provider))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(move || writer.clone())
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            )
            .init();
        captured
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Every JSON line logged so far.
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
