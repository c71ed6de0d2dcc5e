//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>) between `tracing`
//! spans and the strings that carry it across process boundaries: an HTTP request's header,
//! an event's metadata, a Kafka message's header (docs/observability.md).
//!
//! Spans only have an OpenTelemetry context when the subscriber has the OpenTelemetry layer
//! (tracing on); without it [`current`] gives `None` and [`continue_from`] does nothing, so
//! every caller works the same either way.
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The parts of a valid `traceparent` (version 00 rules; unknown later versions read as 00).
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !(hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none()))
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(parent).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// The `traceparent` of `context`, if it is valid.
pub fn format(context: &SpanContext) -> Option<String> {
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}

/// The `traceparent` of `span` (`None` when tracing is off).
pub fn of(span: &tracing::Span) -> Option<String> {
    format(span.context().span().span_context())
}

/// The `traceparent` of the current span.
pub fn current() -> Option<String> {
    of(&tracing::Span::current())
}

/// The trace id of `span`, 32 hex digits (`None` when tracing is off).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The span id of `span`, 16 hex digits (`None` when tracing is off).
pub fn span_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_string())
}

/// Renames the exported span of `span` (an HTTP server span is named by its route, known only
/// once routed).
pub fn rename(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// Makes `span` a child of the remote span `traceparent` names (nothing when it is absent or
/// invalid, or tracing is off). Call before the span is entered.
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(remote) = traceparent.and_then(parse) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_by_the_w3c_rules() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse(good).expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(format(&sc).as_deref(), Some(good));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_the_opentelemetry_layer_there_is_no_context() {
        let span = tracing::info_span!("untraced");
        continue_from(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(of(&span), None);
    }

    #[test]
    fn a_span_continues_the_remote_trace_and_hands_on_its_own_context() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("child");
            continue_from(
                &span,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            let handed_on = of(&span).expect("a context");
            assert!(handed_on.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert!(!handed_on.contains("00f067aa0ba902b7"), "its own span id");
            assert_eq!(
                trace_id(&span).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
        });
    }
}
