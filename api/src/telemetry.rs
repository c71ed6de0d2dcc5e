use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogSettings;

/// Structured logs on stdout: JSON lines by default, human-readable with `log.format = "pretty"`.
/// `RUST_LOG` overrides the configured filter.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.filter.clone()));
    let builder = fmt().with_env_filter(filter).with_target(true);
    let result = if settings.format == "pretty" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
    // Already initialised (a test harness did it): keep that one.
    let _ = result;
}
