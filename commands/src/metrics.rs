//! The command side's metrics (docs/metrics.md): what the event store was asked and answered,
//! idempotent replays, fallbacks. Plain Prometheus collectors, registered by the service into
//! its registry (one per application, docs/decisions.md).
use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// Event store round trips, seconds.
const STORE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub struct BusMetrics {
    pub(crate) appended: IntCounterVec,
    pub(crate) conflicts: IntCounterVec,
    pub(crate) replays: IntCounterVec,
    pub(crate) store_seconds: HistogramVec,
    pub(crate) fallbacks: IntCounterVec,
}

impl BusMetrics {
    #[allow(clippy::expect_used)] // the names and labels are constants: checked by a test
    pub fn new() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter")
        };
        Self {
            appended: counter(
                "answers_event_store_appended_events_total",
                "Events appended to the store by commands, by aggregate type",
                &["aggregate"],
            ),
            conflicts: counter(
                "answers_event_store_conflicts_total",
                "Appends refused because another command appended to the aggregate first (optimistic concurrency), by aggregate type",
                &["aggregate"],
            ),
            replays: counter(
                "answers_idempotent_replays_total",
                "Commands answered from what an earlier request with the same Idempotency-Key stored, by aggregate type",
                &["aggregate"],
            ),
            store_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "answers_event_store_duration_seconds",
                    "Time the event store took to load an aggregate or commit its new events, by operation",
                )
                .buckets(STORE_BUCKETS.to_vec()),
                &["operation"],
            )
            .expect("a valid histogram"),
            fallbacks: counter(
                "answer_engine_fallbacks_total",
                "Questions answered from the tenant's answer library because the engine failed, by the failure's kind",
                &["kind"],
            ),
        }
    }

    /// Every collector, to register.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.appended.clone()),
            Box::new(self.conflicts.clone()),
            Box::new(self.replays.clone()),
            Box::new(self.store_seconds.clone()),
            Box::new(self.fallbacks.clone()),
        ]
    }
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_collectors_are_valid() {
        assert_eq!(super::BusMetrics::new().collectors().len(), 5);
    }
}
