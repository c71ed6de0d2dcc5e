//! Request correlation: every request gets an id (the caller's `X-Request-Id`, if sane, or a new
//! one), echoed on the response, carried by the request's tracing span and stored with events.
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

pub const REQUEST_ID: &str = "x-request-id";

#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The trace id of a W3C `traceparent` header, if it is a valid one.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    trace_context::parse(traceparent).map(|context| context.trace_id().to_string())
}

/// Whether a successful request of `trace_id` is logged at `rate`: the same answer for every
/// request of a trace.
fn sampled(trace_id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    // The trace id is random: its last 8 hex digits are a uniform number.
    let tail = u32::from_str_radix(&trace_id[trace_id.len().saturating_sub(8)..], 16).unwrap_or(0);
    f64::from(tail) / f64::from(u32::MAX) < rate
}

pub async fn correlate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let (sample_rate, slow_ms) = req
        .app_data::<actix_web::web::Data<crate::config::LogSettings>>()
        .map_or((1.0, 1000), |s| (s.success_sample_rate, s.slow_request_ms));
    // The caller's trace, when it sends a valid `traceparent`; else a new one. Every log line
    // of the request carries its id beside the request id; with tracing on, the request's span
    // is a child of the caller's.
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| trace_id_of(v).is_some())
        .map(str::to_string);
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let span = tracing::info_span!(
        "http_request",
        method = %req.method(),
        path = %req.path(),
        request_id = %id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        status = tracing::field::Empty,
        tenant = tracing::field::Empty,
        user = tracing::field::Empty,
        // OpenTelemetry's names for the exported span.
        "otel.kind" = "server",
        "http.request.method" = %req.method(),
        "http.route" = tracing::field::Empty,
        "http.response.status_code" = tracing::field::Empty,
    );
    trace_context::continue_from(&span, incoming.as_deref());
    // With tracing on, the span's own trace id (the caller's, or a new one the sampler saw);
    // else the caller's or a new one for the logs.
    let trace_id = trace_context::trace_id(&span)
        .or_else(|| incoming.as_deref().and_then(trace_id_of))
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    span.record("trace_id", trace_id.as_str());
    if let Some(span_id) = trace_context::span_id(&span) {
        span.record("span_id", span_id.as_str());
    }
    let started = std::time::Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    span.record("status", status);
    span.record("http.response.status_code", status);
    if let Some(route) = response.request().match_pattern() {
        trace_context::rename(&span, format!("{} {route}", response.request().method()));
        span.record("http.route", route.as_str());
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, elapsed_ms, "request finished");
        } else if elapsed_ms >= slow_ms {
            tracing::warn!(status, elapsed_ms, slow = true, "request finished");
        } else if status >= 400 || sampled(&trace_id, sample_rate) {
            tracing::info!(status, elapsed_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(response)
}

/// A NUL in the query string is refused before any handler sees it: Postgres cannot compare
/// text with one, so it would otherwise fail as a database error (a 503) instead of a 400.
pub async fn refuse_nul(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let query = req.query_string();
    if query.contains('\0') || query.to_ascii_lowercase().contains("%00") {
        return Err(crate::problem::ApiError::new(
            domain::Code::InvalidQuery,
            "the query string must not contain NUL characters",
        )
        .into());
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_rate_and_is_stable_per_trace() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let kept = ids.iter().filter(|id| sampled(id, 0.1)).count();
        assert!((800..1200).contains(&kept), "{kept} of 10000 at 10 %");
        assert!(ids.iter().all(|id| sampled(id, 1.0)));
        assert!(ids.iter().all(|id| !sampled(id, 0.0)));
        // A trace kept at a lower rate is kept at every higher one: raising the rate adds
        // traces, it never swaps them.
        assert!(ids.iter().all(|id| !sampled(id, 0.3) || sampled(id, 0.6)));
    }
}
