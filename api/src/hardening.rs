//! HTTP hardening (docs/security.md): security headers on every response, and a deadline on
//! every request: a handler that runs too long ends with a 503 problem, not a hung connection.
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use base64::Engine;
use domain::Code;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// The HTTP layer's own settings.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Browser origins allowed to call the API (CORS), comma-separated exact origins
    /// (`https://app.example.com`); empty: none.
    pub cors_origins: String,
    /// Send `Strict-Transport-Security` (only when served over TLS, e.g. behind an ingress).
    pub hsts: bool,
    /// A handler producing its response longer than this is ended with 503.
    pub request_timeout_ms: u64,
    /// A client sending its request head slower than this is disconnected.
    pub client_request_timeout_ms: u64,
}

impl HttpSettings {
    pub fn origins(&self) -> Vec<String> {
        self.cors_origins
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect()
    }
}

/// The headers of a served setting, for the middleware.
pub struct Hardening {
    pub hsts: bool,
    pub deadline: Duration,
}

/// The Content-Security-Policy of the one HTML page we serve (`/docs`): its inline script by
/// hash, Swagger UI from its CDN, calls to ourselves only, never framed.
fn docs_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let html = crate::routes::docs::SWAGGER_HTML;
        let inline = html
            .rsplit_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(script, _)| script)
            .unwrap_or_default();
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(inline.as_bytes()));
        format!(
            "default-src 'none'; script-src https://cdn.jsdelivr.net 'sha256-{hash}'; \
             style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src 'self' data: https://cdn.jsdelivr.net; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )
    })
}

/// The request deadline. On expiry the handler is dropped and the error answers (a 503
/// problem, rendered by actix: the request itself cannot be kept here, actix routes it by
/// mutating it in place).
pub async fn deadline<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let deadline = req
        .app_data::<web::Data<Hardening>>()
        .map_or(Duration::from_secs(30), |s| s.deadline);
    let path = req.path().to_string();
    match tokio::time::timeout(deadline, next.call(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, ?deadline, "request ended at its deadline");
            Err(ApiError::new(
                Code::RequestTimedOut,
                format!(
                    "the request took longer than {} ms and was stopped; try again",
                    deadline.as_millis()
                ),
            )
            .into())
        }
    }
}

/// Security headers on every response.
pub async fn harden<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let hsts = req
        .app_data::<web::Data<Hardening>>()
        .is_some_and(|s| s.hsts);
    let mut response = next.call(req).await?;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let headers = response.headers_mut();
    let set = |h: &mut header::HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "x-frame-options", "DENY");
    set(headers, "cross-origin-opener-policy", "same-origin");
    set(
        headers,
        "content-security-policy",
        if html {
            docs_csp()
        } else {
            "default-src 'none'; frame-ancestors 'none'"
        },
    );
    if hsts {
        set(
            headers,
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        );
    }
    Ok(response)
}

/// CORS for the configured origins only: credentials (the session cookies) allowed, the
/// headers the frontend sends and reads listed. An origin not listed gets no CORS headers (the
/// browser then refuses the response to the page).
pub fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-csrf-token"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
        ])
        .supports_credentials()
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}
