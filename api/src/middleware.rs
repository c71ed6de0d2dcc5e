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

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), if it is one.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then(|| trace.to_string())
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
    // The caller's trace, when it sends one; else a new one. Every log line of the request
    // carries it beside the request id.
    let trace_id = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_of)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
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
        trace_id = %trace_id,
        status = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    span.record("status", status);
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
    fn traceparent_headers_are_read_by_the_w3c_rules() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }

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
